// A client key's budget as the keys and spend pages show it: the spent / budget bar, its badges
// and the period. Every figure comes from the key as the API returns it (spent_usd, budget_usd,
// soft_budget_usd, soft_budget_reached, budget_reached, period_end); nothing is estimated here.

import { h, badge, fmtUsd, fmtRelative } from "./dom.js";

export const PERIODS = [
  { value: "daily", label: "Daily" },
  { value: "weekly", label: "Weekly" },
  { value: "monthly", label: "Monthly" },
  { value: "total", label: "Total (never resets)" },
];
const PERIOD_NAMES = { daily: "Daily", weekly: "Weekly", monthly: "Monthly", total: "Total" };

/** The key has a hard budget or a soft alert threshold. */
export function hasBudget(k) {
  return k.budget_usd != null || k.soft_budget_usd != null;
}

/** ok, soft (alert threshold reached) or over (hard budget reached), as the server says. */
export function budgetState(k) {
  if (k.budget_reached) return "over";
  if (k.soft_budget_reached) return "soft";
  return "ok";
}

/** spent / budget (or / the soft threshold when the key has only that); not clamped. */
export function budgetRatio(k) {
  const cap = k.budget_usd ?? k.soft_budget_usd;
  if (cap == null) return 0;
  return cap > 0 ? k.spent_usd / cap : 1;
}

function utcStamp(unix) {
  return `${new Date(unix * 1000).toLocaleString(undefined, { timeZone: "UTC", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23" })} UTC`;
}

/** "Monthly", and when it rolls over. */
export function periodText(k) {
  const name = PERIOD_NAMES[k.budget_period] || k.budget_period;
  if (!k.period_end) return { name, rollover: "never rolls over", title: "A total budget does not reset" };
  return { name, rollover: `rolls over ${fmtRelative(k.period_end)}`, title: `The next period starts ${utcStamp(k.period_end)}` };
}

/** The progress bar: its width is spent / cap, its colour the server's state, a tick at the soft threshold. */
export function budgetMeter(k, { compact = false } = {}) {
  const ratio = budgetRatio(k);
  const pct = Math.max(0, Math.min(100, ratio * 100));
  const state = budgetState(k);
  const softAt = k.budget_usd > 0 && k.soft_budget_usd != null ? Math.min(1, k.soft_budget_usd / k.budget_usd) : null;
  const cap = k.budget_usd ?? k.soft_budget_usd;
  const of = k.budget_usd != null ? "budget" : "soft alert threshold";
  return h(
    "div",
    {
      class: ["meter", compact ? "meter-sm" : ""],
      role: "progressbar",
      "aria-label": `${fmtUsd(k.spent_usd)} spent of a ${fmtUsd(cap)} ${of}`,
      "aria-valuemin": "0",
      "aria-valuemax": "100",
      "aria-valuenow": String(Math.round(pct)),
      title: `${fmtUsd(k.spent_usd)} of ${fmtUsd(cap)} (${(ratio * 100).toFixed(1)}%)`,
      "data-testid": "budget-meter",
      "data-value": String(ratio),
      "data-state": state,
    },
    h("span", { class: "meter-fill", style: { width: `${pct}%` } }),
    softAt !== null ? h("span", { class: "meter-mark", style: { left: `${softAt * 100}%` }, title: `Soft alert at ${fmtUsd(k.soft_budget_usd)}` }) : null,
  );
}

/** "$0.12 of $1.00" (and what is held by requests in flight). */
export function spendText(k) {
  const cap = k.budget_usd ?? k.soft_budget_usd;
  const parts = [`${fmtUsd(k.spent_usd)} of ${fmtUsd(cap)}`];
  if (k.budget_usd == null) parts.push("soft threshold, no hard limit");
  if (k.reserved_usd > 0) parts.push(`${fmtUsd(k.reserved_usd)} held in flight`);
  return parts.join(" · ");
}

/** The "soft alert" and "budget reached" badges, each exactly when the server reports it. */
export function budgetBadges(k) {
  const out = [];
  if (k.soft_budget_reached) out.push(withTestid(badge("soft alert", "warning", "bell"), "badge-soft", `Spend reached the soft threshold of ${fmtUsd(k.soft_budget_usd)} this period`));
  if (k.budget_reached) out.push(withTestid(badge("budget reached", "danger", "ban"), "badge-reached", "Requests are refused (429 insufficient_quota) until the period rolls over"));
  return out;
}

function withTestid(el, testid, title) {
  el.dataset.testid = testid;
  el.title = title;
  return el;
}
