// DOM helpers shared by every page. Text always goes in through textContent: the only HTML the
// UI ever parses is model output, and that passes through markdown.js (DOMPurify) first.

/**
 * Builds an element. `attrs` keys: class, text, on (event map), dataset, style (object),
 * and anything else as an attribute (true → empty attribute, false/null/undefined → omitted).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = Array.isArray(v) ? v.filter(Boolean).join(" ") : v;
    else if (k === "text") el.textContent = String(v);
    else if (k === "on") for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "style") Object.assign(el.style, v);
    else if (k === "value") el.value = v;
    else if (k === "checked") el.checked = Boolean(v);
    else if (k === "selected") el.selected = Boolean(v);
    else if (k === "disabled") el.disabled = Boolean(v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** A Font Awesome icon (`name` without the `fa-` prefix). */
export function icon(name, style = "solid") {
  return h("i", { class: `fa-${style} fa-${name}`, "aria-hidden": "true" });
}

/** A button with an optional icon. */
export function button(label, { icon: ic, kind = "secondary", onClick, title, type = "button", size, attrs = {} } = {}) {
  const cls = ["btn", `btn-${kind}`, size ? `btn-${size}` : ""];
  return h(
    "button",
    { type, class: cls, title, "aria-label": label ? undefined : title, on: onClick ? { click: onClick } : undefined, ...attrs },
    ic ? icon(ic) : null,
    label ? h("span", { text: label }) : null,
  );
}

/** A square icon-only button. */
export function iconButton(ic, title, onClick, { kind = "ghost", attrs = {} } = {}) {
  return h(
    "button",
    { type: "button", class: ["icon-btn", kind === "danger" ? "icon-btn-danger" : ""], title, "aria-label": title, on: { click: onClick }, ...attrs },
    icon(ic),
  );
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

// ---------------------------------------------------------------- formatting

const nf = new Intl.NumberFormat("en-US");
export function fmtNum(n) {
  if (n === null || n === undefined || Number.isNaN(Number(n))) return "–";
  return nf.format(Number(n));
}

/** 1234567 → "1.23M" for tiles and axes. */
export function fmtCompact(n) {
  const v = Number(n) || 0;
  const a = Math.abs(v);
  if (a >= 1e9) return `${(v / 1e9).toFixed(a >= 1e10 ? 1 : 2)}B`;
  if (a >= 1e6) return `${(v / 1e6).toFixed(a >= 1e7 ? 1 : 2)}M`;
  if (a >= 1e4) return `${(v / 1e3).toFixed(1)}k`;
  return nf.format(v);
}

const usdCents = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: 2 });
const usdSmall = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", maximumSignificantDigits: 3 });
/** USD: cents from $1 up, three significant digits below ($0.00042); null → "–". */
export function fmtUsd(v) {
  if (v === null || v === undefined || Number.isNaN(Number(v))) return "–";
  const n = Number(v);
  if (n === 0) return "$0.00";
  if (Math.abs(n) >= 1) return usdCents.format(n);
  const s = usdSmall.format(n);
  const frac = /\.(\d*)$/.exec(s);
  return frac ? s.padEnd(s.length + Math.max(0, 2 - frac[1].length), "0") : `${s}.00`;
}

/** Bytes in binary units: 1536 → "1.5 KiB"; null → "–". */
export function fmtBytes(b) {
  if (b === null || b === undefined || Number.isNaN(Number(b))) return "–";
  let v = Number(b);
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2)} ${units[i]}`;
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined) return "–";
  const v = Number(ms);
  if (v >= 10000) return `${(v / 1000).toFixed(1)} s`;
  if (v >= 1000) return `${(v / 1000).toFixed(2)} s`;
  if (v >= 100) return `${Math.round(v)} ms`;
  return `${v.toFixed(1)} ms`;
}

export function fmtDate(unixSeconds) {
  if (!unixSeconds) return "–";
  return new Date(unixSeconds * 1000).toLocaleString(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
  });
}

export function fmtRelative(unixSeconds) {
  if (!unixSeconds) return "never";
  const diff = Date.now() / 1000 - unixSeconds;
  const abs = Math.abs(diff);
  const unit = abs < 60 ? [abs, "s"] : abs < 3600 ? [abs / 60, "min"] : abs < 86400 ? [abs / 3600, "h"] : [abs / 86400, "d"];
  const n = Math.max(1, Math.round(unit[0]));
  return diff >= 0 ? `${n} ${unit[1]} ago` : `in ${n} ${unit[1]}`;
}

// ---------------------------------------------------------------- toasts

const TOAST_ICONS = { success: "circle-check", error: "circle-exclamation", info: "circle-info" };

/** Shows a toast; `kind` is success, error or info. */
export function toast(message, kind = "success", timeoutMs) {
  const root = document.getElementById("toasts");
  if (!root) return;
  const close = () => {
    t.classList.add("leaving");
    setTimeout(() => t.remove(), 180);
  };
  const t = h(
    "div",
    { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" },
    icon(TOAST_ICONS[kind] || "circle-info"),
    h("div", { class: "toast-text", text: message }),
    h("button", { type: "button", class: "toast-close", "aria-label": "Dismiss", on: { click: close } }, icon("xmark")),
  );
  root.appendChild(t);
  while (root.children.length > 4) root.firstChild.remove();
  setTimeout(close, timeoutMs ?? (kind === "error" ? 8000 : 3500));
}

// ---------------------------------------------------------------- modals

let openModals = 0;

/**
 * Opens a modal dialog. `body` is a Node; `actions` a list of buttons (Nodes). Returns
 * `{ el, close }`; `onClose` runs once however it closes (Escape, backdrop, close button, code).
 */
export function modal({ title, body, actions = [], size = "md", onClose, dismissable = true, testid }) {
  const root = document.getElementById("modal-root");
  const previous = document.activeElement;
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    document.removeEventListener("keydown", onKey, true);
    backdrop.classList.add("leaving");
    // A leaving dialog is no longer "the" dialog (tests and focus look for the open one).
    dialog.removeAttribute("data-testid");
    dialog.setAttribute("aria-hidden", "true");
    setTimeout(() => backdrop.remove(), 150);
    openModals -= 1;
    if (openModals === 0) document.body.classList.remove("modal-open");
    if (onClose) onClose();
    if (previous && previous.focus) previous.focus();
  };
  const onKey = (e) => {
    if (e.key === "Escape" && dismissable) {
      e.stopPropagation();
      close();
    }
  };
  const dialog = h(
    "div",
    { class: `modal modal-${size}`, role: "dialog", tabindex: "-1", "aria-modal": "true", "aria-label": title, "data-testid": testid },
    h(
      "header",
      { class: "modal-head" },
      h("h2", { text: title }),
      dismissable ? iconButton("xmark", "Close", close, { attrs: { class: "icon-btn modal-close" } }) : null,
    ),
    h("div", { class: "modal-body" }, body),
    actions.length ? h("footer", { class: "modal-foot" }, actions) : null,
  );
  const backdrop = h("div", { class: "modal-backdrop" }, dialog);
  backdrop.addEventListener("mousedown", (e) => {
    if (e.target === backdrop && dismissable) close();
  });
  document.addEventListener("keydown", onKey, true);
  root.appendChild(backdrop);
  openModals += 1;
  document.body.classList.add("modal-open");
  const first = dialog.querySelector("input:not([type=hidden]):not([disabled]), select, textarea");
  // Focus at once: a delayed focus would steal the caret from whatever the user already clicked.
  (first || dialog.querySelector(".modal-foot .btn-primary, .modal-foot .btn-danger") || dialog).focus();
  return { el: dialog, close };
}

/** A confirmation dialog; resolves true when confirmed. */
export function confirmDialog({ title, message, confirmLabel = "Confirm", danger = false, detail }) {
  return new Promise((resolve) => {
    let answer = false;
    const m = modal({
      title,
      size: "sm",
      testid: "confirm",
      body: h("div", { class: "confirm-body" }, h("p", { text: message }), detail ? h("p", { class: "muted small", text: detail }) : null),
      actions: [
        button("Cancel", { onClick: () => m.close() }),
        button(confirmLabel, {
          kind: danger ? "danger" : "primary",
          icon: danger ? "trash" : "check",
          onClick: () => {
            answer = true;
            m.close();
          },
        }),
      ],
      onClose: () => resolve(answer),
    });
  });
}

// ---------------------------------------------------------------- forms

/** A labelled form field around `input`. */
export function field(label, input, { hint, required, wide } = {}) {
  // A <label> may hold one control only; groups (chip lists, wrappers with buttons) get a <div>.
  const single = input instanceof HTMLInputElement || input instanceof HTMLSelectElement || input instanceof HTMLTextAreaElement;
  return h(
    single ? "label" : "div",
    { class: ["field", wide ? "field-wide" : ""], role: single ? undefined : "group", "aria-label": single ? undefined : label },
    h("span", { class: "field-label" }, label, required ? h("span", { class: "req", "aria-hidden": "true", text: " *" }) : null),
    input,
    hint ? h("span", { class: "field-hint", text: hint }) : null,
  );
}

export function input(attrs = {}) {
  return h("input", { type: "text", spellcheck: "false", ...attrs });
}

/** A checkbox styled as a switch; returns the label (the input is `.querySelector("input")`). */
export function switchInput({ checked, label, onChange, title, name }) {
  const inp = h("input", { type: "checkbox", checked, name, role: "switch", "aria-label": title || label });
  if (onChange) inp.addEventListener("change", () => onChange(inp.checked, inp));
  return h("label", { class: "switch", title }, inp, h("span", { class: "switch-track" }, h("span", { class: "switch-thumb" })), label ? h("span", { class: "switch-label", text: label }) : null);
}

export function select(options, value, attrs = {}) {
  const s = h("select", attrs);
  for (const o of options) s.appendChild(h("option", { value: o.value, selected: String(o.value) === String(value), text: o.label }));
  return s;
}

/** Shows `message` in the form's error slot (or hides it when empty). */
export function formError(slot, message) {
  slot.textContent = message || "";
  slot.hidden = !message;
}

/** Reads an optional number input: "" → null; a non-number throws a readable error. */
export function optNumber(inp, name, { integer = true, min = 0 } = {}) {
  const raw = inp.value.trim();
  if (raw === "") return null;
  const n = Number(raw);
  if (!Number.isFinite(n) || (integer && !Number.isInteger(n)) || n < min) {
    throw new Error(`${name} must be ${integer ? "a whole number" : "a number"} ≥ ${min}`);
  }
  return n;
}

// ---------------------------------------------------------------- misc

export async function copyText(text, what = "Copied") {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
    } else {
      const ta = h("textarea", { class: "sr-only", readonly: true });
      ta.value = text;
      document.body.appendChild(ta);
      ta.select();
      document.execCommand("copy");
      ta.remove();
    }
    toast(`${what} to the clipboard`, "success", 2000);
    return true;
  } catch {
    toast("Could not copy: select the text and copy it by hand", "error");
    return false;
  }
}

/** An empty state block. */
export function emptyState({ icon: ic, title, text, action }) {
  return h(
    "div",
    { class: "empty" },
    h("div", { class: "empty-icon" }, icon(ic)),
    h("h3", { text: title }),
    text ? h("p", { class: "muted", text }) : null,
    action || null,
  );
}

/** A card with a title row. */
export function card({ title, icon: ic, actions, body, cls, testid }) {
  return h(
    "section",
    { class: ["card", cls], "data-testid": testid },
    title ? h("header", { class: "card-head" }, h("h2", {}, ic ? icon(ic) : null, h("span", { text: title })), actions ? h("div", { class: "card-actions" }, actions) : null) : null,
    h("div", { class: "card-body" }, body),
  );
}

/** One summary tile: a label and icon over a value and a sub line (both empty until set). */
export function statTile(key, label, ic, tone) {
  return h(
    "div",
    { class: "tile", "data-stat": key, "data-tone": tone },
    h("div", { class: "tile-top" }, h("span", { class: "tile-label", text: label }), h("span", { class: "tile-icon" }, icon(ic))),
    h("div", { class: "tile-value", text: "–" }),
    h("div", { class: "tile-sub", text: "\u00a0" }),
  );
}

/** A row of summary tiles; `defs` are `[key, label, icon, tone, ...]`. */
export function statTiles(defs, attrs = {}) {
  return h("div", { class: "tiles", ...attrs }, defs.map(([key, label, ic, tone]) => statTile(key, label, ic, tone)));
}

/** A page's error callout: `{ el, show(message) }`; an empty message hides it. */
export function errorCallout(testid) {
  const el = h("div", { class: "callout callout-danger", role: "alert", "data-testid": testid, hidden: true });
  const show = (msg) => {
    clear(el);
    el.hidden = !msg;
    if (msg) el.append(icon("circle-exclamation"), h("div", { text: msg }));
  };
  return { el, show };
}

export function badge(text, kind = "neutral", ic) {
  return h("span", { class: `badge badge-${kind}` }, ic ? icon(ic) : null, h("span", { text }));
}

/** A table in a horizontally scrollable wrapper. `columns`: [{label, cls}], `rows`: Node[]. */
export function table(columns, rows, { testid, cls } = {}) {
  // Each cell knows its column's label, for the stacked layout at phone width.
  for (const tr of rows) {
    [...tr.children].forEach((td, i) => {
      if (columns[i]) td.dataset.label = columns[i].label;
    });
  }
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: ["table", cls], "data-testid": testid },
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.cls, scope: "col", text: c.label })))),
      h("tbody", {}, rows),
    ),
  );
}

/** Focuses `el` unless the user has already put the focus somewhere else. */
export function focusIfIdle(el) {
  const a = document.activeElement;
  if (!a || a === document.body || a === document.documentElement) el.focus();
}

/**
 * Wraps `load` as `refresh(force)` that runs one load at a time: a forced refresh asked for
 * while one runs follows it once it ends; an unforced one is skipped while the tab is hidden;
 * nothing runs once `isCurrent()` is false (the page was left).
 */
export function oneAtATime(load, isCurrent) {
  let inflight = false;
  let again = false;
  const refresh = async (force) => {
    if (inflight) {
      again = again || force;
      return;
    }
    if ((!force && document.hidden) || !isCurrent()) return;
    inflight = true;
    try {
      await load();
    } finally {
      inflight = false;
      if (again && isCurrent()) {
        again = false;
        refresh(true);
      }
    }
  };
  return refresh;
}

/**
 * Calls `refresh(false)` every `ms` and when the tab becomes visible again (a refresh skips
 * itself while the tab is hidden). Returns the function that stops both.
 */
export function refreshWhileVisible(refresh, ms) {
  const timer = setInterval(() => refresh(false), ms);
  const onVisible = () => {
    if (!document.hidden) refresh(false);
  };
  document.addEventListener("visibilitychange", onVisible);
  return () => {
    clearInterval(timer);
    document.removeEventListener("visibilitychange", onVisible);
  };
}

export function debounce(fn, ms) {
  let t = null;
  const d = (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
  d.cancel = () => clearTimeout(t);
  return d;
}

export function spinner(label = "Loading…") {
  return h("div", { class: "loading", role: "status" }, h("span", { class: "spin" }), h("span", { text: label }));
}
