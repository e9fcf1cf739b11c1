// Charts on uPlot: a metric as a min–max band with its last value as a line (spikes survive
// any downsampling), several runs overlaid, and parallel coordinates.
"use strict";

window.PTCharts = (function () {
  const HEIGHT = 210;

  function alpha(color, a) {
    const hex = color.replace("#", "");
    if (hex.length !== 6) return color;
    const n = parseInt(hex, 16);
    return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${a})`;
  }

  const fmt = (v) => {
    if (v == null || Number.isNaN(v)) return "–";
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(3);
    return Number(v.toPrecision(5)).toString();
  };

  function widthOf(el) {
    return Math.max(240, Math.floor(el.clientWidth || el.parentElement.clientWidth || 480));
  }

  // Keep a chart as wide as its box.
  function fit(chart, el) {
    if (!window.ResizeObserver) return;
    new ResizeObserver(() => {
      const w = widthOf(el);
      if (Math.abs(w - chart.width) > 4) chart.setSize({ width: w, height: chart.height });
    }).observe(el);
  }

  // Steps are whole numbers: no tick at 2.5.
  const STEP_INCRS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1e3, 2e3, 2500, 5e3, 1e4, 2e4,
    25e3, 5e4, 1e5, 2e5, 25e4, 5e5, 1e6, 2e6, 5e6, 1e7];

  function axes(xLabel) {
    const grid = { stroke: "#eef0f3", width: 1 };
    return [
      { label: xLabel, labelSize: 18, grid, ticks: grid, stroke: "#6b7385", font: "11px system-ui", incrs: STEP_INCRS },
      { grid, ticks: grid, stroke: "#6b7385", size: 56, values: (u, vals) => vals.map(fmt), font: "11px system-ui" },
    ];
  }

  // A series as [x, max, min, last] for uPlot; the band fills between max and min.
  function envelope(el, series, color = "#4f46e5") {
    const opts = {
      width: widthOf(el),
      height: HEIGHT,
      scales: { x: { time: false } },
      axes: axes(series.x_label || "step"),
      legend: { live: true },
      cursor: { drag: { x: true, y: false } },
      series: [
        { label: series.x_label || "step", value: (u, v) => fmt(v) },
        { label: "max", stroke: alpha(color, 0.35), width: 1, value: (u, v) => fmt(v) },
        { label: "min", stroke: alpha(color, 0.35), width: 1, value: (u, v) => fmt(v) },
        { label: series.name || "last", stroke: color, width: 2, value: (u, v) => fmt(v),
          points: { show: series.x.length <= 60, size: 5 } },
      ],
      bands: [{ series: [1, 2], fill: alpha(color, 0.14) }],
    };
    const chart = new uPlot(opts, [series.x, series.max, series.min, series.last], el);
    // Exact series have min = max = last: their band rows would only repeat the value.
    if (!(series.count > series.x.length)) {
      el.querySelectorAll(".u-legend tr.u-series").forEach((row, i) => {
        if (i === 1 || i === 2) row.style.display = "none";
      });
    }
    fit(chart, el);
    return chart;
  }

  function setEnvelope(chart, series) {
    chart.setData([series.x, series.max, series.min, series.last]);
  }

  // x values that only go up are usable as they are; otherwise fall back to positions.
  const rising = (xs) => xs.every((v, i) => v != null && (i === 0 || xs[i - 1] <= v));

  // The API's answer for a metric: {mode: "envelope", buckets: [{step_end, end_index, min,
  // max, last}]} or {mode: "exact", points: [{index, step, value}]}, as series for the chart.
  function fromApi(json) {
    const out = { x: [], min: [], max: [], last: [], count: (json && json.total) ?? 0 };
    if (!json) return out;
    if (Array.isArray(json.buckets) && json.buckets.length) {
      const steps = json.buckets.map((b) => b.step_end);
      const useSteps = rising(steps);
      json.buckets.forEach((b) => {
        out.x.push(useSteps ? b.step_end : b.end_index);
        out.min.push(b.min);
        out.max.push(b.max);
        out.last.push(b.last);
      });
    } else {
      const points = json.points || [];
      const steps = points.map((p) => p.step);
      const useSteps = rising(steps);
      points.forEach((p, i) => {
        out.x.push(useSteps ? p.step : (p.index ?? i));
        out.min.push(p.value);
        out.max.push(p.value);
        out.last.push(p.value);
      });
    }
    out.count = out.count || out.x.length;
    return out;
  }

  function exactRows(json) {
    return ((json && json.points) || []).map((p, i) => ({ step: p.step ?? p.index ?? i, value: p.value, timestamp: p.timestamp }));
  }

  function table(el, rows) {
    const body = rows.map((r) => `<tr><td class="num">${r.step ?? ""}</td><td class="num mono">${
      typeof r.value === "number" ? r.value : PT.escapeHtml(r.value ?? "")}</td><td class="small muted">${
      PT.escapeHtml(r.timestamp || "")}</td></tr>`).join("");
    el.innerHTML = `<table><thead><tr><th class="num">step</th><th class="num">value</th><th>logged at</th></tr></thead><tbody>${body}</tbody></table>`;
  }

  // Several runs on one x axis: each run a line with its own band.
  function overlay(el, history, labels) {
    const series = [{ label: history.x_label || "step", value: (u, v) => fmt(v) }];
    const data = [history.x];
    const bands = [];
    history.lines.forEach((line) => {
      const color = PT.runColor(line.index);
      const base = data.length;
      data.push(line.max, line.min, line.last);
      series.push(
        { label: `${labels[line.index]} max`, stroke: alpha(color, 0.25), width: 1, spanGaps: true, show: true, value: (u, v) => fmt(v) },
        { label: `${labels[line.index]} min`, stroke: alpha(color, 0.25), width: 1, spanGaps: true, value: (u, v) => fmt(v) },
        { label: labels[line.index], stroke: color, width: 2, spanGaps: true, value: (u, v) => fmt(v) },
      );
      bands.push({ series: [base, base + 1], fill: alpha(color, 0.1) });
    });
    const chart = new uPlot({
      width: widthOf(el),
      height: HEIGHT + 30,
      scales: { x: { time: false } },
      axes: axes(history.x_label || "step"),
      series,
      bands,
      legend: { live: true },
    }, data, el);
    // The band edges need no legend entries of their own.
    el.querySelectorAll(".u-legend tr.u-series").forEach((row, i) => {
      if (i > 0 && i % 3 !== 0) row.style.display = "none";
    });
    fit(chart, el);
    return chart;
  }

  // Parallel coordinates: x is the axis number, each run a polyline over the scaled values.
  function parallel(el, coords) {
    const dims = coords.dims;
    const x = dims.map((_, i) => i);
    const data = [x];
    const series = [{ label: "axis", value: (u, v) => (v == null ? "" : dims[v].name) }];
    coords.runs.forEach((run, r) => {
      data.push(dims.map((d) => d.scaled[r]));
      series.push({
        label: run,
        stroke: PT.runColor(r),
        width: 2,
        spanGaps: true,
        points: { show: true, size: 7 },
        value: (u, v, si, idx) => (idx == null ? "–" : fmt(dims[idx].values[r])),
      });
    });
    const chart = new uPlot({
      width: widthOf(el),
      height: 320,
      scales: { x: { time: false, range: [-0.15, dims.length - 0.85] }, y: { range: [-0.05, 1.05] } },
      axes: [
        { splits: () => x, values: (u, vals) => vals.map((v) => (dims[v] ? dims[v].name : "")),
          grid: { stroke: "#c9cdd4", width: 1 }, stroke: "#4a5263", font: "11px ui-monospace, monospace", size: 36 },
        { splits: () => [0, 0.5, 1], values: () => ["min", "mid", "max"], grid: { stroke: "#eef0f3" }, stroke: "#6b7385", size: 44 },
      ],
      series,
      legend: { live: true },
    }, data, el);
    // Each axis' real range, under its name.
    const note = document.createElement("div");
    note.className = "small muted";
    note.style.marginTop = "0.4rem";
    note.textContent = dims.map((d) => `${d.name}: ${fmt(d.min)} – ${fmt(d.max)}`).join("   ·   ");
    el.appendChild(note);
    fit(chart, el);
    return chart;
  }

  return { envelope, setEnvelope, fromApi, exactRows, table, overlay, parallel, widthOf, fmt };
})();
