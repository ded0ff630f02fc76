// End-to-end test of the admin UI: the real nexus-server and mock upstream, driven through
// Debian's headless Chromium with playwright-core. Run by scripts/test-ui.sh (which builds both
// binaries), or directly: node --test nexus-server/ui/tests/ui.test.mjs
//
// Env: NEXUS_SERVER_BIN, NEXUS_MOCK_BIN (default target/debug/...), CHROMIUM (default
// /usr/bin/chromium), UI_TEST_OUT (default test-output/ui at the repo root).

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { randomBytes } from "node:crypto";
import { chromium } from "playwright-core";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const SERVER_BIN = process.env.NEXUS_SERVER_BIN || path.join(ROOT, "target/debug/nexus-server");
const MOCK_BIN = process.env.NEXUS_MOCK_BIN || path.join(ROOT, "target/debug/nexus-mock-upstream");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const OUT = process.env.UI_TEST_OUT || path.join(ROOT, "test-output/ui");
const ADMIN_TOKEN = `ui-admin-${randomBytes(12).toString("hex")}`;
const UPSTREAM_SECRET = `sk-upstream-${randomBytes(10).toString("hex")}`;
const STEP_MS = 15000;

const children = [];
const tmp = mkdtempSync(path.join(tmpdir(), "nexus-ui-test-"));
mkdirSync(OUT, { recursive: true });

function killAll() {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) {
      try {
        c.kill("SIGKILL");
      } catch {
        // already gone
      }
    }
  }
}
process.on("exit", () => {
  killAll();
  rmSync(tmp, { recursive: true, force: true });
});
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    killAll();
    process.exit(130);
  });
}

/** Starts `bin` and resolves with the first match of `re` on its `stream` output, within `ms`. */
function start(bin, args, { env = {}, stream, re, ms = 20000, name }) {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    children.push(child);
    let buf = "";
    let log = "";
    const timer = setTimeout(() => reject(new Error(`${name} did not start within ${ms} ms:\n${log}`)), ms);
    const onData = (d) => {
      buf += d.toString();
      const m = re.exec(buf);
      if (m) {
        clearTimeout(timer);
        resolve({ child, match: m, logs: () => log });
      }
    };
    child[stream].on("data", onData);
    child.stdout.on("data", (d) => (log += d.toString()).length > 200000 && (log = log.slice(-100000)));
    child.stderr.on("data", (d) => (log += d.toString()).length > 200000 && (log = log.slice(-100000)));
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(new Error(`${name} failed to start: ${e.message}`));
    });
    child.on("exit", (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited early (${code ?? sig}):\n${log}`));
    });
  });
}

async function admin(base, method, p, body) {
  const res = await fetch(base + p, {
    method,
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10000),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${p} → ${res.status}: ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Polls `fn` until it returns a truthy value, or fails after `ms`. */
async function until(fn, what, ms = STEP_MS, every = 200) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, every));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}${last instanceof Error ? `: ${last.message}` : ""}`);
}

let browser;
after(async () => {
  if (browser) await browser.close().catch(() => {});
  killAll();
});

test("admin UI end to end", { timeout: 540000 }, async (t) => {
  // ------------------------------------------------------------ processes
  const mock = await start(MOCK_BIN, [], { stream: "stdout", re: /(http:\/\/127\.0\.0\.1:\d+)/, name: "mock upstream" });
  const MOCK_URL = mock.match[1];
  const server = await start(SERVER_BIN, ["--listen", "127.0.0.1:0", "--db", path.join(tmp, "nexus.db")], {
    env: { NEXUS_ADMIN_TOKEN: ADMIN_TOKEN, NEXUS_LOG: "warn", RUST_LOG: "warn" },
    stream: "stderr",
    re: /listening on (http:\/\/127\.0\.0\.1:\d+)/,
    name: "nexus-server",
  });
  const BASE = server.match[1];

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
    timeout: 30000,
  });
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, colorScheme: "light", baseURL: BASE });
  context.setDefaultTimeout(STEP_MS);
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: BASE });

  // Every request must stay on 127.0.0.1; every console error is a failure (except the one
  // expected 401 of the wrong-token sign-in).
  const external = [];
  const consoleErrors = [];
  let allow401 = false;
  let allow400 = false;
  let allow502 = false;
  context.on("request", (r) => {
    const u = new URL(r.url());
    if ((u.protocol === "http:" || u.protocol === "https:" || u.protocol === "ws:" || u.protocol === "wss:") && u.hostname !== "127.0.0.1") external.push(r.url());
  });
  const page = await context.newPage();
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    if (allow401 && /status of 401/.test(m.text())) return;
    if (allow400 && /status of 400/.test(m.text())) return;
    if (allow502 && /status of 502/.test(m.text())) return;
    consoleErrors.push(m.text());
  });
  page.on("pageerror", (e) => consoleErrors.push(`pageerror: ${e.message}`));
  page.on("websocket", (ws) => {
    if (new URL(ws.url()).hostname !== "127.0.0.1") external.push(ws.url());
  });

  const shot = (name, opts = {}) => page.screenshot({ path: path.join(OUT, `${name}.png`), fullPage: opts.fullPage ?? true, animations: "disabled" });
  const go = async (hash, ready) => {
    await page.evaluate((hsh) => (location.hash = hsh), hash);
    try {
      await page.waitForSelector(ready, { state: "visible" });
    } catch (e) {
      await shot(`failure-${hash.replace(/\W+/g, "_")}`).catch(() => {});
      const text = await page.evaluate(() => document.getElementById("view")?.innerText?.slice(0, 500)).catch(() => "");
      throw new Error(`${e.message}\nview: ${text}`);
    }
    // Let toasts and entry animations settle before screenshots.
    await page.waitForTimeout(250);
  };
  /** Opens a dialog by clicking `opener`, shoots it once `ready` shows, and closes it (Escape). */
  const shotDialog = async (opener, ready, dialog, name) => {
    await page.click(opener);
    await page.waitForSelector(ready);
    await page.waitForTimeout(300);
    await shot(name, { fullPage: false });
    await page.keyboard.press("Escape");
    await page.waitForSelector(dialog, { state: "detached" });
  };
  const theme = () => page.evaluate(() => document.documentElement.getAttribute("data-theme"));
  const dismissToasts = () => page.evaluate(() => document.querySelectorAll(".toast").forEach((t) => t.remove()));
  const tile = (key) => page.$eval(`[data-stat="${key}"]`, (el) => Number(el.dataset.value || "NaN"));

  let providerId;
  let flakyId;
  let modelIds = {};

  await t.test("sign in", async () => {
    await page.goto("/");
    await page.waitForSelector("#signin-form", { state: "visible" });
    assert.equal(await theme(), "light", "a first visit follows prefers-color-scheme: light");
    await shot("light-signin");
    allow401 = true;
    await page.fill("#signin-token", "not-the-token");
    await page.click("#signin-submit");
    await page.waitForSelector("#signin-error:not([hidden])");
    assert.match(await page.textContent("#signin-error"), /not valid/);
    allow401 = false;
    await page.fill("#signin-token", ADMIN_TOKEN);
    await page.press("#signin-token", "Enter");
    await page.waitForSelector("#app:not([hidden])");
    await page.waitForSelector('#view[data-loaded="true"]');
    assert.equal(await page.evaluate(() => sessionStorage.getItem("nexus.adminToken")), ADMIN_TOKEN);
    assert.equal(await tile("providers"), 0);
  });

  await t.test("empty states", async () => {
    await dismissToasts();
    await shot("light-dashboard-empty");
    await go("#/providers", ".empty");
    await shot("light-providers-empty");
    await go("#/keys", ".empty");
    await go("#/chat", ".chat-empty");
  });

  await t.test("add a provider (key write-only)", async () => {
    await go("#/providers", '[data-testid="add-provider"]');
    await page.click('[data-testid="add-provider"]');
    const m = page.locator('[data-testid="provider-modal"]');
    await m.waitFor();
    assert.equal(await m.locator('[data-testid="provider-kind"]').inputValue(), "openai", "new providers default to OpenAI-compatible");
    await m.locator('[data-testid="provider-kind"]').selectOption("anthropic");
    assert.match(await m.locator('input[name="base_url"]').getAttribute("placeholder"), /anthropic/);
    await m.locator('[data-testid="provider-kind"]').selectOption("openai");
    await m.locator('input[name="name"]').fill("mock");
    await m.locator('input[name="base_url"]').fill(MOCK_URL);
    await m.locator('input[name="api_key"]').fill(UPSTREAM_SECRET);
    await m.locator('input[name="description"]').fill("The test's mock upstream");
    await shot("light-provider-modal", { fullPage: false });
    await m.locator(".modal-foot .btn-primary").click();
    await page.waitForSelector('tr[data-name="mock"]');
    await page.waitForSelector(".modal-backdrop", { state: "detached" });
    const list = await admin(BASE, "GET", "/api/providers");
    assert.equal(list.length, 1);
    assert.equal(list[0].kind, "openai");
    providerId = list[0].id;
    const row = page.locator('tr[data-name="mock"]');
    assert.equal(await row.getAttribute("data-id"), String(providerId), "rows carry the real DB id");
    assert.equal(await row.locator("td.id").textContent(), `#${providerId}`);
    assert.equal(await row.locator('[data-testid="key-hint"]').textContent(), list[0].api_key_hint);
    assert.ok(!(await page.content()).includes(UPSTREAM_SECRET), "the upstream key never reaches the page");

    // Edit: the key field is empty (write-only); saving without it keeps the key.
    await row.locator('button[title="Edit"]').click();
    await m.waitFor();
    assert.equal(await m.locator('input[name="api_key"]').inputValue(), "");
    await m.locator('input[name="description"]').fill("Mock upstream (edited)");
    await m.locator(".modal-foot .btn-primary").click();
    await page.waitForSelector('tr[data-name="mock"] >> text=Mock upstream (edited)');
    const p = await admin(BASE, "GET", `/api/providers/${providerId}`);
    assert.equal(p.api_key_hint, list[0].api_key_hint, "editing without a key keeps it");
  });

  await t.test("add models", async () => {
    await go(`#/models?provider=${providerId}`, '[data-testid="add-model"]');
    await shot("light-models-empty");
    await page.click('[data-testid="add-model"]');
    const m = page.locator('[data-testid="model-modal"]');
    await m.waitFor();
    await m.locator('input[name="name"]').fill("gpt-4o-mini");
    await m.locator('input[name="input_price"]').fill("0.15");
    await m.locator('input[name="output_price"]').fill("0.6");
    await m.locator('input[name="default_max_tokens"]').fill("2.5");
    await m.locator(".modal-foot .btn-primary").click();
    await until(async () => /whole number/.test(await m.locator(".form-error").textContent()), "a fractional max tokens refused");
    await m.locator('input[name="default_max_tokens"]').fill("2048");
    await m.locator(".modal-foot .btn-primary").click();
    await page.waitForSelector('tr[data-name="gpt-4o-mini"]');
    const added = (await admin(BASE, "GET", "/api/models")).find((x) => x.name === "gpt-4o-mini");
    assert.equal(added.default_max_tokens, 2048, "the form's default max tokens is saved");
    // Two more through the API: a slow one (to stop) and a failing one (for the error path).
    // A slow model (to stop) here, and a failing one on a provider of its own: upstream failures
    // cool their provider down, which must not touch "mock".
    await admin(BASE, "POST", `/api/providers/${providerId}/models`, { name: "slow-chunks60-delay30" });
    flakyId = (await admin(BASE, "POST", "/api/providers", { name: "flaky", base_url: MOCK_URL, api_key: "sk-flaky-000000" })).id;
    await admin(BASE, "POST", `/api/providers/${flakyId}/models`, { name: "broken-fail500" });
    const models = await admin(BASE, "GET", "/api/models");
    modelIds = Object.fromEntries(models.map((x) => [x.name, x.id]));
    await page.reload();
    await page.waitForSelector('tr[data-name="slow-chunks60-delay30"]');
    assert.equal(await page.locator('tr[data-name="broken-fail500"]').count(), 0, "the filter shows one provider's models");
    await page.selectOption('[data-testid="provider-filter"]', "");
    await page.waitForSelector('tr[data-name="broken-fail500"]');
    // Prices: the one set on the form; a model neither priced nor in the catalog says so.
    assert.equal(await page.locator('tr[data-name="gpt-4o-mini"] [data-testid="unpriced"]').count(), 0);
    assert.match(await page.locator('tr[data-name="gpt-4o-mini"]').textContent(), /\$0\.150/);
    assert.equal(await page.locator('tr[data-name="slow-chunks60-delay30"] [data-testid="unpriced"]').count(), 1);
    for (const [name, id] of Object.entries(modelIds)) {
      assert.equal(await page.getAttribute(`tr[data-name="${name}"]`, "data-id"), String(id));
    }
    await page.click('tr[data-name="gpt-4o-mini"] [data-testid="copy-model"]');
    await until(async () => (await page.evaluate(() => navigator.clipboard.readText())) === "gpt-4o-mini", "the copied model name");
    await dismissToasts();
    await shot("light-models");
  });

  await t.test("test all models of the provider", async () => {
    await go("#/providers", 'tr[data-name="mock"]');
    await dismissToasts();
    await shot("light-providers");
    await page.click('tr[data-name="mock"] [data-action-test]');
    await page.waitForSelector('[data-testid="test-results"] tr[data-model="slow-chunks60-delay30"]', { timeout: 30000 });
    assert.match(await page.textContent('[data-testid="test-results"] tr[data-model="gpt-4o-mini"]'), /OK/);
    assert.match(await page.textContent('[data-testid="test-modal"] .test-summary'), /2 of 2 passed/);
    await shot("light-provider-test", { fullPage: false });
    await page.keyboard.press("Escape");
    await page.waitForSelector('[data-testid="test-modal"]', { state: "detached" });
    await page.click('tr[data-name="flaky"] [data-action-test]');
    await page.waitForSelector('[data-testid="test-results"] tr[data-model="broken-fail500"]', { timeout: 30000 });
    assert.match(await page.textContent('[data-testid="test-results"] tr[data-model="broken-fail500"]'), /Failed/);
    await page.keyboard.press("Escape");
    await page.waitForSelector('[data-testid="test-modal"]', { state: "detached" });
  });

  let keyPlain;
  await t.test("create a key (plaintext once), disable and enable it", async () => {
    await go("#/keys", '[data-testid="create-key"]');
    await page.click('[data-testid="create-key"]');
    const m = page.locator('[data-testid="key-modal"]');
    await m.waitFor();
    await m.locator('input[name="name"]').fill("ui-test-key");
    await m.locator(`input[name="provider_ids"][value="${providerId}"]`).check();
    await m.locator('select[name="expiry"]').selectOption("30");
    await m.locator('input[name="rpm"]').fill("600");
    await shot("light-key-modal", { fullPage: false });
    await page.click('[data-testid="create-key-submit"]');
    await page.waitForSelector('[data-testid="key-created"]');
    keyPlain = await page.inputValue('[data-testid="new-key"]');
    assert.ok(keyPlain.length > 20, "the plaintext key is shown");
    await page.click('[data-testid="copy-key"]');
    await until(async () => (await page.evaluate(() => navigator.clipboard.readText())) === keyPlain, "the copied key");
    await shot("light-key-created", { fullPage: false });
    await page.click('[data-testid="key-done"]');
    await page.waitForSelector('[data-testid="key-created"]', { state: "detached" });
    await page.waitForSelector('tr[data-name="ui-test-key"]');
    const keys = await admin(BASE, "GET", "/api/keys");
    assert.equal(keys.length, 1);
    assert.equal(await page.getAttribute('tr[data-name="ui-test-key"]', "data-id"), String(keys[0].id));
    assert.equal(await page.textContent('tr[data-name="ui-test-key"] [data-testid="key-prefix"]'), `${keys[0].prefix}…`);
    assert.deepEqual(keys[0].provider_ids, [providerId]);
    assert.equal(keys[0].rpm, 600);
    assert.ok(keys[0].expires_at > Date.now() / 1000 + 29 * 86400);
    assert.ok(!(await page.content()).includes(keyPlain), "after the dialog only the prefix is on the page");

    const callModels = (k) => fetch(`${BASE}/v1/models`, { headers: { Authorization: `Bearer ${k}` }, signal: AbortSignal.timeout(5000) }).then((r) => r.status);
    assert.equal(await callModels(keyPlain), 200);
    await page.click('tr[data-name="ui-test-key"] [data-testid="toggle-key"]');
    await page.waitForSelector('tr[data-name="ui-test-key"] [data-testid="key-status"] >> text=Disabled');
    assert.equal(await callModels(keyPlain), 401);
    await page.click('tr[data-name="ui-test-key"] [data-testid="toggle-key"]');
    await page.waitForSelector('tr[data-name="ui-test-key"] [data-testid="key-status"] >> text=Active');
    assert.equal(await callModels(keyPlain), 200);
    await dismissToasts();
    await shot("light-keys");
  });

  let before;
  await t.test("dashboard before chatting", async () => {
    await go("#/dashboard", '#view[data-loaded="true"]');
    before = { rounds: await tile("rounds"), tokens: await tile("total_tokens"), conversations: await tile("conversations") };
    assert.equal(await tile("providers"), 2);
    assert.equal(await tile("models"), 3);
  });

  const lastAssistant = () => page.locator('[data-testid="msg-assistant"]').last();
  const chatTurn = async (text, status = "done") => {
    const n = await page.locator('[data-testid="msg-assistant"]').count();
    await page.fill('[data-testid="chat-input"]', text);
    await page.press('[data-testid="chat-input"]', "Enter");
    await until(async () => (await page.locator('[data-testid="msg-assistant"]').count()) === n + 1, "the new turn");
    await until(async () => (await lastAssistant().getAttribute("data-status")) === status, `a ${status} turn`);
  };

  await t.test("chat: streamed Markdown, multi-turn, usage", async () => {
    await go("#/chat", '[data-testid="chat-input"]');
    await until(async () => (await page.getAttribute('[data-testid="chat-conn"]', "data-state")) === "open", "the chat socket");
    await page.selectOption('[data-testid="chat-provider"]', String(providerId));
    await page.selectOption('[data-testid="chat-model"]', "gpt-4o-mini");
    await chatTurn("**bold** and `code`");
    const a = lastAssistant();
    assert.equal(await a.locator(".md strong").textContent(), "bold");
    assert.equal(await a.locator(".md code").first().textContent(), "code");
    assert.match(await a.locator('[data-testid="usage"]').textContent(), /prompt.*completion.*total/);

    await chatTurn("```rust\nfn main() { println!(\"hi\"); }\n```");
    assert.ok((await lastAssistant().locator("pre.code-block .hljs-keyword").count()) > 0, "code is highlighted");
    // The mock records the last request: the history went upstream.
    const st = await (await fetch(`${MOCK_URL}/mock/stats`)).json();
    const msgs = st.last_request.messages;
    assert.equal(msgs.length, 3, "second turn carries the first turn's history");
    assert.deepEqual(msgs.map((x) => x.role), ["user", "assistant", "user"]);
    assert.equal(msgs[1].content, "**bold** and `code`");
  });

  await t.test("chat: injected HTML is shown as text, never run", async () => {
    const payload = '<img src=x onerror="window.__xss=1"><script>window.__xss=1</script>';
    await chatTurn(payload);
    const a = lastAssistant();
    assert.equal(await page.evaluate(() => window.__xss), undefined);
    assert.equal(await page.locator('[data-testid="messages"] img, [data-testid="messages"] script').count(), 0);
    assert.ok((await a.locator(".md").textContent()).includes('<img src=x onerror="window.__xss=1">'), "the markup shows as text");
    await page.waitForTimeout(300);
    assert.equal(await page.evaluate(() => window.__xss), undefined);
  });

  await t.test("chat: stop a streaming answer", async () => {
    await page.selectOption('[data-testid="chat-model"]', "slow-chunks60-delay30");
    await page.fill('[data-testid="chat-input"]', "go slowly");
    await page.click('[data-testid="chat-send"]');
    await page.waitForSelector('[data-testid="chat-stop"]:not([hidden])');
    await until(async () => /tok/.test((await lastAssistant().locator(".md").textContent()) || ""), "the first deltas");
    await page.click('[data-testid="chat-stop"]');
    await until(async () => (await lastAssistant().getAttribute("data-status")) === "cancelled", "the cancelled turn");
    assert.match(await lastAssistant().locator('[data-testid="usage"]').textContent(), /stopped/);
    await page.waitForSelector('[data-testid="chat-send"]:not([hidden])');
  });

  await t.test("chat: upstream failure is visible", async () => {
    await page.selectOption('[data-testid="chat-provider"]', String(flakyId));
    await page.selectOption('[data-testid="chat-model"]', "broken-fail500");
    await chatTurn("this will fail", "error");
    const err = await lastAssistant().locator('[data-testid="chat-error"]').textContent();
    assert.match(err, /failed/i);
    assert.match(err, /upstream_error|provider_unavailable/);
    await page.selectOption('[data-testid="chat-provider"]', String(providerId));
    await page.selectOption('[data-testid="chat-model"]', "gpt-4o-mini");
    await chatTurn("Here is a list:\n\n- one\n- two\n\n> and a quote");
    await dismissToasts();
    await shot("light-chat", { fullPage: false });
  });

  await t.test("chat: a turn through the Responses API", async () => {
    await page.selectOption('[data-testid="chat-format"]', "responses");
    await chatTurn("through the responses api");
    const last = lastAssistant();
    assert.equal((await last.locator(".md").textContent()).trim(), "through the responses api");
    assert.equal(await last.locator('[data-testid="turn-format"]').textContent(), "responses");
    const summary = await last.locator('[data-testid="turn-events"] summary').textContent();
    assert.match(summary, /^\d+ events$/);
    await last.locator('[data-testid="turn-events"] summary').click();
    assert.match(await last.locator('[data-testid="turn-events"] div').textContent(), /response\.created .*response\.completed/);
    await dismissToasts();
    await shot("light-chat-responses", { fullPage: false });
    await page.selectOption('[data-testid="chat-format"]', "chat");
  });

  await t.test("dashboard numbers change after chatting", async () => {
    // One request through the Anthropic Messages API with the client key, for the per-API chart.
    const r = await fetch(`${BASE}/v1/messages`, {
      method: "POST",
      headers: { "x-api-key": keyPlain, "anthropic-version": "2023-06-01", "content-type": "application/json" },
      body: JSON.stringify({ model: "gpt-4o-mini", max_tokens: 64, messages: [{ role: "user", content: "hi" }] }),
    });
    assert.equal(r.status, 200, "a Messages API request with the client key");
    assert.equal((await r.json()).type, "message");
    await go("#/dashboard", '#view[data-loaded="true"]');
    // The stats writer batches; the dashboard refreshes itself every few seconds.
    await until(async () => (await tile("rounds")) > before.rounds && (await tile("total_tokens")) > before.tokens, "rounds and tokens to grow", 20000, 500);
    assert.ok((await tile("conversations")) >= before.conversations + 1);
    await until(async () => page.isHidden("#chart-models .chart-empty"), "the per-model chart to show data", 10000, 300);
    await until(async () => {
      const g = (await page.getAttribute('[data-testid="chart-endpoints"]', "data-groups")) || "";
      return /Chat completions=\d+/.test(g) && /Anthropic Messages=1/.test(g);
    }, "the per-API chart to show chat and Messages requests", 20000, 500);
    // Requests went to unpriced models (the slow and the failing one): the dashboard names them.
    const summary = await admin(BASE, "GET", "/api/stats/summary");
    assert.ok(summary.unpriced_requests > 0, "the slow model's turn was recorded unpriced");
    await page.waitForSelector('[data-testid="unpriced-panel"]', { state: "visible" });
    await until(async () => (await page.textContent('[data-testid="unpriced-count"]')).startsWith(`${summary.unpriced_requests} request`), "the unpriced count", 10000, 300);
    const listed = await page.$$eval('[data-testid="unpriced-panel"] [data-model]', (els) => els.map((e) => [e.dataset.model, e.getAttribute("href")]));
    const unpricedModels = (await admin(BASE, "GET", "/api/models")).filter((x) => x.price_source === null);
    assert.deepEqual(listed.map((x) => x[0]).sort(), unpricedModels.map((x) => x.name).sort(), "the panel lists exactly the unpriced models");
    assert.ok(listed.some(([n, href]) => n === "slow-chunks60-delay30" && href === `#/models?provider=${providerId}`));
    assert.ok(!listed.some(([n]) => n === "gpt-4o-mini"), "a priced model is not listed");
    assert.equal(await page.getAttribute('[data-testid="unpriced-link"]', "href"), "#/models");
    await page.waitForTimeout(400);
    await shot("light-dashboard");
  });

  // ------------------------------------------------------------ spend and budgets
  // A dear model so a few echo requests cost visible money ($2000 in / $4000 out per 1M tokens),
  // and client keys with budgets, all through the API; chats go through /v1 with those keys.
  const PRICE_IN = 2000;
  const PRICE_OUT = 4000;
  const close = (a, b, what) => assert.ok(Math.abs(a - b) < 1e-9, `${what}: ${a} ≠ ${b}`);
  const keyChat = (key, text) =>
    fetch(`${BASE}/v1/chat/completions`, {
      method: "POST",
      headers: { Authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "priced-echo", max_tokens: 16, messages: [{ role: "user", content: text }] }),
      signal: AbortSignal.timeout(10000),
    });
  const getKey = (id) => admin(BASE, "GET", `/api/keys/${id}`);
  const meter = (scope) =>
    page.$eval(`${scope} [data-testid="budget-meter"]`, (el) => ({
      value: Number(el.dataset.value),
      state: el.dataset.state,
      now: Number(el.getAttribute("aria-valuenow")),
      width: el.querySelector(".meter-fill").style.width,
      color: getComputedStyle(el.querySelector(".meter-fill")).backgroundColor,
      soft: el.closest("tr").querySelectorAll('[data-testid="badge-soft"]').length,
      reached: el.closest("tr").querySelectorAll('[data-testid="badge-reached"]').length,
    }));
  /** Waits until the spend chart has finished animating and draws a visible bar for each series. */
  let lastBars;
  const spendChartDrawn = () =>
    until(async () => {
      lastBars = await page.evaluate(() => {
        const c = window.Chart.getChart(document.querySelector('[data-testid="spend-chart"] canvas'));
        if (!c) return { none: true };
        const running = window.Chart.animator.running(c);
        const bars = c.data.datasets.map((d, i) => {
          const j = d.data.findLastIndex((v) => v > 0);
          const el = c.getDatasetMeta(i).data[j];
          return el ? Math.abs(el.base - el.y) : 0;
        });
        return { running, bars };
      });
      // The dearest series stacks first: it must be a visible bar, not a sliver mid-animation.
      return !lastBars.running && lastBars.bars.length > 0 && lastBars.bars[0] >= 10;
    }, "the spend chart to draw its bars", 10000, 200).catch((e) => {
      throw new Error(`${e.message}: ${JSON.stringify(lastBars)}`);
    });
  /** A full-page shot of the spend page: the viewport grows to the page first, so the chart's
   *  canvas is not resized in the middle of the capture. */
  const spendShot = async (name) => {
    const vp = page.viewportSize();
    const full = await page.evaluate(() => document.documentElement.scrollHeight);
    await page.setViewportSize({ width: vp.width, height: Math.max(vp.height, full) });
    try {
      await page.waitForTimeout(300);
      await spendChartDrawn();
      await shot(name);
    } finally {
      await page.setViewportSize(vp);
    }
  };
  // The spend page refreshes itself every 10 s; clicking the current group-by reloads at once.
  const spendRefresh = () => page.click('[data-testid="spend-chart"] [data-groupby].active');
  /** Waits until the page's bar for `id` shows the key's spent / budget as the API reports it. */
  const meterMatches = async (scope, id, refresh) =>
    until(async () => {
      if (refresh) await refresh();
      const k = await getKey(id);
      const m = await meter(scope);
      return Math.abs(m.value - k.spent_usd / k.budget_usd) < 1e-9 && k.spent_usd > 0 ? { m, k } : null;
    }, `the budget bar of key ${id} to match the API`, 20000, 500);

  let budgetKey;
  let tinyKey;
  let c1;
  await t.test("spend: a key's budget progress after a priced chat", async () => {
    const priced = await admin(BASE, "POST", `/api/providers/${providerId}/models`, { name: "priced-echo", input_price: PRICE_IN, output_price: PRICE_OUT });
    assert.equal(priced.price_source, "model");
    budgetKey = await admin(BASE, "POST", "/api/keys", { name: "budget-key", provider_ids: [providerId], budget_usd: 1, budget_period: "daily" });
    assert.equal(budgetKey.budget_usd, 1);
    const r = await keyChat(budgetKey.key, "one two three four");
    assert.equal(r.status, 200);
    const u = (await r.json()).usage;
    c1 = (u.prompt_tokens * PRICE_IN + u.completion_tokens * PRICE_OUT) / 1e6;
    assert.ok(c1 > 0);
    await until(async () => Math.abs((await getKey(budgetKey.id)).spent_usd - c1) < 1e-9, "the request's cost on the key");

    await go("#/spend", '[data-testid="budgets-table"] tr[data-name="budget-key"]');
    const row = 'tr[data-name="budget-key"]';
    const { m } = await meterMatches(row, budgetKey.id, spendRefresh);
    close(m.value, c1, "bar = spent / $1");
    assert.equal(m.state, "ok");
    assert.equal(m.soft + m.reached, 0, "no badge below the thresholds");
    assert.ok(Math.abs(parseFloat(m.width) - Math.min(100, c1 * 100)) < 1e-6, `bar width ${m.width}`);
    assert.match(await page.textContent(`${row} [data-testid="budget-status"]`), /within budget/);
    assert.match(await page.textContent(`${row} td:nth-child(4)`), /Daily.*rolls over in/);
  });

  await t.test("keys page: budget fields, server errors inline, spend in the table", async () => {
    await go("#/keys", 'tr[data-name="budget-key"]');
    // Edit: a budget of 5 requests and a soft alert at 2.5 of them.
    const budget = Math.round(5 * c1 * 1e6) / 1e6;
    const soft = Math.round(2.5 * c1 * 1e6) / 1e6;
    await page.click('tr[data-name="budget-key"] [data-testid="edit-key"]');
    const m = page.locator('[data-testid="key-modal"]');
    await m.waitFor();
    assert.equal(await m.locator('input[name="budget_usd"]').inputValue(), "1", "the edit form shows the budget");
    assert.equal(await m.locator('select[name="budget_period"]').inputValue(), "daily");
    assert.equal(await m.locator('input[name="soft_budget_usd"]').inputValue(), "");
    assert.ok(await m.locator(`input[name="provider_ids"][value="${providerId}"]`).isChecked(), "the edit form keeps the scope");
    await m.locator('input[name="budget_usd"]').fill(String(budget));
    await m.locator('input[name="soft_budget_usd"]').fill(String(soft));
    await page.click('[data-testid="edit-key-submit"]');
    await page.waitForSelector('[data-testid="key-modal"]', { state: "detached" });
    let k = await getKey(budgetKey.id);
    assert.equal(k.budget_usd, budget);
    assert.equal(k.soft_budget_usd, soft);
    assert.equal(k.budget_period, "daily");
    assert.deepEqual(k.provider_ids, [providerId]);

    // Create with a budget.
    await page.click('[data-testid="create-key"]');
    await m.waitFor();
    await m.locator('input[name="name"]').fill("form-budget-key");
    await m.locator('input[name="budget_usd"]').fill("5");
    await m.locator('select[name="budget_period"]').selectOption("weekly");
    await m.locator('input[name="soft_budget_usd"]').fill("2");
    await page.click('[data-testid="create-key-submit"]');
    await page.waitForSelector('[data-testid="key-created"]');
    await page.click('[data-testid="key-done"]');
    await page.waitForSelector('tr[data-name="form-budget-key"]');
    const made = (await admin(BASE, "GET", "/api/keys")).find((x) => x.name === "form-budget-key");
    assert.equal(made.budget_usd, 5);
    assert.equal(made.budget_period, "weekly");
    assert.equal(made.soft_budget_usd, 2);
    assert.equal(made.spent_usd, 0);
    const fm = await meter('tr[data-name="form-budget-key"]');
    assert.equal(fm.value, 0);
    assert.equal(fm.width, "0%");
    assert.match(await page.textContent('tr[data-name="form-budget-key"] [data-testid="key-budget"]'), /\$0\.00 of \$5\.00.*Weekly/);

    // Soft above hard: the server refuses it and its message shows in the form, on the field.
    const before = (await admin(BASE, "GET", "/api/keys")).length;
    await page.click('[data-testid="create-key"]');
    await m.waitFor();
    await m.locator('input[name="name"]').fill("bad-budget-key");
    await m.locator('input[name="budget_usd"]').fill("1");
    await m.locator('input[name="soft_budget_usd"]').fill("3");
    allow400 = true;
    await page.click('[data-testid="create-key-submit"]');
    await page.waitForSelector('[data-testid="key-form-error"]:not([hidden])');
    allow400 = false;
    const errText = await page.textContent('[data-testid="key-form-error"]');
    const direct = await fetch(`${BASE}/api/keys`, { method: "POST", headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" }, body: JSON.stringify({ name: "bad-budget-key", budget_usd: 1, soft_budget_usd: 3 }) });
    assert.equal(direct.status, 400);
    const body = await direct.json();
    assert.equal(errText, body.error.message, "the form shows the server's message");
    assert.match(errText, /soft_budget_usd/);
    assert.equal(await m.locator('input[name="soft_budget_usd"]').getAttribute("aria-invalid"), "true", "the blamed field is marked");
    assert.equal((await admin(BASE, "GET", "/api/keys")).length, before, "no key was made");
    await dismissToasts();
    await shot("light-key-modal-budget-error", { fullPage: false });
    await page.keyboard.press("Escape");
    await page.waitForSelector('[data-testid="key-modal"]', { state: "detached" });
  });

  await t.test("spend: soft alert, budget reached, chart and totals", async () => {
    for (const text of ["five six seven eight", "nine ten eleven twelve"]) assert.equal((await keyChat(budgetKey.key, text)).status, 200);
    // A key whose whole budget is half a request: the first is admitted, the second refused.
    tinyKey = await admin(BASE, "POST", "/api/keys", { name: "tiny-key", budget_usd: Math.round((c1 / 2) * 1e6) / 1e6, budget_period: "total" });
    assert.equal((await keyChat(tinyKey.key, "one two three four")).status, 200);
    await until(async () => (await getKey(tinyKey.id)).budget_reached, "the tiny key to reach its budget");
    const refused = await keyChat(tinyKey.key, "one two three four");
    assert.equal(refused.status, 429);
    assert.equal((await refused.json()).error.code, "insufficient_quota");

    await go("#/spend", 'tr[data-name="tiny-key"]');
    const { m: soft, k } = await meterMatches('tr[data-name="budget-key"]', budgetKey.id, spendRefresh);
    assert.ok(k.spent_usd >= k.soft_budget_usd && k.spent_usd < k.budget_usd, "three requests pass the soft threshold, not the budget");
    assert.ok(k.soft_budget_reached && !k.budget_reached);
    assert.equal(soft.state, "soft");
    assert.equal(soft.soft, 1, "the soft alert badge");
    assert.equal(soft.reached, 0);
    assert.equal(soft.now, Math.round((k.spent_usd / k.budget_usd) * 100));
    const { m: over, k: tk } = await meterMatches('tr[data-name="tiny-key"]', tinyKey.id);
    assert.ok(tk.spent_usd > tk.budget_usd);
    assert.equal(over.state, "over");
    assert.equal(over.reached, 1, "the budget reached badge");
    assert.equal(over.width, "100%", "the bar stops at full");
    assert.match(await page.textContent('tr[data-name="tiny-key"] td:nth-child(4)'), /Total.*never rolls over/);
    const ok = await meter('tr[data-name="form-budget-key"]');
    assert.equal(new Set([ok.color, soft.color, over.color]).size, 3, "the bar changes colour at the soft threshold and at the budget");

    // The chart by key: each budgeted key's series adds up to what it spent.
    const chartSeries = () =>
      page.evaluate(() => {
        const c = window.Chart.getChart(document.querySelector('[data-testid="spend-chart"] canvas'));
        return { type: c.config.type, stacked: Boolean(c.options.scales.y.stacked && c.options.scales.x.stacked), series: Object.fromEntries(c.data.datasets.map((d) => [d.label, d.data.reduce((a, b) => a + (b || 0), 0)])) };
      });
    // The stats name a key "name (prefix)".
    const label = (x) => `${x.name} (${x.prefix})`;
    const spentNow = { [label(k)]: k.spent_usd, [label(tk)]: tk.spent_usd };
    let seen;
    await until(async () => {
      await spendRefresh();
      const cs = (seen = await chartSeries());
      return Object.entries(spentNow).every(([name, spent]) => Math.abs((cs.series[name] || 0) - spent) < 1e-9);
    }, "the chart's per-key series to add up to the keys' spend", 15000, 500).catch((e) => {
      throw new Error(`${e.message}; chart ${JSON.stringify(seen)}, keys ${JSON.stringify(spentNow)}`);
    });
    const cs = await chartSeries();
    assert.equal(cs.type, "bar");
    assert.ok(cs.stacked, "stacked bars");
    for (const [name, spent] of Object.entries(spentNow)) {
      close(Number(await page.getAttribute(`[data-testid="totals-table"] tr[data-group="${name}"]`, "data-cost")), spent, `${name}'s total in the table`);
    }
    assert.equal(await page.getAttribute(`[data-testid="totals-table"] tr[data-group="${label(k)}"]`, "data-requests"), "3");
    assert.ok(Number(await page.getAttribute(`[data-testid="totals-table"] tr[data-group="${label(tk)}"]`, "data-requests")) >= 1);

    // By model: priced-echo carries both keys' spend; the unpriced model says so instead of $0.
    await page.click('[data-groupby="model"]');
    await until(async () => {
      const v = await page.getAttribute('[data-testid="totals-table"] tr[data-group="priced-echo"]', "data-cost").catch(() => null);
      return v !== null && Math.abs(Number(v) - (k.spent_usd + tk.spent_usd)) < 1e-9;
    }, "priced-echo's total by model");
    assert.ok("priced-echo" in (await chartSeries()).series);
    assert.equal(await page.locator('[data-testid="totals-table"] tr[data-group="slow-chunks60-delay30"] [data-testid="unpriced"]').count(), 1);
    assert.equal(await page.locator('[data-testid="totals-table"] tr[data-group="gpt-4o-mini"] [data-testid="unpriced"]').count(), 0);
    await page.click('[data-groupby="key"]');
    await page.waitForSelector(`[data-testid="totals-table"] tr[data-group="${label(k)}"]`);
    await dismissToasts();
    await spendChartDrawn();
    await spendShot("light-spend");

    // The keys table shows the same bar and badges.
    await go("#/keys", 'tr[data-name="tiny-key"]');
    const kb = await meter('tr[data-name="budget-key"]');
    close(kb.value, k.spent_usd / k.budget_usd, "the keys table's bar");
    assert.equal(kb.soft, 1);
    const kt = await meter('tr[data-name="tiny-key"]');
    assert.equal(kt.reached, 1);
    assert.equal(kt.state, "over");
  });

  await t.test("spend: reprice history, dry run then for real", async () => {
    // Halve priced-echo's prices: history keeps the old cost until the admin reprices it.
    await admin(BASE, "PATCH", `/api/models/${(await admin(BASE, "GET", "/api/models")).find((x) => x.name === "priced-echo").id}`, { input_price: PRICE_IN / 2, output_price: PRICE_OUT / 2 });
    const spentBefore = (await getKey(budgetKey.id)).spent_usd;
    const expected = await admin(BASE, "POST", "/api/stats/reprice", { dry_run: true });
    assert.equal(expected.rows_changed, 4, "the four answered priced-echo requests");
    await go("#/spend", '[data-testid="reprice"]');
    await page.click('[data-testid="reprice"]');
    await page.waitForSelector('[data-testid="reprice-dry"]');
    const dry = page.locator('[data-testid="reprice-dry"]');
    assert.equal(await page.textContent('[data-testid="reprice-counts"]'), `${expected.rows_changed} of ${expected.rows_examined} rows would change`);
    close(Number(await dry.getAttribute("data-before")), expected.cost_before_usd, "cost before");
    close(Number(await dry.getAttribute("data-after")), expected.cost_after_usd, "cost after");
    const money = await page.$$eval('[data-testid="reprice-money"] span', (els) => els.map((e) => e.textContent));
    assert.equal(money.length, 2);
    assert.ok(money.every((x) => x.startsWith("$")) && money[0] !== money[1], `before → after: ${money.join(" → ")}`);
    assert.equal(await page.textContent('[data-testid="reprice-confirm"]'), `Reprice ${expected.rows_changed} rows`);
    close((await getKey(budgetKey.id)).spent_usd, spentBefore, "a dry run changes nothing");
    await shot("light-spend-reprice", { fullPage: false });
    await page.click('[data-testid="reprice-confirm"]');
    await page.waitForSelector('[data-testid="reprice-result"]');
    assert.equal(await page.getAttribute('[data-testid="reprice-result"]', "data-changed"), String(expected.rows_changed));
    assert.match(await page.textContent('[data-testid="reprice-result"]'), new RegExp(`Repriced ${expected.rows_changed} of \\d+ rows`));
    assert.equal((await admin(BASE, "POST", "/api/stats/reprice", { dry_run: true })).rows_changed, 0, "nothing left to reprice");
    close((await getKey(budgetKey.id)).spent_usd, spentBefore / 2, "the key's spend at the halved price");
    await page.click('[data-testid="reprice-confirm"]');
    await page.waitForSelector('[data-testid="reprice-modal"]', { state: "detached" });
    await meterMatches('tr[data-name="budget-key"]', budgetKey.id, spendRefresh);
    await dismissToasts();
  });

  // ------------------------------------------------------------ request explorer
  /** Every row the API lists for `query` (all pages). */
  const allRequests = async (query = "") => {
    const rows = [];
    let cursor = null;
    do {
      const q = new URLSearchParams(query);
      q.set("limit", "1000");
      if (cursor) q.set("cursor", cursor);
      const pg = await admin(BASE, "GET", `/api/requests?${q}`);
      rows.push(...pg.data);
      cursor = pg.next_cursor;
    } while (cursor);
    return rows;
  };
  const uiRows = () =>
    page.$$eval('[data-testid="requests-table"] tbody tr', (els) =>
      els.map((e) => ({ id: e.dataset.id, status: Number(e.dataset.status), model: e.dataset.model, tokens: Number(e.dataset.tokens), cost: e.dataset.cost, time: Number(e.dataset.time), keyId: e.dataset.keyId, providerId: e.dataset.providerId })),
    );
  const uiIds = async () => (await uiRows()).map((r) => r.id);
  const hashParams = () => page.evaluate(() => Object.fromEntries(new URLSearchParams(location.hash.split("?")[1] || "")));
  /** Waits until the table lists exactly `ids`, in order. */
  const rowsAre = (ids, what) =>
    until(async () => JSON.stringify(await uiIds()) === JSON.stringify(ids), what, STEP_MS, 250).catch(async (e) => {
      throw new Error(`${e.message}; table ${JSON.stringify((await uiIds()).slice(0, 5))}… (${(await uiIds()).length}), want ${JSON.stringify(ids.slice(0, 5))}… (${ids.length})`);
    });

  await t.test("requests: the explorer pages through what the API lists", async () => {
    // More than one page of rows: 60 quick requests with the client key.
    const before = (await allRequests()).length;
    for (let i = 0; i < 12; i++) {
      const batch = await Promise.all(
        Array.from({ length: 5 }, (_, j) =>
          fetch(`${BASE}/v1/chat/completions`, {
            method: "POST",
            headers: { Authorization: `Bearer ${keyPlain}`, "content-type": "application/json" },
            body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: `explorer row ${i * 5 + j}` }] }),
            signal: AbortSignal.timeout(10000),
          }).then((r) => r.status),
        ),
      );
      assert.deepEqual(batch, [200, 200, 200, 200, 200]);
    }
    await until(async () => (await allRequests()).length >= before + 60, "the 60 new rows to be recorded", 20000, 300);
    const first = await admin(BASE, "GET", "/api/requests");
    assert.equal(first.data.length, 50);
    assert.ok(first.next_cursor, "more than one page");

    await go("#/requests", '[data-testid="requests"][data-count]');
    await rowsAre(first.data.map((r) => r.request_id), "the first page, newest first");
    assert.equal(await page.getAttribute('[data-testid="requests"]', "data-more"), "true");
    assert.ok(await page.isVisible('[data-testid="load-more"]'), "Load more shows while there is a next page");
    // The figures of each row are the API's.
    const rows = await uiRows();
    first.data.forEach((r, i) => {
      assert.equal(rows[i].status, r.status);
      assert.equal(rows[i].model, r.model);
      assert.equal(rows[i].tokens, r.prompt_tokens + r.completion_tokens);
      assert.equal(rows[i].cost, r.cost === null ? "" : String(r.cost));
      assert.equal(rows[i].time, r.time);
      assert.equal(rows[i].keyId, r.key_id === null ? "" : String(r.key_id));
    });
    const top = page.locator(`[data-testid="requests-table"] tr[data-id="${first.data[0].request_id}"]`);
    assert.equal(await top.locator('[data-label="Model"] .cell-main').textContent(), first.data[0].model);
    assert.equal(await top.locator('[data-testid="req-status"]').textContent(), String(first.data[0].status));
    assert.equal(await top.locator('[data-label="Key"]').textContent(), first.data[0].key_name);
    assert.match(await page.textContent('[data-testid="requests-count"]'), /^50 requests shown · more available$/);
    await dismissToasts();
    await shot("light-requests");

    // Load more: the next page, by the API's cursor, appended.
    const second = await admin(BASE, "GET", `/api/requests?cursor=${encodeURIComponent(first.next_cursor)}`);
    await page.click('[data-testid="load-more"]');
    await rowsAre([...first.data, ...second.data].map((r) => r.request_id), "the first two pages");
    assert.equal(await page.getAttribute('[data-testid="requests"]', "data-more"), second.next_cursor ? "true" : "false");
  });

  await t.test("requests: filters narrow the rows and live in the URL", async () => {
    // By model: the select lists the registry's models.
    await page.selectOption('[data-testid="filter-model"]', "priced-echo");
    const priced = await allRequests("model=priced-echo");
    assert.ok(priced.length >= 4 && priced.length < 50, `priced-echo rows: ${priced.length}`);
    await rowsAre(priced.map((r) => r.request_id), "the priced-echo rows");
    assert.ok((await uiRows()).every((r) => r.model === "priced-echo"));
    assert.equal((await hashParams()).model, "priced-echo", "the filter is in the hash");
    assert.ok(await page.isHidden('[data-testid="load-more"]'), "no next page");

    // And by status: the failures among them (the budget refusals), then every failure.
    await page.selectOption('[data-testid="filter-status"]', "error");
    const pricedErrors = await allRequests("model=priced-echo&status=error");
    await rowsAre(pricedErrors.map((r) => r.request_id), "priced-echo's failures");
    assert.ok(pricedErrors.length >= 1 && pricedErrors.every((r) => r.status >= 400));
    await page.selectOption('[data-testid="filter-model"]', "");
    const errors = await allRequests("status=error");
    assert.ok(errors.length > pricedErrors.length && errors.length < 50, `errors: ${errors.length}`);
    await rowsAre(errors.map((r) => r.request_id), "every failure");
    assert.ok((await uiRows()).every((r) => r.status >= 400));
    assert.deepEqual(await hashParams(), { status: "error" });

    // A link with filters opens the same view (the selects show them).
    const prov = `#/requests?provider_id=${flakyId}&status=error`;
    await page.evaluate((hsh) => (location.hash = hsh), prov);
    const flakyErrors = await allRequests(`provider_id=${flakyId}&status=error`);
    await rowsAre(flakyErrors.map((r) => r.request_id), "the link's rows");
    assert.ok(flakyErrors.length >= 1);
    assert.equal(await page.inputValue('[data-testid="filter-provider"]'), String(flakyId));
    assert.equal(await page.inputValue('[data-testid="filter-status"]'), "error");
    await page.reload();
    await page.waitForSelector('[data-testid="requests"][data-count]');
    await rowsAre(flakyErrors.map((r) => r.request_id), "the same rows after a reload");

    // A time range: the rows of the last request's second and before (until is exclusive).
    await page.click('[data-testid="filters-reset"]');
    const all = (await admin(BASE, "GET", "/api/requests")).data;
    const pivot = all[20];
    const sinceS = Math.floor(pivot.time / 1000) - 3600;
    const untilS = Math.floor(pivot.time / 1000);
    await page.evaluate((hsh) => (location.hash = hsh), `#/requests?since=${sinceS}&until=${untilS}`);
    const ranged = (await admin(BASE, "GET", `/api/requests?since=${sinceS}&until=${untilS}`)).data;
    await rowsAre(ranged.map((r) => r.request_id), "the time range's rows");
    assert.ok((await uiRows()).every((r) => r.time >= sinceS * 1000 && r.time < untilS * 1000));
    assert.equal(await page.inputValue('[data-testid="filter-range"]'), "custom");
    assert.notEqual(await page.inputValue('[data-testid="filter-since"]'), "");

    // A filter the API refuses: its message shows in the page.
    allow400 = true;
    await page.evaluate(() => (location.hash = "#/requests?since=yesterday"));
    await page.waitForSelector('[data-testid="requests-error"]:not([hidden])');
    allow400 = false;
    const direct = await fetch(`${BASE}/api/requests?since=yesterday`, { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } });
    assert.equal(direct.status, 400);
    assert.ok((await page.textContent('[data-testid="requests-error"]')).includes((await direct.json()).error.message), "the server's message inline");
  });

  await t.test("requests: the detail panel shows every field, the attempts and the bodies", async () => {
    // A failed request to the failing model: its attempts, one per retry.
    let failed = null;
    let detail = null;
    for (const r of await allRequests("model=broken-fail500")) {
      const d = await admin(BASE, "GET", `/api/requests/${encodeURIComponent(r.request_id)}`);
      if (d.attempt_log.length >= 1) {
        failed = r;
        detail = d;
        break;
      }
    }
    assert.ok(failed, "a broken-fail500 row that reached the upstream");
    await go("#/requests?model=broken-fail500", `tr[data-id="${failed.request_id}"]`);
    await page.click(`tr[data-id="${failed.request_id}"]`);
    await page.waitForSelector('[data-testid="request-detail"][data-loaded="true"]');
    const d = page.locator('[data-testid="request-detail"]');
    for (const [k, v] of Object.entries(detail)) {
      if (k === "attempt_log" || k === "request_body" || k === "response_body") continue;
      assert.equal(await d.locator(`dd[data-field="${k}"]`).getAttribute("data-value"), JSON.stringify(v), `field ${k}`);
    }
    const attempts = await d.locator('[data-testid="attempt-log"] tbody tr').evaluateAll((els) => els.map((e) => ({ provider_id: Number(e.dataset.providerId), status: e.dataset.status === "" ? null : Number(e.dataset.status), ms: Number(e.dataset.ms) })));
    assert.deepEqual(attempts, detail.attempt_log.map((a) => ({ provider_id: a.provider_id, status: a.status, ms: a.ms })), "the attempt log");
    assert.match(await d.locator('[data-testid="attempt-log"] tbody tr').first().textContent(), /flaky/);
    if (!detail.request_body && !detail.response_body) assert.match(await d.locator('[data-testid="no-bodies"]').textContent(), /record_bodies/, "no bodies recorded: the page says how to keep them");
    await shot("light-request-detail-error", { fullPage: false });
    await page.keyboard.press("Escape");
    await page.waitForSelector('[data-testid="request-detail"]', { state: "detached" });

    // An answered request whose messages the hub recorded: the bodies, as text.
    let withBody = null;
    for (const r of await allRequests("model=gpt-4o-mini&status=ok")) {
      if (!r.conversation_id) continue;
      const conv = await admin(BASE, "GET", `/api/stats/conversations/${encodeURIComponent(r.conversation_id)}`).catch(() => null);
      const i = conv ? conv.messages.findIndex((m) => m.role === "user" && m.timestamp === r.time) : -1;
      if (i >= 0 && /explorer row/.test(conv.messages[i].content)) {
        withBody = { r, user: conv.messages[i].content, answer: conv.messages.slice(i + 1).find((m) => m.role === "assistant")?.content };
        break;
      }
    }
    assert.ok(withBody, "a request with recorded messages");
    await page.evaluate((hsh) => (location.hash = hsh), `#/requests?conversation_id=${encodeURIComponent(withBody.r.conversation_id)}&model=gpt-4o-mini`);
    await page.waitForSelector(`tr[data-id="${withBody.r.request_id}"]`);
    await page.focus(`tr[data-id="${withBody.r.request_id}"]`);
    await page.keyboard.press("Enter");
    await page.waitForSelector('[data-testid="request-detail"] [data-testid="body-request"]');
    assert.equal(await page.textContent('[data-testid="body-request"]'), withBody.user);
    assert.equal(await page.textContent('[data-testid="body-answer"]'), withBody.answer);
    assert.equal(await page.locator('[data-testid="request-detail"] [data-testid="attempt-log"] tbody tr').count(), 1);
    await dismissToasts();
    await shot("light-request-detail", { fullPage: false });
    await page.keyboard.press("Escape");
    await page.waitForSelector('[data-testid="request-detail"]', { state: "detached" });
  });

  await t.test("requests: recorded bodies of a key that keeps them", async () => {
    // The keys form sets record_bodies; that key's requests keep their bodies, redacted.
    await go("#/keys", '[data-testid="create-key"]');
    await page.click('[data-testid="create-key"]');
    const km = page.locator('[data-testid="key-modal"]');
    await km.waitFor();
    await km.locator('input[name="name"]').fill("bodies-key");
    await km.locator('[data-testid="record-bodies"]').selectOption("all");
    await page.click('[data-testid="create-key-submit"]');
    await page.waitForSelector('[data-testid="key-created"]');
    const plain = await page.inputValue('[data-testid="new-key"]');
    await page.click('[data-testid="key-done"]');
    await page.waitForSelector('tr[data-name="bodies-key"]');
    const made = (await admin(BASE, "GET", "/api/keys")).find((x) => x.name === "bodies-key");
    assert.equal(made.record_bodies, "all");
    const secret = "sk-proj-0123456789abcdefghijklmnopqrstuv";
    const r = await fetch(`${BASE}/v1/chat/completions`, { method: "POST", headers: { Authorization: `Bearer ${plain}`, "content-type": "application/json" }, body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: `recorded <b>body</b> with ${secret}` }] }) });
    assert.equal(r.status, 200);
    const row = await until(async () => (await allRequests(`key_id=${made.id}`))[0], "the recorded request");
    const detail = await until(async () => {
      const d = await admin(BASE, "GET", `/api/requests/${encodeURIComponent(row.request_id)}`);
      return d.request_body && d.response_body ? d : null;
    }, "its bodies");
    assert.ok(!detail.request_body.includes(secret), "the server redacted the key-shaped text");
    await go(`#/requests?key_id=${made.id}`, `tr[data-id="${row.request_id}"]`);
    assert.equal(await page.inputValue('[data-testid="filter-key"]'), String(made.id));
    await page.click(`tr[data-id="${row.request_id}"]`);
    await page.waitForSelector('[data-testid="request-detail"] [data-testid="body-response"]');
    const pretty = (t) => JSON.stringify(JSON.parse(t), null, 2);
    assert.equal(await page.textContent('[data-testid="body-request"]'), pretty(detail.request_body), "the request body, pretty JSON");
    assert.equal(await page.textContent('[data-testid="body-response"]'), pretty(detail.response_body), "the answer body");
    assert.equal(await page.locator('[data-testid="request-detail"] .body-text b').count(), 0, "markup in a body stays text");
    assert.ok(!(await page.content()).includes(secret));
    await dismissToasts();
    await shot("light-request-detail-bodies", { fullPage: false });
    await page.keyboard.press("Escape");
    await page.waitForSelector('[data-testid="request-detail"]', { state: "detached" });
  });

  await t.test("requests: export JSONL and CSV with the current filters", async () => {
    await go("#/requests?status=error", '[data-testid="requests"][data-count]');
    const direct = async (fmt) => (await fetch(`${BASE}/api/requests/export?status=error&format=${fmt}`, { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } })).text();
    for (const fmt of ["jsonl", "csv"]) {
      const [dl] = await Promise.all([page.waitForEvent("download"), page.click(`[data-testid="export-${fmt}"]`)]);
      assert.match(dl.suggestedFilename(), new RegExp(`^requests-\\d{8}-\\d{4}\\.${fmt}$`));
      const text = readFileSync(await dl.path(), "utf8");
      assert.equal(text, await direct(fmt), `the ${fmt} download is the server's export`);
      const errors = await allRequests("status=error");
      const lines = text.trim().split(/\r?\n/);
      assert.equal(lines.length, errors.length + (fmt === "csv" ? 1 : 0), `${fmt}: one line per failure`);
      if (fmt === "jsonl") assert.deepEqual(lines.map((l) => JSON.parse(l).request_id), errors.map((r) => r.request_id));
      else assert.match(lines[0], /^time,request_id,/);
    }
  });

  await t.test("dashboard: a chart click opens the requests of that bucket", async () => {
    const chartHasData = (sel) =>
      page.evaluate((q) => {
        const c = window.Chart.getChart(document.querySelector(q));
        return Boolean(c && c.data.datasets.some((d) => d.data.some((v) => v > 0)));
      }, sel);
    await go("#/dashboard", "#chart-tokens");
    await until(() => chartHasData("#chart-tokens"), "the tokens chart to have data");
    await page.waitForTimeout(400);
    const pos = await page.evaluate(() => {
      const canvas = document.querySelector("#chart-tokens");
      canvas.scrollIntoView({ block: "center" });
      const c = window.Chart.getChart(canvas);
      const sums = c.data.labels.map((_, i) => c.data.datasets.reduce((a, d) => a + (d.data[i] || 0), 0));
      const i = sums.findLastIndex((v) => v > 0);
      const el = c.getDatasetMeta(0).data[i];
      const r = canvas.getBoundingClientRect();
      return { i, x: r.left + el.x, y: r.top + (c.chartArea.top + c.chartArea.bottom) / 2 };
    });
    assert.ok(pos.i >= 0);
    await page.mouse.click(pos.x, pos.y);
    await until(async () => (await page.evaluate(() => location.hash)).startsWith("#/requests?"), "the requests page");
    const q = await hashParams();
    const since = Number(q.since);
    const untilS = Number(q.until);
    assert.equal(untilS - since, 3600, "one hourly bucket");
    assert.equal(since % 3600, 0, "on the bucket's start");
    assert.deepEqual(Object.keys(q).sort(), ["since", "until"]);
    await page.waitForSelector('[data-testid="requests"][data-count]');
    const api = await admin(BASE, "GET", `/api/requests?since=${since}&until=${untilS}`);
    assert.ok(api.data.length > 0);
    await rowsAre(api.data.map((r) => r.request_id), "the bucket's requests");
    assert.ok((await uiRows()).every((r) => r.time >= since * 1000 && r.time < untilS * 1000));

    // The per-model chart: a bar is that model's requests over the range.
    await go("#/dashboard", "#chart-models");
    await until(() => chartHasData("#chart-models"), "the models chart to have data");
    await page.waitForTimeout(400);
    const bar = await page.evaluate(() => {
      const canvas = document.querySelector("#chart-models");
      canvas.scrollIntoView({ block: "center" });
      const c = window.Chart.getChart(canvas);
      const i = c.data.labels.indexOf("priced-echo");
      const el = c.getDatasetMeta(0).data[i];
      const r = canvas.getBoundingClientRect();
      return { i, x: r.left + (el.x + el.base) / 2, y: r.top + el.y };
    });
    assert.ok(bar.i >= 0, "priced-echo has a bar");
    await page.mouse.click(bar.x, bar.y);
    await until(async () => (await page.evaluate(() => location.hash)).startsWith("#/requests?"), "the requests page");
    const mq = await hashParams();
    assert.equal(mq.model, "priced-echo");
    assert.ok(Number(mq.since) > 0 && !mq.until);
    await page.waitForSelector('[data-testid="requests"][data-count]');
    assert.equal(await page.inputValue('[data-testid="filter-model"]'), "priced-echo");
    const mapi = await allRequests(`model=priced-echo&since=${mq.since}`);
    await rowsAre(mapi.map((r) => r.request_id), "priced-echo's requests");
  });

  await t.test("spend: a bar click opens that key's requests in the bucket", async () => {
    await go("#/spend", '[data-testid="spend-chart"]');
    await page.click('[data-groupby="key"]');
    await spendChartDrawn();
    const seg = await page.evaluate(() => {
      const canvas = document.querySelector('[data-testid="spend-chart"] canvas');
      canvas.scrollIntoView({ block: "center" });
      const c = window.Chart.getChart(canvas);
      const ds = c.data.datasets.findIndex((d) => d.label.startsWith("budget-key ("));
      const i = c.data.datasets[ds].data.findLastIndex((v) => v > 0);
      const el = c.getDatasetMeta(ds).data[i];
      const r = canvas.getBoundingClientRect();
      return { ds, i, x: r.left + el.x, y: r.top + (el.y + el.base) / 2 };
    });
    assert.ok(seg.ds >= 0 && seg.i >= 0);
    await page.mouse.click(seg.x, seg.y);
    await until(async () => (await page.evaluate(() => location.hash)).startsWith("#/requests?"), "the requests page");
    const q = await hashParams();
    assert.equal(q.key_id, String(budgetKey.id));
    assert.equal(Number(q.until) - Number(q.since), 3600);
    await page.waitForSelector('[data-testid="requests"][data-count]');
    const api = await allRequests(`key_id=${budgetKey.id}&since=${q.since}&until=${q.until}`);
    assert.ok(api.length >= 1);
    await rowsAre(api.map((r) => r.request_id), "budget-key's requests in that hour");
  });

  // ------------------------------------------------------------ health, storage, import, groups
  const setModelsStatus = (status) => fetch(`${MOCK_URL}/mock/models-status`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ status }) });
  const healthRows = () => page.$$eval('[data-testid="health-table"] tbody tr', (els) => els.map((e) => ({ id: Number(e.dataset.id), state: e.dataset.state, reason: e.querySelector('[data-testid="health-reason"]')?.textContent ?? null })));
  const eventRows = () => page.$$eval('[data-testid="events-table"] tbody tr', (els) => els.map((e) => ({ id: Number(e.dataset.id), provider_id: Number(e.dataset.providerId), event: e.dataset.event, reason: e.querySelector('[data-testid="event-reason"]').textContent })));
  const stateOf = (p) => (p.auto_disabled ? "auto_disabled" : !p.enabled ? "disabled" : p.cooling_down_ms ? "cooling" : "healthy");
  /** Waits until the health page shows what the API says (providers and events). */
  const healthMatches = (what) =>
    until(async () => {
      const [list, events] = await Promise.all([admin(BASE, "GET", "/api/health/providers"), admin(BASE, "GET", "/api/health/events?limit=100")]);
      const want = list.map((p) => ({ id: p.provider_id, state: stateOf(p), reason: p.disabled_reason || null }));
      const wantEvents = events.map((e) => ({ id: e.id, provider_id: e.provider_id, event: e.event, reason: e.reason || "–" }));
      const ok = JSON.stringify(await healthRows()) === JSON.stringify(want) && JSON.stringify(await eventRows()) === JSON.stringify(wantEvents);
      if (!ok) await page.click('[data-testid="probe-now"]').catch(() => {});
      return ok ? { list, events } : null;
    }, what, 25000, 1500);

  await t.test("health: providers and events, operator and automatic disables told apart", async () => {
    // An operator disables "flaky" through the API: an event with its reason.
    await admin(BASE, "PATCH", `/api/providers/${flakyId}`, { enabled: false });
    await go("#/health", '[data-testid="health-table"]');
    let { list, events } = await until(async () => {
      const ev = await admin(BASE, "GET", "/api/health/events?limit=100");
      if (!ev.length || ev[0].event !== "disabled") return null;
      await page.click('[data-testid="probe-now"]');
      await page.waitForSelector('[data-testid="probe-now"]:not(.busy)');
      const list = await admin(BASE, "GET", "/api/health/providers");
      return JSON.stringify((await eventRows()).map((e) => e.id)) === JSON.stringify(ev.map((e) => e.id)) ? { list, events: ev } : null;
    }, "the operator's event on the page");
    assert.equal(events[0].provider_id, flakyId);
    assert.equal((await healthRows()).length, list.length, "one row per provider");
    const flakyRow = page.locator(`[data-testid="health-table"] tr[data-id="${flakyId}"]`);
    assert.equal(await flakyRow.getAttribute("data-state"), "disabled");
    assert.equal(await flakyRow.locator('[data-testid="health-state"]').textContent(), "Disabled by operator");
    assert.equal(await page.locator('[data-testid="events-table"] tbody tr').first().getAttribute("data-event"), "disabled");
    assert.match(await page.locator('[data-testid="events-table"] tbody tr').first().textContent(), /flaky.*Disabled.*by the operator/);
    assert.equal(await page.getAttribute('[data-stat="disabled"]', "data-value"), "1");

    // The mock's model list fails: three probes disable "mock" automatically.
    await setModelsStatus(503);
    try {
      for (let i = 0; i < 3; i++) {
        await page.click('[data-testid="probe-now"]');
        await page.waitForSelector('[data-testid="probe-now"]:not(.busy)');
        await page.waitForSelector('[data-testid="probe-result"]:not([hidden])');
      }
      const mock = (await admin(BASE, "GET", "/api/health/providers")).find((p) => p.provider_id === providerId);
      assert.ok(mock.auto_disabled && !mock.enabled, "three failed probes disable it automatically");
      assert.equal(await page.getAttribute('[data-testid="probe-result"]', "data-ok"), "0");
      ({ list, events } = await healthMatches("the automatic disable on the health page"));
      const mockRow = page.locator(`[data-testid="health-table"] tr[data-id="${providerId}"]`);
      assert.equal(await mockRow.getAttribute("data-state"), "auto_disabled");
      assert.equal(await mockRow.locator('[data-testid="health-state"]').textContent(), "Auto-disabled");
      assert.equal(await mockRow.locator('[data-testid="health-reason"]').textContent(), mock.disabled_reason);
      assert.match(mock.disabled_reason, /3 failed health probes/);
      assert.notEqual(await mockRow.locator('[data-testid="health-state"]').evaluate((e) => getComputedStyle(e).backgroundColor), await flakyRow.locator('[data-testid="health-state"]').evaluate((e) => getComputedStyle(e).backgroundColor), "automatic and operator disables look different");
      assert.equal(events[0].event, "auto_disabled");
      assert.equal(events[0].provider_id, providerId);
      assert.equal(await page.getAttribute('[data-stat="auto_disabled"]', "data-value"), "1");
      await dismissToasts();
      await shot("light-health");
      // The providers page marks the automatic disable, not the operator's.
      await go("#/providers", `tr[data-name="mock"] [data-testid="auto-disabled"]`);
      assert.equal(await page.locator('tr[data-name="flaky"] [data-testid="auto-disabled"]').count(), 0);
      assert.equal(await page.getAttribute('tr[data-name="mock"] [data-testid="auto-disabled"]', "title"), `Disabled by the health checks: ${mock.disabled_reason}`);
    } finally {
      await setModelsStatus(null);
    }
    // The list answers again: the next probe enables it; the operator enables "flaky".
    await go("#/health", '[data-testid="health-table"]');
    await page.click('[data-testid="probe-now"]');
    await until(async () => (await admin(BASE, "GET", "/api/providers")).find((p) => p.id === providerId).enabled, "mock enabled again");
    await admin(BASE, "PATCH", `/api/providers/${flakyId}`, { enabled: true });
    ({ events } = await healthMatches("the enables on the health page"));
    assert.deepEqual(events.slice(0, 2).map((e) => e.event), ["enabled", "auto_enabled"]);
    assert.equal(await page.locator(`[data-testid="health-table"] tr[data-id="${providerId}"]`).getAttribute("data-state"), "healthy");
  });

  await t.test("storage: the figures are the API's; prune now", async () => {
    const tileVal = (k) => page.getAttribute(`[data-testid="storage-tiles"] [data-stat="${k}"]`, "data-value");
    const ddVal = (scope, k) => page.getAttribute(`[data-testid="${scope}"] dd[data-field="${k}"]`, "data-value");
    await go("#/storage", '[data-testid="storage-tiles"] [data-stat="requests"][data-value]');
    let api;
    await until(async () => {
      api = await admin(BASE, "GET", "/api/storage");
      const same = [];
      for (const k of ["file_bytes", "used_bytes", "free_bytes", "requests", "messages", "rollups"]) same.push((await tileVal(k)) === String(api[k]));
      if (same.every(Boolean)) return true;
      await page.reload();
      await page.waitForSelector('[data-testid="storage-tiles"] [data-stat="requests"][data-value]');
      return false;
    }, "the storage tiles to match /api/storage");
    assert.equal(Number(await tileVal("requests")), (await allRequests()).length, "request rows");
    for (const k of ["message_days", "request_days", "rollup_days", "max_db_bytes"]) assert.equal(await ddVal("retention-settings", k), JSON.stringify(api.retention[k]), `retention ${k}`);
    assert.equal(await ddVal("retention-settings", "path"), JSON.stringify(api.path));
    assert.equal(await ddVal("retention-settings", "reclaims_space"), JSON.stringify(api.reclaims_space));
    if (api.last_prune) assert.equal(await ddVal("last-prune", "at_ms"), String(api.last_prune.at_ms), "the start-up pass");
    const startPass = api.last_prune ? api.last_prune.at_ms : 0;
    await dismissToasts();
    await shot("light-storage");

    await page.click('[data-testid="prune-now"]');
    await page.waitForSelector('[data-testid="prune-result"]:not([hidden])');
    const after = await admin(BASE, "GET", "/api/storage");
    assert.ok(after.last_prune.at_ms > startPass, "a new pass");
    assert.equal(await page.getAttribute('[data-testid="prune-result"] .callout', "data-at"), String(after.last_prune.at_ms));
    await until(async () => (await ddVal("last-prune", "at_ms")) === String(after.last_prune.at_ms), "the last pass shown");
    for (const k of ["requests", "messages", "rollups", "reclaimed_bytes", "db_bytes"]) assert.equal(await ddVal("last-prune", k), String(after.last_prune[k]), `last pass ${k}`);
    assert.match(await page.textContent('[data-testid="prune-summary"]'), /Nothing to prune|Pruned \d+ rows/);
  });

  await t.test("providers: import models from the provider's own list", async () => {
    const listed = await admin(BASE, "GET", `/api/providers/${providerId}/upstream-models`);
    await go("#/providers", 'tr[data-name="mock"]');
    await page.click('tr[data-name="mock"] [data-action-import]');
    const m = page.locator('[data-testid="import-modal"]');
    await m.locator(".import-item").first().waitFor();
    const items = await m.locator(".import-item").evaluateAll((els) => els.map((e) => ({ id: e.dataset.model, added: e.dataset.added === "true", disabled: e.querySelector("input").disabled, checked: e.querySelector("input").checked })));
    assert.deepEqual(items.map((x) => [x.id, x.added]), listed.map((x) => [x.id, x.added]), "the picker lists the provider's models");
    assert.ok(items.find((x) => x.id === "gpt-4o-mini").added, "a model it serves is marked added");
    assert.ok(items.filter((x) => x.added).every((x) => x.disabled && x.checked));
    const pick = listed.filter((x) => !x.added && x.kind === "chat").slice(0, 2).map((x) => x.id);
    assert.equal(pick.length, 2);
    for (const id of pick) await m.locator(`.import-item[data-model="${id}"] input`).check();
    assert.equal(await m.locator('[data-testid="import-submit"]').textContent(), "Import 2 models");
    await dismissToasts();
    await shot("light-import-modal", { fullPage: false });
    await m.locator('[data-testid="import-submit"]').click();
    await m.locator('[data-testid="import-result"]:not([hidden])').waitFor();
    assert.equal(await m.locator('[data-testid="import-result"] .callout').getAttribute("data-created"), "2");
    const models = (await admin(BASE, "GET", `/api/providers/${providerId}/models`)).map((x) => x.name);
    for (const id of pick) assert.ok(models.includes(id), `${id} was imported`);
    await until(async () => (await m.locator(`.import-item[data-model="${pick[0]}"]`).getAttribute("data-added")) === "true", "the list to show the import");
    await page.keyboard.press("Escape");
    await page.waitForSelector('[data-testid="import-modal"]', { state: "detached" });
    await until(async () => (await page.textContent('tr[data-name="mock"] td[data-label="Models"]')) === String(models.length), "the model count to grow");

    // The provider's list fails: the server's error shows in the dialog.
    await setModelsStatus(503);
    allow502 = true;
    try {
      await page.click('tr[data-name="mock"] [data-action-import]');
      await m.locator('[data-testid="import-error"]:not([hidden])').waitFor();
      const direct = await fetch(`${BASE}/api/providers/${providerId}/upstream-models`, { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } });
      assert.equal(direct.status, 502);
      assert.ok((await m.locator('[data-testid="import-error"]').textContent()).includes((await direct.json()).error.message));
      await page.keyboard.press("Escape");
      await page.waitForSelector('[data-testid="import-modal"]', { state: "detached" });
    } finally {
      allow502 = false;
      await setModelsStatus(null);
    }
  });

  await t.test("models: groups created, edited and deleted, errors inline", async () => {
    await go("#/models", '[data-testid="groups"] .empty');
    await page.click('[data-testid="add-group"]');
    const m = page.locator('[data-testid="group-modal"]');
    await m.waitFor();
    await m.locator('[data-testid="group-name"]').fill("smart");
    await m.locator('input[name="description"]').fill("echo first, then the priced one");
    for (const n of ["gpt-4o-mini", "priced-echo"]) {
      await m.locator('[data-testid="group-add-select"]').selectOption(n);
      await m.locator('[data-testid="group-add"]').click();
    }
    await m.locator('.member[data-model="priced-echo"] button[title="Move up"]').click();
    assert.deepEqual(await m.locator(".member").evaluateAll((els) => els.map((e) => e.dataset.model)), ["priced-echo", "gpt-4o-mini"]);
    await m.locator('.member[data-model="priced-echo"] button[title="Move down"]').click();
    await dismissToasts();
    await shot("light-group-modal", { fullPage: false });
    await page.click('[data-testid="group-submit"]');
    await page.waitForSelector('[data-testid="groups-table"] tr[data-name="smart"]');
    let groups = await admin(BASE, "GET", "/api/groups");
    assert.equal(groups.length, 1);
    assert.deepEqual(groups[0].models, ["gpt-4o-mini", "priced-echo"]);
    assert.equal(groups[0].description, "echo first, then the priced one");
    assert.equal(await page.getAttribute('[data-testid="groups-table"] tr[data-name="smart"]', "data-id"), String(groups[0].id));
    assert.deepEqual(await page.$$eval('tr[data-name="smart"] [data-testid="group-models"] li', (els) => els.map((e) => e.textContent)), groups[0].models);

    // A group may not take a model's name: the server's message in the form.
    await page.click('[data-testid="add-group"]');
    await m.waitFor();
    await m.locator('[data-testid="group-name"]').fill("gpt-4o-mini");
    await m.locator('[data-testid="group-add-select"]').selectOption("priced-echo");
    await m.locator('[data-testid="group-add"]').click();
    allow400 = true;
    await page.click('[data-testid="group-submit"]');
    await page.waitForSelector('[data-testid="group-form-error"]:not([hidden])');
    allow400 = false;
    const direct = await fetch(`${BASE}/api/groups`, { method: "POST", headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" }, body: JSON.stringify({ name: "gpt-4o-mini", models: ["priced-echo"] }) });
    assert.equal(direct.status, 400);
    assert.equal(await page.textContent('[data-testid="group-form-error"]'), (await direct.json()).error.message, "the server's message");
    await page.keyboard.press("Escape");
    await page.waitForSelector('[data-testid="group-modal"]', { state: "detached" });
    assert.equal((await admin(BASE, "GET", "/api/groups")).length, 1, "nothing was created");

    // Edit: drop a member.
    await page.click('tr[data-name="smart"] [data-testid="edit-group"]');
    await m.waitFor();
    assert.equal(await m.locator('[data-testid="group-name"]').inputValue(), "smart");
    await m.locator('.member[data-model="priced-echo"] [data-testid="group-remove"]').click();
    await page.click('[data-testid="group-submit"]');
    await page.waitForSelector('[data-testid="group-modal"]', { state: "detached" });
    groups = await admin(BASE, "GET", "/api/groups");
    assert.deepEqual(groups[0].models, ["gpt-4o-mini"]);
    await until(async () => JSON.stringify(await page.$$eval('tr[data-name="smart"] [data-testid="group-models"] li', (els) => els.map((e) => e.textContent))) === JSON.stringify(["gpt-4o-mini"]), "the edited members");

    // A request through the group: the explorer lists it under the group's name.
    const r = await fetch(`${BASE}/v1/chat/completions`, { method: "POST", headers: { Authorization: `Bearer ${keyPlain}`, "content-type": "application/json" }, body: JSON.stringify({ model: "smart", messages: [{ role: "user", content: "through the group" }] }) });
    assert.equal(r.status, 200);
    await until(async () => (await allRequests("model=smart")).length === 1, "the group's request row");
    await go("#/requests", '[data-testid="requests"][data-count]');
    assert.equal(await page.locator('[data-testid="filter-model"] option[value="smart"]').textContent(), "smart (group)");
    await page.selectOption('[data-testid="filter-model"]', "smart");
    const viaGroup = await allRequests("model=smart");
    await rowsAre(viaGroup.map((x) => x.request_id), "the group's request");
    assert.equal(viaGroup[0].upstream_model, "gpt-4o-mini");
    assert.match(await page.textContent(`tr[data-id="${viaGroup[0].request_id}"] [data-label="Model"]`), /smart.*gpt-4o-mini/);

    // Delete it; a second group stays for the screenshots.
    await go("#/models", 'tr[data-name="smart"]');
    await page.click('tr[data-name="smart"] [data-testid="delete-group"]');
    await page.waitForSelector('[data-testid="confirm"]');
    await page.click('[data-testid="confirm"] .btn-danger');
    await page.waitForSelector('[data-testid="groups"] .empty');
    assert.deepEqual(await admin(BASE, "GET", "/api/groups"), []);
    await admin(BASE, "POST", "/api/groups", { name: "fallback", models: ["priced-echo", "gpt-4o-mini"], description: "priced first" });
    await page.reload();
    await page.waitForSelector('[data-testid="groups-table"] tr[data-name="fallback"]');
    await dismissToasts();
    await shot("light-models-groups");
  });

  // ------------------------------------------------------------ key pools
  // A provider of its own on the mock with a model and a client key (through the API); its pool
  // keys are added through the dialog. The mock answers 401 to a key containing "revoked" and
  // 429 (Retry-After 30) to one containing "ratelimited".
  let poolId;
  await t.test("providers: a key pool, a refused key set aside, a rate-limited one resting, errors inline", async () => {
    const PRIMARY = `sk-ui-pool-primary-${randomBytes(6).toString("hex")}`;
    const REVOKED = `sk-ui-revoked-key-${randomBytes(6).toString("hex")}`;
    const LIMITED = `sk-ui-ratelimited-key-${randomBytes(6).toString("hex")}`;
    const secrets = [PRIMARY, REVOKED, LIMITED];
    poolId = (await admin(BASE, "POST", "/api/providers", { name: "pooled", base_url: MOCK_URL, api_key: PRIMARY, description: "three upstream keys" })).id;
    await admin(BASE, "POST", `/api/providers/${poolId}/models`, { name: "pool-echo" });
    const client = await admin(BASE, "POST", "/api/keys", { name: "pool-client", provider_ids: [poolId] });
    const poolKeys = async () => (await admin(BASE, "GET", `/api/providers/${poolId}/keys`)).data;
    const byName = (list) => Object.fromEntries(list.map((k) => [k.name, k]));
    const noSecrets = async (where) => {
      const html = await page.content();
      for (const s of secrets) assert.ok(!html.includes(s), `no upstream key in the page's HTML (${where})`);
    };

    await go("#/providers", 'tr[data-name="pooled"]');
    const countBtn = page.locator('tr[data-name="pooled"] [data-testid="key-count"]');
    assert.equal(await countBtn.textContent(), "1/1 key");
    await page.click('tr[data-name="pooled"] [data-action-keys]');
    const m = page.locator('[data-testid="pool-modal"]');
    await m.locator('[data-testid="pool-table"] tr[data-id="0"]').waitFor();
    assert.equal(await m.locator('tr[data-id="0"] [data-testid="pool-key-name"]').textContent(), "primary", "key 0 is the provider's own key");
    assert.equal(await m.locator('tr[data-id="0"] [data-testid="pool-delete"]').count(), 0, "key 0 goes only with the provider");
    assert.equal(await m.locator('[data-testid="pool-key"]').getAttribute("type"), "password");

    const addKey = async (key, name, weight) => {
      await m.locator('[data-testid="pool-key"]').fill(key);
      await m.locator('[data-testid="pool-name"]').fill(name);
      await m.locator('[data-testid="pool-weight"]').fill(weight);
      await m.locator('[data-testid="pool-add-submit"]').click();
    };
    await addKey(REVOKED, "revoked", "50");
    await m.locator('tr[data-name="revoked"]').waitFor();
    assert.equal(await m.locator('[data-testid="pool-key"]').inputValue(), "", "the key input is emptied once the key is added");
    await addKey(LIMITED, "limited", "50");
    await m.locator('tr[data-name="limited"]').waitFor();
    let keys = await poolKeys();
    assert.deepEqual(keys.map((k) => [k.name, k.weight, k.enabled, k.set_aside]), [["primary", 1, true, null], ["revoked", 50, true, null], ["limited", 50, true, null]]);

    // The server's 400s in the form: a key already in the pool, a weight out of 1-1000.
    const refused = async (body) => {
      const r = await fetch(`${BASE}/api/providers/${poolId}/keys`, { method: "POST", headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" }, body: JSON.stringify(body) });
      assert.equal(r.status, 400, JSON.stringify(body));
      return (await r.json()).error.message;
    };
    const addError = () => m.locator('[data-testid="pool-add-error"]:not([hidden])').textContent().catch(() => null);
    allow400 = true;
    try {
      await addKey(REVOKED, "again", "1");
      const dup = await refused({ api_key: REVOKED, name: "again", weight: 1 });
      await until(async () => (await addError()) === dup, `the duplicate key's message inline (${dup})`);
      const heavy = `sk-ui-heavy-${randomBytes(6).toString("hex")}`;
      secrets.push(heavy);
      await addKey(heavy, "heavy", "1001");
      const tooHeavy = await refused({ api_key: heavy, name: "heavy", weight: 1001 });
      await until(async () => (await addError()) === tooHeavy, `the weight's message inline (${tooHeavy})`);
    } finally {
      allow400 = false;
    }
    assert.equal((await poolKeys()).length, 3, "nothing was added");
    await noSecrets("after adding keys");

    // Chats through the pool: the refused key is set aside, the rate-limited one rests; every
    // request is answered with another key.
    for (let i = 0; i < 30; i++) {
      const r = await fetch(`${BASE}/v1/chat/completions`, {
        method: "POST",
        headers: { Authorization: `Bearer ${client.key}`, "content-type": "application/json", "x-conversation-id": `pool-${i}-${randomBytes(4).toString("hex")}` },
        body: JSON.stringify({ model: "pool-echo", messages: [{ role: "user", content: `pool request ${i}` }] }),
        signal: AbortSignal.timeout(10000),
      });
      assert.equal(r.status, 200, `request ${i} answered`);
      await r.text();
      const k = byName(await poolKeys());
      if (k.revoked.set_aside && k.limited.cooling_seconds) break;
    }
    keys = await poolKeys();
    const k = byName(keys);
    assert.ok(k.revoked.set_aside, "the refused key is set aside");
    assert.ok(k.limited.cooling_seconds > 0 && k.limited.enabled && !k.limited.set_aside, "the rate-limited key rests");
    const st = await (await fetch(`${MOCK_URL}/mock/stats`)).json();
    assert.equal(st.keys[REVOKED], 1, "the refused key was sent once");

    // The providers table: 2 of 3 in use, one set aside (warning).
    await page.keyboard.press("Escape");
    await page.waitForSelector('[data-testid="pool-modal"]', { state: "detached" });
    await page.reload();
    await page.waitForSelector('tr[data-name="pooled"] [data-testid="key-count"]');
    const listed = (await admin(BASE, "GET", "/api/providers")).find((p) => p.id === poolId);
    assert.deepEqual([listed.keys_active, listed.key_count], [2, 3]);
    assert.equal(await countBtn.textContent(), `${listed.keys_active}/${listed.key_count} keys`);
    assert.equal(await countBtn.getAttribute("data-set-aside"), "1");
    assert.match(await countBtn.getAttribute("class"), /badge-warning/, "a set-aside key warns");
    assert.equal(await page.locator('tr[data-name="mock"] [data-testid="key-count"]').textContent(), "1/1 key");
    assert.doesNotMatch(await page.locator('tr[data-name="mock"] [data-testid="key-count"]').getAttribute("class"), /badge-warning/);

    // The panel shows what the API says: names, hints, weights, states, the reason, the rest.
    await countBtn.click();
    await m.locator('[data-testid="pool-table"] tr[data-id="0"]').waitFor();
    const panelRows = () =>
      m.locator('[data-testid="pool-table"] tbody tr').evaluateAll((els) =>
        els.map((e) => ({
          id: Number(e.dataset.id),
          name: e.querySelector('[data-testid="pool-key-name"]').textContent,
          hint: e.querySelector('[data-testid="pool-hint"]').textContent,
          weight: Number(e.querySelector('[data-testid="pool-weight-input"]').value),
          state: e.dataset.state,
          badge: e.querySelector('[data-testid="pool-state"]').textContent,
          reason: e.querySelector('[data-testid="pool-reason"]')?.textContent ?? null,
          toggle: e.querySelector('[data-testid="pool-toggle"]').textContent,
          remove: Boolean(e.querySelector('[data-testid="pool-delete"]')),
        })),
      );
    const stateOfKey = (x) => (x.set_aside ? "set_aside" : !x.enabled ? "disabled" : x.cooling_seconds ? "resting" : "in_use");
    let lastPanel;
    const panelMatches = (what) =>
      until(async () => {
        const [api, rows] = await Promise.all([poolKeys(), panelRows()]);
        lastPanel = { api, rows };
        if (rows.length !== api.length) return null;
        const ok = api.every((x, i) => {
          const r = rows[i];
          const state = stateOfKey(x);
          const rest = state === "resting" ? Number(/Resting (\d+) s/.exec(r.badge)?.[1]) : null;
          return (
            r.id === x.id && r.name === x.name && r.hint === x.hint && r.weight === x.weight && r.state === state &&
            r.reason === (x.set_aside || null) &&
            (state !== "resting" || Math.abs(rest - x.cooling_seconds) <= 2) &&
            r.toggle === (state === "set_aside" ? "Put back in use" : x.enabled ? "Disable" : "Enable") &&
            r.remove === (x.id !== 0)
          );
        });
        return ok ? { api, rows } : null;
      }, what).catch((e) => {
        throw new Error(`${e.message}: ${JSON.stringify(lastPanel)}`);
      });
    let shown = await panelMatches("the pool panel to match the API");
    assert.deepEqual(shown.rows.map((r) => r.state), ["in_use", "set_aside", "resting"]);
    assert.match(shown.rows[1].reason, /answered 401/);
    await noSecrets("the pool panel");
    await dismissToasts();
    await shot("light-key-pool", { fullPage: false });

    // Put the set-aside key back in use through the dialog: the API agrees.
    await m.locator('tr[data-name="revoked"] [data-testid="pool-toggle"]').click();
    await until(async () => {
      const x = byName(await poolKeys()).revoked;
      return x.enabled && x.set_aside === null;
    }, "the set-aside key back in use");
    shown = await panelMatches("the panel after putting the key back");
    assert.equal(shown.rows[1].state, "in_use");

    // Change a weight through the dialog.
    await m.locator('tr[data-name="limited"] [data-testid="pool-weight-input"]').fill("7");
    await m.locator('tr[data-name="limited"] [data-testid="pool-weight-save"]').click();
    await until(async () => byName(await poolKeys()).limited.weight === 7, "the new weight");
    await panelMatches("the panel after the weight change");

    // Disable one key, delete another; the last key in use cannot be disabled: the 400 inline.
    await m.locator('tr[data-name="revoked"] [data-testid="pool-toggle"]').click();
    await until(async () => !byName(await poolKeys()).revoked.enabled, "the key disabled");
    await m.locator('tr[data-name="limited"] [data-testid="pool-delete"]').click();
    await page.waitForSelector('[data-testid="confirm"]');
    await page.click('[data-testid="confirm"] .btn-danger');
    await until(async () => (await poolKeys()).length === 2, "the key deleted");
    await panelMatches("the panel after a disable and a delete");
    allow400 = true;
    try {
      await m.locator('tr[data-id="0"] [data-testid="pool-toggle"]').click();
      await m.locator('[data-testid="pool-error"]:not([hidden])').waitFor();
      const r = await fetch(`${BASE}/api/providers/${poolId}/keys/0`, { method: "PATCH", headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" }, body: JSON.stringify({ enabled: false }) });
      assert.equal(r.status, 400);
      const msg = (await r.json()).error.message;
      assert.match(msg, /last key in use/);
      assert.equal(await m.locator('[data-testid="pool-error"]').textContent(), msg, "the server's message in the dialog");
    } finally {
      allow400 = false;
    }
    assert.ok(byName(await poolKeys()).primary.enabled, "the last key in use stays enabled");
    await panelMatches("the panel after the refused disable");
    await dismissToasts();
    await shot("light-key-pool-last-key", { fullPage: false });
    await page.keyboard.press("Escape");
    await page.waitForSelector('[data-testid="pool-modal"]', { state: "detached" });
    // The table behind the dialog followed: 1 of 2 in use, none set aside.
    await until(async () => (await countBtn.textContent()) === "1/2 keys", "the providers table's count");
    assert.equal(await countBtn.getAttribute("data-set-aside"), "0");
    assert.doesNotMatch(await countBtn.getAttribute("class"), /badge-warning/);

    // The health page's event log shows the set-aside key, linking to the pool.
    const events = (await admin(BASE, "GET", "/api/health/events?limit=100")).filter((e) => e.event === "key_set_aside");
    assert.equal(events.length, 1, JSON.stringify(events));
    assert.equal(events[0].provider_id, poolId);
    assert.ok(!events[0].reason.includes(REVOKED), "the event names the key by its hint");
    await go("#/health", `[data-testid="events-table"] tr[data-id="${events[0].id}"]`);
    const row = page.locator(`[data-testid="events-table"] tr[data-id="${events[0].id}"]`);
    assert.equal(await row.getAttribute("data-event"), "key_set_aside");
    assert.equal(await row.locator('[data-event="key_set_aside"]').textContent(), "Key set aside");
    assert.match(await row.textContent(), /pooled.*Key set aside.*the upstream refused a pool key/);
    assert.equal(await row.locator('[data-testid="event-reason"]').textContent(), events[0].reason);
    await noSecrets("the health page");
    await dismissToasts();
    await shot("light-health-key-set-aside");
    await row.locator('[data-testid="event-keys-link"]').click();
    await page.waitForSelector(`[data-testid="pool-modal"][data-provider-id="${poolId}"][data-loaded="true"]`);
    await page.keyboard.press("Escape");
    await page.waitForSelector('[data-testid="pool-modal"]', { state: "detached" });
  });

  // ------------------------------------------------------------ config file marks
  await t.test("config file: the objects it declares are marked, and no others", async () => {
    // This server never applied a file: nothing is marked.
    assert.equal((await admin(BASE, "GET", "/api/config/managed")).applied_at, null);
    for (const [hash, ready] of [["#/providers", 'tr[data-name="mock"]'], ["#/models", 'tr[data-name="gpt-4o-mini"]'], ["#/keys", 'tr[data-name="ui-test-key"]']]) {
      await go(hash, ready);
      assert.equal(await page.locator('[data-testid="config-badge"]').count(), 0, `no file applied: nothing marked on ${hash}`);
    }
    await page.click('tr[data-name="ui-test-key"] [data-testid="edit-key"]');
    await page.waitForSelector('[data-testid="key-modal"]');
    assert.equal(await page.locator('[data-testid="config-notice"]').count(), 0);
    await page.keyboard.press("Escape");
    await page.waitForSelector('[data-testid="key-modal"]', { state: "detached" });

    // A second server started with --config, plus objects made by hand through its API.
    const cfgPath = path.join(tmp, "managed.toml");
    writeFileSync(
      cfgPath,
      `[[providers]]
name = "cfg-openai"
kind = "openai"
base_url = "${MOCK_URL}"
api_key = "env:UI_CFG_OPENAI_KEY"
[[providers.models]]
name = "gpt-4o-mini"
input_price = 0.15
output_price = 0.6
[[providers.models]]
name = "cfg-echo"

[[providers]]
name = "cfg-second"
base_url = "${MOCK_URL}"
api_key = "env:UI_CFG_SECOND_KEY"
[[providers.models]]
name = "cfg-second-model"

[[groups]]
name = "cfg-group"
models = ["gpt-4o-mini", "cfg-echo"]

[[keys]]
name = "cfg-key"
providers = ["cfg-openai"]
rpm = 100
`,
    );
    const srv = await start(SERVER_BIN, ["--listen", "127.0.0.1:0", "--db", path.join(tmp, "managed.db"), "--config", cfgPath], {
      env: { NEXUS_ADMIN_TOKEN: ADMIN_TOKEN, NEXUS_LOG: "warn", RUST_LOG: "warn", UI_CFG_OPENAI_KEY: "sk-ui-config-openai-0001", UI_CFG_SECOND_KEY: "sk-ui-config-second-0002" },
      stream: "stderr",
      re: /listening on (http:\/\/127\.0\.0\.1:\d+)/,
      name: "nexus-server --config",
    });
    const CBASE = srv.match[1];
    const hand = await admin(CBASE, "POST", "/api/providers", { name: "by-hand", base_url: MOCK_URL, api_key: "sk-ui-by-hand-0003" });
    await admin(CBASE, "POST", `/api/providers/${hand.id}/models`, { name: "gpt-4o-mini" });
    await admin(CBASE, "POST", `/api/providers/${hand.id}/models`, { name: "hand-only" });
    const cfgOpenai = (await admin(CBASE, "GET", "/api/providers")).find((p) => p.name === "cfg-openai");
    await admin(CBASE, "POST", `/api/providers/${cfgOpenai.id}/models`, { name: "hand-extra" });
    await admin(CBASE, "POST", "/api/groups", { name: "hand-group", models: ["hand-only"] });
    await admin(CBASE, "POST", "/api/keys", { name: "hand-key" });
    const marks = await admin(CBASE, "GET", "/api/config/managed");
    assert.ok(marks.applied_at > 0, JSON.stringify(marks));

    const ctx2 = await browser.newContext({ viewport: { width: 1440, height: 900 }, colorScheme: "light", baseURL: CBASE });
    ctx2.setDefaultTimeout(STEP_MS);
    ctx2.on("request", (r) => {
      const u = new URL(r.url());
      if ((u.protocol === "http:" || u.protocol === "https:") && u.hostname !== "127.0.0.1") external.push(r.url());
    });
    const p2 = await ctx2.newPage();
    p2.on("console", (msg) => {
      if (msg.type() === "error") consoleErrors.push(`config server: ${msg.text()}`);
    });
    p2.on("pageerror", (e) => consoleErrors.push(`config server pageerror: ${e.message}`));
    try {
      await p2.goto("/");
      await p2.fill("#signin-token", ADMIN_TOKEN);
      await p2.press("#signin-token", "Enter");
      await p2.waitForSelector("#app:not([hidden])");
      const go2 = async (hash, ready) => {
        await p2.evaluate((hsh) => (location.hash = hsh), hash);
        await p2.waitForSelector(ready, { state: "visible" });
        await p2.waitForTimeout(250);
      };
      const shot2 = (name, opts = {}) => p2.screenshot({ path: path.join(OUT, `${name}.png`), fullPage: opts.fullPage ?? true, animations: "disabled" });
      const marked = (sel, key) =>
        p2.$$eval(sel, (els, k) => els.map((e) => ({ id: k === "model" ? `${e.dataset.provider}/${e.dataset.name}` : e.dataset.name, marked: Boolean(e.querySelector('[data-testid="config-badge"]')) })), key);
      const check = async (sel, key, want, what) => {
        const rows = await marked(sel, key);
        assert.deepEqual(rows.filter((r) => r.marked).map((r) => r.id).sort(), [...want].sort(), `${what}: the marked rows are the file's`);
        assert.ok(rows.some((r) => !r.marked), `${what}: some rows are not the file's`);
      };
      const at = await p2.evaluate((s) => new Date(s * 1000).toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" }), marks.applied_at);
      const notice = `Managed by the configuration file applied at ${at}; edits made here are overwritten by the next apply.`;
      const noticeIn = async (modalSel, rowSel, editSel, want) => {
        await p2.click(`${rowSel} ${editSel}`);
        await p2.waitForSelector(modalSel);
        const n = p2.locator(`${modalSel} [data-testid="config-notice"]`);
        if (want) assert.equal(await n.textContent(), notice, `${rowSel}: the notice at the top of its form`);
        else assert.equal(await n.count(), 0, `${rowSel}: no notice`);
        return async () => {
          await p2.keyboard.press("Escape");
          await p2.waitForSelector(modalSel, { state: "detached" });
        };
      };

      await go2("#/providers", 'tr[data-name="by-hand"]');
      await check('[data-testid="providers-table"] tbody tr', "name", marks.providers, "providers");
      assert.equal(await p2.getAttribute('tr[data-name="cfg-openai"] [data-testid="config-badge"]', "title"), notice, "the badge's tooltip");
      await shot2("light-config-providers");
      let close = await noticeIn('[data-testid="provider-modal"]', 'tr[data-name="cfg-openai"]', 'button[title="Edit"]', true);
      await shot2("light-config-provider-modal", { fullPage: false });
      await close();
      await (await noticeIn('[data-testid="provider-modal"]', 'tr[data-name="by-hand"]', 'button[title="Edit"]', false))();

      await go2("#/models", 'tr[data-name="hand-only"]');
      await check('[data-testid="models-table"] tbody tr', "model", marks.models.map((x) => `${x.provider}/${x.name}`), "models");
      await check('[data-testid="groups-table"] tbody tr', "name", marks.groups, "groups");
      await shot2("light-config-models");
      await (await noticeIn('[data-testid="model-modal"]', 'tr[data-name="gpt-4o-mini"][data-provider="cfg-openai"]', 'button[title="Edit"]', true))();
      await (await noticeIn('[data-testid="model-modal"]', 'tr[data-name="gpt-4o-mini"][data-provider="by-hand"]', 'button[title="Edit"]', false))();
      await (await noticeIn('[data-testid="group-modal"]', '[data-testid="groups-table"] tr[data-name="cfg-group"]', '[data-testid="edit-group"]', true))();
      await (await noticeIn('[data-testid="group-modal"]', '[data-testid="groups-table"] tr[data-name="hand-group"]', '[data-testid="edit-group"]', false))();

      await go2("#/keys", 'tr[data-name="hand-key"]');
      await check('[data-testid="keys-table"] tbody tr', "name", marks.keys, "keys");
      await shot2("light-config-keys");
      close = await noticeIn('[data-testid="key-modal"]', 'tr[data-name="cfg-key"]', '[data-testid="edit-key"]', true);
      await shot2("light-config-key-modal", { fullPage: false });
      await close();
      await (await noticeIn('[data-testid="key-modal"]', 'tr[data-name="hand-key"]', '[data-testid="edit-key"]', false))();
    } finally {
      await ctx2.close();
      srv.child.kill("SIGKILL");
    }
  });

  await t.test("token calculator", async () => {
    await go("#/tokens", '[data-testid="tokens-input"]');
    await page.fill('[data-testid="tokens-model"]', "gpt-4o");
    await page.fill('[data-testid="tokens-input"]', "Hello world, this is a token counting test.");
    await until(async () => Number(await page.getAttribute('[data-testid="token-count"]', "data-value")) > 5 && !(await page.$(".token-count.pending")), "a token count");
    assert.equal(await page.getAttribute('[data-testid="token-method"]', "data-value"), "exact");
    assert.equal(await page.textContent('[data-testid="token-encoding"]'), "o200k_base");
    const textCount = Number(await page.getAttribute('[data-testid="token-count"]', "data-value"));
    const direct = await admin(BASE, "POST", "/api/tokens/count", { model: "gpt-4o", text: "Hello world, this is a token counting test." });
    assert.equal(textCount, direct.tokens, "the UI shows the server's count");
    await shot("light-tokens");

    await page.click('[data-testid="mode-messages"]');
    await page.fill('[data-testid="tokens-input"]', "[not json");
    await page.waitForSelector('[data-testid="tokens-error"]:not([hidden])');
    await page.fill('[data-testid="tokens-input"]', JSON.stringify([{ role: "user", content: "hi there" }]));
    await page.waitForSelector('[data-testid="tokens-error"]', { state: "hidden" });
    await until(async () => {
      const v = Number(await page.getAttribute('[data-testid="token-count"]', "data-value"));
      return v > 0 && v !== textCount;
    }, "a messages count");
    await page.fill('[data-testid="tokens-model"]', "some-local-llama");
    await until(async () => (await page.getAttribute('[data-testid="token-method"]', "data-value")) === "estimate", "an estimate for an unknown model");
    await page.fill('[data-testid="tokens-model"]', "gpt-4o");
    await page.click('[data-testid="mode-text"]');
  });

  await t.test("theme switch persists across reload", async () => {
    await go("#/dashboard", '#view[data-loaded="true"]');
    await page.click("#theme-toggle");
    assert.equal(await theme(), "dark");
    await page.reload();
    await page.waitForSelector('#view[data-loaded="true"]');
    assert.equal(await theme(), "dark", "the theme survives a reload");
    assert.equal(await page.evaluate(() => localStorage.getItem("nexus.theme")), "dark");
    // A first visit with a dark system preference starts dark.
    const ctx2 = await browser.newContext({ colorScheme: "dark", baseURL: BASE });
    const p2 = await ctx2.newPage();
    await p2.goto("/");
    assert.equal(await p2.evaluate(() => document.documentElement.getAttribute("data-theme")), "dark");
    await ctx2.close();
  });

  await t.test("screenshots: dark theme, every page", async () => {
    await page.waitForTimeout(400);
    await shot("dark-dashboard");
    await go("#/providers", 'tr[data-name="mock"]');
    await shot("dark-providers");
    await page.click('tr[data-name="mock"] button[title="Edit"]');
    await page.waitForSelector('[data-testid="provider-modal"]');
    await shot("dark-provider-modal", { fullPage: false });
    await page.keyboard.press("Escape");
    await go(`#/models?provider=${providerId}`, 'tr[data-name="gpt-4o-mini"]');
    await shot("dark-models");
    await go("#/keys", 'tr[data-name="ui-test-key"]');
    await shot("dark-keys");
    await go("#/spend", 'tr[data-name="budget-key"]');
    await spendChartDrawn();
    await spendShot("dark-spend");
    await go("#/chat", '[data-testid="chat-input"]');
    await until(async () => (await page.getAttribute('[data-testid="chat-conn"]', "data-state")) === "open", "the chat socket");
    await page.selectOption('[data-testid="chat-provider"]', String(providerId));
    await page.selectOption('[data-testid="chat-model"]', "gpt-4o-mini");
    await chatTurn("Dark mode: **bold**, `inline code` and a block:\n\n```js\nconst answer = 42; // comment\n```");
    await page.selectOption('[data-testid="chat-provider"]', String(flakyId));
    await page.selectOption('[data-testid="chat-model"]', "broken-fail500");
    await chatTurn("and an error", "error");
    await dismissToasts();
    await shot("dark-chat", { fullPage: false });
    await go("#/requests", '[data-testid="requests-table"] tbody tr');
    await dismissToasts();
    await shot("dark-requests");
    await shotDialog('[data-testid="requests-table"] tbody tr', '[data-testid="request-detail"][data-loaded="true"]', '[data-testid="request-detail"]', "dark-request-detail");
    await go("#/health", '[data-testid="events-table"]');
    await shot("dark-health");
    await go("#/storage", '[data-testid="retention-settings"]');
    await shot("dark-storage");
    await go("#/providers", 'tr[data-name="mock"]');
    await page.click('tr[data-name="mock"] [data-action-import]');
    await page.waitForSelector('[data-testid="import-modal"] .import-item');
    await shot("dark-import-modal", { fullPage: false });
    await page.keyboard.press("Escape");
    await page.waitForSelector('[data-testid="import-modal"]', { state: "detached" });
    await shotDialog('tr[data-name="pooled"] [data-action-keys]', '[data-testid="pool-modal"][data-loaded="true"]', '[data-testid="pool-modal"]', "dark-key-pool");
    await go("#/models", 'tr[data-name="fallback"]');
    await page.click('tr[data-name="fallback"] [data-testid="edit-group"]');
    await page.waitForSelector('[data-testid="group-modal"]');
    await shot("dark-group-modal", { fullPage: false });
    await page.keyboard.press("Escape");
    await go("#/tokens", '[data-testid="tokens-input"]');
    await page.fill('[data-testid="tokens-input"]', "Tokens in the dark: 日本語のテキストも数えます。");
    await until(async () => Number(await page.getAttribute('[data-testid="token-count"]', "data-value")) > 5, "a token count");
    await shot("dark-tokens");
  });

  await t.test("phone width", async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    try {
      await phone();
    } finally {
      await page.setViewportSize({ width: 1440, height: 900 });
    }
  });

  async function phone() {
    await go("#/dashboard", '#view[data-loaded="true"]');
    await page.waitForTimeout(500);
    await shot("phone-dark-dashboard");
    await page.click(".menu-btn");
    await page.waitForTimeout(350);
    await shot("phone-dark-menu", { fullPage: false });
    await page.click(".sidebar-close");
    await go("#/providers", 'tr[data-name="mock"]');
    await shot("phone-dark-providers");
    await shotDialog('tr[data-name="pooled"] [data-testid="key-count"]', '[data-testid="pool-modal"][data-loaded="true"]', '[data-testid="pool-modal"]', "phone-dark-key-pool");
    await go("#/requests", '[data-testid="requests-table"] tbody tr');
    await dismissToasts();
    await shot("phone-dark-requests");
    await page.click('[data-testid="requests-table"] tbody tr');
    await page.waitForSelector('[data-testid="request-detail"][data-loaded="true"]');
    await page.waitForTimeout(300);
    const box = await page.evaluate(() => {
      const d = document.querySelector('[data-testid="request-detail"]');
      const b = d.querySelector(".modal-body");
      return { right: d.getBoundingClientRect().right, scroll: b.scrollWidth, client: b.clientWidth };
    });
    assert.ok(box.right <= 392 && box.scroll <= box.client, `the request detail fits the phone: ${JSON.stringify(box)}`);
    await shot("phone-dark-request-detail", { fullPage: false });
    await page.keyboard.press("Escape");
    await page.waitForSelector('[data-testid="request-detail"]', { state: "detached" });
    await go("#/health", '[data-testid="events-table"]');
    await shot("phone-dark-health");
    await go("#/spend", 'tr[data-name="budget-key"]');
    await spendChartDrawn();
    await spendShot("phone-dark-spend");
    await go("#/chat", '[data-testid="chat-input"]');
    await page.evaluate(() => window.scrollTo(0, 0));
    await shot("phone-dark-chat");
    await page.click("#theme-toggle");
    assert.equal(await theme(), "light");
    await go("#/keys", 'tr[data-name="ui-test-key"]');
    await shot("phone-light-keys");
    await go("#/spend", 'tr[data-name="budget-key"]');
    await spendChartDrawn();
    await spendShot("phone-light-spend");
    await go("#/tokens", '[data-testid="tokens-input"]');
    await shot("phone-light-tokens");
    await go("#/storage", '[data-testid="retention-settings"]');
    await shot("phone-light-storage");
    await go("#/models", 'tr[data-name="fallback"]');
    await shot("phone-light-models");
    await go("#/requests", '[data-testid="requests-table"] tbody tr');
    await shot("phone-light-requests", { fullPage: false });
    // No page is wider than the phone.
    for (const hash of ["#/dashboard", "#/requests", "#/providers", "#/models", "#/keys", "#/spend", "#/health", "#/storage", "#/chat", "#/tokens"]) {
      await page.evaluate((hsh) => (location.hash = hsh), hash);
      await page.waitForTimeout(400);
      const [w, culprits] = await page.evaluate(() => [
        document.documentElement.scrollWidth,
        [...document.querySelectorAll("body *")].filter((el) => el.getBoundingClientRect().right > 392 && !el.closest(".table-wrap, .sidebar")).slice(0, 5).map((el) => `${el.tagName}.${el.className}`),
      ]);
      assert.ok(w <= 392, `${hash} is ${w}px wide at phone width (${culprits.join(", ")})`);
    }
  }

  await t.test("revoke the key, then sign out", async () => {
    await go("#/keys", 'tr[data-name="ui-test-key"]');
    await page.click('tr[data-name="ui-test-key"] [data-testid="revoke-key"]');
    await page.waitForSelector('[data-testid="confirm"]');
    await page.click('[data-testid="confirm"] .btn-danger');
    await page.waitForSelector('tr[data-name="ui-test-key"]', { state: "detached" });
    assert.ok(!(await admin(BASE, "GET", "/api/keys")).some((k) => k.name === "ui-test-key"), "the revoked key is gone");
    const r = await fetch(`${BASE}/v1/models`, { headers: { Authorization: `Bearer ${keyPlain}` } });
    assert.equal(r.status, 401);
    await page.click("#signout");
    await page.waitForSelector("#signin-form", { state: "visible" });
    assert.equal(await page.evaluate(() => sessionStorage.getItem("nexus.adminToken")), null);
    await shot("light-signin-after");
    await page.click(".signin-theme");
    await shot("dark-signin");
  });

  await t.test("no console errors, no request off 127.0.0.1", async () => {
    assert.deepEqual(consoleErrors, []);
    assert.deepEqual(external, []);
  });

  await context.close();
});
