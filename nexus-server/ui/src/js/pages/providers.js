// Providers: list, add/edit, enable/disable, delete, and test every model of a provider.
// The upstream key is write-only: the API returns only `api_key_hint`, and the form never
// pre-fills the key. Extra header values are sealed like the key: the API returns hints
// (`abc...wxyz`), the form shows those, and sends `headers` only when the text was edited (the
// server keeps a value that comes back equal to its hint).

import { get, post, patch } from "../api.js";
import { bindSubmit, confirmDelete } from "../actions.js";
import {
  h, icon, clear, card, table, button, iconButton, modal, field, input, switchInput, optNumber, toast, emptyState, badge, fmtDate, fmtMs, fmtNum, spinner, formError,
} from "../dom.js";
import { loadConfigMarks, configBadge, configNotice } from "../config-marks.js";
import { openKeyPool, keyCountButton } from "../key-pool.js";

// The wire formats a provider can speak, with the base URL each expects and what the hub calls.
const KINDS = [
  { value: "openai", label: "OpenAI-compatible", placeholder: "https://api.openai.com", hint: "Calls …/v1/chat/completions (a URL ending in / gets chat/completions, one ending in # is used as is)." },
  { value: "anthropic", label: "Anthropic (Messages API)", placeholder: "https://api.anthropic.com", hint: "Calls …/v1/messages with x-api-key and anthropic-version; requests are translated." },
  { value: "gemini", label: "Google Gemini", placeholder: "https://generativelanguage.googleapis.com", hint: "Calls …/v1beta/models/{model}:generateContent with x-goog-api-key; requests are translated." },
  { value: "azure", label: "Azure OpenAI", placeholder: "https://NAME.openai.azure.com", hint: "Calls …/openai/deployments/{deployment}/chat/completions?api-version=… with api-key; a model's upstream name is its deployment." },
];

function providerForm(p, marks) {
  const editing = Boolean(p);
  const o = (p && p.options) || {};
  const kind = (p && p.kind) || "openai";
  const f = {
    kind: h("select", { name: "kind", "data-testid": "provider-kind" }, KINDS.map((k) => h("option", { value: k.value, selected: k.value === kind, text: k.label }))),
    api_version: input({ name: "api_version", value: o.api_version ?? "", placeholder: "default", autocomplete: "off" }),
    anthropic_beta: input({ name: "anthropic_beta", value: o.anthropic_beta ?? "", placeholder: "none", autocomplete: "off" }),
    azure_v1: h("select", { name: "azure_v1" }, triOptions(o.azure_v1)),
    responses_api: h("select", { name: "responses_api" }, triOptions(o.responses_api)),
    name: input({ name: "name", value: p ? p.name : "", placeholder: "openai", required: true, autocomplete: "off" }),
    base_url: input({ name: "base_url", type: "url", value: p ? p.base_url : "", placeholder: "https://api.openai.com", required: true, autocomplete: "off" }),
    api_key: input({
      name: "api_key", type: "password", autocomplete: "new-password", "aria-label": "Upstream API key",
      placeholder: editing ? `Unchanged (${p.api_key_hint || "no key"}): type to replace` : "sk-…",
    }),
    description: input({ name: "description", value: p ? p.description : "", placeholder: "Optional note", autocomplete: "off" }),
    enabled: switchInput({ checked: p ? p.enabled : true, label: "Enabled", name: "enabled" }),
    first_byte_timeout_ms: input({ name: "first_byte_timeout_ms", inputmode: "numeric", value: o.first_byte_timeout_ms ?? "", placeholder: "server default" }),
    idle_timeout_ms: input({ name: "idle_timeout_ms", inputmode: "numeric", value: o.idle_timeout_ms ?? "", placeholder: "server default" }),
    max_retries: input({ name: "max_retries", inputmode: "numeric", value: o.max_retries ?? "", placeholder: "server default" }),
    weight: input({ name: "weight", inputmode: "numeric", value: o.weight ?? "", placeholder: "1" }),
    normalize: h("select", { name: "normalize" }, triOptions(o.normalize)),
    request_usage: h("select", { name: "request_usage" }, triOptions(o.request_usage)),
    headers: h("textarea", { name: "headers", rows: 3, spellcheck: "false", placeholder: '{"X-Org": "acme"}' }),
  };
  if (o.headers && Object.keys(o.headers).length) f.headers.value = JSON.stringify(o.headers, null, 2);
  // What the form started with: unchanged text means "keep the stored headers".
  f.headers.dataset.initial = f.headers.value;
  const err = h("p", { class: "form-error", role: "alert", hidden: true });
  const keyHint = editing ? "Write-only. Leave empty to keep the current key." : "Stored encrypted; never shown again, only a hint.";
  const body = h(
    "form",
    { class: "form-grid", novalidate: true, autocomplete: "off" },
    configNotice(marks, editing && marks && marks.provider(p.name)),
    field("Name", f.name, { required: true }),
    field("Kind", f.kind),
    field("Base URL", f.base_url, { required: true, wide: true, hint: " " }),
    field("Upstream API key", h("span", { class: "input-wrap" }, f.api_key, revealButton(f.api_key)), { hint: keyHint, wide: true }),
    field("Description", f.description, { wide: true }),
    h("div", { class: "span-2" }, f.enabled),
    h(
      "details",
      { class: "advanced" },
      h("summary", { text: "Advanced options" }),
      h(
        "div",
        { class: "form-grid" },
        field("First-byte timeout (ms)", f.first_byte_timeout_ms),
        field("Idle timeout (ms)", f.idle_timeout_ms),
        field("Max retries", f.max_retries),
        field("Routing weight", f.weight),
        field("Normalize responses", f.normalize),
        field("Ask upstream for usage", f.request_usage),
        field("API version", f.api_version, { hint: "Azure api-version (2024-10-21) or anthropic-version (2023-06-01)." }),
        field("anthropic-beta header", f.anthropic_beta, { hint: "Anthropic only." }),
        field("Azure /openai/v1 path", f.azure_v1, { hint: "Azure only: the newer path that takes the model in the body." }),
        field("Responses API", f.responses_api, { hint: "OpenAI only: relay /v1/responses requests to the provider's own Responses API." }),
        field("Extra headers (JSON object)", f.headers, {
          wide: true,
          hint: editing
            ? "Values are stored encrypted and shown as hints. Leave a hint as it is to keep that value; type a new value to replace it."
            : "Values are stored encrypted (they may hold keys such as api-key) and shown only as hints afterwards.",
        }),
      ),
    ),
    h("div", { class: "span-2" }, err),
  );
  // The base URL's placeholder and hint follow the kind.
  const syncKind = () => {
    const k = KINDS.find((x) => x.value === f.kind.value) || KINDS[0];
    f.base_url.placeholder = k.placeholder;
    const hint = f.base_url.closest(".field")?.querySelector(".field-hint");
    if (hint) hint.textContent = k.hint;
  };
  f.kind.addEventListener("change", syncKind);
  syncKind();
  return { f, err, body };
}

function triOptions(v) {
  return [
    h("option", { value: "", selected: v === undefined || v === null, text: "Server default" }),
    h("option", { value: "true", selected: v === true, text: "Yes" }),
    h("option", { value: "false", selected: v === false, text: "No" }),
  ];
}

function revealButton(inp) {
  const b = h("button", { type: "button", class: "input-addon", title: "Show key", "aria-label": "Show key" }, icon("eye", "regular"));
  b.addEventListener("click", () => {
    const show = inp.type === "password";
    inp.type = show ? "text" : "password";
    b.firstChild.className = show ? "fa-regular fa-eye-slash" : "fa-regular fa-eye";
  });
  return b;
}

function readForm(f, editing) {
  const name = f.name.value.trim();
  const base = f.base_url.value.trim();
  if (!name) throw new Error("Name is required.");
  if (!base) throw new Error("Base URL is required.");
  if (!/^https?:\/\/[^\s/]+/i.test(base)) throw new Error("Base URL must start with http:// or https://.");
  let headers = {};
  const raw = f.headers.value.trim();
  const headersEdited = !editing || raw !== (f.headers.dataset.initial || "").trim();
  if (raw && headersEdited) {
    try {
      headers = JSON.parse(raw);
    } catch {
      throw new Error("Extra headers must be a JSON object.");
    }
    if (!headers || typeof headers !== "object" || Array.isArray(headers) || Object.values(headers).some((v) => typeof v !== "string")) {
      throw new Error("Extra headers must be a JSON object of strings.");
    }
  }
  const tri = (s) => (s.value === "" ? null : s.value === "true");
  const options = {
    // Omitted when untouched: the server then keeps the stored (sealed) values.
    headers: headersEdited ? headers : null,
    first_byte_timeout_ms: optNumber(f.first_byte_timeout_ms, "First-byte timeout"),
    idle_timeout_ms: optNumber(f.idle_timeout_ms, "Idle timeout"),
    max_retries: optNumber(f.max_retries, "Max retries"),
    weight: optNumber(f.weight, "Weight"),
    normalize: tri(f.normalize),
    request_usage: tri(f.request_usage),
    api_version: f.api_version.value.trim() || null,
    anthropic_beta: f.anthropic_beta.value.trim() || null,
    azure_v1: tri(f.azure_v1),
    responses_api: tri(f.responses_api),
  };
  for (const k of Object.keys(options)) if (options[k] === null) delete options[k];
  const body = {
    name,
    kind: f.kind.value,
    base_url: base,
    description: f.description.value.trim(),
    enabled: f.enabled.querySelector("input").checked,
    options,
  };
  const key = f.api_key.value.trim();
  if (!editing || key) body.api_key = key;
  return body;
}

function openProviderModal(p, onSaved, marks) {
  const editing = Boolean(p);
  const { f, err, body } = providerForm(p, marks);
  const save = button(editing ? "Save changes" : "Add provider", { kind: "primary", icon: editing ? "check" : "plus", type: "submit" });
  bindSubmit(body, save, err, async () => {
    const payload = readForm(f, editing);
    const saved = editing ? await patch(`/api/providers/${p.id}`, payload) : await post("/api/providers", payload);
    m.close();
    toast(editing ? `Provider “${saved.name}” saved` : `Provider “${saved.name}” added (id ${saved.id})`);
    onSaved(saved);
  });
  const m = modal({
    title: editing ? `Edit provider “${p.name}”` : "Add provider",
    body,
    testid: "provider-modal",
    actions: [button("Cancel", { onClick: () => m.close() }), save],
  });
}

export async function runProviderTest(p) {
  const body = h("div", {}, spinner(`Testing ${p.model_count} model${p.model_count === 1 ? "" : "s"} of “${p.name}”, streamed and not…`));
  const m = modal({ title: `Test “${p.name}”`, body, size: "lg", testid: "test-modal", actions: [button("Close", { onClick: () => m.close() })] });
  const started = performance.now();
  try {
    const r = await post(`/api/providers/${p.id}/test`, {});
    const took = performance.now() - started;
    clear(body);
    if (!r.results.length) {
      body.appendChild(emptyState({ icon: "cubes", title: "Nothing to test", text: "This provider has no models yet. Add one on the Models page, then test again.", action: button("Add a model", { kind: "primary", icon: "plus", onClick: () => { m.close(); location.hash = `#/models?provider=${p.id}&add=1`; } }) }));
      return;
    }
    const okCount = r.results.filter((x) => x.ok).length;
    body.append(
      h(
        "div",
        { class: "test-summary" },
        badge(`${okCount} of ${r.results.length} passed`, okCount === r.results.length ? "success" : okCount ? "warning" : "danger", okCount === r.results.length ? "circle-check" : "triangle-exclamation"),
        badge(`took ${fmtMs(took)}`, "neutral", "clock"),
      ),
      table(
        [
          { label: "Model" }, { label: "Result" }, { label: "Stream" }, { label: "TTFT", cls: "num" }, { label: "Total", cls: "num" },
          { label: "Tokens", cls: "num" }, { label: "Tokens/s", cls: "num" }, { label: "Error" },
        ],
        r.results.map((x) =>
          h(
            "tr",
            { "data-model": x.model },
            h("td", { class: "cell-main nowrap", text: x.model }),
            h("td", {}, x.ok ? badge("OK", "success", "check") : badge("Failed", "danger", "xmark")),
            h("td", {}, x.stream_supported ? badge("yes", "success") : badge("no", "neutral")),
            h("td", { class: "num", text: fmtMs(x.ttft_ms) }),
            h("td", { class: "num", text: fmtMs(x.total_ms) }),
            h("td", { class: "num", text: fmtNum(x.completion_tokens) }),
            h("td", { class: "num", text: x.tokens_per_second ? x.tokens_per_second.toFixed(1) : "–" }),
            h("td", { class: "cell-sub", title: x.error || "", text: x.error || "" }),
          ),
        ),
        { testid: "test-results" },
      ),
    );
  } catch (e) {
    clear(body).appendChild(h("div", { class: "callout callout-danger" }, icon("circle-exclamation"), h("div", { text: `The test could not run: ${e.message}` })));
  }
}

/**
 * The model import picker: the provider's own list (GET …/upstream-models), checkboxes for the
 * models it does not serve yet, and POST …/models/import with the picked names. The server's
 * errors (an Azure resource has no list, an unreachable upstream, a name it does not list) show
 * in the dialog.
 */
export function openImportModal(p, onImported) {
  const err = h("p", { class: "form-error", role: "alert", hidden: true, "data-testid": "import-error" });
  const listHost = h("div", { class: "import-list", "data-testid": "import-list" }, spinner(`Asking “${p.name}” for its models…`));
  const filter = input({ type: "search", placeholder: "Filter models", "aria-label": "Filter models", "data-testid": "import-filter" });
  const countEl = h("span", { class: "muted small", "data-testid": "import-count" });
  const result = h("div", { "data-testid": "import-result", hidden: true });
  const save = button("Import", { kind: "primary", icon: "file-import", attrs: { "data-testid": "import-submit", disabled: true } });
  const selectAll = h("input", { type: "checkbox", "aria-label": "Select every model not added yet", "data-testid": "import-all" });
  let boxes = [];
  const picked = () => boxes.filter((b) => b.checked && !b.disabled).map((b) => b.value);
  const sync = () => {
    const n = picked().length;
    save.disabled = n === 0;
    save.querySelector("span").textContent = n ? `Import ${n} ${n === 1 ? "model" : "models"}` : "Import";
    const free = boxes.filter((b) => !b.disabled && !b.closest("label").hidden);
    selectAll.checked = free.length > 0 && free.every((b) => b.checked);
    selectAll.indeterminate = !selectAll.checked && free.some((b) => b.checked);
  };
  const body = h(
    "div",
    { class: "stack" },
    h("p", { class: "muted small", text: "Pick the models to add to this provider. Kinds come from the list, prices from the bundled catalog; models it already serves are marked." }),
    h("div", { class: "import-tools" }, h("label", { class: "import-all" }, selectAll, h("span", { text: "All" })), filter, countEl),
    listHost,
    err,
    result,
  );
  const m = modal({ title: `Import models into “${p.name}”`, body, size: "lg", testid: "import-modal", actions: [button("Close", { onClick: () => m.close() }), save] });

  function render(models) {
    clear(listHost);
    if (!models.length) {
      listHost.appendChild(emptyState({ icon: "cubes", title: "The provider lists no models", text: "Add its models by hand on the Models page." }));
      return;
    }
    boxes = [];
    const rows = models.map((x) => {
      const box = h("input", { type: "checkbox", value: x.id, checked: x.added, disabled: x.added, name: "import" });
      box.addEventListener("change", sync);
      boxes.push(box);
      return h(
        "label",
        { class: ["import-item", x.added ? "added" : ""], "data-model": x.id, "data-added": String(x.added) },
        box,
        h("span", { class: "import-name" }, h("span", { class: "mono", text: x.id }), x.display_name && x.display_name !== x.id ? h("span", { class: "muted small", text: x.display_name }) : null),
        x.kind === "embedding" ? h("span", { class: "mono-pill", text: "embedding" }) : null,
        x.added ? badge("added", "success", "check") : null,
      );
    });
    listHost.append(...rows);
    const added = models.filter((x) => x.added).length;
    countEl.textContent = `${models.length} listed · ${added} added`;
    sync();
  }

  filter.addEventListener("input", () => {
    const q = filter.value.trim().toLowerCase();
    for (const row of listHost.querySelectorAll(".import-item")) row.hidden = Boolean(q) && !row.textContent.toLowerCase().includes(q);
    sync();
  });
  selectAll.addEventListener("change", () => {
    for (const b of boxes) if (!b.disabled && !b.closest("label").hidden) b.checked = selectAll.checked;
    sync();
  });

  async function loadList() {
    try {
      render(await get(`/api/providers/${p.id}/upstream-models`));
    } catch (e) {
      clear(listHost);
      formError(err, `The provider's model list could not load: ${e.message}`);
    }
  }

  save.addEventListener("click", async () => {
    const names = picked();
    if (!names.length || save.classList.contains("busy")) return;
    formError(err, "");
    save.disabled = true;
    save.classList.add("busy");
    try {
      const r = await post(`/api/providers/${p.id}/models/import`, { models: names });
      clear(result).appendChild(
        h(
          "div",
          { class: "callout callout-success", "data-created": String(r.created.length), "data-skipped": String(r.skipped.length) },
          icon("circle-check"),
          h("div", {}, h("strong", { text: `Imported ${r.created.length} ${r.created.length === 1 ? "model" : "models"}` }), r.created.length ? h("div", { class: "small mono", text: r.created.map((x) => x.name).join(", ") }) : null, r.skipped.length ? h("div", { class: "small", text: `Skipped (already served): ${r.skipped.join(", ")}` }) : null),
        ),
      );
      result.hidden = false;
      toast(`Imported ${r.created.length} ${r.created.length === 1 ? "model" : "models"} into “${p.name}”`);
      onImported();
      await loadList();
    } catch (e) {
      formError(err, e.message);
    } finally {
      save.classList.remove("busy");
      sync();
    }
  });
  loadList();
  return m;
}

export default {
  title: "Providers",
  subtitle: "Upstream AI providers: OpenAI-compatible, Anthropic, Gemini, Azure",
  async mount(view, ctx) {
    let marks = null;
    let shown = [];
    // Pools with keys not in use are asked for their keys, to tell set-aside keys (the upstream
    // refused them) from disabled ones; the list says only how many are in use.
    const load = async () => {
      const [list, m] = await Promise.all([get("/api/providers"), loadConfigMarks()]);
      const pools = new Map(
        await Promise.all(
          list
            .filter((p) => (p.keys_active ?? 1) < (p.key_count ?? 1))
            .map(async (p) => [p.id, await get(`/api/providers/${p.id}/keys`).then((r) => r.data).catch(() => null)]),
        ),
      );
      if (!ctx.isCurrent()) return;
      marks = m;
      shown = list;
      render(list, pools);
    };
    const openPool = (p) => openKeyPool(p, { onChanged: load });
    ctx.setActions(button("Add provider", { kind: "primary", icon: "plus", onClick: () => openProviderModal(null, load), attrs: { "data-testid": "add-provider" } }));

    const render = (list, pools) => {
      clear(view);
      if (!list.length) {
        view.appendChild(card({ body: emptyState({ icon: "server", title: "No providers yet", text: "Add an upstream (OpenAI or any compatible server, Anthropic, Gemini, Azure OpenAI) to start routing requests.", action: button("Add provider", { kind: "primary", icon: "plus", onClick: () => openProviderModal(null, load) }) }) }));
        return;
      }
      const rows = list.map((p) =>
        h(
          "tr",
          { "data-id": p.id, "data-name": p.name },
          h("td", { class: "id", text: `#${p.id}` }),
          h("td", {}, h("div", { class: "cell-main", text: p.name }), h("div", { class: "cell-sub chips" }, badge(p.kind || "openai"), configBadge(marks, marks.provider(p.name))), p.description ? h("div", { class: "cell-sub", text: p.description, title: p.description }) : null),
          h("td", { class: "hide-sm ellipsis" }, h("div", { class: "mono small", text: p.base_url, title: p.base_url }), h("div", { class: "cell-sub mono", text: p.endpoint, title: p.endpoint })),
          h(
            "td",
            {},
            h("div", { class: "key-cell" }, p.api_key_hint ? h("span", { class: "mono-pill", "data-testid": "key-hint", text: p.api_key_hint }) : h("span", { class: "muted small", text: "none" }), keyCountButton(p, pools.get(p.id), () => openPool(p))),
          ),
          h("td", { class: "num" }, h("a", { href: `#/models?provider=${p.id}`, title: "Show models", text: fmtNum(p.model_count) })),
          h("td", {}, h("div", { class: "switch-cell" }, switchInput({
            checked: p.enabled,
            title: p.enabled ? "Disable provider" : "Enable provider",
            onChange: async (on, inp) => {
              inp.disabled = true;
              try {
                await patch(`/api/providers/${p.id}`, { enabled: on });
                p.enabled = on;
                toast(`“${p.name}” ${on ? "enabled" : "disabled"}`);
              } catch (e) {
                inp.checked = !on;
                toast(e.message, "error");
              } finally {
                inp.disabled = false;
              }
            },
          }), p.auto_disabled
            ? h("a", { href: "#/health", class: "badge badge-danger", "data-testid": "auto-disabled", title: p.disabled_reason ? `Disabled by the health checks: ${p.disabled_reason}` : "Disabled by the health checks", text: "auto-disabled" })
            : null)),
          h("td", { class: "hide-sm hide-md nowrap muted small", text: fmtDate(p.created_at) }),
          h(
            "td",
            { class: "actions" },
            iconButton("flask-vial", "Test all models", () => runProviderTest(p), { attrs: { "data-action-test": "" } }),
            iconButton("file-import", "Import models", () => openImportModal(p, load), { attrs: { "data-action-import": "" } }),
            iconButton("key", "Keys", () => openPool(p), { attrs: { "data-action-keys": "" } }),
            iconButton("pen", "Edit", () => openProviderModal(p, load, marks)),
            iconButton("trash", "Delete", () => confirmDelete({
              title: "Delete provider?",
              message: `Delete “${p.name}” (id ${p.id}) and its ${p.model_count} model${p.model_count === 1 ? "" : "s"}?`,
              detail: "Keys scoped to it lose access to it. This cannot be undone.",
              path: `/api/providers/${p.id}`,
              success: `Provider “${p.name}” deleted`,
              after: load,
            }), { kind: "danger" }),
          ),
        ),
      );
      view.appendChild(
        card({
          cls: "flush",
          testid: "providers",
          body: table(
            [{ label: "ID" }, { label: "Name" }, { label: "Base URL / endpoint", cls: "hide-sm" }, { label: "Keys" }, { label: "Models", cls: "num" }, { label: "Enabled" }, { label: "Created", cls: "hide-sm hide-md" }, { label: "", cls: "actions" }],
            rows,
            { testid: "providers-table" },
          ),
        }),
      );
    };
    await load();
    // #/providers?keys=ID opens that provider's key pool (the health page links there).
    const wanted = ctx.params.get("keys");
    const p = wanted ? shown.find((x) => String(x.id) === wanted) : null;
    if (p && ctx.isCurrent()) openPool(p);
  },
};
