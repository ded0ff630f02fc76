// The real nexus-server binary driven by the official `openai` Node SDK (pinned in
// tests/sdk/node/package.json): chat completions, the Responses API (create, stream, a function
// call with its output turn, retrieve scoped to the key) and embeddings, against providers of
// every kind on the mock upstream, plus an `openai` provider relaying the Responses API. Run by
// scripts/test-node-sdk.sh, which builds the binaries and installs the SDK.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import OpenAI from "openai";

const ROOT = process.env.NEXUS_ROOT;
const ADMIN = "node-sdk-admin-token-0123456789abcdef";
const KINDS = ["openai", "azure", "anthropic", "gemini"];
let mock, server, base, key, tmp;

function firstLine(stream, marker, proc) {
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: stream });
    const timer = setTimeout(() => reject(new Error(`no '${marker}' within 30 s`)), 30000);
    rl.on("line", (line) => {
      if (line.includes(marker)) {
        clearTimeout(timer);
        resolve(line);
      }
    });
    proc.on("exit", (code) => reject(new Error(`process exited (${code}) before '${marker}'`)));
  });
}

async function admin(method, path, body) {
  const r = await fetch(base + path, {
    method,
    headers: { Authorization: `Bearer ${ADMIN}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  assert.ok(r.ok, `${method} ${path}: HTTP ${r.status} ${await r.clone().text()}`);
  return r.json();
}

const client = (k = key) => new OpenAI({ baseURL: `${base}/v1`, apiKey: k, maxRetries: 0, timeout: 30000 });

before(async () => {
  assert.ok(ROOT, "NEXUS_ROOT must be the repository root (scripts/test-node-sdk.sh sets it)");
  tmp = mkdtempSync(join(tmpdir(), "nexus-node-sdk-"));
  mock = spawn(join(ROOT, "target/debug/nexus-mock-upstream"), ["--listen", "127.0.0.1:0"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const mockUrl = (await firstLine(mock.stdout, "http://", mock)).trim();
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("NEXUS_")));
  server = spawn(
    join(ROOT, "target/debug/nexus-server"),
    ["--listen", "127.0.0.1:0", "--db", join(tmp, "nexus.db")],
    { env: { ...env, NEXUS_ADMIN_TOKEN: ADMIN, NEXUS_LOG: "warn" }, stdio: ["ignore", "ignore", "pipe"] },
  );
  const line = await firstLine(server.stderr, "listening on http://", server);
  base = "http://" + line.split("listening on http://")[1].trim();
  server.stderr.resume();
  for (const kind of KINDS) {
    const p = await admin("POST", "/api/providers", {
      name: kind, kind, base_url: mockUrl, api_key: `sk-${kind}-upstream-0123456789`,
    });
    for (const w of ["echo", "tools", "miderror"]) {
      await admin("POST", `/api/providers/${p.id}/models`, { name: `${kind}-x-${w}` });
    }
  }
  const relay = await admin("POST", "/api/providers", {
    name: "relay", kind: "openai", base_url: mockUrl, api_key: "sk-relay-upstream-0123456789",
    options: { responses_api: true },
  });
  for (const w of ["echo", "tools", "miderror"]) {
    await admin("POST", `/api/providers/${relay.id}/models`, { name: `relay-x-${w}`, upstream_name: `up-${w}` });
  }
  const emb = await admin("POST", "/api/providers", {
    name: "emb", kind: "openai", base_url: mockUrl, api_key: "sk-emb-upstream-0123456789",
  });
  await admin("POST", `/api/providers/${emb.id}/models`, { name: "node-emb", kind: "embedding" });
  key = (await admin("POST", "/api/keys", { name: "node-sdk" })).key;
});

after(() => {
  for (const p of [server, mock]) if (p && p.exitCode === null) p.kill("SIGTERM");
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

const TOOLS = [
  {
    type: "function", name: "lookup", description: "Look a word up.", strict: true,
    parameters: { type: "object", properties: { q: { type: "string" } }, required: ["q"], additionalProperties: false },
  },
  { type: "web_search" },
];

for (const kind of KINDS) {
  test(`chat completions, plain and streamed (${kind})`, async () => {
    const c = await client().chat.completions.create({
      model: `${kind}-x-echo`, messages: [{ role: "user", content: "hello from node" }],
    });
    assert.equal(c.choices[0].message.content, "hello from node");
    assert.ok(c.usage.prompt_tokens > 0);
    const stream = await client().chat.completions.create({
      model: `${kind}-x-echo`, stream: true, stream_options: { include_usage: true },
      messages: [{ role: "user", content: "one two three" }],
    });
    let text = "";
    let usage;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? "";
      usage = chunk.usage ?? usage;
    }
    assert.equal(text, "one two three");
    assert.ok(usage && usage.completion_tokens > 0);
  });
}

for (const kind of [...KINDS, "relay"]) {
  test(`responses: create, stream, function call turn, retrieve (${kind})`, async () => {
    const r = await client().responses.create({ model: `${kind}-x-echo`, instructions: "Be brief.", input: "hello responses" });
    assert.equal(r.status, "completed");
    assert.equal(r.output_text, "hello responses");
    assert.equal(r.model, `${kind}-x-echo`);
    assert.ok(r.usage.input_tokens > 0 && r.usage.output_tokens > 0);
    assert.equal((await client().responses.retrieve(r.id)).id, r.id);

    const stream = client().responses.stream({ model: `${kind}-x-echo`, input: "one two three" });
    let deltas = "";
    for await (const ev of stream) if (ev.type === "response.output_text.delta") deltas += ev.delta;
    const final = await stream.finalResponse();
    assert.equal(deltas, "one two three");
    assert.equal(final.output_text, "one two three");

    const first = await client().responses.create({ model: `${kind}-x-tools`, input: "define nexus", tools: TOOLS });
    const call = first.output.find((o) => o.type === "function_call");
    assert.ok(call, JSON.stringify(first.output));
    assert.equal(typeof JSON.parse(call.arguments), "object");
    const second = await client().responses.create({
      model: `${kind}-x-tools`, tools: TOOLS, previous_response_id: first.id,
      input: [{ type: "function_call_output", call_id: call.call_id, output: "a hub" }],
    });
    assert.equal(second.status, "completed");

    const events = [];
    for await (const ev of await client().responses.create({ model: `${kind}-x-miderror`, input: "one two three", stream: true })) {
      events.push(ev.type);
    }
    assert.equal(events.at(-1), "response.failed", events.join(","));
  });
}

test("responses are the key's own; errors are the SDK's classes", async () => {
  const r = await client().responses.create({ model: "openai-x-echo", input: "mine" });
  const other = (await admin("POST", "/api/keys", { name: "other" })).key;
  await assert.rejects(client(other).responses.retrieve(r.id), OpenAI.NotFoundError);
  await assert.rejects(client("nx-not-a-key").responses.create({ model: "openai-x-echo", input: "x" }), OpenAI.AuthenticationError);
  await assert.rejects(client().responses.create({ model: "openai-x-echo", input: "x", background: true }), OpenAI.BadRequestError);
  await assert.rejects(client().responses.create({ model: "no-such-model", input: "x" }), OpenAI.NotFoundError);
});

test("embeddings", async () => {
  const e = await client().embeddings.create({ model: "node-emb", input: ["one", "two"] });
  assert.equal(e.data.length, 2);
  assert.ok(e.data[0].embedding.length > 0);
  assert.ok(e.usage.prompt_tokens > 0);
});
