// Storage: the database's size and row counts, the retention settings, the last retention pass,
// and "Prune now" (one pass on demand: the same pass the server runs at start and hourly).

import { get, post } from "../api.js";
import { h, icon, clear, card, button, errorCallout, statTiles, fmtNum, fmtBytes, fmtMs, fmtRelative, toast } from "../dom.js";

const days = (d) => (d ? `${fmtNum(d)} ${d === 1 ? "day" : "days"}` : "forever");

function fmtAt(ms) {
  return new Date(ms).toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

/** A definition list; each entry is [label, shown, raw value (for data-value), hint?]. */
function kvList(entries, testid) {
  return h(
    "dl",
    { class: "kv-grid", "data-testid": testid },
    entries.map(([label, shown, raw, key, hint]) => [
      h("dt", { text: label }),
      h("dd", { "data-field": key, "data-value": raw === undefined ? "" : JSON.stringify(raw), title: hint || "" }, shown),
    ]),
  );
}

function pruneEntries(p) {
  return [
    ["Ran", `${fmtAt(p.at_ms)} (${fmtRelative(p.at_ms / 1000)})`, p.at_ms, "at_ms"],
    ["Took", fmtMs(p.ms), p.ms, "ms"],
    ["Requests deleted (age)", fmtNum(p.requests), p.requests, "requests"],
    ["Messages deleted (age)", fmtNum(p.messages), p.messages, "messages"],
    ["Stored responses deleted", fmtNum(p.responses), p.responses, "responses"],
    ["Rollups deleted", fmtNum(p.rollups), p.rollups, "rollups"],
    ["Bodies deleted (size cap)", fmtNum(p.capped_bodies), p.capped_bodies, "capped_bodies"],
    ["Requests deleted (size cap)", fmtNum(p.capped_requests), p.capped_requests, "capped_requests"],
    ["Space given back", fmtBytes(p.reclaimed_bytes), p.reclaimed_bytes, "reclaimed_bytes"],
    ["Database after", fmtBytes(p.db_bytes), p.db_bytes, "db_bytes"],
  ];
}

export default {
  title: "Storage",
  subtitle: "Database size, retention settings and pruning",
  async mount(view, ctx) {
    const { el: errorSlot, show: showError } = errorCallout("storage-error");
    const pruneResult = h("div", { class: "result-slot", "data-testid": "prune-result", hidden: true });
    const pruneBtn = button("Prune now", { kind: "primary", icon: "broom", attrs: { "data-testid": "prune-now", title: "Run one retention pass now" } });
    ctx.setActions(pruneBtn);

    const TILES = [
      ["file_bytes", "Database file", "database", "violet", fmtBytes],
      ["used_bytes", "In use", "hard-drive", "cyan", fmtBytes],
      ["free_bytes", "Free pages", "box-open", "amber", fmtBytes],
      ["requests", "Request rows", "list-ul", "green", fmtNum],
      ["messages", "Messages", "comments", "pink", fmtNum],
      ["rollups", "Hourly rollups", "chart-column", "violet", fmtNum],
    ];
    const tiles = statTiles(TILES, { "data-testid": "storage-tiles" });
    const settingsHost = h("div");
    const lastHost = h("div");
    clear(view).append(
      tiles,
      errorSlot,
      pruneResult,
      h(
        "div",
        { class: "charts" },
        card({ title: "Retention", icon: "sliders", testid: "storage-retention", body: settingsHost }),
        card({ title: "Last retention pass", icon: "broom", testid: "storage-last-prune", body: lastHost }),
      ),
    );

    function render(s) {
      for (const [k, , , , fmt] of TILES) {
        const el = tiles.querySelector(`[data-stat="${k}"]`);
        const v = s[k];
        el.dataset.value = v === null || v === undefined ? "" : String(v);
        el.querySelector(".tile-value").textContent = fmt(v);
        el.querySelector(".tile-value").title = v === null || v === undefined ? "" : `${fmtNum(v)}${fmt === fmtBytes ? " bytes" : ""}`;
      }
      const sub = (k, text) => (tiles.querySelector(`[data-stat="${k}"] .tile-sub`).textContent = text);
      sub("file_bytes", s.path ? s.path : "in memory");
      tiles.querySelector('[data-stat="file_bytes"] .tile-sub').title = s.path || "";
      sub("used_bytes", "pages holding data");
      sub("free_bytes", s.reclaims_space ? "given back by each pass" : "reused, not given back");
      sub("requests", s.oldest_request_ms ? `oldest ${fmtRelative(s.oldest_request_ms / 1000)}` : "none yet");
      sub("messages", `${fmtNum(s.responses)} stored responses`);
      sub("rollups", "dashboard, stats and budgets");

      const r = s.retention || {};
      clear(settingsHost).appendChild(
        kvList(
          [
            ["Conversation messages", days(r.message_days), r.message_days, "message_days", "message_retention_days (stored responses too)"],
            ["Request rows", days(r.request_days), r.request_days, "request_days", "request_retention_days: the request explorer"],
            ["Hourly rollups", days(r.rollup_days), r.rollup_days, "rollup_days", "rollup_retention_days: the dashboard, stats and budgets"],
            ["Size cap", r.max_db_bytes ? fmtBytes(r.max_db_bytes) : "none", r.max_db_bytes, "max_db_bytes", "max_db_mb: the oldest bodies, then request rows go until the file fits"],
            ["Frees space to the disk", s.reclaims_space ? "yes (incremental vacuum)" : "no", s.reclaims_space, "reclaims_space"],
            ["Database", s.path || "in memory", s.path, "path"],
          ],
          "retention-settings",
        ),
        h("p", { class: "muted small kv-note", text: "Set in the server's TOML (message_retention_days, request_retention_days, rollup_retention_days, max_db_mb); 0 days keeps forever." }),
      );
      clear(lastHost).appendChild(
        s.last_prune ? kvList(pruneEntries(s.last_prune), "last-prune") : h("p", { class: "muted", "data-testid": "last-prune-none", text: "No retention pass has run since the server started." }),
      );
      view.dataset.loaded = "true";
    }

    async function load() {
      try {
        const s = await get("/api/storage");
        if (!ctx.isCurrent()) return;
        showError("");
        render(s);
      } catch (e) {
        if (!ctx.isCurrent()) return;
        showError(`Storage could not load: ${e.message}`);
        view.dataset.loaded = "true";
      }
    }

    pruneBtn.addEventListener("click", async () => {
      if (pruneBtn.disabled) return;
      pruneBtn.disabled = true;
      pruneBtn.classList.add("busy");
      try {
        const p = await post("/api/storage/prune", {});
        if (!ctx.isCurrent()) return;
        showError("");
        const deleted = p.requests + p.messages + p.responses + p.rollups + p.capped_bodies + p.capped_requests;
        clear(pruneResult).appendChild(
          h(
            "div",
            { class: "callout callout-success", "data-at": String(p.at_ms), "data-deleted": String(deleted) },
            icon("circle-check"),
            h("div", {}, h("strong", { "data-testid": "prune-summary", text: deleted ? `Pruned ${fmtNum(deleted)} rows in ${fmtMs(p.ms)}` : `Nothing to prune (${fmtMs(p.ms)})` }), h("div", { class: "small", text: `${fmtBytes(p.reclaimed_bytes)} given back · database now ${fmtBytes(p.db_bytes)}` })),
          ),
        );
        pruneResult.hidden = false;
        toast("Retention pass done");
        await load();
      } catch (e) {
        showError(`The prune failed: ${e.message}`);
      } finally {
        pruneBtn.disabled = false;
        pruneBtn.classList.remove("busy");
      }
    });

    await load();
  },
};
