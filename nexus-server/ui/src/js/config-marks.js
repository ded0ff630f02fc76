// Objects a configuration file declares (`GET /api/config/managed`): the providers, models,
// groups and keys pages mark them with a "config file" badge, and their edit forms say that an
// edit made here is overwritten by the next apply. Nothing is marked when no file was applied.

import { get } from "./api.js";
import { h, icon } from "./dom.js";

const NONE = { providers: [], models: [], groups: [], keys: [], applied_at: null };

/** Wraps the API's answer: `provider(name)`, `model(provider, name)`, `group(name)`, `key(name)`. */
export function configMarks(raw) {
  const m = raw && raw.applied_at ? raw : NONE;
  const providers = new Set(m.providers || []);
  const models = new Set((m.models || []).map((x) => JSON.stringify([x.provider, x.name])));
  const groups = new Set(m.groups || []);
  const keys = new Set(m.keys || []);
  return {
    appliedAt: m.applied_at || null,
    provider: (name) => providers.has(name),
    model: (provider, name) => models.has(JSON.stringify([provider, name])),
    group: (name) => groups.has(name),
    key: (name) => keys.has(name),
  };
}

/**
 * The marks of the last applied file. A failure to load them marks nothing (the page still
 * works; the notice is advice, not a lock).
 */
export async function loadConfigMarks() {
  try {
    return configMarks(await get("/api/config/managed"));
  } catch {
    return configMarks(null);
  }
}

function appliedText(marks) {
  const at = new Date(marks.appliedAt * 1000).toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
  return `Managed by the configuration file applied at ${at}; edits made here are overwritten by the next apply.`;
}

/** The "config file" badge of a marked object, or null. */
export function configBadge(marks, managed) {
  if (!managed || !marks || !marks.appliedAt) return null;
  const text = appliedText(marks);
  return h("span", { class: "badge badge-config", "data-testid": "config-badge", title: text }, icon("file-code"), h("span", { text: "config file" }));
}

/** The notice at the top of a marked object's edit form, or null. */
export function configNotice(marks, managed) {
  if (!managed || !marks || !marks.appliedAt) return null;
  return h("div", { class: "callout callout-info span-2", role: "note", "data-testid": "config-notice" }, icon("file-code"), h("div", { text: appliedText(marks) }));
}
