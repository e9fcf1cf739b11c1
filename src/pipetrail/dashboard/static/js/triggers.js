// pipetrail dashboard: the Triggers pages' buttons (pause, resume, run now) over the REST API.
"use strict";

(function () {
  const api = (name, what) => `/api/triggers/${encodeURIComponent(name)}/${what}`;
  const page = (name) => `/triggers/${encodeURIComponent(name)}`;

  async function pauseOrResume(button, name, pause) {
    button.disabled = true;
    const result = await PT.request("POST", api(name, pause ? "pause" : "resume"), {});
    button.disabled = false;
    if (!result.ok) return PT.toast(`Could not ${pause ? "pause" : "resume"} ${name}: ${result.error}`, "error");
    PT.toast(`${name} ${pause ? "paused" : "resumed"}`, "ok");
    setTimeout(() => location.reload(), 400);
  }

  async function runNow(button, name) {
    const ok = await PT.confirm({
      title: `Run ${name} now?`,
      body: "One run of the trigger's pipeline starts now with its parameters; its schedule is unchanged.",
      confirmLabel: "Run now",
    });
    if (!ok) return;
    button.disabled = true;
    const result = await PT.request("POST", api(name, "runs"), {});
    button.disabled = false;
    if (!result.ok) return PT.toast(`Could not run ${name}: ${result.error}`, "error");
    const ids = PT.runIds(result.data);
    PT.toast(ids.length ? `Started run #${ids[0]}` : "Run started", "ok");
    setTimeout(() => { location.href = page(name); }, 600);
  }

  // A trigger's page follows its runs while one is going: its runs, ticks and alerts are
  // re-read every 2 s and swapped in (the rest of the page stays as it is).
  const LIVE = ["trigger-runs", "trigger-ticks", "trigger-alerts", "trigger-summary"];
  async function follow() {
    const runs = document.getElementById("trigger-runs");
    if (!runs || runs.dataset.live !== "1") return;
    const response = await fetch(location.href, { headers: { Accept: "text/html" } }).catch(() => null);
    if (response && response.ok) {
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const id of LIVE) {
        const now = document.getElementById(id);
        const next = fresh.getElementById(id);
        if (now && next) {
          now.replaceWith(next);
          PT.localizeTimes(next);
        }
      }
    }
    setTimeout(follow, 2000);
  }
  document.addEventListener("DOMContentLoaded", () => setTimeout(follow, 2000));

  document.addEventListener("click", (event) => {
    const button = event.target.closest(
      '[data-action="pause-trigger"], [data-action="resume-trigger"], [data-action="run-trigger"]');
    if (!button || button.disabled) return;
    const box = button.closest("[data-name]");
    if (!box) return;
    const name = box.dataset.name;
    if (button.dataset.action === "run-trigger") runNow(button, name);
    else pauseOrResume(button, name, button.dataset.action === "pause-trigger");
  });
})();
