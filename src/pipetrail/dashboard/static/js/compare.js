// The compare page: metric histories overlaid, parallel coordinates, "only differences".
"use strict";

(function () {
  const data = PT.pageData();
  const labels = data.runs || [];

  document.querySelectorAll(".chart-box[data-history]").forEach((box) => {
    const history = data.histories[Number(box.dataset.history)];
    if (history && window.uPlot) PTCharts.overlay(box.querySelector('[data-role="chart"]'), history, labels);
  });

  const parallel = document.getElementById("parallel");
  if (parallel && data.coordinates && window.uPlot) PTCharts.parallel(parallel, data.coordinates);

  const toggle = document.querySelector('[data-role="only-diff"]');
  if (toggle) {
    toggle.addEventListener("change", () => {
      document.querySelector('[data-role="diff-table"]').classList.toggle("only-diff", toggle.checked);
    });
  }
})();
