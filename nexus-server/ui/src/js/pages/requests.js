// Requests: the request explorer over GET /api/requests. The filters live in the hash query
// (#/requests?model=gpt-4o&since=...) so a link opens the same view; the table fetches pages of
// 50 and "Load more" follows `next_cursor` (never everything: the server may hold millions of
// rows). A row opens its detail (every field, the attempt log and, when the hub recorded them,
// the request's last user message and the answer). Export streams every matching row as JSONL or
// CSV through an authenticated fetch saved as a Blob (a plain link cannot carry the token).

import { get, fetchBlob } from "../api.js";
import {
  h, icon, clear, card, table, button, modal, field, input, select, badge, emptyState, fmtNum, fmtUsd, fmtMs, fmtCompact, copyText, debounce, spinner, errorCallout,
} from "../dom.js";

const PAGE_SIZE = 50;
/** The query parameters the API takes as filters (anything else in the hash stays in the UI). */
export const FILTERS = ["model", "key_id", "provider_id", "endpoint", "status", "error_kind", "conversation_id", "since", "until"];

const ENDPOINTS = [
  { value: "chat", label: "Chat completions" },
  { value: "messages", label: "Anthropic Messages" },
  { value: "responses", label: "Responses" },
  { value: "embeddings", label: "Embeddings" },
];
const STATUSES = [
  { value: "ok", label: "Succeeded (< 400)" },
  { value: "error", label: "Failed (≥ 400)" },
  ...["200", "400", "401", "403", "404", "408", "413", "422", "429", "500", "502", "503", "504"].map((c) => ({ value: c, label: c })),
];
const ERROR_KINDS = [
  "invalid_request", "payload_too_large", "authentication", "permission_denied", "not_found", "conflict", "rate_limited",
  "insufficient_quota", "timeout", "upstream", "transport", "unavailable", "storage", "config", "internal",
];
const RANGES = [
  { value: "", label: "Any time" },
  { value: "3600", label: "Last hour" },
  { value: "86400", label: "Last 24 hours" },
  { value: String(7 * 86400), label: "Last 7 days" },
  { value: String(30 * 86400), label: "Last 30 days" },
  { value: "custom", label: "Custom range" },
];

/** The hash of the requests page with these filters (empty values left out). */
export function requestsHash(filters) {
  const q = new URLSearchParams();
  for (const k of FILTERS) {
    const v = filters[k];
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `#/requests?${s}` : "#/requests";
}

function apiQuery(filters, extra = {}) {
  const q = new URLSearchParams();
  for (const k of FILTERS) if (filters[k]) q.set(k, filters[k]);
  for (const [k, v] of Object.entries(extra)) if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  return q.toString();
}

const pad = (n) => String(n).padStart(2, "0");
/** Unix seconds → the value of a datetime-local input (local time, to the second). */
function toLocalInput(sec) {
  if (!sec || !Number.isFinite(Number(sec))) return "";
  const d = new Date(Number(sec) * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
function fromLocalInput(v) {
  if (!v) return "";
  const t = new Date(v).getTime();
  return Number.isFinite(t) ? String(Math.floor(t / 1000)) : "";
}

/** A request's time (unix ms) as the table shows it. */
function fmtTime(ms) {
  const d = new Date(ms);
  const today = new Date();
  const sameDay = d.toDateString() === today.toDateString();
  const time = d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  return sameDay ? time : `${d.toLocaleDateString(undefined, { month: "short", day: "numeric" })} ${time}`;
}

function statusBadge(status) {
  const kind = status < 400 ? "success" : status < 500 ? "warning" : "danger";
  return h("span", { class: `badge badge-${kind} status-badge`, "data-testid": "req-status", text: String(status) });
}

function endpointLabel(e) {
  return (ENDPOINTS.find((x) => x.value === e) || { label: e }).label;
}

/** Options for a select, keeping a value the lists do not know (from a link) selectable. */
function withCurrent(options, current, label = (v) => v) {
  if (current && !options.some((o) => String(o.value) === String(current))) return [...options, { value: current, label: label(current) }];
  return options;
}

/** Labels each cell with its column, for the stacked phone layout (as dom.table does). */
function labelCells(tr, columns) {
  [...tr.children].forEach((td, i) => {
    if (columns[i]) td.dataset.label = columns[i].label;
  });
  return tr;
}

// Paired figures share a column (time and id, status and error kind, total and TTFT) so the
// table fits a laptop screen; the detail panel shows each field on its own.
const COLUMNS = [
  { label: "Time / request id" }, { label: "Key" }, { label: "API" }, { label: "Model" }, { label: "Provider" },
  { label: "Status / error" }, { label: "Attempts", cls: "num" }, { label: "Tokens", cls: "num" }, { label: "Cost", cls: "num" }, { label: "Total / TTFT", cls: "num" },
];

function costText(r) {
  if (r.cost !== null && r.cost !== undefined) return fmtUsd(r.cost);
  return r.status < 400 ? "unpriced" : "–";
}

function rowEl(r, open) {
  const tr = h(
    "tr",
    {
      class: "clickable",
      tabindex: "0",
      "data-id": r.request_id,
      "data-status": String(r.status),
      "data-model": r.model,
      "data-key-id": r.key_id ?? "",
      "data-provider-id": r.provider_id ?? "",
      "data-time": String(r.time),
      "data-tokens": String(r.prompt_tokens + r.completion_tokens),
      "data-cost": r.cost === null || r.cost === undefined ? "" : String(r.cost),
      "aria-label": `Request ${r.request_id}: ${r.model}, status ${r.status}`,
      on: {
        click: () => open(r.request_id),
        keydown: (e) => {
          if (e.key === "Enter" || e.key === " ") {
            e.preventDefault();
            open(r.request_id);
          }
        },
      },
    },
    h("td", { class: "nowrap" }, h("div", { class: "small", title: new Date(r.time).toISOString(), text: fmtTime(r.time) }), h("div", { class: "cell-sub mono req-id", "data-testid": "req-id", title: r.request_id, text: r.request_id })),
    h("td", { class: "nowrap" }, r.key_id === null || r.key_id === undefined ? h("span", { class: "muted small", text: "no key" }) : h("span", { class: "req-key", title: `${r.key_name || "deleted key"} (#${r.key_id})`, text: r.key_name || `#${r.key_id}` })),
    h("td", {}, h("span", { class: "mono-pill", title: endpointLabel(r.endpoint), text: r.endpoint })),
    h("td", { class: "nowrap" }, h("div", { class: "cell-main", text: r.model }), r.upstream_model && r.upstream_model !== r.model ? h("div", { class: "cell-sub", title: "Sent upstream as", text: `→ ${r.upstream_model}` }) : null),
    h("td", { class: "nowrap" }, r.provider_id === null || r.provider_id === undefined ? h("span", { class: "muted small", text: "not routed" }) : h("span", { title: `provider #${r.provider_id}`, text: r.provider_name || `#${r.provider_id}` })),
    h("td", { class: "nowrap" }, statusBadge(r.status), r.error_kind ? h("div", { class: "cell-sub mono", "data-testid": "req-error-kind", text: r.error_kind }) : null),
    h("td", { class: "num" }, fmtNum(r.attempts), h("div", { class: "cell-sub", title: r.stream ? "Streamed" : "Not streamed", text: r.stream ? "stream" : "no stream" })),
    h("td", { class: "num", title: `${fmtNum(r.prompt_tokens)} prompt · ${fmtNum(r.completion_tokens)} completion` }, fmtCompact(r.prompt_tokens + r.completion_tokens), h("div", { class: "cell-sub", text: `${fmtCompact(r.prompt_tokens)} in · ${fmtCompact(r.completion_tokens)} out` })),
    h("td", { class: ["num", r.cost === null || r.cost === undefined ? "muted" : ""], title: r.cost === null || r.cost === undefined ? (r.status < 400 ? "No price known for this model" : "Not answered") : `$${r.cost}` , text: costText(r) }),
    h("td", { class: "num" }, fmtMs(r.total_ms), h("div", { class: "cell-sub", title: "Time to the first token (streams)", text: r.ttft_ms === null || r.ttft_ms === undefined ? "TTFT –" : `TTFT ${fmtMs(r.ttft_ms)}` })),
  );
  return labelCells(tr, COLUMNS);
}

// ---------------------------------------------------------------- detail

const FIELD_LABELS = {
  request_id: "Request id", time: "Time", conversation_id: "Conversation", key_id: "Key id", key_name: "Key", endpoint: "Endpoint", model: "Model",
  provider_id: "Provider id", provider_name: "Provider", upstream_model: "Upstream model", status: "Status", error_kind: "Error kind", attempts: "Attempts",
  stream: "Streamed", prompt_tokens: "Prompt tokens", completion_tokens: "Completion tokens", cached_tokens: "Cached tokens", reasoning_tokens: "Reasoning tokens",
  usage_source: "Usage source", cost: "Cost", ttft_ms: "Time to first token", upstream_ms: "Upstream time", total_ms: "Total time", source: "Front end",
};

function fieldValue(k, v, r) {
  if (v === null || v === undefined) return h("span", { class: "muted", text: k === "cost" && r.status < 400 ? "unpriced" : "–" });
  switch (k) {
    case "time":
      return `${new Date(v).toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" })} (${v})`;
    case "cost":
      return fmtUsd(v);
    case "ttft_ms":
    case "upstream_ms":
    case "total_ms":
      return fmtMs(v);
    case "stream":
      return v ? "yes" : "no";
    case "status":
      return statusBadge(v);
    case "endpoint":
      return `${v} · ${endpointLabel(v)}`;
    case "prompt_tokens":
    case "completion_tokens":
    case "cached_tokens":
    case "reasoning_tokens":
    case "attempts":
      return fmtNum(v);
    default:
      return String(v);
  }
}

/** Body text as it was recorded: pretty JSON when it is JSON, else the text; always as text. */
function bodyBlock(title, text, testid) {
  let shown = text;
  const t = (text || "").trim();
  if ((t.startsWith("{") && t.endsWith("}")) || (t.startsWith("[") && t.endsWith("]"))) {
    try {
      shown = JSON.stringify(JSON.parse(t), null, 2);
    } catch {
      shown = text;
    }
  }
  return h("div", { class: "body-block" }, h("div", { class: "body-head" }, h("span", { text: title }), h("button", { type: "button", class: "code-copy", on: { click: () => copyText(text, `${title} copied`) } }, icon("copy", "regular"), h("span", { text: "Copy" }))), h("pre", { class: "body-text", "data-testid": testid, text: shown || "(empty)" }));
}

const NO_BODIES = "No bodies were recorded for this request. The server's record_bodies setting, or the key's own, keeps them (errors: failed requests only; all: every request).";

/**
 * The request's bodies: the recorded `request_body` / `response_body` of the detail when body
 * recording kept them; otherwise, for an answered request, its messages in the conversation (the
 * user message recorded at its start time, and the answer after it).
 */
async function loadBodies(host, r) {
  clear(host);
  if (r.request_body || r.response_body) {
    if (r.request_body) host.appendChild(bodyBlock("Request body", r.request_body, "body-request"));
    if (r.response_body) host.appendChild(bodyBlock(r.status >= 400 ? "Error body" : "Response body", r.response_body, "body-response"));
    host.appendChild(h("p", { class: "muted small", text: "As recorded by the hub: credentials redacted, each body cut at 64 KiB." }));
    return;
  }
  if (!r.conversation_id || r.status >= 400) {
    // Conversation messages are kept for answered requests only.
    host.appendChild(h("p", { class: "muted small", "data-testid": "no-bodies", text: NO_BODIES }));
    return;
  }
  host.appendChild(h("div", { class: "loading small" }, h("span", { class: "spin" }), h("span", { text: "Loading the recorded messages…" })));
  try {
    const c = await get(`/api/stats/conversations/${encodeURIComponent(r.conversation_id)}`);
    const msgs = c.messages || [];
    const i = msgs.findIndex((m) => m.role === "user" && m.timestamp === r.time);
    clear(host);
    if (i < 0) {
      host.appendChild(h("p", { class: "muted small", "data-testid": "no-bodies", text: `${NO_BODIES} Its conversation holds no message of it either (record_messages off, or pruned after message_retention_days).` }));
      return;
    }
    host.appendChild(bodyBlock("Last user message", msgs[i].content, "body-request"));
    const rest = msgs.slice(i + 1);
    const nextUser = rest.findIndex((m) => m.role === "user");
    const answerIdx = rest.findIndex((m) => m.role === "assistant");
    if (answerIdx >= 0 && (nextUser < 0 || answerIdx < nextUser)) host.appendChild(bodyBlock("Answer", rest[answerIdx].content, "body-answer"));
    host.appendChild(h("p", { class: "muted small", "data-testid": "bodies-from-conversation", text: "From the conversation's messages; record_bodies keeps the whole request and answer." }));
  } catch (e) {
    if (e.status === 404) {
      clear(host).appendChild(h("p", { class: "muted small", "data-testid": "no-bodies", text: `${NO_BODIES} Its conversation is no longer stored.` }));
      return;
    }
    clear(host).appendChild(h("p", { class: "form-error", role: "alert", "data-testid": "bodies-error", text: `The recorded messages could not load: ${e.message}` }));
  }
}

function openDetail(id, providers, navigate) {
  const body = h("div", { class: "stack request-detail" }, spinner("Loading the request…"));
  const m = modal({ title: "Request", body, size: "lg", testid: "request-detail", actions: [button("Close", { onClick: () => m.close() })] });
  m.el.dataset.requestId = id;
  (async () => {
    let r;
    try {
      r = await get(`/api/requests/${encodeURIComponent(id)}`);
    } catch (e) {
      clear(body).appendChild(h("div", { class: "callout callout-danger", "data-testid": "detail-error", role: "alert" }, icon("circle-exclamation"), h("div", { text: `The request could not load: ${e.message}` })));
      return;
    }
    const kv = h("dl", { class: "kv-grid", "data-testid": "detail-fields" });
    for (const [k, v] of Object.entries(r)) {
      if (k === "attempt_log" || k === "request_body" || k === "response_body") continue;
      kv.append(h("dt", { text: FIELD_LABELS[k] || k }), h("dd", { "data-field": k, "data-value": JSON.stringify(v), title: v === null ? "" : String(v) }, fieldValue(k, v, r)));
    }
    const pname = (pid) => {
      const p = providers.find((x) => x.id === pid);
      return p ? p.name : `#${pid}`;
    };
    const log = r.attempt_log || [];
    const attempts = log.length
      ? table(
          [{ label: "#" }, { label: "Provider" }, { label: "Status" }, { label: "Error kind" }, { label: "Time", cls: "num" }],
          log.map((a, i) =>
            h(
              "tr",
              { "data-provider-id": String(a.provider_id), "data-status": a.status === null || a.status === undefined ? "" : String(a.status), "data-ms": String(a.ms) },
              h("td", { class: "id", text: String(i + 1) }),
              h("td", {}, h("span", { class: "cell-main", text: pname(a.provider_id) }), h("span", { class: "muted small", text: ` #${a.provider_id}` })),
              h("td", {}, a.status === null || a.status === undefined ? badge("no answer", "danger") : statusBadge(a.status)),
              h("td", { class: "small mono", text: a.error_kind || "–" }),
              h("td", { class: "num", text: fmtMs(a.ms) }),
            ),
          ),
          { testid: "attempt-log", cls: "table-compact" },
        )
      : h("p", { class: "muted small", "data-testid": "attempt-log-empty", text: "No upstream attempt: the request was refused before a provider was tried." });
    const bodies = h("div", { class: "stack bodies", "data-testid": "detail-bodies" });
    const raw = h("details", { class: "advanced" }, h("summary", { text: "Raw JSON" }), h("pre", { class: "body-text", "data-testid": "detail-raw", text: JSON.stringify(r, null, 2) }));
    clear(body).append(
      h("div", { class: "detail-head" }, statusBadge(r.status), h("strong", { class: "mono", text: r.request_id }), h("span", { class: "muted small", text: `${endpointLabel(r.endpoint)} · ${r.model} · ${fmtMs(r.total_ms)}` })),
      h("section", {}, h("h3", { class: "detail-title", text: "Fields" }), kv),
      h("section", {}, h("h3", { class: "detail-title", text: `Attempts (${log.length})` }), attempts),
      h("section", {}, h("h3", { class: "detail-title", text: "Bodies" }), bodies),
      raw,
    );
    const foot = m.el.querySelector(".modal-foot");
    const extra = [button("Copy id", { icon: "copy", onClick: () => copyText(r.request_id, "Request id copied") })];
    if (r.conversation_id) {
      extra.push(button("Its conversation", { icon: "comments", attrs: { "data-testid": "detail-conversation", title: "Every request of this conversation" }, onClick: () => { m.close(); navigate(requestsHash({ conversation_id: r.conversation_id })); } }));
    }
    foot.prepend(...extra);
    m.el.dataset.loaded = "true";
    loadBodies(bodies, r);
  })();
  return m;
}

// ---------------------------------------------------------------- page

function download(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: name, hidden: true });
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30000);
}

export default {
  title: "Requests",
  subtitle: "Every recorded request, filtered and paged; click one for its attempts and bodies",
  async mount(view, ctx) {
    const filters = {};
    for (const k of FILTERS) filters[k] = ctx.params.get(k) || "";

    // The option lists; a failure of one shows inline and leaves the filter usable by value.
    const [models, groups, keys, providers] = await Promise.allSettled([get("/api/models"), get("/api/groups"), get("/api/keys"), get("/api/providers")]);
    if (!ctx.isCurrent()) return;
    const val = (r) => (r.status === "fulfilled" ? r.value : []);
    const optionErrors = [["models", models], ["model groups", groups], ["keys", keys], ["providers", providers]].filter(([, r]) => r.status === "rejected").map(([n, r]) => `${n}: ${r.reason.message}`);
    const providerList = val(providers);

    const modelNames = [...new Set(val(models).map((m) => m.name))].sort();
    const f = {
      model: select(
        withCurrent([{ value: "", label: "Every model" }, ...modelNames.map((n) => ({ value: n, label: n })), ...val(groups).map((g) => ({ value: g.name, label: `${g.name} (group)` }))], filters.model),
        filters.model,
        { name: "model", "data-testid": "filter-model" },
      ),
      key_id: select(withCurrent([{ value: "", label: "Every key" }, ...val(keys).map((k) => ({ value: k.id, label: `${k.name} (${k.prefix}…)` }))], filters.key_id, (v) => `key #${v}`), filters.key_id, { name: "key_id", "data-testid": "filter-key" }),
      provider_id: select(withCurrent([{ value: "", label: "Every provider" }, ...providerList.map((p) => ({ value: p.id, label: `${p.name} (#${p.id})` }))], filters.provider_id, (v) => `provider #${v}`), filters.provider_id, { name: "provider_id", "data-testid": "filter-provider" }),
      endpoint: select(withCurrent([{ value: "", label: "Every API" }, ...ENDPOINTS], filters.endpoint), filters.endpoint, { name: "endpoint", "data-testid": "filter-endpoint" }),
      status: select(withCurrent([{ value: "", label: "Any status" }, ...STATUSES], filters.status), filters.status, { name: "status", "data-testid": "filter-status" }),
      error_kind: select(withCurrent([{ value: "", label: "Any error kind" }, ...ERROR_KINDS.map((k) => ({ value: k, label: k }))], filters.error_kind), filters.error_kind, { name: "error_kind", "data-testid": "filter-error-kind" }),
      range: select(RANGES, filters.since || filters.until ? "custom" : "", { name: "range", "data-testid": "filter-range" }),
      since: input({ type: "datetime-local", step: "1", name: "since", value: toLocalInput(filters.since), "data-testid": "filter-since" }),
      until: input({ type: "datetime-local", step: "1", name: "until", value: toLocalInput(filters.until), "data-testid": "filter-until" }),
      conversation_id: input({ name: "conversation_id", value: filters.conversation_id, placeholder: "any", autocomplete: "off", "data-testid": "filter-conversation" }),
    };
    const resetBtn = button("Reset", { icon: "rotate-left", kind: "ghost", size: "sm", attrs: { "data-testid": "filters-reset" } });
    const form = h(
      "form",
      { class: "filters", novalidate: true, autocomplete: "off", "data-testid": "request-filters", on: { submit: (e) => e.preventDefault() } },
      field("Model", f.model),
      field("Key", f.key_id),
      field("Provider", f.provider_id),
      field("API", f.endpoint),
      field("Status", f.status),
      field("Error kind", f.error_kind),
      field("Time", f.range),
      field("From", f.since),
      field("Until", f.until, { hint: "Exclusive." }),
      field("Conversation", f.conversation_id),
    );

    const { el: errorSlot, show: showError } = errorCallout("requests-error");
    const optionError = optionErrors.length ? h("div", { class: "callout callout-warning", role: "status", "data-testid": "options-error" }, icon("triangle-exclamation"), h("div", { text: `Some filter lists could not load (${optionErrors.join("; ")}).` })) : null;

    const exportBtn = (fmt, label) => {
      const b = button(label, { icon: "file-export", attrs: { "data-testid": `export-${fmt}`, title: `Every matching row as ${fmt.toUpperCase()}` } });
      b.addEventListener("click", async () => {
        if (b.disabled) return;
        b.disabled = true;
        b.classList.add("busy");
        try {
          const blob = await fetchBlob(`/api/requests/export?${apiQuery(filters, { format: fmt })}`);
          const d = new Date();
          download(blob, `requests-${d.getFullYear()}${pad(d.getMonth() + 1)}${pad(d.getDate())}-${pad(d.getHours())}${pad(d.getMinutes())}.${fmt}`);
        } catch (e) {
          showError(`The export failed: ${e.message}`);
        } finally {
          b.disabled = false;
          b.classList.remove("busy");
        }
      });
      return b;
    };
    const refreshBtn = button("Refresh", { icon: "rotate", attrs: { "data-testid": "requests-refresh" }, onClick: () => load(true) });
    ctx.setActions(refreshBtn, exportBtn("jsonl", "JSONL"), exportBtn("csv", "CSV"));

    const tableEl = table(COLUMNS, [], { testid: "requests-table", cls: "requests-table" });
    const tbody = tableEl.querySelector("tbody");
    const summary = h("span", { class: "muted small", "data-testid": "requests-count", "aria-live": "polite" });
    const more = button("Load more", { icon: "angles-down", attrs: { "data-testid": "load-more", hidden: true }, onClick: () => load(false) });
    const emptyHost = h("div");
    const resultsCard = h(
      "section",
      { class: "card flush", "data-testid": "requests" },
      h("header", { class: "card-head" }, h("h2", {}, icon("list-ul"), h("span", { text: "Requests" })), h("div", { class: "card-actions" }, summary)),
      h("div", { class: "card-body" }, tableEl, emptyHost, h("div", { class: "load-more" }, more)),
    );
    clear(view).append(...[card({ title: "Filters", icon: "filter", actions: resetBtn, body: form, cls: "filters-card" }), optionError, errorSlot, resultsCard].filter(Boolean));

    let cursor = null;
    let shown = 0;
    let seq = 0;
    let controller = null;

    const syncUrl = () => {
      const hash = requestsHash(filters);
      if (location.hash !== hash) history.replaceState(null, "", hash);
    };

    async function load(reset) {
      const mine = ++seq;
      if (controller) controller.abort();
      controller = new AbortController();
      if (reset) {
        cursor = null;
        shown = 0;
      }
      more.disabled = true;
      more.classList.add("busy");
      refreshBtn.disabled = true;
      if (reset) {
        resultsCard.classList.add("loading-rows");
        summary.textContent = "Loading…";
      }
      try {
        const page = await get(`/api/requests?${apiQuery(filters, { limit: PAGE_SIZE, cursor: reset ? null : cursor })}`, { signal: controller.signal });
        if (mine !== seq || !ctx.isCurrent()) return;
        showError("");
        if (reset) clear(tbody);
        const open = (id) => openDetail(id, providerList, ctx.navigate);
        for (const r of page.data) tbody.appendChild(rowEl(r, open));
        shown += page.data.length;
        cursor = page.next_cursor;
        more.hidden = !cursor;
        tableEl.hidden = shown === 0;
        clear(emptyHost);
        if (shown === 0) {
          const any = FILTERS.some((k) => filters[k]);
          emptyHost.appendChild(emptyState({ icon: "magnifying-glass", title: any ? "No request matches these filters" : "No requests recorded yet", text: any ? "Widen the time range or clear a filter." : "Requests through the gateway show here as they are recorded." }));
        }
        summary.textContent = `${fmtNum(shown)} ${shown === 1 ? "request" : "requests"}${cursor ? " shown · more available" : ""}`;
        resultsCard.dataset.count = String(shown);
        resultsCard.dataset.more = cursor ? "true" : "false";
        view.dataset.loaded = "true";
      } catch (e) {
        if (e.name === "AbortError" || mine !== seq || !ctx.isCurrent()) return;
        showError(`The requests could not load: ${e.message}`);
        summary.textContent = "";
        if (reset) {
          clear(tbody);
          tableEl.hidden = true;
          more.hidden = true;
          resultsCard.dataset.count = "0";
        }
        view.dataset.loaded = "true";
      } finally {
        if (mine === seq) {
          more.disabled = false;
          more.classList.remove("busy");
          refreshBtn.disabled = false;
          resultsCard.classList.remove("loading-rows");
        }
      }
    }

    const apply = () => {
      syncUrl();
      load(true);
    };
    const applyText = debounce(apply, 350);
    for (const k of ["model", "key_id", "provider_id", "endpoint", "status", "error_kind"]) {
      f[k].addEventListener("change", () => {
        filters[k] = f[k].value;
        apply();
      });
    }
    f.conversation_id.addEventListener("input", () => {
      filters.conversation_id = f.conversation_id.value.trim();
      applyText();
    });
    f.range.addEventListener("change", () => {
      const v = f.range.value;
      if (v === "custom") {
        f.since.focus();
        return;
      }
      filters.since = v ? String(Math.floor(Date.now() / 1000) - Number(v)) : "";
      filters.until = "";
      f.since.value = toLocalInput(filters.since);
      f.until.value = "";
      apply();
    });
    for (const k of ["since", "until"]) {
      f[k].addEventListener("change", () => {
        filters[k] = fromLocalInput(f[k].value);
        f.range.value = filters.since || filters.until ? "custom" : "";
        apply();
      });
    }
    resetBtn.addEventListener("click", () => {
      for (const k of FILTERS) filters[k] = "";
      for (const k of ["model", "key_id", "provider_id", "endpoint", "status", "error_kind", "range"]) f[k].value = "";
      f.since.value = "";
      f.until.value = "";
      f.conversation_id.value = "";
      apply();
    });

    await load(true);
    const wanted = ctx.params.get("request");
    if (wanted) openDetail(wanted, providerList, ctx.navigate);
    return () => {
      applyText.cancel();
      if (controller) controller.abort();
    };
  },
};
