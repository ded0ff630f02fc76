// Spend: cost over time by key, model or provider; totals per group for the range; each key's
// budget progress; and the explicit "reprice history" action (a dry run first, then the real one).

import { get, post } from "../api.js";
import { h, icon, clear, card, table, button, modal, field, select, toast, emptyState, badge, statTiles, oneAtATime, refreshWhileVisible, fmtNum, fmtCompact, fmtUsd } from "../dom.js";
import { themedChart, axis, PALETTE_VARS } from "../charts.js";
import { hasBudget, budgetMeter, budgetBadges, budgetRatio, periodText, spendText } from "../budget.js";
import { requestsHash } from "./requests.js";

const REFRESH_MS = 10000;
const RANGES = {
  "24h": { label: "24 hours", seconds: 86400, bucket: "hour" },
  "7d": { label: "7 days", seconds: 7 * 86400, bucket: "day" },
  "30d": { label: "30 days", seconds: 30 * 86400, bucket: "day" },
};
const BUCKETS = { hour: "Hourly", day: "Daily" };
const GROUPS = { key: { label: "Key", icon: "key" }, model: { label: "Model", icon: "cubes" }, provider: { label: "Provider", icon: "server" } };
// The chart stacks the dearest groups; the rest share one "other" series.
const MAX_SERIES = PALETTE_VARS.length - 1;

let rangeKey = "24h";
let bucket = "hour";
let groupBy = "key";

/** Bucket starts covering the range (the first one partial), their labels, and `since`. */
function buckets(range, bucketName, now) {
  const step = bucketName === "day" ? 86400 : 3600;
  const start = Math.floor((now - range.seconds) / step) * step;
  const end = Math.floor(now / step) * step;
  const ts = [];
  for (let t = start; t <= end; t += step) ts.push(t);
  const fmt = (t) => {
    const d = new Date(t * 1000);
    if (bucketName === "day") return d.toLocaleDateString(undefined, { month: "short", day: "numeric" });
    if (range.seconds > 86400) return d.toLocaleString(undefined, { weekday: "short", hour: "2-digit", minute: "2-digit" });
    return d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  };
  return { ts, labels: ts.map(fmt), since: start };
}

/** What a group is called; "(none)" means no client key (the playground) or never routed. */
function groupName(g) {
  if (g !== "(none)" && g !== "") return g;
  return groupBy === "key" ? "no client key" : "not routed";
}

/** Per-group totals for the range, dearest first (then busiest). */
function totals(points) {
  const m = new Map();
  for (const p of points) {
    const g = groupName(p.group);
    const t = m.get(g) || { group: g, cost: 0, requests: 0, errors: 0, prompt: 0, completion: 0 };
    t.cost += p.cost || 0;
    t.requests += p.requests;
    t.errors += p.errors;
    t.prompt += p.prompt_tokens;
    t.completion += p.completion_tokens;
    m.set(g, t);
  }
  return [...m.values()].sort((a, b) => b.cost - a.cost || b.requests - a.requests || a.group.localeCompare(b.group));
}

function segmented(label, entries, current, onPick, attr) {
  const seg = h("div", { class: "segmented", role: "group", "aria-label": label });
  for (const [k, text] of entries) {
    seg.appendChild(
      h("button", { type: "button", class: k === current() ? "active" : "", "aria-pressed": String(k === current()), [`data-${attr}`]: k, text, on: { click: () => {
        onPick(k);
        for (const b of seg.children) {
          const on = b.getAttribute(`data-${attr}`) === k;
          b.classList.toggle("active", on);
          b.setAttribute("aria-pressed", String(on));
        }
      } } }),
    );
  }
  return seg;
}

function openReprice({ models, providers, rangeLabel, rangeSince, onDone }) {
  const scope = select([{ value: "all", label: "All history" }, { value: "range", label: `The last ${rangeLabel}` }], "all", { name: "scope", "data-testid": "reprice-scope" });
  const model = select([{ value: "", label: "Every model" }, ...[...new Set(models.map((m) => m.name))].sort().map((n) => ({ value: n, label: n }))], "", { name: "model", "data-testid": "reprice-model" });
  const provider = select([{ value: "", label: "Every provider" }, ...providers.map((p) => ({ value: p.id, label: `${p.name} (#${p.id})` }))], "", { name: "provider_id" });
  const preview = h("div", { class: "reprice-preview", "data-testid": "reprice-preview", "aria-live": "polite" });
  const query = () => {
    const q = {};
    if (scope.value === "range") q.since = rangeSince;
    if (model.value) q.model = model.value;
    if (provider.value) q.provider_id = Number(provider.value);
    return q;
  };
  const confirmBtn = button("Reprice", { kind: "primary", icon: "rotate", attrs: { "data-testid": "reprice-confirm", disabled: true } });
  let seq = 0;
  let done = false;

  function report(r, { dry }) {
    const head = dry
      ? `${fmtNum(r.rows_changed)} of ${fmtNum(r.rows_examined)} rows would change`
      : `Repriced ${fmtNum(r.rows_changed)} of ${fmtNum(r.rows_examined)} rows`;
    return h(
      "div",
      { class: ["callout", dry ? "callout-info" : "callout-success"], "data-testid": dry ? "reprice-dry" : "reprice-result", "data-changed": String(r.rows_changed), "data-examined": String(r.rows_examined), "data-before": String(r.cost_before_usd), "data-after": String(r.cost_after_usd) },
      icon(dry ? "magnifying-glass-dollar" : "circle-check"),
      h(
        "div",
        {},
        h("strong", { "data-testid": "reprice-counts", text: head }),
        h("div", { class: "reprice-money", "data-testid": "reprice-money" }, h("span", { text: fmtUsd(r.cost_before_usd) }), icon("arrow-right"), h("span", { text: fmtUsd(r.cost_after_usd) })),
        r.unpriced_rows ? h("div", { class: "small", text: `${fmtNum(r.unpriced_rows)} answered rows have no price and stay without a cost.` }) : null,
      ),
    );
  }

  async function dryRun() {
    const mine = ++seq;
    confirmBtn.disabled = true;
    clear(preview).appendChild(h("div", { class: "loading small" }, h("span", { class: "spin" }), h("span", { text: "Counting what would change…" })));
    try {
      const r = await post("/api/stats/reprice", { ...query(), dry_run: true });
      if (mine !== seq) return;
      clear(preview).appendChild(report(r, { dry: true }));
      confirmBtn.disabled = r.rows_changed === 0;
      confirmBtn.querySelector("span").textContent = r.rows_changed ? `Reprice ${fmtNum(r.rows_changed)} rows` : "Nothing to reprice";
    } catch (e) {
      if (mine !== seq) return;
      clear(preview).appendChild(h("p", { class: "form-error", role: "alert", text: e.message }));
    }
  }

  confirmBtn.addEventListener("click", async () => {
    if (done) {
      m.close();
      return;
    }
    confirmBtn.disabled = true;
    confirmBtn.classList.add("busy");
    try {
      const r = await post("/api/stats/reprice", { ...query(), dry_run: false });
      done = true;
      seq += 1;
      for (const s of [scope, model, provider]) s.disabled = true;
      clear(preview).appendChild(report(r, { dry: false }));
      confirmBtn.querySelector("span").textContent = "Done";
      confirmBtn.querySelector("i").className = "fa-solid fa-check";
      toast(`Repriced ${fmtNum(r.rows_changed)} rows`);
      onDone();
    } catch (e) {
      clear(preview).appendChild(h("p", { class: "form-error", role: "alert", text: e.message }));
    } finally {
      confirmBtn.disabled = false;
      confirmBtn.classList.remove("busy");
    }
  });
  for (const s of [scope, model, provider]) s.addEventListener("change", dryRun);

  const body = h(
    "div",
    { class: "stack" },
    h("p", { class: "muted", text: "Recorded costs keep the prices they were made at. This recomputes them at today's prices (the models' own, else the catalog). It changes nothing until you confirm." }),
    h("div", { class: "form-grid" }, field("Rows", scope), field("Model", model), field("Provider", provider, { wide: true })),
    preview,
  );
  const m = modal({ title: "Reprice history", body, testid: "reprice-modal", actions: [button("Cancel", { onClick: () => m.close() }), confirmBtn] });
  dryRun();
}

export default {
  title: "Spend",
  subtitle: "Cost over time, budgets per key, and repricing",
  async mount(view, ctx) {
    const rangeSeg = segmented("Time range", Object.entries(RANGES).map(([k, r]) => [k, r.label]), () => rangeKey, (k) => {
      rangeKey = k;
      bucket = RANGES[k].bucket;
      for (const b of bucketSeg.children) {
        const on = b.dataset.bucket === bucket;
        b.classList.toggle("active", on);
        b.setAttribute("aria-pressed", String(on));
      }
      refresh(true);
    }, "range");
    const bucketSeg = segmented("Bucket", Object.entries(BUCKETS), () => bucket, (k) => {
      bucket = k;
      refresh(true);
    }, "bucket");
    const repriceBtn = button("Reprice history…", { icon: "rotate", attrs: { "data-testid": "reprice" }, onClick: async () => {
      try {
        const [models, providers] = await Promise.all([get("/api/models"), get("/api/providers")]);
        const r = RANGES[rangeKey];
        openReprice({ models, providers, rangeLabel: r.label, rangeSince: Math.floor(Date.now() / 1000) - r.seconds, onDone: () => refresh(true) });
      } catch (e) {
        toast(e.message, "error");
      }
    } });
    ctx.setActions(rangeSeg, bucketSeg, repriceBtn);

    const groupSeg = segmented("Group by", Object.entries(GROUPS).map(([k, g]) => [k, g.label]), () => groupBy, (k) => {
      groupBy = k;
      refresh(true);
    }, "groupby");

    const tiles = statTiles([
      ["cost", "Spend in range", "dollar-sign", "green"],
      ["requests", "Requests in range", "arrow-right-arrow-left", "cyan"],
      ["tokens", "Tokens in range", "coins", "amber"],
      ["budgets", "Keys with a budget", "wallet", "violet"],
    ]);
    const canvas = h("canvas", { role: "img", "aria-label": "Cost over time" });
    const emptyMsg = h("div", { class: "chart-empty", hidden: true }, h("div", {}, icon("chart-column"), "No priced requests in this range yet."));
    const chartCard = card({ title: "Cost over time", icon: "chart-column", actions: groupSeg, cls: "span-2", testid: "spend-chart", body: h("div", { class: "chart-box tall" }, canvas, emptyMsg) });
    const totalsHost = h("div");
    const totalsTitle = h("span", { text: "Totals" });
    const totalsCard = h("section", { class: "card flush span-2", "data-testid": "spend-totals" }, h("header", { class: "card-head" }, h("h2", {}, icon("table-list"), totalsTitle)), h("div", { class: "card-body" }, totalsHost));
    const budgetsHost = h("div");
    const budgetsCard = h(
      "section",
      { class: "card flush span-2", "data-testid": "budgets" },
      h("header", { class: "card-head" }, h("h2", {}, icon("wallet"), h("span", { text: "Budgets" })), h("div", { class: "card-actions" }, h("a", { href: "#/keys", class: "small", text: "Set budgets on the keys page" }))),
      h("div", { class: "card-body" }, budgetsHost),
    );
    clear(view).append(tiles, h("div", { class: "charts" }, chartCard, totalsCard, budgetsCard));

    const money = (v) => fmtUsd(v);
    // What the chart shows, for its click handler: bucket starts and size, and the keys (a key's
    // series is named "name (prefix)" by the stats).
    const shown = { ts: [], step: 3600, keys: [] };
    /** A click on a bar: that bucket's requests, of the clicked series' key, model or provider. */
    const onBarClick = async (evt, _els, c) => {
      const hit = c.getElementsAtEventForMode(evt, "nearest", { intersect: true }, false);
      const pts = hit.length ? hit : c.getElementsAtEventForMode(evt, "index", { intersect: false }, false);
      if (!pts.length) return;
      const t = shown.ts[pts[0].index];
      if (t === undefined) return;
      const f = { since: t, until: t + shown.step };
      const label = hit.length ? c.data.datasets[hit[0].datasetIndex].label : null;
      if (label && label !== "other") {
        if (groupBy === "key") {
          const k = shown.keys.find((x) => `${x.name} (${x.prefix})` === label);
          if (k) f.key_id = k.id;
        } else if (groupBy === "model" && label !== "not routed") {
          f.model = label;
        } else if (groupBy === "provider" && label !== "not routed") {
          try {
            const p = (await get("/api/providers")).find((x) => x.name === label);
            if (p) f.provider_id = p.id;
          } catch (e) {
            toast(e.message, "error");
            return;
          }
        }
      }
      ctx.navigate(requestsHash(f));
    };
    const chart = themedChart(canvas, () => ({
      type: "bar",
      data: { labels: [], datasets: [] },
      options: {
        interaction: { mode: "index", intersect: false },
        onClick: onBarClick,
        onHover: (evt, els) => {
          if (evt.native && evt.native.target) evt.native.target.style.cursor = els.length ? "pointer" : "default";
        },
        scales: {
          x: axis({ stacked: true, grid: { display: false } }),
          y: axis({ stacked: true, beginAtZero: true, suggestedMax: 0.01, ticks: { callback: (v) => money(v), maxTicksLimit: 6 } }),
        },
        plugins: {
          legend: { position: "top", align: "end" },
          tooltip: { filter: (c) => c.raw > 0, callbacks: { label: (c) => ` ${c.dataset.label}: ${money(c.raw)}` } },
        },
        datasets: { bar: { borderRadius: 3, borderSkipped: false, maxBarThickness: 28 } },
      },
    }));

    let failed = false;

    function renderChart(points, ts, labels) {
      const idx = new Map(ts.map((t, i) => [t, i]));
      const all = totals(points);
      const top = all.filter((t) => t.cost > 0).slice(0, MAX_SERIES).map((t) => t.group);
      const series = new Map(top.map((g) => [g, ts.map(() => 0)]));
      const other = ts.map(() => 0);
      let anyOther = false;
      for (const p of points) {
        const i = idx.get(p.ts);
        if (i === undefined || !p.cost) continue;
        const s = series.get(groupName(p.group));
        if (s) s[i] += p.cost;
        else {
          other[i] += p.cost;
          anyOther = true;
        }
      }
      const datasets = top.map((g, i) => ({ label: g, data: series.get(g), colorVar: PALETTE_VARS[i % PALETTE_VARS.length] }));
      if (anyOther) datasets.push({ label: "other", data: other, colorVar: PALETTE_VARS[PALETTE_VARS.length - 1] });
      emptyMsg.hidden = datasets.length > 0;
      // What the chart draws, for the test and for anyone reading the DOM.
      chartCard.dataset.groups = datasets.map((d) => `${d.label}=${d.data.reduce((a, b) => a + b, 0)}`).join(",");
      chart.update({ labels, datasets });
    }

    // Model name → [priced rows, unpriced rows] over every provider serving it.
    let pricing = new Map();
    function costCell(t) {
      const pr = groupBy === "model" ? pricing.get(t.group) : null;
      if (pr && pr[0] === 0 && pr[1] > 0) {
        // An unpriced model's requests have no cost: say so rather than show $0.
        return h("span", { class: "badge badge-warning", "data-testid": "unpriced", title: "No price set and none in the catalog: set one on the models page, then reprice", text: "unpriced" });
      }
      return h("span", {}, fmtUsd(t.cost), pr && pr[1] > 0 ? h("span", { class: "muted small", title: "Some providers serve this model without a price", text: " (partly unpriced)" }) : null);
    }

    function renderTotals(points) {
      totalsTitle.textContent = `Totals by ${GROUPS[groupBy].label.toLowerCase()} · last ${RANGES[rangeKey].label}`;
      const all = totals(points);
      clear(totalsHost);
      if (!all.length) {
        totalsHost.appendChild(emptyState({ icon: "receipt", title: "No requests in this range", text: "Traffic through the gateway shows here with what it cost." }));
        return;
      }
      const sum = all.reduce((a, t) => a + t.cost, 0);
      const rows = all.map((t) =>
        h(
          "tr",
          { "data-group": t.group, "data-cost": String(t.cost), "data-requests": String(t.requests) },
          h("td", {}, h("span", { class: "cell-main", text: t.group })),
          h("td", { class: "num", "data-testid": "group-cost", title: `$${t.cost}` }, costCell(t)),
          h("td", { class: "num hide-sm" }, sum > 0 ? h("div", { class: "share" }, h("span", { class: "share-bar", style: { width: `${(t.cost / sum) * 100}%` } }), h("span", { text: `${((t.cost / sum) * 100).toFixed(1)}%` })) : "–"),
          h("td", { class: "num", text: fmtNum(t.requests) }),
          h("td", { class: "num", title: `${fmtNum(t.prompt)} prompt · ${fmtNum(t.completion)} completion` }, fmtCompact(t.prompt + t.completion), h("div", { class: "cell-sub", text: `${fmtCompact(t.prompt)} in · ${fmtCompact(t.completion)} out` })),
        ),
      );
      totalsHost.appendChild(
        table(
          [{ label: GROUPS[groupBy].label }, { label: "Cost", cls: "num" }, { label: "Share", cls: "num hide-sm" }, { label: "Requests", cls: "num" }, { label: "Tokens", cls: "num" }],
          rows,
          { testid: "totals-table" },
        ),
      );
    }

    function renderBudgets(keys) {
      const list = keys.filter(hasBudget).sort((a, b) => b.spent_usd / (b.budget_usd ?? b.soft_budget_usd ?? 1) - a.spent_usd / (a.budget_usd ?? a.soft_budget_usd ?? 1) || a.name.localeCompare(b.name));
      clear(budgetsHost);
      if (!list.length) {
        budgetsHost.appendChild(emptyState({ icon: "wallet", title: "No key has a budget", text: "Give a client key a budget (daily, weekly, monthly or total) and a soft alert threshold on the keys page.", action: button("Go to API keys", { kind: "primary", icon: "key", onClick: () => ctx.navigate("#/keys") }) }));
        return;
      }
      const rows = list.map((k) => {
        const p = periodText(k);
        const badges = budgetBadges(k);
        return h(
          "tr",
          { "data-id": k.id, "data-name": k.name },
          h("td", {}, h("div", { class: "cell-main", text: k.name }), h("div", { class: "cell-sub" }, h("span", { class: "mono", text: `${k.prefix}…` }), k.enabled ? null : " · disabled")),
          h("td", { class: "budget-td" }, h("div", { class: "budget-cell" }, h("div", { class: "budget-line" }, h("span", { class: "budget-spent", "data-testid": "budget-spent", text: spendText(k) }), h("span", { class: "budget-pct", text: `${(budgetRatio(k) * 100).toFixed(1)}%` })), budgetMeter(k))),
          h("td", { class: "num", "data-testid": "budget-left", text: k.budget_left_usd == null ? "–" : fmtUsd(k.budget_left_usd) }),
          h("td", { class: "small" }, h("div", { text: p.name }), h("div", { class: "muted", title: p.title, text: p.rollover })),
          h("td", { "data-testid": "budget-status" }, h("div", { class: "chips" }, badges.length ? badges : badge("within budget", "success", "circle-check"))),
        );
      });
      budgetsHost.appendChild(table([{ label: "Key" }, { label: "Spent this period" }, { label: "Left", cls: "num" }, { label: "Period" }, { label: "Status" }], rows, { testid: "budgets-table" }));
    }

    function setTile(k, value, sub) {
      const el = tiles.querySelector(`[data-stat="${k}"]`);
      el.querySelector(".tile-value").textContent = value;
      el.querySelector(".tile-sub").textContent = sub;
    }

    const refresh = oneAtATime(async () => {
      const range = RANGES[rangeKey];
      const { ts, labels, since } = buckets(range, bucket, Math.floor(Date.now() / 1000));
      try {
        const [series, keys, summary, models] = await Promise.all([
          get(`/api/stats/timeseries?bucket=${bucket}&group_by=${groupBy}&since=${since}`),
          get("/api/keys"),
          get("/api/stats/summary"),
          groupBy === "model" ? get("/api/models") : null,
        ]);
        if (!ctx.isCurrent()) return;
        pricing = new Map();
        for (const m of models || []) {
          const pr = pricing.get(m.name) || [0, 0];
          pr[m.price_source ? 0 : 1] += 1;
          pricing.set(m.name, pr);
        }
        failed = false;
        const points = series.points.filter((p) => p.ts >= since);
        shown.ts = ts;
        shown.step = bucket === "day" ? 86400 : 3600;
        shown.keys = keys;
        renderChart(points, ts, labels);
        renderTotals(points);
        renderBudgets(keys);
        const t = totals(points);
        const cost = t.reduce((a, x) => a + x.cost, 0);
        const reqs = t.reduce((a, x) => a + x.requests, 0);
        const toks = t.reduce((a, x) => a + x.prompt + x.completion, 0);
        const budgeted = keys.filter(hasBudget);
        setTile("cost", fmtUsd(cost), summary.unpriced_requests ? `${fmtNum(summary.unpriced_requests)} unpriced requests in all` : "every request priced");
        tiles.querySelector('[data-stat="cost"]').classList.toggle("tile-warn", Boolean(summary.unpriced_requests));
        setTile("requests", fmtNum(reqs), `${fmtNum(t.reduce((a, x) => a + x.errors, 0))} errors`);
        setTile("tokens", fmtCompact(toks), `${fmtCompact(t.reduce((a, x) => a + x.prompt, 0))} prompt · ${fmtCompact(t.reduce((a, x) => a + x.completion, 0))} completion`);
        setTile("budgets", fmtNum(budgeted.length), `${fmtNum(budgeted.filter((k) => k.soft_budget_reached && !k.budget_reached).length)} alerting · ${fmtNum(budgeted.filter((k) => k.budget_reached).length)} reached`);
        view.dataset.loaded = "true";
      } catch (e) {
        if (!ctx.isCurrent()) return;
        if (!failed) toast(`Spend refresh failed: ${e.message}`, "error");
        failed = true;
      }
    }, ctx.isCurrent);

    await refresh(true);
    const stop = refreshWhileVisible(refresh, REFRESH_MS);
    return () => {
      stop();
      chart.destroy();
    };
  },
};
