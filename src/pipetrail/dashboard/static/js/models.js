// pipetrail dashboard: the Approve and Reject buttons of promotion requests (Approvals page and a
// model's page) over the REST API; a refusal is shown next to the buttons, with the server's words.
"use strict";

(function () {
  const api = (id, verb) => `/api/promotions/${encodeURIComponent(id)}/${verb}`;

  function showError(box, text) {
    const line = box.querySelector('[data-role="error"]');
    if (!line) return;
    line.textContent = text;
    line.hidden = !text;
  }

  // The Approvals page swaps in a fresh list; a model's page reloads (its aliases and history
  // change with the decision).
  async function refresh(section) {
    if (!section || section.dataset.refresh !== "list") {
      setTimeout(() => location.reload(), 400);
      return;
    }
    const response = await fetch(location.href, { headers: { Accept: "text/html" } }).catch(() => null);
    if (!response || !response.ok) return location.reload();
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    const next = fresh.getElementById(section.id);
    if (!next) return location.reload();
    section.replaceWith(next);
    PT.localizeTimes(next);
  }

  async function decide(button, box, verb) {
    const id = box.dataset.request;
    const input = box.querySelector('input[name="comment"]');
    const comment = input && input.value.trim() ? input.value.trim() : null;
    const buttons = box.querySelectorAll("button");
    buttons.forEach((b) => { b.disabled = true; });
    showError(box, "");
    const result = await PT.request("POST", api(id, verb), comment === null ? {} : { comment });
    buttons.forEach((b) => { b.disabled = false; });
    const done = verb === "approve" ? "approved" : "rejected";
    if (!result.ok) {
      const text = `Could not ${verb} request #${id}: ${result.error}`;
      showError(box, text);
      PT.toast(text, "error");
      return;
    }
    // The answer is {"promotion": {..., "status": ...}}: the request as it is now.
    const promotion = result.data && typeof result.data === "object" ? result.data.promotion : null;
    const status = promotion ? promotion.status : null;
    let text = `Request #${id} ${done}`;
    if (verb === "approve" && status === "pending") text += "; it waits for more approvals";
    if (status === "approved") text += ": the alias moved";
    PT.toast(text, "ok");
    await refresh(box.closest("[data-refresh]"));
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest('[data-action="approve-promotion"], [data-action="reject-promotion"]');
    if (!button || button.disabled) return;
    const box = button.closest(".promotion-actions[data-request]");
    if (!box) return;
    decide(button, box, button.dataset.action === "approve-promotion" ? "approve" : "reject");
  });
})();
