// A provider's key pool: GET/POST /api/providers/{id}/keys, PATCH/DELETE …/keys/{key_id}.
// Key 0 is the provider's own key (`primary`). The API answers hints only; the key input is a
// password field, cleared once the key is added, and never shown back. The server refuses
// disabling or deleting the pool's last key in use, a key already in the pool and a weight
// outside 1-1000; its message shows in the dialog.

import { get, post, patch, del } from "./api.js";
import { bindSubmit } from "./actions.js";
import { h, icon, clear, table, button, iconButton, modal, field, input, badge, formError, confirmDialog, toast, fmtDate, spinner } from "./dom.js";

/** in_use, resting (after a 429: still in the pool, skipped until the rest ends), disabled or set_aside. */
export function poolKeyState(k) {
  if (k.set_aside) return "set_aside";
  if (!k.enabled) return "disabled";
  if (k.cooling_seconds) return "resting";
  return "in_use";
}

const inUse = (k) => k.enabled && !k.set_aside;

/**
 * The "3/4 keys" button of a provider's row, opening its pool. `pool` is its keys when the row
 * loaded them (only providers with keys not in use do), to tell set-aside keys from disabled.
 */
export function keyCountButton(p, pool, onClick) {
  const count = p.key_count ?? 1;
  const active = p.keys_active ?? count;
  const setAside = pool ? pool.filter((k) => k.set_aside).length : 0;
  const disabled = pool ? pool.filter((k) => !k.enabled && !k.set_aside).length : count - active;
  const kind = setAside ? "warning" : active < count ? "neutral" : "primary";
  const parts = [`${active} of ${count} ${count === 1 ? "key" : "keys"} in use`];
  if (setAside) parts.push(`${setAside} set aside (refused by the upstream)`);
  if (disabled) parts.push(`${disabled} disabled`);
  return h(
    "button",
    { type: "button", class: `badge badge-${kind} pool-count`, "data-testid": "key-count", "data-active": active, "data-count": count, "data-set-aside": setAside, title: `${parts.join("; ")}. Open the key pool`, on: { click: onClick } },
    icon(setAside ? "triangle-exclamation" : "key"),
    h("span", { text: `${active}/${count} ${count === 1 ? "key" : "keys"}` }),
  );
}

// Each state's badge, its tooltip and the line under it.
const STATES = {
  set_aside: { kind: "danger", icon: "ban", label: () => "Set aside", title: "The upstream refused this key; it stays out of the pool until it is put back in use" },
  disabled: { kind: "neutral", icon: "power-off", label: () => "Disabled", title: "Disabled: never used until enabled", sub: () => "by an operator" },
  resting: { kind: "warning", icon: "hourglass-half", label: (k) => `Resting ${k.cooling_seconds} s`, title: "Rate limited by the upstream: skipped until its Retry-After ends, then used again", sub: () => "after a 429 (rate limited)" },
  in_use: { kind: "success", icon: "circle-check", label: () => "In use", title: "In the pool: requests spread over the keys in use by weight", sub: (k, share) => share },
};

function stateCell(k, share) {
  const state = poolKeyState(k);
  const s = STATES[state];
  const b = badge(s.label(k), s.kind, s.icon);
  b.dataset.testid = "pool-state";
  b.dataset.state = state;
  b.title = s.title;
  const sub =
    state === "set_aside"
      ? h("div", { class: "cell-sub danger-text", "data-testid": "pool-reason", title: k.set_aside, text: k.set_aside })
      : h("div", { class: "cell-sub", text: s.sub(k, share) });
  return h("div", { class: "pool-state" }, b, sub);
}

/** Opens the key pool dialog of provider `p`; `onChanged` runs after every change (counts). */
export function openKeyPool(p, { onChanged = () => {} } = {}) {
  const err = h("p", { class: "form-error", role: "alert", hidden: true, "data-testid": "pool-error" });
  const summary = h("span", { class: "muted small", "data-testid": "pool-summary" });
  const listHost = h("div", { class: "pool-list" }, spinner("Loading the keys…"));

  const f = {
    name: input({ name: "name", placeholder: "optional, e.g. team-b", autocomplete: "off", "data-testid": "pool-name" }),
    weight: input({ name: "weight", inputmode: "numeric", placeholder: "1", autocomplete: "off", "data-testid": "pool-weight" }),
    api_key: input({ name: "api_key", type: "password", autocomplete: "new-password", placeholder: "sk-…", "aria-label": "Upstream API key", "data-testid": "pool-key" }),
  };
  const addErr = h("p", { class: "form-error", role: "alert", hidden: true, "data-testid": "pool-add-error" });
  const addBtn = button("Add key", { kind: "primary", icon: "plus", type: "submit", attrs: { "data-testid": "pool-add-submit" } });
  const addForm = h(
    "form",
    { class: "form-grid pool-add", novalidate: true, autocomplete: "off", "data-testid": "pool-add-form" },
    h("h3", { class: "span-2 form-section", text: "Add a key" }),
    field("Upstream API key", f.api_key, { required: true, wide: true, hint: "Stored encrypted; never shown again, only a hint." }),
    field("Name", f.name),
    field("Weight", f.weight, { hint: "1 to 1000: its share of the requests. Empty: 1." }),
    h("div", { class: "span-2" }, addErr),
    h("div", { class: "span-2 pool-add-foot" }, addBtn),
  );

  const body = h(
    "div",
    { class: "stack" },
    h(
      "p",
      { class: "muted small" },
      "Requests spread over the keys in use by weight, and one conversation keeps to one key. A key the upstream refuses (401/403) is set aside until it is put back in use; a rate-limited key (429) rests for its Retry-After. ",
      summary,
    ),
    err,
    listHost,
    addForm,
  );

  let keys = [];
  let loadedAt = 0;
  let ticker = null;
  const m = modal({
    title: `Keys of “${p.name}”`,
    body,
    size: "lg",
    testid: "pool-modal",
    actions: [button("Close", { onClick: () => m.close() })],
    onClose: () => {
      clearInterval(ticker);
      f.api_key.value = "";
    },
  });
  m.el.dataset.providerId = String(p.id);

  async function load() {
    try {
      const r = await get(`/api/providers/${p.id}/keys`);
      keys = r.data;
      loadedAt = Date.now();
      render();
    } catch (e) {
      clear(listHost);
      formError(err, `The keys could not load: ${e.message}`);
    }
  }

  // The rest left after a 429 counts down here; when one ends the list is asked again.
  ticker = setInterval(() => {
    const gone = Math.floor((Date.now() - loadedAt) / 1000);
    let ended = false;
    for (const row of listHost.querySelectorAll('tr[data-state="resting"]')) {
      const left = Number(row.dataset.cooling) - gone;
      const b = row.querySelector('[data-testid="pool-state"] span');
      if (left <= 0) ended = true;
      else if (b) b.textContent = `Resting ${left} s`;
    }
    if (ended) load();
  }, 1000);

  async function act(run) {
    formError(err, "");
    try {
      await run();
      onChanged();
    } catch (e) {
      formError(err, e.message);
    }
    await load();
  }

  function weightCell(k) {
    const w = input({ name: "weight", type: "number", min: 1, max: 1000, step: 1, inputmode: "numeric", value: String(k.weight), class: "weight-input", "aria-label": `Weight of ${k.name}`, "data-testid": "pool-weight-input" });
    const save = async () => {
      const raw = w.value.trim();
      const n = Number(raw);
      if (raw === "" || !Number.isInteger(n)) {
        formError(err, "Weight must be a whole number.");
        return;
      }
      if (n === k.weight) return;
      await act(async () => {
        await patch(`/api/providers/${p.id}/keys/${k.id}`, { weight: n });
        toast(`Key “${k.name}” weight ${n}`);
      });
    };
    w.addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        save();
      }
    });
    return h("div", { class: "weight-cell" }, w, iconButton("check", "Set weight", save, { attrs: { "data-testid": "pool-weight-save" } }));
  }

  function render() {
    clear(listHost);
    const active = keys.filter(inUse);
    const total = active.reduce((a, k) => a + k.weight, 0);
    summary.textContent = `${active.length} of ${keys.length} ${keys.length === 1 ? "key" : "keys"} in use.`;
    const rows = keys.map((k) => {
      const state = poolKeyState(k);
      const share = inUse(k) && total ? `${Math.round((k.weight / total) * 100)}% of the weight` : "";
      const toggleLabel = state === "set_aside" ? "Put back in use" : k.enabled ? "Disable" : "Enable";
      const toggle = button(toggleLabel, {
        size: "sm",
        kind: state === "set_aside" ? "primary" : "secondary",
        icon: state === "set_aside" ? "rotate-left" : k.enabled ? "power-off" : "circle-check",
        attrs: { "data-testid": "pool-toggle" },
        onClick: () =>
          act(async () => {
            const on = state === "set_aside" || !k.enabled;
            await patch(`/api/providers/${p.id}/keys/${k.id}`, { enabled: on });
            toast(state === "set_aside" ? `Key “${k.name}” is back in use` : `Key “${k.name}” ${on ? "enabled" : "disabled"}`);
          }),
      });
      const remove =
        k.id === 0
          ? null
          : iconButton("trash", "Delete", async () => {
              const yes = await confirmDialog({ title: "Delete key?", message: `Delete the key “${k.name}” (${k.hint}) from “${p.name}”?`, detail: "Requests stop using it at once. This cannot be undone.", confirmLabel: "Delete", danger: true });
              if (!yes) return;
              await act(async () => {
                await del(`/api/providers/${p.id}/keys/${k.id}`);
                toast(`Key “${k.name}” deleted`);
              });
            }, { kind: "danger", attrs: { "data-testid": "pool-delete" } });
      return h(
        "tr",
        { "data-id": k.id, "data-name": k.name, "data-state": state, "data-weight": k.weight, "data-cooling": k.cooling_seconds ?? "" },
        h("td", { class: "id", text: `#${k.id}` }),
        h(
          "td",
          {},
          h("div", { class: "pool-key", title: k.id === 0 ? "The provider's own key: it changes with the provider" : `Added ${fmtDate(k.created_at)}, updated ${fmtDate(k.updated_at)}` }, h("span", { class: "cell-main", "data-testid": "pool-key-name", text: k.name }), h("span", { class: "mono-pill", "data-testid": "pool-hint", text: k.hint })),
        ),
        h("td", {}, weightCell(k)),
        h("td", {}, stateCell(k, share)),
        h("td", { class: "actions" }, h("div", { class: "pool-actions" }, toggle, remove)),
      );
    });
    listHost.appendChild(table([{ label: "ID" }, { label: "Key" }, { label: "Weight" }, { label: "State" }, { label: "", cls: "actions" }], rows, { testid: "pool-table" }));
    m.el.dataset.loaded = "true";
  }

  bindSubmit(addForm, addBtn, addErr, async () => {
    const key = f.api_key.value.trim();
    if (!key) throw new Error("The upstream API key is required.");
    const payload = { api_key: key };
    const name = f.name.value.trim();
    if (name) payload.name = name;
    const raw = f.weight.value.trim();
    if (raw) {
      const n = Number(raw);
      if (!Number.isInteger(n)) throw new Error("Weight must be a whole number.");
      payload.weight = n;
    }
    const added = await post(`/api/providers/${p.id}/keys`, payload);
    f.api_key.value = "";
    f.name.value = "";
    f.weight.value = "";
    toast(`Key “${added.name}” (${added.hint}) added to “${p.name}”`);
    onChanged();
    await load();
  });

  load();
  return m;
}
