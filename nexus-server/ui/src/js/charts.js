// Chart.js (vendored UMD build, loaded as a classic script before the modules) with the UI's
// colours; charts re-theme themselves when the theme switches.

import { cssVar, onThemeChange } from "./theme.mjs";
import { fmtCompact } from "./dom.js";

export const PALETTE_VARS = ["--chart-1", "--chart-2", "--chart-3", "--chart-4", "--chart-5", "--chart-6", "--chart-7", "--chart-8"];

export function palette() {
  return PALETTE_VARS.map(cssVar);
}

export function alpha(color, a) {
  const m = /^#([0-9a-f]{6})$/i.exec(color);
  if (!m) return color;
  const n = parseInt(m[1], 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${a})`;
}

function ChartLib() {
  const C = window.Chart;
  if (!C) throw new Error("the chart library did not load");
  return C;
}

function applyDefaults() {
  const C = ChartLib();
  C.defaults.font.family = getComputedStyle(document.body).fontFamily;
  C.defaults.font.size = 12;
  C.defaults.color = cssVar("--muted");
  C.defaults.borderColor = cssVar("--chart-grid");
  // Set the one field: Chart.js reads the animation option names (type, easing, ...) from the
  // keys of this object, so replacing it would drop `type` and break colour animations on hover.
  C.defaults.animation.duration = 300;
  C.defaults.maintainAspectRatio = false;
  C.defaults.plugins.legend.labels.boxWidth = 10;
  C.defaults.plugins.legend.labels.boxHeight = 10;
  C.defaults.plugins.legend.labels.usePointStyle = true;
  C.defaults.plugins.tooltip.backgroundColor = cssVar("--surface");
  C.defaults.plugins.tooltip.titleColor = cssVar("--text");
  C.defaults.plugins.tooltip.bodyColor = cssVar("--text-2");
  C.defaults.plugins.tooltip.borderColor = cssVar("--border-strong");
  C.defaults.plugins.tooltip.borderWidth = 1;
  C.defaults.plugins.tooltip.padding = 10;
  C.defaults.plugins.tooltip.boxPadding = 4;
  C.defaults.plugins.tooltip.cornerRadius = 8;
}

/** Scales options with the theme's grid and tick colours. */
export function axis(extra = {}) {
  const { ticks = {}, grid = {}, ...rest } = extra;
  return {
    grid: { color: cssVar("--chart-grid"), drawTicks: false, ...grid },
    border: { display: false },
    ticks: { color: cssVar("--muted"), padding: 8, maxRotation: 0, autoSkipPadding: 14, ...ticks },
    ...rest,
  };
}

export const compactTicks = { callback: (v) => fmtCompact(v) };

/**
 * Creates a chart on `canvas`. `build()` returns the full Chart.js config and is called again
 * (and the chart recreated) when the theme changes, so colours always match.
 */
export function themedChart(canvas, build) {
  applyDefaults();
  const C = ChartLib();
  const first = build();
  recolor(first);
  let chart = new C(canvas, first);
  const off = onThemeChange(() => {
    applyDefaults();
    const data = chart.data;
    chart.destroy();
    const cfg = build();
    cfg.data = data;
    recolor(cfg);
    chart = new C(canvas, cfg);
  });
  return {
    get chart() {
      return chart;
    },
    update(data) {
      chart.data.labels = data.labels;
      // Replace dataset values in place so Chart.js animates rather than redraws.
      data.datasets.forEach((ds, i) => {
        if (chart.data.datasets[i]) Object.assign(chart.data.datasets[i], ds);
        else chart.data.datasets.push(ds);
      });
      chart.data.datasets.length = data.datasets.length;
      recolor({ data: chart.data, type: chart.config.type });
      chart.update();
    },
    destroy() {
      off();
      chart.destroy();
    },
  };
}

/** Datasets carry `colorVar`; resolve them against the current theme. */
function recolor(cfg) {
  for (const ds of cfg.data.datasets || []) {
    if (ds.colorVars) {
      const cols = ds.colorVars.map(cssVar);
      ds.backgroundColor = cols.map((c) => alpha(c, ds.fillAlpha ?? 0.85));
      ds.borderColor = ds.segmentBorder ? cssVar("--surface") : cols;
      ds.hoverBackgroundColor = cols;
    } else if (ds.colorVar) {
      const c = cssVar(ds.colorVar);
      ds.borderColor = c;
      ds.backgroundColor = alpha(c, ds.fillAlpha ?? 0.85);
      ds.pointBackgroundColor = c;
      ds.hoverBackgroundColor = c;
    }
  }
}

export { recolor };
