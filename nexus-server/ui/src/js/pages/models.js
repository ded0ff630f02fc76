// Models per provider: filter by provider, add/edit/delete, click a name to copy it.

import { get, post, patch } from "../api.js";
import { bindSubmit, confirmDelete } from "../actions.js";
import {
  h, icon, clear, card, table, button, iconButton, modal, field, input, select, toast, emptyState, fmtDate, copyText,
} from "../dom.js";
import { loadConfigMarks, configBadge, configNotice } from "../config-marks.js";

function optPrice(inp, name) {
  const raw = inp.value.trim();
  if (raw === "") return null;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a number ≥ 0`);
  return n;
}

function optMaxTokens(inp) {
  const raw = inp.value.trim();
  if (raw === "") return null;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 4294967295) throw new Error("Default max tokens must be a whole number ≥ 1");
  return n;
}

function fmtPrice(v) {
  return v === null || v === undefined ? "–" : `$${Number(v).toFixed(Number(v) < 1 ? 3 : 2)}`;
}

/** "catalog: $2.50" for a model the catalog prices, else "". */
function catalogHint(model, k) {
  if (!model || model.price_source !== "catalog" || !model.prices || model.prices[k] == null) return "";
  return `catalog: ${fmtPrice(model.prices[k])}`;
}

/** The effective price, with where it comes from; an unpriced model says so. */
function priceCell(m, k) {
  if (!m.price_source) return k === "input" ? h("span", { class: "badge badge-warning", "data-testid": "unpriced", title: "No price set and none in the catalog: its requests have no cost", text: "unpriced" }) : h("span", { class: "muted", text: "–" });
  const v = m.prices ? m.prices[k] : null;
  return h("span", { title: m.price_source === "catalog" ? "From the bundled price catalog" : "Set on the model" }, fmtPrice(v), m.price_source === "catalog" ? h("span", { class: "muted small", "data-testid": "price-catalog", text: " catalog" }) : null);
}

function openModelModal({ model, providers, providerId, onSaved, marks }) {
  const editing = Boolean(model);
  const f = {
    provider: select(providers.map((p) => ({ value: p.id, label: `${p.name} (#${p.id})` })), editing ? model.provider_id : providerId, { name: "provider_id", disabled: editing }),
    name: input({ name: "name", value: editing ? model.name : "", placeholder: "gpt-4o-mini", required: true, autocomplete: "off" }),
    kind: select([{ value: "chat", label: "Chat" }, { value: "embedding", label: "Embedding" }], editing ? model.kind || "chat" : "chat", { name: "kind", "data-testid": "model-kind" }),
    upstream_name: input({ name: "upstream_name", value: editing ? model.upstream_name || "" : "", placeholder: "same as name", autocomplete: "off" }),
    description: input({ name: "description", value: editing ? model.description : "", placeholder: "Optional note", autocomplete: "off" }),
    input_price: input({ name: "input_price", inputmode: "decimal", value: editing && model.input_price !== null ? model.input_price : "", placeholder: catalogHint(model, "input") || "e.g. 0.15" }),
    output_price: input({ name: "output_price", inputmode: "decimal", value: editing && model.output_price !== null ? model.output_price : "", placeholder: catalogHint(model, "output") || "e.g. 0.60" }),
    cached_input_price: input({ name: "cached_input_price", inputmode: "decimal", value: editing && model.cached_input_price != null ? model.cached_input_price : "", placeholder: catalogHint(model, "cached_input") || "as input" }),
    cache_write_price: input({ name: "cache_write_price", inputmode: "decimal", value: editing && model.cache_write_price != null ? model.cache_write_price : "", placeholder: catalogHint(model, "cache_write") || "as input" }),
    default_max_tokens: input({ name: "default_max_tokens", inputmode: "numeric", value: editing && model.default_max_tokens != null ? model.default_max_tokens : "", placeholder: "provider default", autocomplete: "off" }),
  };
  const err = h("p", { class: "form-error", role: "alert", hidden: true });
  const form = h(
    "form",
    { class: "form-grid", novalidate: true, autocomplete: "off" },
    configNotice(marks, editing && marks && marks.model(model.provider_name, model.name)),
    field("Provider", f.provider, { required: true, wide: true, hint: editing ? "A model stays with its provider." : undefined }),
    field("Name", f.name, { required: true, hint: "What clients send as `model`." }),
    field("Upstream name", f.upstream_name, { hint: "Sent upstream instead, if set (an alias)." }),
    field("Kind", f.kind, { hint: "Chat models serve /v1/chat/completions; embedding models /v1/embeddings." }),
    field("Description", f.description, { wide: true }),
    field("Input price / 1M tokens", f.input_price),
    field("Output price / 1M tokens", f.output_price),
    field("Cached input price / 1M", f.cached_input_price, { hint: "A cache read. Empty: billed as input." }),
    field("Cache write price / 1M", f.cache_write_price, { hint: "A cache write. Empty: billed as input." }),
    editing && model.price_source === "catalog"
      ? h("p", { class: "span-2 muted small", "data-testid": "catalog-price", text: `The bundled catalog prices this model at ${fmtPrice(model.prices.input)} in / ${fmtPrice(model.prices.output)} out per 1M tokens; a price set here replaces it.` })
      : null,
    field("Default max tokens", f.default_max_tokens, { wide: true, hint: "Sent when a request sets no max_tokens. Anthropic requires one (the hub's default is 4096)." }),
    h("div", { class: "span-2" }, err),
  );
  const save = button(editing ? "Save changes" : "Add model", { kind: "primary", icon: editing ? "check" : "plus", type: "submit" });
  bindSubmit(form, save, err, async () => {
    const name = f.name.value.trim();
    if (!name) throw new Error("Name is required.");
    const body = {
      name,
      upstream_name: f.upstream_name.value.trim() || null,
      kind: f.kind.value,
      description: f.description.value.trim(),
      input_price: optPrice(f.input_price, "Input price"),
      output_price: optPrice(f.output_price, "Output price"),
      cached_input_price: optPrice(f.cached_input_price, "Cached input price"),
      cache_write_price: optPrice(f.cache_write_price, "Cache write price"),
      default_max_tokens: optMaxTokens(f.default_max_tokens),
    };
    const saved = editing ? await patch(`/api/models/${model.id}`, body) : await post(`/api/providers/${f.provider.value}/models`, body);
    m.close();
    toast(editing ? `Model “${saved.name}” saved` : `Model “${saved.name}” added to ${saved.provider_name}`);
    onSaved(saved);
  });
  const m = modal({ title: editing ? `Edit model “${model.name}”` : "Add model", body: form, testid: "model-modal", actions: [button("Cancel", { onClick: () => m.close() }), save] });
}

/**
 * The create form, or with `group` the edit form, of a model group: a name, a description and
 * the ordered members (the first is tried first). The server checks the members (models it
 * serves, 1 to 16, never a group) and the name (never a model's); its message shows in the form.
 */
function openGroupModal({ group, modelNames, onSaved, marks }) {
  const editing = Boolean(group);
  const members = editing ? [...group.models] : [];
  const name = input({ name: "name", value: editing ? group.name : "", placeholder: "e.g. smart", required: true, autocomplete: "off", "data-testid": "group-name" });
  const description = input({ name: "description", value: editing ? group.description || "" : "", placeholder: "Optional note", autocomplete: "off" });
  const list = h("ol", { class: "member-list", "data-testid": "group-members", "aria-label": "Members, in the order they are tried" });
  const picker = h("select", { name: "add_member", "aria-label": "Model to add", "data-testid": "group-add-select" });
  const addBtn = button("Add", { icon: "plus", size: "sm", attrs: { "data-testid": "group-add" } });
  const err = h("p", { class: "form-error", role: "alert", hidden: true, "data-testid": "group-form-error" });

  const renderPicker = () => {
    clear(picker);
    const left = modelNames.filter((n) => !members.includes(n));
    picker.appendChild(h("option", { value: "", text: left.length ? "Choose a model…" : "Every model is a member" }));
    for (const n of left) picker.appendChild(h("option", { value: n, text: n }));
    picker.disabled = !left.length;
    addBtn.disabled = !left.length;
  };
  const renderList = () => {
    clear(list);
    if (!members.length) list.appendChild(h("li", { class: "member-empty muted small", text: "No member yet: add the models to try, first choice first." }));
    members.forEach((n, i) => {
      const move = (d) => {
        const j = i + d;
        [members[i], members[j]] = [members[j], members[i]];
        renderList();
      };
      list.appendChild(
        h(
          "li",
          { class: "member", "data-model": n },
          h("span", { class: "member-pos", text: String(i + 1) }),
          h("span", { class: "member-name mono", text: n }),
          iconButton("arrow-up", "Move up", () => move(-1), { attrs: { disabled: i === 0 } }),
          iconButton("arrow-down", "Move down", () => move(1), { attrs: { disabled: i === members.length - 1 } }),
          iconButton("xmark", "Remove", () => {
            members.splice(i, 1);
            renderList();
          }, { kind: "danger", attrs: { "data-testid": "group-remove" } }),
        ),
      );
    });
    renderPicker();
  };
  addBtn.addEventListener("click", () => {
    if (!picker.value) return;
    members.push(picker.value);
    renderList();
  });
  renderList();

  const form = h(
    "form",
    { class: "form-grid", novalidate: true, autocomplete: "off" },
    configNotice(marks, editing && marks && marks.group(group.name)),
    field("Name", name, { required: true, hint: "What clients send as `model`; never also a model's name." }),
    field("Description", description),
    field("Members", h("div", { class: "stack member-box" }, list, h("div", { class: "member-add" }, picker, addBtn)), { wide: true, hint: "Tried in this order when one fails or is rate limited (1 to 16)." }),
    h("div", { class: "span-2" }, err),
  );
  const save = button(editing ? "Save changes" : "Create group", { kind: "primary", icon: editing ? "check" : "layer-group", type: "submit", attrs: { "data-testid": "group-submit" } });
  bindSubmit(form, save, err, async () => {
    const n = name.value.trim();
    if (!n) throw new Error("Name is required.");
    const body = { name: n, models: [...members], description: description.value.trim() };
    const saved = editing ? await patch(`/api/groups/${group.id}`, body) : await post("/api/groups", body);
    m.close();
    toast(editing ? `Group “${saved.name}” saved` : `Group “${saved.name}” created`);
    onSaved(saved);
  });
  const m = modal({ title: editing ? `Edit group “${group.name}”` : "Create model group", body: form, testid: "group-modal", actions: [button("Cancel", { onClick: () => m.close() }), save] });
}

export default {
  title: "Models",
  subtitle: "The model names clients can ask for, per provider, and groups of them",
  async mount(view, ctx) {
    const [providers, marks] = await Promise.all([get("/api/providers"), loadConfigMarks()]);
    if (!ctx.isCurrent()) return;
    const wanted = ctx.params.get("provider");
    let providerId = providers.some((p) => String(p.id) === wanted) ? wanted : "";

    const filter = select([{ value: "", label: "All providers" }, ...providers.map((p) => ({ value: p.id, label: `${p.name} (#${p.id})` }))], providerId, { "aria-label": "Filter by provider", "data-testid": "provider-filter" });
    const addBtn = button("Add model", {
      kind: "primary", icon: "plus", attrs: { "data-testid": "add-model" },
      onClick: () => openModelModal({ providers, providerId: providerId || (providers[0] && providers[0].id), onSaved: () => Promise.all([load(), loadGroups()]) }),
    });
    addBtn.disabled = providers.length === 0;
    ctx.setActions(addBtn);

    const listHost = h("div");
    const groupsHost = h("div");
    let modelNames = [];
    const addGroup = () => openGroupModal({ modelNames, onSaved: () => loadGroups() });
    const groupsCard = h(
      "section",
      { class: "card flush groups-card", "data-testid": "groups" },
      h(
        "header",
        { class: "card-head" },
        h("h2", {}, icon("layer-group"), h("span", { text: "Model groups" })),
        h("div", { class: "card-actions" }, button("Add group", { icon: "plus", size: "sm", attrs: { "data-testid": "add-group" }, onClick: () => addGroup() })),
      ),
      h("div", { class: "card-body" }, groupsHost),
    );
    clear(view).append(...[providers.length ? h("div", { class: "toolbar" }, h("label", { class: "sr-only", text: "Provider" }), filter, h("div", { class: "grow" })) : null, listHost, groupsCard].filter(Boolean));

    async function loadGroups() {
      let groups;
      let all;
      try {
        [groups, all] = await Promise.all([get("/api/groups"), get("/api/models")]);
      } catch (e) {
        if (!ctx.isCurrent()) return;
        clear(groupsHost).appendChild(h("div", { class: "callout callout-danger card-callout", role: "alert", "data-testid": "groups-error" }, icon("circle-exclamation"), h("div", { text: `The model groups could not load: ${e.message}` })));
        return;
      }
      if (!ctx.isCurrent()) return;
      modelNames = [...new Set(all.map((x) => x.name))].sort();
      clear(groupsHost);
      if (!groups.length) {
        groupsHost.appendChild(emptyState({ icon: "layer-group", title: "No model groups", text: "A group is one model name for clients, served by several models in order: when the first fails or is rate limited, the next is tried, on any provider.", action: button("Add group", { kind: "primary", icon: "plus", onClick: () => addGroup() }) }));
        return;
      }
      const rows = groups.map((g) =>
        h(
          "tr",
          { "data-id": g.id, "data-name": g.name },
          h("td", { class: "id", text: `#${g.id}` }),
          h("td", {}, h("button", { type: "button", class: "copy-name", title: "Copy the group name", on: { click: () => copyText(g.name, `Copied “${g.name}”`) } }, h("span", { text: g.name }), icon("copy", "regular")), configBadge(marks, marks.group(g.name)), g.description ? h("div", { class: "cell-sub", text: g.description }) : null),
          h("td", {}, h("ol", { class: "member-chips", "data-testid": "group-models" }, g.models.map((n) => h("li", { class: "mono-pill", text: n })))),
          h("td", { class: "hide-sm nowrap muted small", text: fmtDate(g.created_at) }),
          h(
            "td",
            { class: "actions" },
            iconButton("pen", "Edit", () => openGroupModal({ group: g, modelNames, marks, onSaved: () => loadGroups() }), { attrs: { "data-testid": "edit-group" } }),
            iconButton("trash", "Delete", () => confirmDelete({
              title: "Delete group?",
              message: `Delete the group “${g.name}” (id ${g.id})?`,
              detail: "Clients asking for it will get model_not_found; its member models stay.",
              path: `/api/groups/${g.id}`,
              success: `Group “${g.name}” deleted`,
              after: loadGroups,
            }), { kind: "danger", attrs: { "data-testid": "delete-group" } }),
          ),
        ),
      );
      groupsHost.appendChild(table([{ label: "ID" }, { label: "Name" }, { label: "Members, in order" }, { label: "Created", cls: "hide-sm" }, { label: "", cls: "actions" }], rows, { testid: "groups-table" }));
    }
    filter.addEventListener("change", () => {
      providerId = filter.value;
      history.replaceState(null, "", providerId ? `#/models?provider=${providerId}` : "#/models");
      load();
    });

    async function load() {
      const list = await get(providerId ? `/api/providers/${providerId}/models` : "/api/models");
      if (!ctx.isCurrent()) return;
      render(list);
    }

    function render(list) {
      clear(listHost);
      if (!providers.length) {
        listHost.appendChild(card({ body: emptyState({ icon: "server", title: "Add a provider first", text: "Models belong to a provider. Add the upstream, then its models.", action: button("Go to providers", { kind: "primary", icon: "server", onClick: () => (location.hash = "#/providers") }) }) }));
        return;
      }
      if (!list.length) {
        const pname = providerId ? providers.find((p) => String(p.id) === String(providerId))?.name : null;
        listHost.appendChild(card({ body: emptyState({ icon: "cubes", title: pname ? `“${pname}” has no models yet` : "No models yet", text: "Add the model names this provider serves, such as gpt-4o-mini.", action: button("Add model", { kind: "primary", icon: "plus", onClick: () => addBtn.click() }) }) }));
        return;
      }
      const rows = list.map((m) =>
        h(
          "tr",
          { "data-id": m.id, "data-name": m.name, "data-provider": m.provider_name },
          h("td", { class: "id", text: `#${m.id}` }),
          h(
            "td",
            {},
            h("button", { type: "button", class: "copy-name", title: "Copy the model name", "data-testid": "copy-model", on: { click: () => copyText(m.name, `Copied “${m.name}”`) } }, h("span", { text: m.name }), icon("copy", "regular")),
            m.kind === "embedding" ? h("span", { class: "mono-pill", "data-testid": "kind-embedding", text: "embedding" }) : null,
            configBadge(marks, marks.model(m.provider_name, m.name)),
            m.description ? h("div", { class: "cell-sub", text: m.description }) : null,
          ),
          h("td", {}, m.upstream_name ? h("span", { class: "mono-pill", text: m.upstream_name }) : h("span", { class: "muted small", text: "same" })),
          h("td", {}, h("a", { href: `#/models?provider=${m.provider_id}`, text: m.provider_name })),
          h("td", { class: "num" }, priceCell(m, "input")),
          h("td", { class: "num" }, priceCell(m, "output")),
          h("td", { class: "hide-sm nowrap muted small", text: fmtDate(m.created_at) }),
          h(
            "td",
            { class: "actions" },
            iconButton("pen", "Edit", () => openModelModal({ model: m, providers, marks, onSaved: () => Promise.all([load(), loadGroups()]) })),
            iconButton("trash", "Delete", () => confirmDelete({
              title: "Delete model?",
              message: `Delete “${m.name}” (id ${m.id}) from ${m.provider_name}?`,
              detail: "Clients asking for it will get model_not_found.",
              path: `/api/models/${m.id}`,
              success: `Model “${m.name}” deleted`,
              after: () => Promise.all([load(), loadGroups()]),
            }), { kind: "danger" }),
          ),
        ),
      );
      listHost.appendChild(
        card({
          cls: "flush",
          body: table(
            [{ label: "ID" }, { label: "Name" }, { label: "Upstream name" }, { label: "Provider" }, { label: "Input $/1M", cls: "num" }, { label: "Output $/1M", cls: "num" }, { label: "Created", cls: "hide-sm" }, { label: "", cls: "actions" }],
            rows,
            { testid: "models-table" },
          ),
        }),
      );
    }

    await Promise.all([load(), loadGroups()]);
    if (ctx.params.get("add") === "1" && providers.length) addBtn.click();
  },
};
