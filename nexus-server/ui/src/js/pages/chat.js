// Chat playground over /ws/chat. The socket and the conversation live at module level, so
// leaving the page and coming back keeps them; signing out resets both.

import { get, wsUrl } from "../api.js";
import { h, icon, clear, card, button, field, select, input, toast, fmtNum, fmtMs, emptyState, focusIfIdle } from "../dom.js";
import { setMarkdown } from "../markdown.js";

const state = {
  ws: null,
  wsState: "closed",
  reconnectDelay: 1000,
  reconnectTimer: null,
  turns: [],
  running: null,
  conversationId: null,
  providerId: "",
  model: "",
  // The client API a turn goes through: "chat" (OpenAI chat), "messages" (Anthropic) or
  // "responses" (OpenAI Responses). The server translates each as it does for HTTP clients.
  format: "chat",
  temperature: 0.7,
  maxTokens: "",
  draft: "",
  nextId: 1,
  ui: null,
};

// ------------------------------------------------------------------ socket

function setConn(s) {
  state.wsState = s;
  if (!state.ui) return;
  const labels = { open: "Connected", connecting: "Connecting…", closed: "Disconnected" };
  state.ui.conn.dataset.state = s;
  state.ui.conn.textContent = labels[s];
}

function connect() {
  if (state.ws && (state.ws.readyState === WebSocket.OPEN || state.ws.readyState === WebSocket.CONNECTING)) return;
  clearTimeout(state.reconnectTimer);
  setConn("connecting");
  const ws = new WebSocket(wsUrl());
  state.ws = ws;
  ws.addEventListener("open", () => {
    if (state.ws !== ws) return;
    state.reconnectDelay = 1000;
    setConn("open");
  });
  ws.addEventListener("message", (ev) => {
    if (state.ws !== ws) return;
    let frame;
    try {
      frame = JSON.parse(ev.data);
    } catch {
      return;
    }
    onFrame(frame);
  });
  ws.addEventListener("close", () => {
    if (state.ws !== ws) return;
    state.ws = null;
    setConn("closed");
    if (state.running) {
      failTurn(state.running, { message: "The connection to the server closed during the answer.", code: "connection_closed" });
    }
    // Reconnect while the page is open.
    if (state.ui) {
      state.reconnectTimer = setTimeout(connect, state.reconnectDelay);
      state.reconnectDelay = Math.min(state.reconnectDelay * 2, 15000);
    }
  });
}

function whenOpen(timeoutMs = 5000) {
  connect();
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const check = () => {
      if (state.ws && state.ws.readyState === WebSocket.OPEN) resolve(state.ws);
      else if (Date.now() - started > timeoutMs) reject(new Error("Cannot connect to the chat socket."));
      else setTimeout(check, 50);
    };
    check();
  });
}

const FORMATS = [
  { value: "chat", label: "OpenAI chat completions" },
  { value: "messages", label: "Anthropic Messages" },
  { value: "responses", label: "OpenAI Responses" },
];

function onFrame(frame) {
  const t = state.running;
  if (frame.type === "event") {
    // The format's own events (message_start, response.output_text.delta, ...), as its
    // clients receive them: counted, and their names listed under the answer.
    if (!t) return;
    t.events = t.events || [];
    t.events.push(frame.event);
  } else if (frame.type === "delta") {
    if (!t) return;
    t.text += frame.content || "";
    scheduleRender(t);
  } else if (frame.type === "done") {
    if (!t) return;
    t.status = frame.finish_reason === "cancelled" ? "cancelled" : "done";
    t.finish = frame.finish_reason;
    t.usage = frame.usage;
    t.latency = frame.latency_ms;
    t.ttft = frame.ttft_ms;
    if (frame.conversation_id) state.conversationId = frame.conversation_id;
    state.running = null;
    renderTurn(t);
    afterTurn();
  } else if (frame.type === "error") {
    if (t) failTurn(t, frame.error || {});
    else toast((frame.error && frame.error.message) || "Chat error", "error");
  }
}

function failTurn(t, err) {
  t.status = "error";
  t.error = err;
  if (state.running === t) state.running = null;
  renderTurn(t);
  afterTurn();
}

function afterTurn() {
  if (!state.ui) return;
  updateComposer();
  updateSession();
}

// ------------------------------------------------------------------ turns

function history() {
  const msgs = [];
  for (const t of state.turns) {
    if (t === state.running) continue;
    // A failed turn is left out of the context; a stopped one keeps what arrived.
    if (t.status === "error") continue;
    msgs.push({ role: "user", content: t.user });
    if (t.text) msgs.push({ role: "assistant", content: t.text });
  }
  return msgs;
}

async function send(text) {
  if (state.running) return;
  if (!state.model) {
    toast("Choose a model first", "error");
    return;
  }
  const msgs = history();
  msgs.push({ role: "user", content: text });
  const t = { id: state.nextId++, user: text, text: "", status: "streaming", model: state.model, format: state.format, providerId: state.providerId, started: performance.now() };
  state.turns.push(t);
  state.running = t;
  renderAll();
  updateComposer();
  const frame = { type: "chat", model: state.model, messages: msgs, temperature: Number(state.temperature) };
  if (state.format !== "chat") frame.format = state.format;
  if (state.providerId) frame.provider_id = Number(state.providerId);
  if (state.maxTokens) frame.max_tokens = Number(state.maxTokens);
  if (state.conversationId) frame.conversation_id = state.conversationId;
  try {
    const ws = await whenOpen();
    ws.send(JSON.stringify(frame));
  } catch (e) {
    failTurn(t, { message: e.message, code: "connection_error" });
  }
}

function stop() {
  if (!state.running || !state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  state.ws.send(JSON.stringify({ type: "cancel" }));
  if (state.ui) state.ui.stop.disabled = true;
}

function clearChat() {
  if (state.running) stop();
  state.turns = [];
  state.running = null;
  state.conversationId = null;
  renderAll();
  updateComposer();
  updateSession();
}

// ------------------------------------------------------------------ rendering

const pending = new Set();
let frameRequested = false;

function scheduleRender(t) {
  pending.add(t);
  if (frameRequested) return;
  frameRequested = true;
  requestAnimationFrame(() => {
    frameRequested = false;
    for (const x of pending) renderTurn(x);
    pending.clear();
  });
}

function nearBottom(el) {
  return el.scrollHeight - el.scrollTop - el.clientHeight < 120;
}

function turnEls(t) {
  const ui = state.ui;
  if (!ui) return null;
  let els = ui.turnEls.get(t.id);
  if (els) return els;
  const userMsg = h(
    "div",
    { class: "msg user", "data-testid": "msg-user" },
    h("div", { class: "msg-avatar" }, icon("user")),
    h("div", { class: "msg-col" }, h("div", { class: "bubble", text: t.user })),
  );
  const body = h("div", { class: "md" });
  const bubble = h("div", { class: "bubble" }, body);
  const meta = h("div", { class: "msg-meta", "data-testid": "usage" });
  const avatar = h("div", { class: "msg-avatar" }, icon("robot"));
  const asst = h("div", { class: "msg assistant", "data-testid": "msg-assistant", "data-turn": t.id }, avatar, h("div", { class: "msg-col" }, bubble, meta));
  ui.messages.append(userMsg, asst);
  els = { asst, body, bubble, meta, avatar };
  ui.turnEls.set(t.id, els);
  return els;
}

function metaItem(ic, text, title) {
  return h("span", { title }, icon(ic), h("span", { text }));
}

function renderTurn(t) {
  const els = turnEls(t);
  if (!els) return;
  const stick = nearBottom(state.ui.messages);
  els.asst.dataset.status = t.status;
  els.asst.classList.toggle("streaming", t.status === "streaming");
  els.asst.classList.toggle("error", t.status === "error");
  clear(els.meta);
  if (t.status === "error") {
    const e = t.error || {};
    els.avatar.firstChild.className = "fa-solid fa-triangle-exclamation";
    clear(els.bubble).appendChild(
      h("div", { class: "chat-error", "data-testid": "chat-error" }, h("strong", { text: "The request failed. " }), h("span", { text: e.message || "Unknown error" }), e.code ? h("div", { class: "small", text: `code: ${e.code}${e.type ? ` · type: ${e.type}` : ""}` }) : null),
    );
    if (t.text) {
      const partial = h("div", { class: "md" });
      setMarkdown(partial, t.text);
      els.bubble.prepend(partial);
    }
  } else if (t.status === "streaming" && !t.text) {
    clear(els.body).appendChild(h("span", { class: "typing", "aria-label": "Waiting for the answer" }, h("span"), h("span"), h("span")));
  } else {
    setMarkdown(els.body, t.text || (t.status === "cancelled" ? "_(stopped before any text)_" : "_(empty answer)_"));
  }
  if (t.status === "done" || t.status === "cancelled") {
    const u = t.usage;
    if (u) {
      els.meta.append(
        metaItem("arrow-up", `${fmtNum(u.prompt_tokens)} prompt`, "Prompt tokens"),
        metaItem("arrow-down", `${fmtNum(u.completion_tokens)} completion`, "Completion tokens"),
        metaItem("coins", `${fmtNum(u.total_tokens)} total`, `Total tokens (${u.source === "upstream" ? "reported by the upstream" : "estimated by the gateway"})`),
        h("span", { class: `badge ${u.source === "upstream" ? "badge-success" : "badge-neutral"}`, text: u.source }),
      );
    }
    if (t.latency !== null && t.latency !== undefined) els.meta.append(metaItem("clock", fmtMs(t.latency), "Total latency"));
    if (t.ttft !== null && t.ttft !== undefined) els.meta.append(metaItem("bolt", `TTFT ${fmtMs(t.ttft)}`, "Time to first token"));
    els.meta.append(h("span", { class: "muted", text: t.model }));
    if (t.format && t.format !== "chat") {
      els.meta.append(h("span", { class: "badge badge-neutral", "data-testid": "turn-format", text: t.format }));
    }
    if (t.events && t.events.length) {
      const names = [...new Set(t.events)];
      els.meta.append(
        h("details", { class: "events", "data-testid": "turn-events" },
          h("summary", { text: `${fmtNum(t.events.length)} events` }),
          h("div", { class: "mono small", text: names.join(" · ") })),
      );
    }
    if (t.status === "cancelled") els.meta.append(h("span", { class: "badge badge-warning", text: "stopped" }));
    else if (t.finish && t.finish !== "stop") els.meta.append(h("span", { class: "badge badge-warning", text: `finish: ${t.finish}` }));
  }
  if (stick) state.ui.messages.scrollTop = state.ui.messages.scrollHeight;
}

function emptyChat() {
  const suggestions = [
    "Explain **Markdown** with a `code` sample",
    "```python\nprint('hello from the gateway')\n```",
    "List three things a gateway does",
  ];
  return h(
    "div",
    { class: "chat-empty" },
    emptyState({
      icon: "comments",
      title: "Try a model",
      text: "Pick a provider and a model, then send a message. Answers stream in and render as Markdown.",
      action: h(
        "div",
        { class: "suggestions" },
        suggestions.map((s) => button(s.replace(/```\w*\n?|\n/g, " ").trim().slice(0, 40), { kind: "secondary", size: "sm", onClick: () => {
          state.ui.composer.value = s;
          state.ui.composer.dispatchEvent(new Event("input"));
          state.ui.composer.focus();
        } })),
      ),
    }),
  );
}

function renderAll() {
  const ui = state.ui;
  if (!ui) return;
  clear(ui.messages);
  ui.turnEls.clear();
  if (!state.turns.length) {
    ui.messages.appendChild(emptyChat());
    return;
  }
  for (const t of state.turns) renderTurn(t);
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

function updateComposer() {
  const ui = state.ui;
  if (!ui) return;
  const running = Boolean(state.running);
  ui.send.hidden = running;
  ui.stop.hidden = !running;
  ui.stop.disabled = false;
  ui.send.disabled = !state.model;
}

function updateSession() {
  const ui = state.ui;
  if (!ui) return;
  let tokens = 0;
  for (const t of state.turns) if (t.usage) tokens += t.usage.total_tokens || 0;
  ui.sessConv.textContent = state.conversationId || "new";
  ui.sessConv.title = state.conversationId || "";
  ui.sessTurns.textContent = fmtNum(state.turns.length);
  ui.sessTokens.textContent = fmtNum(tokens);
}

// ------------------------------------------------------------------ page

export default {
  title: "Chat playground",
  subtitle: "Talk to any configured model through the gateway, streamed over WebSocket",
  /** Closes the socket and forgets the conversation (sign-out). */
  reset() {
    clearTimeout(state.reconnectTimer);
    if (state.ws) {
      const ws = state.ws;
      state.ws = null;
      ws.close();
    }
    state.turns = [];
    state.running = null;
    state.conversationId = null;
    state.wsState = "closed";
  },
  async mount(view, ctx) {
    const [providers, models] = await Promise.all([get("/api/providers"), get("/api/models")]);
    if (!ctx.isCurrent()) return undefined;

    const providerSel = select(
      [{ value: "", label: "Any provider (route by model)" }, ...providers.map((p) => ({ value: p.id, label: `${p.name} (#${p.id})${p.enabled ? "" : " · disabled"}` }))],
      state.providerId,
      { "data-testid": "chat-provider", "aria-label": "Provider" },
    );
    const modelSel = h("select", { "data-testid": "chat-model", "aria-label": "Model" });
    const formatSel = select(FORMATS, state.format, { "data-testid": "chat-format", "aria-label": "Client API" });
    formatSel.addEventListener("change", () => {
      state.format = formatSel.value;
    });
    const temp = h("input", { type: "range", min: "0", max: "2", step: "0.05", value: String(state.temperature), "aria-label": "Temperature", "data-testid": "chat-temperature" });
    const tempOut = h("output", { text: Number(state.temperature).toFixed(2) });
    const maxTok = input({ inputmode: "numeric", placeholder: "model default", value: state.maxTokens, "aria-label": "Max tokens" });
    const conn = h("span", { class: "conn", "data-testid": "chat-conn" });
    const sessConv = h("dd", { class: "mono" });
    const sessTurns = h("dd");
    const sessTokens = h("dd", { "data-testid": "session-tokens" });
    const messages = h("div", { class: "messages", "data-testid": "messages", "aria-live": "polite" });
    const composer = h("textarea", { rows: 1, placeholder: "Message the model…", title: "Enter sends; Shift+Enter starts a new line", "aria-label": "Message", "data-testid": "chat-input" });
    const sendBtn = button("Send", { kind: "primary", icon: "paper-plane", attrs: { "data-testid": "chat-send" } });
    const stopBtn = button("Stop", { kind: "danger", icon: "stop", attrs: { "data-testid": "chat-stop", hidden: true } });
    const clearBtn = button("Clear", { kind: "ghost", icon: "broom", size: "sm", attrs: { "data-testid": "chat-clear" }, onClick: clearChat });

    const fillModels = () => {
      const list = state.providerId ? models.filter((m) => String(m.provider_id) === String(state.providerId)) : models;
      const names = [...new Set(list.map((m) => m.name))].sort();
      clear(modelSel);
      if (!names.length) {
        modelSel.appendChild(h("option", { value: "", text: models.length ? "No models on this provider" : "No models yet" }));
        modelSel.disabled = true;
        state.model = "";
      } else {
        modelSel.disabled = false;
        if (!names.includes(state.model)) state.model = names[0];
        for (const n of names) modelSel.appendChild(h("option", { value: n, selected: n === state.model, text: n }));
      }
      updateComposer();
    };
    providerSel.addEventListener("change", () => {
      state.providerId = providerSel.value;
      fillModels();
    });
    modelSel.addEventListener("change", () => {
      state.model = modelSel.value;
      updateComposer();
    });
    temp.addEventListener("input", () => {
      state.temperature = Number(temp.value);
      tempOut.textContent = state.temperature.toFixed(2);
    });
    maxTok.addEventListener("input", () => {
      state.maxTokens = /^\d+$/.test(maxTok.value.trim()) ? maxTok.value.trim() : "";
    });
    const grow = () => {
      composer.style.height = "auto";
      composer.style.height = `${Math.min(composer.scrollHeight + 2, 200)}px`;
      state.draft = composer.value;
    };
    composer.addEventListener("input", grow);
    const submit = () => {
      const text = composer.value.trim();
      if (!text || state.running) return;
      composer.value = "";
      grow();
      send(text);
    };
    composer.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        submit();
      }
    });
    sendBtn.addEventListener("click", submit);
    stopBtn.addEventListener("click", stop);

    const settings = card({
      title: "Settings",
      icon: "wand-magic-sparkles",
      body: [
        field("Provider", providerSel),
        field("Model", modelSel),
        field("Client API", formatSel, { hint: "The API the turn is sent through; the server translates it for any provider." }),
        field("Temperature", h("div", { class: "range-row" }, temp, tempOut)),
        field("Max tokens", maxTok),
      ],
    });
    const session = card({
      title: "Session",
      icon: "circle-nodes",
      actions: conn,
      body: h("dl", { class: "kv" }, h("dt", { text: "Conversation" }), sessConv, h("dt", { text: "Turns" }), sessTurns, h("dt", { text: "Tokens" }), sessTokens),
    });
    const main = card({
      title: "Conversation",
      icon: "comments",
      cls: "chat-main",
      actions: clearBtn,
      body: [messages, h("div", { class: "composer" }, composer, sendBtn, stopBtn)],
    });
    clear(view).appendChild(h("div", { class: "chat-layout" }, h("div", { class: "chat-settings" }, settings, session), main));

    state.ui = { conn, messages, composer, send: sendBtn, stop: stopBtn, sessConv, sessTurns, sessTokens, turnEls: new Map() };
    composer.value = state.draft;
    fillModels();
    setConn(state.ws && state.ws.readyState === WebSocket.OPEN ? "open" : "connecting");
    renderAll();
    updateComposer();
    updateSession();
    connect();
    if (!models.length) toast("Add a provider and a model before chatting", "info");
    setTimeout(() => focusIfIdle(composer), 0);
    return () => {
      state.ui = null;
      clearTimeout(state.reconnectTimer);
    };
  },
};
