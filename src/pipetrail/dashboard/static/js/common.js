// pipetrail dashboard: what every page uses — API calls with the CSRF header, the
// confirmation dialog, toasts, local times and status colours.
"use strict";

window.PT = (function () {
  const csrf = () => {
    const meta = document.querySelector('meta[name="pipetrail-csrf"]');
    return meta ? meta.content : "";
  };

  // The message a person should read from an error body (FastAPI's detail, or ours).
  function errorText(data, status) {
    if (data && typeof data === "object") {
      if (data.error && typeof data.error === "object" && data.error.message) return data.error.message;
      const d = data.detail ?? data.message ?? data.error;
      if (typeof d === "string") return d;
      if (Array.isArray(d)) return d.map((e) => e.msg || JSON.stringify(e)).join("; ");
      if (d) return JSON.stringify(d);
    }
    if (typeof data === "string" && data.trim()) return data.trim().slice(0, 300);
    return `the server answered ${status}`;
  }

  async function request(method, url, body) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") {
      headers["Content-Type"] = "application/json";
      headers["X-Pipetrail-CSRF"] = csrf();
    }
    let response;
    try {
      response = await fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "same-origin",
      });
    } catch (err) {
      return { ok: false, status: 0, data: null, error: `cannot reach the server (${err.message})` };
    }
    const type = response.headers.get("content-type") || "";
    const data = type.includes("json") ? await response.json().catch(() => null) : await response.text();
    return {
      ok: response.ok,
      status: response.status,
      data,
      error: response.ok ? null : errorText(data, response.status),
    };
  }

  // Resolves true when the person confirms; the dialog is the page's single <dialog>.
  function confirm({ title, body, confirmLabel = "Confirm", danger = false }) {
    const dialog = document.getElementById("confirm-dialog");
    dialog.querySelector('[data-role="title"]').textContent = title;
    dialog.querySelector('[data-role="body"]').textContent = body;
    const button = dialog.querySelector('[data-role="confirm"]');
    button.textContent = confirmLabel;
    button.className = "btn " + (danger ? "btn-danger" : "btn-primary");
    dialog.returnValue = "";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
      dialog.showModal();
      button.focus();
    });
  }

  function toast(message, kind = "") {
    const box = document.getElementById("toasts");
    const item = document.createElement("div");
    item.className = "toast " + kind;
    item.setAttribute("role", kind === "error" ? "alert" : "status");
    item.textContent = message;
    box.appendChild(item);
    setTimeout(() => item.remove(), kind === "error" ? 9000 : 5000);
  }

  // Run ids in an action's answer, whatever its exact shape.
  function runIds(data) {
    const out = [];
    const visit = (value, key) => {
      if (value == null) return;
      if (Array.isArray(value)) return value.forEach((v) => visit(v, key));
      if (typeof value === "object") {
        for (const k of ["new_run_id", "run_id", "id"]) {
          if (typeof value[k] === "number") { out.push(value[k]); return; }
        }
        for (const [k, v] of Object.entries(value)) visit(v, k);
        return;
      }
      if (typeof value === "number" && /run|id/.test(key || "")) out.push(value);
    };
    visit(data, "");
    return [...new Set(out)];
  }

  // What a batch action did, in a sentence: {matched, succeeded, results: [{id, ok, error}]}.
  function batchSummary(data, verb) {
    if (!data || !Array.isArray(data.results)) return null;
    const failed = data.results.filter((r) => !r.ok);
    const made = data.results.filter((r) => r.ok).map((r) => (r.pipeline_run && r.pipeline_run.id) || r.id);
    let text = data.matched === 0 ? `${verb}: no run matched` : `${verb} ${data.succeeded} of ${data.matched}`;
    if (made.length) text += `: ${made.map((i) => "#" + i).join(", ")}`;
    if (failed.length) {
      const why = failed.slice(0, 3).map((r) => `#${r.id}: ${errorText({ error: r.error }, "")}`).join("; ");
      text += `. Not done: ${why}`;
    }
    return { text, ok: failed.length === 0 };
  }

  const pad = (n) => String(n).padStart(2, "0");
  function localTime(date) {
    return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
      `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  }
  function ago(date) {
    const s = (Date.now() - date.getTime()) / 1000;
    if (s < 45) return "just now";
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} d ago`;
  }
  // <time datetime> elements (rendered in UTC) shown in the browser's time zone.
  function localizeTimes(root = document) {
    root.querySelectorAll("time[datetime]").forEach((el) => {
      const date = new Date(el.getAttribute("datetime"));
      if (isNaN(date)) return;
      el.textContent = localTime(date);
      el.title = `${ago(date)} · ${el.getAttribute("datetime")}`;
    });
  }

  const cssVar = (name, fallback) =>
    getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
  const statusColor = (status) => cssVar(`--st-${status}`, "#a9bad0");
  const runColor = (i) => cssVar(`--c${i % 8}`, "#4f46e5");

  function pageData() {
    const el = document.getElementById("page-data");
    return el ? JSON.parse(el.textContent) : {};
  }

  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, (c) => (
      { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  document.addEventListener("DOMContentLoaded", () => localizeTimes());

  return { request, confirm, toast, runIds, batchSummary, localizeTimes, statusColor, runColor, pageData, escapeHtml, errorText };
})();
