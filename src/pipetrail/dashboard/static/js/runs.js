// Runs tables: filters that submit themselves, live refresh of the table fragment while runs
// are active, selection, compare, and the batch actions of a pipeline's page.
"use strict";

(function () {
  const ACTIVE = new Set(["initial", "running"]);
  const TERMINAL = new Set(["completed", "failed", "cancelled"]);
  const toolbar = document.querySelector(".toolbar");
  const pipeline = toolbar && toolbar.dataset.pipeline;
  let busy = false;
  let timer = null;

  const live = () => document.getElementById("runs-live");
  const boxes = () => [...document.querySelectorAll('input[name="run"]')];
  const selected = () => boxes().filter((b) => b.checked);

  // -- filters ------------------------------------------------------------------------------
  const form = document.querySelector('[data-role="filters"]');
  if (form) {
    form.addEventListener("change", (event) => {
      if (event.target.hasAttribute("data-autosubmit")) form.requestSubmit();
    });
    // Empty fields stay out of the URL, so it reads like the filters in force.
    form.addEventListener("formdata", (event) => {
      for (const [key, value] of [...event.formData.entries()]) {
        if (value === "") event.formData.delete(key);
      }
    });
  }

  // -- selection ----------------------------------------------------------------------------
  function updateSelection() {
    const chosen = selected();
    const compare = document.querySelector('[data-action="compare"]');
    if (compare) compare.disabled = chosen.length < 2;
    const label = document.querySelector('[data-role="selection"]');
    if (label) label.textContent = chosen.length ? `${chosen.length} selected` : "";
    const all = document.querySelector('[data-role="check-all"]');
    if (all) {
      all.checked = chosen.length > 0 && chosen.length === boxes().length;
      all.indeterminate = chosen.length > 0 && chosen.length < boxes().length;
    }
  }

  document.addEventListener("change", (event) => {
    if (event.target.matches('[data-role="check-all"]')) {
      boxes().forEach((b) => { b.checked = event.target.checked; });
    }
    if (event.target.matches('input[name="run"], [data-role="check-all"]')) updateSelection();
  });

  // -- live refresh -------------------------------------------------------------------------
  async function refresh() {
    const current = live();
    if (!current || busy || document.getElementById("confirm-dialog").open) return schedule();
    const keep = new Set(selected().map((b) => b.value));
    const all = document.querySelector('[data-role="check-all"]');
    const response = await fetch(current.dataset.refresh, { headers: { Accept: "text/html" } })
      .catch(() => null);
    if (response && response.ok) {
      const holder = document.createElement("div");
      holder.innerHTML = await response.text();
      const next = holder.querySelector("#runs-live");
      if (next) {
        next.querySelectorAll('input[name="run"]').forEach((b) => { b.checked = keep.has(b.value); });
        if (all && all.checked) {
          const nextAll = next.querySelector('[data-role="check-all"]');
          if (nextAll) nextAll.checked = true;
        }
        current.replaceWith(next);
        PT.localizeTimes(next);
        updateSelection();
      }
    }
    schedule();
  }

  // Every 2 s while a run is initial or running; otherwise now and then, to show new runs.
  function schedule() {
    clearTimeout(timer);
    const current = live();
    if (!current) return;
    const delay = current.dataset.live === "1" ? 2000 : 15000;
    timer = setTimeout(() => (document.hidden ? schedule() : refresh()), delay);
  }
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });

  // -- actions ------------------------------------------------------------------------------
  async function act(url, body, verb) {
    busy = true;
    const result = await PT.request("POST", url, body);
    busy = false;
    if (!result.ok) {
      PT.toast(`Could not ${verb}: ${result.error}`, "error");
    } else {
      const summary = PT.batchSummary(result.data, verb);
      if (summary) PT.toast(summary.text, summary.ok ? "ok" : "error");
      else PT.toast(`${verb}: done`, "ok");
    }
    await refresh();
    return result;
  }

  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

  const ACTIONS = {
    async compare() {
      // Oldest first: differences then read as "what changed since".
      const ids = selected().map((b) => Number(b.value)).sort((a, b) => a - b);
      if (ids.length >= 2) location.href = `/compare?runs=${ids.join(",")}`;
    },
    async "retry-selected"() {
      const chosen = selected();
      const ids = chosen.filter((b) => TERMINAL.has(b.dataset.status)).map((b) => Number(b.value));
      if (!chosen.length) return PT.toast("Select the runs to retry first.");
      if (!ids.length) return PT.toast("The selected runs are still going; cancel them first.", "error");
      const skipped = chosen.length - ids.length;
      const ok = await PT.confirm({
        title: `Retry ${plural(ids.length, "run")}?`,
        body: `Each selected run is run again as a new run that reuses the steps that completed.` +
          (skipped ? ` ${plural(skipped, "run")} still going ${skipped === 1 ? "is" : "are"} left out.` : ""),
        confirmLabel: "Retry",
      });
      if (ok) await act("/api/pipeline_runs/retry", { ids }, "Retried");
    },
    async "retry-incomplete"() {
      const ok = await PT.confirm({
        title: `Retry all incomplete runs of ${pipeline}?`,
        body: "Every failed or cancelled run of this pipeline is run again from where it stopped.",
        confirmLabel: "Retry all",
      });
      if (ok) {
        await act("/api/pipeline_runs/retry",
          { filter: { pipeline, status: ["failed", "cancelled"] } }, "Retried");
      }
    },
    async "cancel-selected"() {
      const chosen = selected();
      const ids = chosen.filter((b) => ACTIVE.has(b.dataset.status)).map((b) => Number(b.value));
      if (!chosen.length) return PT.toast("Select the running runs to cancel first.");
      if (!ids.length) return PT.toast("None of the selected runs is running.", "error");
      const ok = await PT.confirm({
        title: `Cancel ${plural(ids.length, "running run")}?`,
        body: "Their running steps are stopped and the runs end as cancelled.",
        confirmLabel: "Cancel runs",
        danger: true,
      });
      if (ok) await act("/api/pipeline_runs/cancel", { ids }, "Cancelled");
    },
    async "cancel-running"() {
      const ok = await PT.confirm({
        title: `Cancel all running runs of ${pipeline}?`,
        body: "Every initial or running run of this pipeline is stopped and ends as cancelled.",
        confirmLabel: "Cancel all",
        danger: true,
      });
      if (ok) {
        await act("/api/pipeline_runs/cancel",
          { filter: { pipeline, status: ["initial", "running"] } }, "Cancelled");
      }
    },
  };

  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-action]");
    if (!button || !ACTIONS[button.dataset.action]) return;
    const menu = button.closest("details.menu");
    if (menu) menu.open = false;
    ACTIONS[button.dataset.action]();
  });
  // A click outside an open menu closes it.
  document.addEventListener("click", (event) => {
    document.querySelectorAll("details.menu[open]").forEach((menu) => {
      if (!menu.contains(event.target)) menu.open = false;
    });
  });

  updateSelection();
  schedule();
})();
