// The run page: the DAG (cytoscape + dagre), step panels, metric charts, live refresh while
// the run is going, retry and cancel, previews of outputs.
"use strict";

(function () {
  const data = PT.pageData();
  const run = data.run;
  const charts = new Map();
  let cy = null;

  // -- steps --------------------------------------------------------------------------------
  function selectStep(name, { scroll = false } = {}) {
    const panel = document.querySelector(`.step-panel[data-step="${CSS.escape(name)}"]`);
    if (!panel) return;
    document.querySelectorAll(".step-panel").forEach((p) => { p.hidden = p !== panel; });
    document.querySelectorAll(".step-list [data-step]").forEach((b) => {
      b.setAttribute("aria-selected", b.dataset.step === name ? "true" : "false");
    });
    if (cy) {
      cy.nodes().unselect();
      cy.getElementById(name).select();
    }
    history.replaceState(null, "", `#step=${encodeURIComponent(name)}`);
    if (scroll) document.getElementById("steps").scrollIntoView({ behavior: "smooth", block: "start" });
  }

  document.addEventListener("click", (event) => {
    const tab = event.target.closest(".step-list [data-step]");
    if (tab) return selectStep(tab.dataset.step);
    const link = event.target.closest("[data-select-step]");
    if (link) {
      event.preventDefault();
      selectStep(link.dataset.selectStep, { scroll: true });
    }
  });

  // -- DAG ----------------------------------------------------------------------------------
  function drawDag() {
    const box = document.getElementById("dag");
    if (!box || !window.cytoscape || !data.dag) return;
    const colors = {};
    ["completed", "failed", "running", "cancelled", "condition_failed", "upstream_failed", "initial", "queued"]
      .forEach((s) => { colors[s] = PT.statusColor(s); });
    const darkText = new Set(["condition_failed", "upstream_failed", "initial", "running"]);
    cy = cytoscape({
      container: box,
      elements: [...data.dag.nodes, ...data.dag.edges],
      autoungrabify: true,
      userZoomingEnabled: false,
      boxSelectionEnabled: false,
      minZoom: 0.3,
      maxZoom: 1.6,
      style: [
        {
          selector: "node",
          style: {
            shape: "round-rectangle",
            label: "data(label)",
            "background-color": (n) => colors[n.data("status")] || colors.initial,
            color: (n) => (darkText.has(n.data("status")) ? "#1d2330" : "#ffffff"),
            "font-family": "ui-monospace, SFMono-Regular, Menlo, monospace",
            "font-size": 12,
            "font-weight": 600,
            "text-valign": "center",
            "text-halign": "center",
            width: (n) => Math.max(70, n.data("label").length * 7.6 + 26),
            height: 34,
            "border-width": 1,
            "border-color": "rgba(0,0,0,0.15)",
          },
        },
        { selector: "node:selected", style: { "border-width": 3, "border-color": "#1d2330" } },
        {
          selector: "edge",
          style: {
            width: 1.6,
            "curve-style": "bezier",
            "line-color": "#aab1bd",
            "target-arrow-color": "#aab1bd",
            "target-arrow-shape": "triangle",
            "arrow-scale": 0.9,
            label: "data(label)",
            "font-size": 9,
            color: "#6b7385",
            "text-background-color": "#fcfcfd",
            "text-background-opacity": 1,
            "text-background-padding": 2,
            "text-rotation": "autorotate",
          },
        },
      ],
      layout: { name: "dagre", rankDir: "LR", nodeSep: 22, rankSep: 56, padding: 18, fit: true },
    });
    box.dataset.nodes = String(cy.nodes().length);
    box.dataset.edges = String(cy.edges().length);
    cy.on("tap", "node", (event) => selectStep(event.target.id()));
    cy.on("mouseover", "node", () => { box.style.cursor = "pointer"; });
    cy.on("mouseout", "node", () => { box.style.cursor = ""; });
    if (cy.zoom() > 1.3) { cy.zoom(1.3); cy.center(); }
    window.addEventListener("resize", () => { cy.resize(); cy.fit(undefined, 18); if (cy.zoom() > 1.3) { cy.zoom(1.3); cy.center(); } });
  }

  function setStepStatus(name, status) {
    if (cy) {
      const node = cy.getElementById(name);
      if (node.nonempty() && node.data("status") !== status) node.data("status", status);
    }
    const tab = document.querySelector(`.step-list [data-step="${CSS.escape(name)}"] [data-role="step-dot"]`);
    if (tab) tab.className = `dot st-${status}`;
  }

  // -- metrics ------------------------------------------------------------------------------
  function drawMetrics() {
    (data.metrics || []).forEach((series) => {
      const box = document.querySelector(`.chart-box[data-metric="${CSS.escape(series.name)}"]`);
      if (!box || !window.uPlot) return;
      const el = box.querySelector('[data-role="chart"]');
      const chart = PTCharts.envelope(el, series);
      charts.set(series.name, { chart, series, box });
      // The page embedded a coarse envelope: ask the API for one sized to this chart.
      if (series.count > series.x.length) refreshMetric(series.name);
    });
  }

  async function refreshMetric(name) {
    const entry = charts.get(name);
    if (!entry) return;
    const points = PTCharts.widthOf(entry.box.querySelector('[data-role="chart"]'));
    const url = `/api/pipeline_runs/${run.id}/metrics/${encodeURIComponent(name)}?points=${points}`;
    const result = await PT.request("GET", url);
    if (!result.ok || !result.data) return; // the embedded envelope stays
    const fresh = PTCharts.fromApi(result.data);
    if (fresh.x.length) PTCharts.setEnvelope(entry.chart, fresh);
  }

  document.addEventListener("click", async (event) => {
    const button = event.target.closest('[data-action="toggle-table"]');
    if (!button) return;
    const box = button.closest(".chart-box");
    const entry = charts.get(box.dataset.metric);
    const el = box.querySelector('[data-role="table"]');
    const chartEl = box.querySelector('[data-role="chart"]');
    const showTable = el.hidden;
    el.hidden = !showTable;
    chartEl.hidden = showTable;
    button.textContent = showTable ? "Chart" : "Table";
    if (!showTable || el.dataset.loaded) return;
    if (entry && entry.series.exact && !run.live) {
      PTCharts.table(el, entry.series.exact);
    } else {
      el.textContent = "Loading every point…";
      const url = `/api/pipeline_runs/${run.id}/metrics/${encodeURIComponent(box.dataset.metric)}?exact=true`;
      const result = await PT.request("GET", url);
      if (result.ok) {
        const rows = PTCharts.exactRows(result.data);
        PTCharts.table(el, rows);
        if (result.data.next_cursor) {
          el.insertAdjacentHTML("afterbegin", `<p class="small muted">The first ${rows.length} of ${result.data.total} points.</p>`);
        }
      }
      else if (entry && entry.series.exact) PTCharts.table(el, entry.series.exact);
      else el.textContent = `The exact points could not be loaded: ${result.error}`;
    }
    el.dataset.loaded = "1";
  });

  // -- live refresh -------------------------------------------------------------------------
  async function poll() {
    const result = await PT.request("GET", `${location.pathname}/_state`);
    if (result.ok && result.data) {
      Object.entries(result.data.steps || {}).forEach(([name, status]) => setStepStatus(name, status));
      if (result.data.finished || result.data.status !== run.status) {
        location.reload();
        return;
      }
      charts.forEach((_, name) => refreshMetric(name));
    }
    setTimeout(poll, 2000);
  }

  // -- actions ------------------------------------------------------------------------------
  document.addEventListener("click", async (event) => {
    const button = event.target.closest('[data-action="retry-run"], [data-action="cancel-run"]');
    if (!button) return;
    const retry = button.dataset.action === "retry-run";
    const ok = await PT.confirm(retry ? {
      title: `Retry run #${run.id}?`,
      body: "A new run starts that reuses the steps that completed and runs the rest again.",
      confirmLabel: "Retry",
    } : {
      title: `Cancel run #${run.id}?`,
      body: "Its running steps are stopped and the run ends as cancelled.",
      confirmLabel: "Cancel run",
      danger: true,
    });
    if (!ok) return;
    button.disabled = true;
    const result = await PT.request("POST", `/api/pipeline_runs/${run.id}/${retry ? "retry" : "cancel"}`, {});
    button.disabled = false;
    if (!result.ok) return PT.toast(`Could not ${retry ? "retry" : "cancel"}: ${result.error}`, "error");
    if (retry) {
      const ids = PT.runIds(result.data).filter((id) => id !== run.id);
      PT.toast(ids.length ? `Retrying as run #${ids[0]}` : "Retry started", "ok");
      const base = `/pipelines/${encodeURIComponent(run.pipeline)}/runs`;
      setTimeout(() => { location.href = ids.length ? `${base}/${ids[0]}` : base; }, 600);
    } else {
      PT.toast(`Run #${run.id} cancelled`, "ok");
      setTimeout(() => location.reload(), 600);
    }
  });

  // -- output previews ----------------------------------------------------------------------
  // Pretty JSON, with lists of plain values kept on one line.
  function compactJson(value) {
    return JSON.stringify(value, null, 2)
      .replace(/\[\s+([^\[\]{}]*?)\s+\]/g, (m, inner) => `[${inner.replace(/\s*\n\s*/g, " ")}]`);
  }

  // One OutputPreview of the API: {name, type, type_name, shape, sample_data, truncated,
  // download_url, preview_error}.
  function renderPreview(item) {
    const esc = PT.escapeHtml;
    const sample = item.sample_data;
    let html = "";
    if (item.preview_error) {
      html = `<p class="muted small">No preview: ${esc(item.preview_error)}</p>`;
    } else if (item.type === "table" && sample && Array.isArray(sample.columns)) {
      const cols = sample.columns;
      const rows = (sample.rows || []).map((r) => `<tr>${
        (Array.isArray(r) ? r : cols.map((c) => r[c])).map((v) => `<td class="mono">${esc(v ?? "")}</td>`).join("")}</tr>`);
      html = `<div class="preview-scroll"><table><thead><tr>${cols.map((c) => `<th>${esc(c)}</th>`).join("")}</tr></thead><tbody>${rows.join("")}</tbody></table></div>`;
    } else if (item.type === "image" && item.download_url) {
      html = `<img class="preview-image" src="${esc(item.download_url)}" alt="${esc(item.name)}">`;
    } else if (sample != null) {
      const text = typeof sample === "string" ? sample : compactJson(sample);
      html = `<pre class="log">${esc(text)}</pre>`;
    } else {
      html = `<p class="muted small">${esc(item.type || "binary")} output: download it to look inside.</p>`;
    }
    const shape = Array.isArray(item.shape) ? ` · shape ${item.shape.join(" × ")}` : "";
    const cut = item.truncated ? " · first rows only" : "";
    return `<div class="preview-item"><h5>${esc(item.name)} <span class="muted small">${esc(item.type_name || "")}${shape}${cut}</span></h5>${html}</div>`;
  }

  document.addEventListener("click", async (event) => {
    const button = event.target.closest('[data-action="preview"]');
    if (!button) return;
    const box = button.closest(".attempt").querySelector('[data-role="preview"]');
    if (!box.hidden) { box.hidden = true; return; }
    box.hidden = false;
    box.textContent = "Loading a preview…";
    const result = await PT.request("GET", `/api/block_runs/${button.dataset.taskId}/outputs?sample_count=20`);
    if (!result.ok) { box.textContent = `No preview: ${result.error}`; return; }
    const items = (result.data && result.data.outputs) || [];
    box.innerHTML = items.length ? items.map(renderPreview).join("") : '<p class="muted small">No outputs.</p>';
  });

  // -- packages filter ----------------------------------------------------------------------
  document.addEventListener("input", (event) => {
    if (!event.target.matches('[data-role="package-filter"]')) return;
    const q = event.target.value.toLowerCase();
    event.target.parentElement.querySelectorAll("tbody tr").forEach((tr) => {
      tr.hidden = q && !tr.textContent.toLowerCase().includes(q);
    });
  });

  // -- start --------------------------------------------------------------------------------
  drawDag();
  drawMetrics();
  const fromHash = decodeURIComponent((location.hash.match(/^#step[=-](.+)$/) || [])[1] || "");
  selectStep(fromHash && document.querySelector(`.step-panel[data-step="${CSS.escape(fromHash)}"]`) ? fromHash : data.selected);
  if (run.live) setTimeout(poll, 2000);
})();
