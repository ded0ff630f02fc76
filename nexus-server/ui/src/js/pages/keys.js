// Client API keys: create (name, scopes, expiry, limits), show the plaintext once, then only the
// prefix; enable/disable and revoke.

import { get, post, patch } from "../api.js";
import { bindSubmit, confirmDelete } from "../actions.js";
import {
  h, icon, clear, card, table, button, iconButton, modal, field, input, select, optNumber, toast, emptyState, badge, fmtDate, fmtRelative, fmtNum, copyText,
} from "../dom.js";

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

function openCreateModal({ providers, models, onSaved }) {
  const f = {
    name: input({ name: "name", placeholder: "e.g. backend-prod", required: true, autocomplete: "off" }),
    providers: chipChecks(providers.map((p) => ({ value: p.id, label: `${p.name} (#${p.id})` })), "provider_ids"),
    models: chipChecks([...new Set(models.map((m) => m.name))].sort().map((n) => ({ value: n, label: n })), "models"),
    expiry: select(EXPIRY, "never", { name: "expiry" }),
    expiryDate: input({ name: "expires_on", type: "datetime-local", hidden: true }),
    rpm: input({ name: "rpm", inputmode: "numeric", placeholder: "unlimited" }),
    tpm: input({ name: "tpm", inputmode: "numeric", placeholder: "unlimited" }),
    concurrent: input({ name: "max_concurrent", inputmode: "numeric", placeholder: "unlimited" }),
  };
  f.expiry.addEventListener("change", () => {
    f.expiryDate.hidden = f.expiry.value !== "custom";
    if (!f.expiryDate.hidden) f.expiryDate.focus();
  });
  const err = h("p", { class: "form-error", role: "alert", hidden: true });
  const form = h(
    "form",
    { class: "form-grid", novalidate: true, autocomplete: "off" },
    field("Name", f.name, { required: true, wide: true }),
    field("Providers", f.providers, { wide: true, hint: "None selected: every provider." }),
    field("Models", f.models, { wide: true, hint: "None selected: every model." }),
    field("Expires", h("div", { class: "stack", style: { gap: "8px" } }, f.expiry, f.expiryDate)),
    h("div"),
    field("Requests per minute", f.rpm, { hint: "Empty: no limit." }),
    field("Tokens per minute", f.tpm, { hint: "Empty: no limit." }),
    field("Requests at once", f.concurrent, { hint: "In flight at the same time (streams count until they end). Empty: no limit." }),
    h("div"),
    h("div", { class: "span-2" }, err),
  );
  const save = button("Create key", { kind: "primary", icon: "key", type: "submit", attrs: { "data-testid": "create-key-submit" } });
  bindSubmit(form, save, err, async () => {
    const name = f.name.value.trim();
    if (!name) throw new Error("Name is required.");
    let expires_at = null;
    if (f.expiry.value === "custom") {
      const t = Date.parse(f.expiryDate.value);
      if (!Number.isFinite(t)) throw new Error("Pick the expiry date and time.");
      if (t <= Date.now()) throw new Error("The expiry must be in the future.");
      expires_at = Math.floor(t / 1000);
    } else if (f.expiry.value !== "never") {
      expires_at = Math.floor(Date.now() / 1000) + Number(f.expiry.value) * 86400;
    }
    const created = await post("/api/keys", {
      name,
      provider_ids: checked(f.providers).map(Number),
      models: checked(f.models),
      expires_at,
      rpm: optNumber(f.rpm, "Requests per minute", { min: 1 }),
      tpm: optNumber(f.tpm, "Tokens per minute", { min: 1 }),
      max_concurrent: optNumber(f.concurrent, "Requests at once", { min: 1 }),
    });
    m.close();
    showCreatedKey(created);
    onSaved();
  });
  const m = modal({ title: "Create API key", body: form, testid: "key-modal", actions: [button("Cancel", { onClick: () => m.close() }), save] });
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
    const load = async () => {
      const [keys, ps, ms] = await Promise.all([get("/api/keys"), get("/api/providers"), get("/api/models")]);
      if (!ctx.isCurrent()) return;
      providers = ps;
      models = ms;
      render(keys);
    };
    const create = () => openCreateModal({ providers, models, onSaved: load });
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
          h("td", {}, h("div", { class: "cell-main", text: k.name }), h("div", { class: "cell-sub", text: `created ${fmtDate(k.created_at)}` })),
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
          h("td", { class: "nowrap small", title: k.expires_at ? fmtDate(k.expires_at) : "" , text: k.expires_at ? fmtRelative(k.expires_at) : "never" }),
          h("td", { class: "nowrap small muted", title: k.last_used_at ? fmtDate(k.last_used_at) : "", text: fmtRelative(k.last_used_at) }),
          h("td", { "data-testid": "key-status" }, status(k)),
          h(
            "td",
            { class: "actions" },
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
            [{ label: "ID" }, { label: "Name" }, { label: "Key" }, { label: "Scope" }, { label: "Limits" }, { label: "Expires" }, { label: "Last used" }, { label: "Status" }, { label: "", cls: "actions" }],
            rows,
            { testid: "keys-table" },
          ),
        }),
      );
    }
    await load();
  },
};
