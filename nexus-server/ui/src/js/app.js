// The admin console shell: sign-in, hash routing (#/page?query), navigation and theme.

import { get, getToken, setToken, onUnauthorized, ApiError } from "./api.js";
import { h, clear, toast, spinner } from "./dom.js";
import { initTheme, toggleTheme } from "./theme.mjs";
import dashboard from "./pages/dashboard.js";
import providers from "./pages/providers.js";
import models from "./pages/models.js";
import keys from "./pages/keys.js";
import spend from "./pages/spend.js";
import chat from "./pages/chat.js";
import tokens from "./pages/tokens.js";
import requests from "./pages/requests.js";
import health from "./pages/health.js";
import storage from "./pages/storage.js";

const PAGES = { dashboard, requests, providers, models, keys, spend, health, storage, chat, tokens };
const DEFAULT_PAGE = "dashboard";

const $ = (id) => document.getElementById(id);
let cleanup = null;
let mountSeq = 0;

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [name, query] = raw.split("?");
  return { name: PAGES[name] ? name : DEFAULT_PAGE, params: new URLSearchParams(query || "") };
}

function runCleanup() {
  if (cleanup) {
    try {
      cleanup();
    } catch (e) {
      console.warn("page cleanup failed", e);
    }
  }
  cleanup = null;
}

async function route() {
  if (!getToken()) return;
  const { name, params } = parseHash();
  const page = PAGES[name];
  runCleanup();
  const seq = ++mountSeq;
  document.body.classList.remove("nav-open");
  for (const a of document.querySelectorAll("#nav a")) {
    const active = a.dataset.page === name;
    a.classList.toggle("active", active);
    if (active) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  $("page-title").textContent = page.title;
  $("page-subtitle").textContent = page.subtitle || "";
  document.title = `${page.title} · NexusAI Hub`;
  document.body.dataset.page = name;
  const actions = clear($("page-actions"));
  const view = clear($("view"));
  view.appendChild(spinner());
  const ctx = {
    params,
    setActions: (...nodes) => {
      clear(actions);
      for (const n of nodes.flat()) if (n) actions.appendChild(n);
    },
    isCurrent: () => seq === mountSeq,
    navigate: (hash) => {
      if (location.hash === hash) route();
      else location.hash = hash;
    },
  };
  try {
    const c = await page.mount(view, ctx);
    if (seq !== mountSeq) {
      if (typeof c === "function") c();
      return;
    }
    cleanup = typeof c === "function" ? c : null;
  } catch (e) {
    if (seq !== mountSeq) return;
    console.warn(`page ${name} failed to load`, e);
    clear(view).appendChild(
      h("div", { class: "empty" }, h("div", { class: "empty-icon danger" }, h("i", { class: "fa-solid fa-triangle-exclamation" })), h("h3", { text: "This page could not load" }), h("p", { class: "muted", text: e.message || String(e) })),
    );
  }
}

function showSignIn(message) {
  runCleanup();
  mountSeq += 1;
  $("app").hidden = true;
  $("signin").hidden = false;
  const err = $("signin-error");
  err.textContent = message || "";
  err.hidden = !message;
  const inp = $("signin-token");
  inp.value = "";
  setTimeout(() => inp.focus(), 0);
}

function showApp() {
  $("signin").hidden = true;
  $("app").hidden = false;
  if (!location.hash) history.replaceState(null, "", `#/${DEFAULT_PAGE}`);
  route();
}

export function signOut(message) {
  setToken("");
  chat.reset();
  history.replaceState(null, "", location.pathname);
  showSignIn(message);
}

async function signIn(e) {
  e.preventDefault();
  const inp = $("signin-token");
  const btn = $("signin-submit");
  const err = $("signin-error");
  const token = inp.value.trim();
  if (!token) {
    err.textContent = "Enter the admin token.";
    err.hidden = false;
    return;
  }
  btn.disabled = true;
  btn.classList.add("busy");
  try {
    await get("/api/stats/summary", { token });
    setToken(token);
    err.hidden = true;
    showApp();
    toast("Signed in", "success", 2000);
  } catch (ex) {
    err.textContent = ex instanceof ApiError && ex.status === 401 ? "That token is not valid." : ex.message;
    err.hidden = false;
    inp.select();
  } finally {
    btn.disabled = false;
    btn.classList.remove("busy");
  }
}

function wire() {
  $("signin-form").addEventListener("submit", signIn);
  $("signin-reveal").addEventListener("click", () => {
    const inp = $("signin-token");
    const show = inp.type === "password";
    inp.type = show ? "text" : "password";
    $("signin-reveal").querySelector("i").className = show ? "fa-regular fa-eye-slash" : "fa-regular fa-eye";
    $("signin-reveal").setAttribute("aria-label", show ? "Hide token" : "Show token");
  });
  document.addEventListener("click", (e) => {
    const target = e.target instanceof Element ? e.target.closest("[data-action]") : null;
    if (!target) return;
    const action = target.dataset.action;
    if (action === "theme") toggleTheme();
    else if (action === "signout") signOut();
    else if (action === "nav-open") document.body.classList.add("nav-open");
    else if (action === "nav-close") document.body.classList.remove("nav-open");
  });
  window.addEventListener("hashchange", route);
  onUnauthorized(() => signOut("Your session ended: the admin token was not accepted. Sign in again."));
}

initTheme();
wire();
if (getToken()) showApp();
else showSignIn();
