// End-to-end test of the admin UI: the real nexus-server and mock upstream, driven through
// Debian's headless Chromium with playwright-core. Run by scripts/test-ui.sh (which builds both
// binaries), or directly: node --test nexus-server/ui/tests/ui.test.mjs
//
// Env: NEXUS_SERVER_BIN, NEXUS_MOCK_BIN (default target/debug/...), CHROMIUM (default
// /usr/bin/chromium), UI_TEST_OUT (default test-output/ui at the repo root).

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
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

test("admin UI end to end", { timeout: 360000 }, async (t) => {
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
  context.on("request", (r) => {
    const u = new URL(r.url());
    if ((u.protocol === "http:" || u.protocol === "https:" || u.protocol === "ws:" || u.protocol === "wss:") && u.hostname !== "127.0.0.1") external.push(r.url());
  });
  const page = await context.newPage();
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    if (allow401 && /status of 401/.test(m.text())) return;
    if (allow400 && /status of 400/.test(m.text())) return;
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
    // No page is wider than the phone.
    for (const hash of ["#/dashboard", "#/providers", "#/models", "#/keys", "#/spend", "#/chat", "#/tokens"]) {
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
