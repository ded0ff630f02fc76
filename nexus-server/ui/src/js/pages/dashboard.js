// Dashboard: summary tiles and usage charts, refreshed live; models with no price are called out
// while requests to them go uncosted.

import { get } from "../api.js";
import { h, icon, clear, card, statTile, refreshWhileVisible, fmtNum, fmtCompact, fmtMs, toast } from "../dom.js";
import { themedChart, axis, compactTicks, PALETTE_VARS } from "../charts.js";
import { requestsHash } from "./requests.js";

const REFRESH_MS = 5000;
const RANGES = {
  "24h": { label: "24 hours", bucket: "hour", seconds: 86400 },
  "7d": { label: "7 days", bucket: "hour", seconds: 7 * 86400 },
  "30d": { label: "30 days", bucket: "day", seconds: 30 * 86400 },
};
let rangeKey = "24h";

const TILES = [
  { key: "providers", label: "Providers", icon: "server", tone: "violet", sub: (s) => `${fmtNum(s.models)} models · ${fmtNum(s.keys)} keys` },
  { key: "models", label: "Models", icon: "cubes", tone: "cyan", sub: (s) => `across ${fmtNum(s.providers)} providers` },
  { key: "conversations", label: "Conversations", icon: "comments", tone: "pink", sub: (s) => `${fmtNum(s.requests)} requests` },
  { key: "rounds", label: "Rounds", icon: "message", tone: "green", sub: (s) => `${fmtNum(s.errors)} errors` },
  { key: "total_tokens", label: "Total tokens", icon: "coins", tone: "amber", sub: (s) => `${fmtCompact(s.prompt_tokens)} prompt · ${fmtCompact(s.completion_tokens)} completion`, compact: true },
  // Priced requests only: a request to a model with no known price has no cost, never $0.
  { key: "cost", label: "Spend", icon: "dollar-sign", tone: "green", money: true, sub: (s) => (s.unpriced_requests ? `${fmtNum(s.unpriced_requests)} unpriced requests` : "every request priced") },
];

function fmtUsd(v) {
  return `$${Number(v).toFixed(v >= 100 ? 0 : v >= 1 ? 2 : 4)}`;
}

function bucketLabels(range, now) {
  const step = range.bucket === "day" ? 86400 : 3600;
  const start = Math.floor((now - range.seconds) / step) * step + step;
  const end = Math.floor(now / step) * step;
  const ts = [];
  for (let t = start; t <= end; t += step) ts.push(t);
  const fmt = (t) => {
    const d = new Date(t * 1000);
    if (range.bucket === "day") return d.toLocaleDateString(undefined, { month: "short", day: "numeric" });
    if (range.seconds > 86400) return d.toLocaleString(undefined, { weekday: "short", hour: "2-digit", minute: "2-digit" });
    return d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  };
  return { ts, labels: ts.map(fmt), since: start };
}

/** The warning shown while requests went to models with no price: which models, and where to fix it. */
function renderUnpriced(panel, summary, models) {
  const unpriced = (models || []).filter((m) => !m.price_source);
  panel.hidden = !summary.unpriced_requests;
  if (panel.hidden) return;
  clear(panel).append(
    icon("triangle-exclamation"),
    h(
      "div",
      {},
      h("strong", { "data-testid": "unpriced-count", text: `${fmtNum(summary.unpriced_requests)} ${summary.unpriced_requests === 1 ? "request has" : "requests have"} no cost` }),
      " — ",
      unpriced.length
        ? `${unpriced.length === 1 ? "this model has" : "these models have"} no price and none in the catalog, so the spend above leaves them out. `
        : "the models they went to have prices now; reprice history on the spend page to cost them. ",
      h("a", { href: "#/models", "data-testid": "unpriced-link", text: "Set prices on the models page" }),
      unpriced.length
        ? h("div", { class: "chips" }, unpriced.map((m) => h("a", { class: "badge badge-warning", href: `#/models?provider=${m.provider_id}`, "data-model": m.name, title: `${m.name} on ${m.provider_name}`, text: `${m.name} · ${m.provider_name}` })))
        : null,
    ),
  );
}

function chartCard(title, ic, id, { span, tall, hint } = {}) {
  const canvas = h("canvas", { id, role: "img", "aria-label": hint ? `${title}: ${hint}` : title });
  const emptyMsg = h("div", { class: "chart-empty", hidden: true }, h("div", {}, icon("chart-line"), "No traffic in this range yet. Send a chat from the playground to see it here."));
  const actions = hint ? h("span", { class: "chart-hint muted small" }, icon("arrow-pointer"), h("span", { text: hint })) : null;
  const c = card({ title, icon: ic, cls: span ? "span-2" : "", actions, body: h("div", { class: ["chart-box", tall ? "tall" : ""] }, canvas, emptyMsg), testid: id });
  return { el: c, canvas, emptyMsg };
}

// The API a request came in through, as the stats name it.
const ENDPOINT_LABELS = { chat: "Chat completions", messages: "Anthropic Messages", responses: "Responses", embeddings: "Embeddings" };

function aggregate(points) {
  const m = new Map();
  // Requests refused before any provider was chosen (e.g. all cooling down) have no group.
  for (const p of points) {
    const g = p.group === "(none)" || p.group === "" ? "not routed" : p.group;
    m.set(g, (m.get(g) || 0) + p.requests);
  }
  return [...m.entries()].sort((a, b) => b[1] - a[1]);
}

export default {
  title: "Dashboard",
  subtitle: "Traffic, tokens and latency across every provider",
  async mount(view, ctx) {
    const live = h("span", { class: "live", title: `Refreshes every ${REFRESH_MS / 1000} s` }, h("span", { class: "live-dot" }), h("span", { class: "live-text", text: "Live" }));
    const seg = h("div", { class: "segmented", role: "group", "aria-label": "Time range" });
    for (const [k, r] of Object.entries(RANGES)) {
      seg.appendChild(
        h("button", { type: "button", class: k === rangeKey ? "active" : "", "data-range": k, text: r.label, on: { click: () => {
          rangeKey = k;
          for (const b of seg.children) b.classList.toggle("active", b.dataset.range === k);
          refresh(true);
        } } }),
      );
    }
    ctx.setActions(live, seg);

    const tiles = h("div", { class: "tiles" }, TILES.map((t) => statTile(t.key, t.label, t.icon, t.tone)));
    const cTokens = chartCard("Tokens over time", "coins", "chart-tokens", { span: true, tall: true, hint: "click a bar for its requests" });
    const cModels = chartCard("Requests by model", "cubes", "chart-models", { hint: "click for requests" });
    const cProviders = chartCard("Requests by provider", "server", "chart-providers", { hint: "click for requests" });
    const cEndpoints = chartCard("Requests by API", "plug", "chart-endpoints", { hint: "click for requests" });
    const cLatency = chartCard("Latency and errors", "gauge-high", "chart-latency", { hint: "click for requests" });

    // What the charts show, for their click handlers: bucket starts, bucket size, the range's
    // start, and each categorical chart's groups as the stats name them.
    const shown = { ts: [], step: 3600, since: 0, models: [], providers: [], endpoints: [] };
    const go = (filters) => ctx.navigate(requestsHash(filters));
    const pointer = (evt, els) => {
      const t = evt.native && evt.native.target;
      if (t) t.style.cursor = els.length ? "pointer" : "default";
    };
    /** Click on a time-series chart: the requests of that bucket. */
    const bucketClick = (evt, _els, chart) => {
      const pts = chart.getElementsAtEventForMode(evt, "index", { intersect: false }, false);
      if (!pts.length) return;
      const t = shown.ts[pts[0].index];
      if (t === undefined) return;
      go({ since: t, until: t + shown.step });
    };
    /** Click on a per-group chart: that group's requests over the range. */
    const groupClick = (kind) => async (_evt, els) => {
      if (!els.length) return;
      const g = shown[kind][els[0].index];
      if (g === undefined) return;
      const f = { since: shown.since };
      if (kind === "models" && g !== "not routed") f.model = g;
      if (kind === "endpoints" && ENDPOINT_LABELS[g]) f.endpoint = g;
      if (kind === "providers" && g !== "not routed") {
        try {
          const p = (await get("/api/providers")).find((x) => x.name === g);
          if (p) f.provider_id = p.id;
        } catch (e) {
          toast(e.message, "error");
          return;
        }
      }
      go(f);
    };
    const unpricedPanel = h("div", { class: "callout callout-warning unpriced-panel", role: "status", "data-testid": "unpriced-panel", hidden: true });
    clear(view).append(tiles, unpricedPanel, h("div", { class: "charts" }, cTokens.el, cModels.el, cProviders.el, cEndpoints.el, cLatency.el));

    const charts = [];
    const tokensChart = themedChart(cTokens.canvas, () => ({
      type: "bar",
      data: { labels: [], datasets: [] },
      options: {
        interaction: { mode: "index", intersect: false },
        onClick: bucketClick,
        onHover: pointer,
        scales: { x: axis({ stacked: true, grid: { display: false } }), y: axis({ stacked: true, beginAtZero: true, suggestedMax: 10, ticks: { ...compactTicks, precision: 0 } }) },
        plugins: { legend: { position: "top", align: "end" } },
        datasets: { bar: { borderRadius: 4, borderSkipped: false, maxBarThickness: 28 } },
      },
    }));
    const modelsChart = themedChart(cModels.canvas, () => ({
      type: "bar",
      data: { labels: [], datasets: [] },
      options: {
        indexAxis: "y",
        onClick: groupClick("models"),
        onHover: pointer,
        scales: { x: axis({ beginAtZero: true, suggestedMax: 5, ticks: { precision: 0 } }), y: axis({ grid: { display: false } }) },
        plugins: { legend: { display: false } },
        datasets: { bar: { borderRadius: 5, maxBarThickness: 22 } },
      },
    }));
    const providersChart = themedChart(cProviders.canvas, () => ({
      type: "doughnut",
      data: { labels: [], datasets: [] },
      options: { cutout: "64%", onClick: groupClick("providers"), onHover: pointer, plugins: { legend: { position: "right" } } },
    }));
    const endpointsChart = themedChart(cEndpoints.canvas, () => ({
      type: "doughnut",
      data: { labels: [], datasets: [] },
      options: { cutout: "64%", onClick: groupClick("endpoints"), onHover: pointer, plugins: { legend: { position: "right" } } },
    }));
    const latencyChart = themedChart(cLatency.canvas, () => ({
      type: "bar",
      data: { labels: [], datasets: [] },
      options: {
        interaction: { mode: "index", intersect: false },
        onClick: bucketClick,
        onHover: pointer,
        scales: {
          x: axis({ grid: { display: false } }),
          y: axis({ beginAtZero: true, suggestedMax: 10, position: "left", title: { display: true, text: "ms" } }),
          y1: axis({ beginAtZero: true, suggestedMax: 5, position: "right", grid: { display: false }, ticks: { precision: 0 }, title: { display: true, text: "errors" } }),
        },
        plugins: { legend: { position: "top", align: "end" }, tooltip: { callbacks: { label: (c) => (c.dataset.yAxisID === "y1" ? ` ${c.dataset.label}: ${c.raw}` : ` ${c.dataset.label}: ${fmtMs(c.raw)}`) } } },
      },
    }));
    charts.push(tokensChart, modelsChart, providersChart, endpointsChart, latencyChart);

    let last = null;
    let inflight = false;
    let failed = false;

    async function refresh(force) {
      if (inflight || (!force && document.hidden) || !ctx.isCurrent()) return;
      inflight = true;
      const range = RANGES[rangeKey];
      const now = Math.floor(Date.now() / 1000);
      const { ts, labels, since } = bucketLabels(range, now);
      const q = `bucket=${range.bucket}&since=${since}`;
      try {
        const [summary, all, byModel, byProvider, byEndpoint] = await Promise.all([
          get("/api/stats/summary"),
          get(`/api/stats/timeseries?${q}`),
          get(`/api/stats/timeseries?${q}&group_by=model`),
          get(`/api/stats/timeseries?${q}&group_by=provider`),
          get(`/api/stats/timeseries?${q}&group_by=endpoint`),
        ]);
        // Only while some requests went uncosted: which models lack a price.
        const models = summary.unpriced_requests ? await get("/api/models") : null;
        if (!ctx.isCurrent()) return;
        renderUnpriced(unpricedPanel, summary, models);
        failed = false;
        live.classList.remove("paused");
        live.querySelector(".live-text").textContent = `Live · ${new Date().toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" })}`;
        for (const t of TILES) {
          const el = tiles.querySelector(`[data-stat="${t.key}"]`);
          const v = summary[t.key] ?? 0;
          const valueEl = el.querySelector(".tile-value");
          valueEl.textContent = t.money ? fmtUsd(v) : t.compact ? fmtCompact(v) : fmtNum(v);
          valueEl.title = t.money ? `$${v}` : fmtNum(v);
          el.classList.toggle("tile-warn", Boolean(t.money && summary.unpriced_requests));
          el.dataset.value = String(v);
          el.querySelector(".tile-sub").textContent = t.sub(summary);
          if (last && last[t.key] !== v) {
            el.classList.remove("flash");
            void el.offsetWidth;
            el.classList.add("flash");
          }
        }
        last = summary;

        shown.ts = ts;
        shown.step = range.bucket === "day" ? 86400 : 3600;
        shown.since = since;
        const idx = new Map(ts.map((t, i) => [t, i]));
        const zeros = () => ts.map(() => 0);
        const prompt = zeros();
        const completion = zeros();
        const requests = zeros();
        const errors = zeros();
        const latency = ts.map(() => null);
        const ttft = ts.map(() => null);
        for (const p of all.points) {
          const i = idx.get(p.ts);
          if (i === undefined) continue;
          prompt[i] += p.prompt_tokens;
          completion[i] += p.completion_tokens;
          requests[i] += p.requests;
          errors[i] += p.errors;
          if (p.requests > 0) latency[i] = Math.round(p.avg_latency_ms * 10) / 10;
          if (p.avg_ttft_ms !== null && p.avg_ttft_ms !== undefined) ttft[i] = Math.round(p.avg_ttft_ms * 10) / 10;
        }
        const any = all.points.some((p) => p.requests > 0);
        cTokens.emptyMsg.hidden = any;
        cLatency.emptyMsg.hidden = any;
        tokensChart.update({
          labels,
          datasets: [
            { label: "Prompt", data: prompt, colorVar: "--chart-1" },
            { label: "Completion", data: completion, colorVar: "--chart-2" },
          ],
        });
        latencyChart.update({
          labels,
          datasets: [
            { type: "line", label: "Avg latency", data: latency, colorVar: "--chart-1", yAxisID: "y", tension: 0.3, spanGaps: true, pointRadius: 2, borderWidth: 2, fillAlpha: 0.15 },
            { type: "line", label: "Avg TTFT", data: ttft, colorVar: "--chart-4", yAxisID: "y", tension: 0.3, spanGaps: true, pointRadius: 2, borderWidth: 2, borderDash: [5, 4], fillAlpha: 0.15 },
            { type: "bar", label: "Errors", data: errors, colorVar: "--chart-5", yAxisID: "y1", borderRadius: 3, maxBarThickness: 14, fillAlpha: 0.7 },
          ],
        });
        const m = aggregate(byModel.points).slice(0, 10);
        shown.models = m.map((x) => x[0]);
        cModels.emptyMsg.hidden = m.length > 0;
        modelsChart.update({
          labels: m.map((x) => x[0]),
          datasets: [{ label: "Requests", data: m.map((x) => x[1]), colorVars: m.map((_, i) => PALETTE_VARS[i % PALETTE_VARS.length]) }],
        });
        const p = aggregate(byProvider.points);
        shown.providers = p.map((x) => x[0]);
        cProviders.emptyMsg.hidden = p.length > 0;
        providersChart.update({
          labels: p.map((x) => x[0]),
          datasets: [{ label: "Requests", data: p.map((x) => x[1]), colorVars: p.map((_, i) => PALETTE_VARS[i % PALETTE_VARS.length]), segmentBorder: true, borderWidth: 2 }],
        });
        const rawEndpoints = aggregate(byEndpoint.points);
        shown.endpoints = rawEndpoints.map((x) => x[0]);
        const e = rawEndpoints.map(([g, n]) => [ENDPOINT_LABELS[g] || g, n]);
        cEndpoints.emptyMsg.hidden = e.length > 0;
        cEndpoints.el.dataset.groups = e.map((x) => `${x[0]}=${x[1]}`).join(",");
        endpointsChart.update({
          labels: e.map((x) => x[0]),
          datasets: [{ label: "Requests", data: e.map((x) => x[1]), colorVars: e.map((_, i) => PALETTE_VARS[i % PALETTE_VARS.length]), segmentBorder: true, borderWidth: 2 }],
        });
        view.dataset.loaded = "true";
      } catch (e) {
        if (!ctx.isCurrent()) return;
        live.classList.add("paused");
        live.querySelector(".live-text").textContent = "Offline";
        if (!failed) toast(`Dashboard refresh failed: ${e.message}`, "error");
        failed = true;
      } finally {
        inflight = false;
      }
    }

    await refresh(true);
    const stop = refreshWhileVisible(refresh, REFRESH_MS);
    return () => {
      stop();
      for (const c of charts) c.destroy();
    };
  },
};
