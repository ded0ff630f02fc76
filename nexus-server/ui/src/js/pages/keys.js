// Client API keys: create (name, scopes, expiry, limits), show the plaintext once, then only the
// prefix; edit (scope, limits, budget), enable/disable and revoke. The table shows each key's
// spend against its budget.

import { get, post, patch } from "../api.js";
import { bindSubmit, confirmDelete } from "../actions.js";
import {
  h, icon, clear, card, table, button, iconButton, modal, field, input, select, optNumber, toast, emptyState, badge, fmtDate, fmtRelative, fmtNum, copyText,
} from "../dom.js";
import { loadConfigMarks, configBadge, configNotice } from "../config-marks.js";
import { PERIODS, hasBudget, budgetMeter, budgetBadges, periodText, spendText } from "../budget.js";

const RECORD_BODIES = [
  { value: "", label: "Server default" },
  { value: "off", label: "Off" },
  { value: "errors", label: "Failed requests only" },
  { value: "all", label: "Every request" },
];

const EXPIRY = [
  { value: "never", label: "Never" },
  { value: "1", label: "In 1 day" },
  { value: "7", label: "In 7 days" },
  { value: "30", label: "In 30 days" },
  { value: "90", label: "In 90 days" },
  { value: "365", label: "In 1 year" },
  { value: "custom", label: "On a date…" },
];

function chipChecks(items, name) {
  return h(
    "div",
    { class: "check-list", role: "group", "data-name": name },
    items.map((it) => h("label", { class: "chip-check" }, h("input", { type: "checkbox", value: it.value, name }), h("span", { text: it.label }))),
  );
}

function checked(list) {
  return [...list.querySelectorAll("input:checked")].map((i) => i.value);
}

function showCreatedKey(created) {
  const box = input({ value: created.key, readonly: true, "aria-label": "New API key", "data-testid": "new-key" });
  box.addEventListener("focus", () => box.select());
  const copy = button("Copy", { kind: "primary", icon: "copy", onClick: () => copyText(created.key, "API key copied"), attrs: { "data-testid": "copy-key" } });
  const body = h(
    "div",
    { class: "stack" },
    h("div", { class: "callout callout-warning" }, icon("triangle-exclamation"), h("div", {}, h("strong", { text: "Copy this key now. " }), "It is shown only this once; afterwards the console shows just its prefix. If you lose it, revoke it and create a new one.")),
    field(`Key for “${created.name}” (id ${created.id})`, h("div", { class: "secret-box" }, box, copy)),
    h("p", { class: "muted small" }, "Use it as ", h("code", { text: "Authorization: Bearer <key>" }), " against ", h("code", { text: `${location.origin}/v1` }), "."),
  );
  const m = modal({
    title: "API key created",
    body,
    testid: "key-created",
    dismissable: true,
    actions: [button("Done", { kind: "primary", icon: "check", onClick: () => m.close(), attrs: { "data-testid": "key-done" } })],
    onClose: () => {
      // Drop the plaintext from the page as soon as the dialog goes.
      box.value = "";
      created.key = "";
    },
  });
}

/** Where a PATCH/POST error blames a field (`param`), mark that input so it shows next to the message. */
function markInvalid(form, param) {
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  const el = param ? form.querySelector(`[name="${CSS.escape(param)}"]`) : null;
  if (el) el.setAttribute("aria-invalid", "true");
}

function expiryOptions(key) {
  if (!key) return EXPIRY;
  const keep = { value: "keep", label: key.expires_at ? `Keep: ${fmtDate(key.expires_at)}` : "Keep: never" };
  return [keep, ...EXPIRY];
}

function setChecks(list, values) {
  const want = new Set(values.map(String));
  for (const i of list.querySelectorAll("input")) i.checked = want.has(i.value);
}

/** The create form, or with `key` the edit form (same fields, prefilled; PATCH sends them all). */
function openKeyModal({ key, providers, models, onSaved, marks }) {
  const editing = Boolean(key);
  const val = (v) => (v === null || v === undefined ? "" : String(v));
  const f = {
    name: input({ name: "name", value: editing ? key.name : "", placeholder: "e.g. backend-prod", required: true, autocomplete: "off" }),
    providers: chipChecks(providers.map((p) => ({ value: p.id, label: `${p.name} (#${p.id})` })), "provider_ids"),
    models: chipChecks([...new Set([...models.map((m) => m.name), ...(editing ? key.models : [])])].sort().map((n) => ({ value: n, label: n })), "models"),
    expiry: select(expiryOptions(key), editing ? "keep" : "never", { name: "expiry" }),
    expiryDate: input({ name: "expires_on", type: "datetime-local", hidden: true }),
    rpm: input({ name: "rpm", inputmode: "numeric", placeholder: "unlimited", value: editing ? val(key.rpm) : "" }),
    tpm: input({ name: "tpm", inputmode: "numeric", placeholder: "unlimited", value: editing ? val(key.tpm) : "" }),
    concurrent: input({ name: "max_concurrent", inputmode: "numeric", placeholder: "unlimited", value: editing ? val(key.max_concurrent) : "" }),
    budget: input({ name: "budget_usd", inputmode: "decimal", placeholder: "no budget", value: editing ? val(key.budget_usd) : "", "data-testid": "budget-usd" }),
    period: select(PERIODS, editing ? key.budget_period || "monthly" : "monthly", { name: "budget_period", "data-testid": "budget-period" }),
    soft: input({ name: "soft_budget_usd", inputmode: "decimal", placeholder: "no alert", value: editing ? val(key.soft_budget_usd) : "", "data-testid": "soft-budget-usd" }),
    record_bodies: select(RECORD_BODIES, editing ? key.record_bodies || "" : "", { name: "record_bodies", "data-testid": "record-bodies" }),
  };
  if (editing) {
    setChecks(f.providers, key.provider_ids);
    setChecks(f.models, key.models);
  }
  f.expiry.addEventListener("change", () => {
    f.expiryDate.hidden = f.expiry.value !== "custom";
    if (!f.expiryDate.hidden) f.expiryDate.focus();
  });
  const err = h("p", { class: "form-error", role: "alert", hidden: true, "data-testid": "key-form-error" });
  const form = h(
    "form",
    { class: "form-grid", novalidate: true, autocomplete: "off" },
    configNotice(marks, editing && marks && marks.key(key.name)),
    field("Name", f.name, { required: true, wide: true }),
    field("Providers", f.providers, { wide: true, hint: "None selected: every provider." }),
    field("Models", f.models, { wide: true, hint: "None selected: every model." }),
    field("Expires", h("div", { class: "stack", style: { gap: "8px" } }, f.expiry, f.expiryDate)),
    h("div"),
    field("Requests per minute", f.rpm, { hint: "Empty: no limit." }),
    field("Tokens per minute", f.tpm, { hint: "Empty: no limit." }),
    field("Requests at once", f.concurrent, { hint: "In flight at the same time (streams count until they end). Empty: no limit." }),
    h("div"),
    h("h3", { class: "span-2 form-section", text: "Budget" }),
    field("Budget (USD)", f.budget, { hint: "Hard limit: past it requests get 429 insufficient_quota. Empty: none." }),
    field("Period", f.period, { hint: "Spend resets at the UTC day, week (Monday) or month start." }),
    field("Soft alert at (USD)", f.soft, { hint: "Flags the key once spend reaches it. Empty: none." }),
    h("div"),
    h("h3", { class: "span-2 form-section", text: "Request explorer" }),
    field("Record bodies", f.record_bodies, { hint: "Keep this key's request and answer bodies (credentials redacted) for the request explorer." }),
    h("div"),
    h("div", { class: "span-2" }, err),
  );
  const save = button(editing ? "Save changes" : "Create key", { kind: "primary", icon: editing ? "check" : "key", type: "submit", attrs: { "data-testid": editing ? "edit-key-submit" : "create-key-submit" } });
  bindSubmit(form, save, err, async () => {
    markInvalid(form, null);
    const name = f.name.value.trim();
    if (!name) throw new Error("Name is required.");
    let expires_at;
    if (f.expiry.value === "custom") {
      const t = Date.parse(f.expiryDate.value);
      if (!Number.isFinite(t)) throw new Error("Pick the expiry date and time.");
      if (t <= Date.now()) throw new Error("The expiry must be in the future.");
      expires_at = Math.floor(t / 1000);
    } else if (f.expiry.value === "never") {
      expires_at = null;
    } else if (f.expiry.value !== "keep") {
      expires_at = Math.floor(Date.now() / 1000) + Number(f.expiry.value) * 86400;
    }
    const body = {
      name,
      provider_ids: checked(f.providers).map(Number),
      models: checked(f.models),
      expires_at,
      rpm: optNumber(f.rpm, "Requests per minute", { min: 1 }),
      tpm: optNumber(f.tpm, "Tokens per minute", { min: 1 }),
      max_concurrent: optNumber(f.concurrent, "Requests at once", { min: 1 }),
      // Checked by the server (negative, soft above hard): its message shows in the form.
      budget_usd: optUsd(f.budget),
      budget_period: f.period.value,
      soft_budget_usd: optUsd(f.soft),
      record_bodies: f.record_bodies.value || null,
    };
    let saved;
    try {
      saved = editing ? await patch(`/api/keys/${key.id}`, body) : await post("/api/keys", body);
    } catch (e) {
      markInvalid(form, e.param);
      // The message goes in the slot at the foot of a long form: bring it into view.
      setTimeout(() => err.scrollIntoView({ block: "nearest" }), 0);
      throw e;
    }
    m.close();
    if (editing) toast(`Key “${saved.name}” saved`);
    else showCreatedKey(saved);
    onSaved();
  });
  const m = modal({ title: editing ? `Edit key “${key.name}”` : "Create API key", body: form, testid: "key-modal", actions: [button("Cancel", { onClick: () => m.close() }), save] });
}

/** A budget amount as typed: "" → null; anything else goes to the server as a number it will check. */
function optUsd(inp) {
  const raw = inp.value.trim().replace(/^\$/, "");
  if (raw === "") return null;
  const n = Number(raw);
  if (!Number.isFinite(n)) throw new Error(`${inp.closest(".field").querySelector(".field-label").textContent} must be a number`);
  return n;
}

function budgetCell(k) {
  if (!hasBudget(k)) return h("span", { class: "muted small nowrap", text: "no budget" });
  const p = periodText(k);
  const badges = budgetBadges(k);
  return h(
    "div",
    { class: "budget-cell compact" },
    h("div", { class: "budget-line" }, h("span", { class: "budget-spent", text: spendText(k) })),
    budgetMeter(k, { compact: true }),
    h("div", { class: "budget-line" }, h("span", { class: "nowrap", title: p.title, text: `${p.name} · ${p.rollover}` })),
    badges.length ? h("div", { class: "chips" }, badges) : null,
  );
}

function status(k) {
  const now = Date.now() / 1000;
  if (k.expires_at && k.expires_at <= now) return badge("Expired", "warning", "clock");
  return k.enabled ? badge("Active", "success", "circle-check") : badge("Disabled", "neutral", "power-off");
}

export default {
  title: "API keys",
  subtitle: "Client keys for the OpenAI-compatible API",
  async mount(view, ctx) {
    let providers = [];
    let models = [];
    let marks = null;
    const load = async () => {
      const [keys, ps, ms, cm] = await Promise.all([get("/api/keys"), get("/api/providers"), get("/api/models"), loadConfigMarks()]);
      if (!ctx.isCurrent()) return;
      providers = ps;
      models = ms;
      marks = cm;
      render(keys);
    };
    const create = () => openKeyModal({ providers, models, onSaved: load });
    ctx.setActions(button("Create key", { kind: "primary", icon: "plus", onClick: create, attrs: { "data-testid": "create-key" } }));

    const providerName = (id) => {
      const p = providers.find((x) => x.id === id);
      return p ? p.name : `#${id} (deleted)`;
    };

    function render(keys) {
      clear(view);
      if (!keys.length) {
        view.appendChild(card({ body: emptyState({ icon: "key", title: "No API keys yet", text: "Create a key for each client application. You choose what it may use and how fast.", action: button("Create key", { kind: "primary", icon: "plus", onClick: create }) }) }));
        return;
      }
      const rows = keys.map((k) =>
        h(
          "tr",
          { "data-id": k.id, "data-name": k.name },
          h("td", { class: "id", text: `#${k.id}` }),
          h("td", {}, h("div", { class: "cell-main", text: k.name }), configBadge(marks, marks.key(k.name)), h("div", { class: "cell-sub", title: `created ${fmtDate(k.created_at)}`, text: `created ${new Date(k.created_at * 1000).toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" })}` })),
          h("td", {}, h("span", { class: "mono-pill", "data-testid": "key-prefix", text: `${k.prefix}…` })),
          h(
            "td",
            {},
            h(
              "div",
              { class: "chips" },
              k.provider_ids.length ? k.provider_ids.map((id) => badge(providerName(id), "primary", "server")) : badge("All providers", "neutral"),
              k.models.length ? k.models.map((m) => badge(m, "primary", "cubes")) : badge("All models", "neutral"),
            ),
          ),
          h("td", { class: "nowrap small" }, h("div", { text: k.rpm ? `${fmtNum(k.rpm)} rpm` : "– rpm" }), h("div", { class: "muted", text: k.tpm ? `${fmtNum(k.tpm)} tpm` : "– tpm" }), k.max_concurrent ? h("div", { class: "muted", text: `${fmtNum(k.max_concurrent)} at once` }) : null),
          h("td", { "data-testid": "key-budget" }, budgetCell(k)),
          h("td", { class: "nowrap small", title: k.expires_at ? fmtDate(k.expires_at) : "" , text: k.expires_at ? fmtRelative(k.expires_at) : "never" }),
          h("td", { class: "nowrap small muted", title: k.last_used_at ? fmtDate(k.last_used_at) : "", text: fmtRelative(k.last_used_at) }),
          h("td", { "data-testid": "key-status" }, status(k)),
          h(
            "td",
            { class: "actions" },
            iconButton("pen", "Edit", () => openKeyModal({ key: k, providers, models, marks, onSaved: load }), { attrs: { "data-testid": "edit-key" } }),
            iconButton(k.enabled ? "power-off" : "circle-check", k.enabled ? "Disable" : "Enable", async () => {
              try {
                await patch(`/api/keys/${k.id}`, { enabled: !k.enabled });
                toast(`Key “${k.name}” ${k.enabled ? "disabled" : "enabled"}`);
                load();
              } catch (e) {
                toast(e.message, "error");
              }
            }, { attrs: { "data-testid": "toggle-key" } }),
            iconButton("ban", "Revoke", () => confirmDelete({
              title: "Revoke key?",
              message: `Revoke “${k.name}” (${k.prefix}…)?`,
              detail: "Clients using it get 401 at once. This cannot be undone; disable it instead to pause it.",
              confirmLabel: "Revoke",
              path: `/api/keys/${k.id}`,
              success: `Key “${k.name}” revoked`,
              after: load,
            }), { kind: "danger", attrs: { "data-testid": "revoke-key" } }),
          ),
        ),
      );
      view.appendChild(
        card({
          cls: "flush",
          body: table(
            [{ label: "ID" }, { label: "Name" }, { label: "Key" }, { label: "Scope" }, { label: "Limits" }, { label: "Budget" }, { label: "Expires" }, { label: "Last used" }, { label: "Status" }, { label: "", cls: "actions" }],
            rows,
            { testid: "keys-table" },
          ),
        }),
      );
    }
    await load();
  },
};
