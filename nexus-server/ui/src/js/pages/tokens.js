// Token calculator: count text or a messages array for a model, live as you type.

import { post, get } from "../api.js";
import { h, icon, clear, card, field, input, badge, fmtNum, debounce, focusIfIdle } from "../dom.js";

const EXAMPLE_MESSAGES = JSON.stringify(
  [
    { role: "system", content: "You are a helpful assistant." },
    { role: "user", content: "How many tokens is this conversation?" },
  ],
  null,
  2,
);

const saved = { model: "", mode: "text", text: "", messages: EXAMPLE_MESSAGES };

export default {
  title: "Token calculator",
  subtitle: "Count tokens exactly (cl100k / o200k) or as the gateway estimates them",
  async mount(view, ctx) {
    let models = [];
    try {
      models = await get("/api/models");
    } catch {
      models = [];
    }
    if (!ctx.isCurrent()) return undefined;
    const names = [...new Set(models.map((m) => m.name))].sort();
    if (!saved.model) saved.model = names[0] || "gpt-4o";

    const list = h("datalist", { id: "token-models" }, [...new Set([...names, "gpt-4o", "gpt-4o-mini", "gpt-4", "gpt-3.5-turbo", "claude-3-5-sonnet", "llama-3.1-8b"])].map((n) => h("option", { value: n })));
    const model = input({ value: saved.model, list: "token-models", placeholder: "gpt-4o", "data-testid": "tokens-model", "aria-label": "Model", autocomplete: "off" });
    const modeText = h("button", { type: "button", "data-mode": "text", "data-testid": "mode-text" }, icon("align-left"), h("span", { text: "Text" }));
    const modeMsgs = h("button", { type: "button", "data-mode": "messages", "data-testid": "mode-messages" }, icon("list"), h("span", { text: "Messages (JSON)" }));
    const seg = h("div", { class: "segmented", role: "group", "aria-label": "Input kind" }, modeText, modeMsgs);
    const area = h("textarea", { spellcheck: "false", "data-testid": "tokens-input", "aria-label": "Text to count" });
    const inputErr = h("p", { class: "form-error", role: "alert", hidden: true, "data-testid": "tokens-error" });

    const count = h("div", { class: "token-count", "data-testid": "token-count", text: "0" });
    const method = h("dd", { "data-testid": "token-method", text: "–" });
    const encoding = h("dd", { class: "mono", "data-testid": "token-encoding", text: "–" });
    const chars = h("dd", { text: "0" });
    const ratio = h("dd", { text: "–" });
    const status = h("div", { class: "muted small", text: "Type to count" });

    const setMode = (mode, initial = false) => {
      if (!initial) {
        if (saved.mode === "text") saved.text = area.value;
        else saved.messages = area.value;
      }
      saved.mode = mode;
      modeText.classList.toggle("active", mode === "text");
      modeMsgs.classList.toggle("active", mode === "messages");
      area.value = mode === "text" ? saved.text : saved.messages;
      area.placeholder = mode === "text" ? "Paste or type any text…" : '[{"role": "user", "content": "hi"}]';
      run();
    };

    let seq = 0;
    const run = debounce(async () => {
      const my = ++seq;
      const m = model.value.trim() || "gpt-4o";
      saved.model = model.value.trim();
      const text = area.value;
      if (saved.mode === "text") saved.text = text;
      else saved.messages = text;
      chars.textContent = fmtNum(text.length);
      let body;
      if (saved.mode === "messages") {
        let parsed;
        try {
          parsed = JSON.parse(text || "[]");
        } catch (e) {
          inputErr.textContent = `Not valid JSON: ${e.message}`;
          inputErr.hidden = false;
          count.classList.add("pending");
          return;
        }
        if (!Array.isArray(parsed) || parsed.some((x) => !x || typeof x !== "object" || Array.isArray(x))) {
          inputErr.textContent = "Messages must be a JSON array of objects like {\"role\": \"user\", \"content\": \"…\"}.";
          inputErr.hidden = false;
          count.classList.add("pending");
          return;
        }
        body = { model: m, messages: parsed };
      } else {
        body = { model: m, text };
      }
      inputErr.hidden = true;
      count.classList.add("pending");
      status.textContent = "Counting…";
      try {
        const r = await post("/api/tokens/count", body);
        if (my !== seq || !ctx.isCurrent()) return;
        count.textContent = fmtNum(r.tokens);
        count.dataset.value = String(r.tokens);
        clear(method).appendChild(r.method === "exact" ? badge("Exact", "success", "circle-check") : badge("Estimate", "warning", "wand-magic-sparkles"));
        method.dataset.value = r.method;
        encoding.textContent = r.encoding || "none (estimate)";
        ratio.textContent = r.tokens ? (text.length / r.tokens).toFixed(2) : "–";
        status.textContent = `Counted for ${m}`;
      } catch (e) {
        if (my !== seq || !ctx.isCurrent()) return;
        inputErr.textContent = e.message;
        inputErr.hidden = false;
        status.textContent = "Count failed";
      } finally {
        if (my === seq) count.classList.remove("pending");
      }
    }, 250);

    modeText.addEventListener("click", () => setMode("text"));
    modeMsgs.addEventListener("click", () => setMode("messages"));
    area.addEventListener("input", run);
    model.addEventListener("input", run);

    const editor = card({
      title: "Input",
      icon: "pen",
      actions: seg,
      body: [h("div", { class: "tokens-opts" }, field("Model", model, { hint: "Any name: OpenAI families count exactly, others are estimated." }), list), area, inputErr],
    });
    const result = card({
      title: "Result",
      icon: "calculator",
      testid: "token-result",
      body: [
        h("div", { class: "token-result" }, count, h("div", { class: "token-unit", text: "tokens" }), status),
        h("dl", { class: "kv token-facts" }, h("dt", { text: "Method" }), method, h("dt", { text: "Encoding" }), encoding, h("dt", { text: "Characters" }), chars, h("dt", { text: "Chars / token" }), ratio),
      ],
    });
    clear(view).appendChild(h("div", { class: "tokens-layout" }, editor, result));
    setMode(saved.mode, true);
    setTimeout(() => focusIfIdle(area), 0);
    return () => run.cancel();
  },
};
