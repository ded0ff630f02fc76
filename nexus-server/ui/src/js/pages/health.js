// Health: each provider's state as the active health checks see it (automatic disables told
// apart from an operator's), the event log of state changes, and a probe round on demand.

import { get, post } from "../api.js";
import { h, icon, clear, card, table, button, badge, emptyState, errorCallout, statTiles, oneAtATime, refreshWhileVisible, fmtNum, fmtMs, fmtRelative, toast } from "../dom.js";

const REFRESH_MS = 10000;

const EVENTS = {
  auto_disabled: { label: "Auto-disabled", kind: "danger", icon: "robot", who: "health checks" },
  auto_enabled: { label: "Auto-enabled", kind: "success", icon: "robot", who: "health checks" },
  disabled: { label: "Disabled", kind: "neutral", icon: "user-gear", who: "operator" },
  enabled: { label: "Enabled", kind: "primary", icon: "user-gear", who: "operator" },
  // A pool key the upstream refused (401/403): the provider goes on with its other keys.
  key_set_aside: { label: "Key set aside", kind: "warning", icon: "key", who: "hub", by: "the upstream refused a pool key" },
};

/** healthy, cooling, auto_disabled or disabled (by an operator). */
export function providerState(p) {
  if (p.auto_disabled) return "auto_disabled";
  if (!p.enabled) return "disabled";
  if (p.cooling_down_ms) return "cooling";
  return "healthy";
}

export function stateBadge(state, { cooling_down_ms } = {}) {
  const b =
    state === "auto_disabled"
      ? badge("Auto-disabled", "danger", "robot")
      : state === "disabled"
        ? badge("Disabled by operator", "neutral", "user-gear")
        : state === "cooling"
          ? badge(`Cooling down ${fmtMs(cooling_down_ms)}`, "warning", "hourglass-half")
          : badge("Healthy", "success", "circle-check");
  b.dataset.testid = "health-state";
  b.dataset.state = state;
  b.title =
    state === "auto_disabled"
      ? "Disabled by the health checks; the first probe that passes enables it again"
      : state === "disabled"
        ? "Disabled by an operator: the health checks leave it alone"
        : state === "cooling"
          ? "Routable, but skipped for a while after failed requests"
          : "Enabled and routable";
  return b;
}

function eventBadge(ev) {
  const e = EVENTS[ev] || { label: ev, kind: "neutral", icon: "circle-info", who: "" };
  const b = badge(e.label, e.kind, e.icon);
  b.dataset.event = ev;
  return b;
}

/** Who or what made the change, for the event log. */
function eventBy(ev) {
  const e = EVENTS[ev] || {};
  return e.by || `by the ${e.who || "hub"}`;
}

function fmtAt(ms) {
  return new Date(ms).toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function probeCell(lp) {
  if (!lp) return h("span", { class: "muted small", text: "not probed yet" });
  return h(
    "div",
    { "data-testid": "last-probe", "data-ok": String(lp.ok) },
    h("div", { class: "nowrap" }, lp.ok ? badge("passed", "success", "check") : badge("failed", "danger", "xmark"), " ", h("span", { class: "small", title: fmtAt(lp.at_ms), text: fmtRelative(lp.at_ms / 1000) })),
    h("div", { class: "cell-sub", text: `${lp.method}${lp.status ? ` · HTTP ${lp.status}` : ""} · ${fmtMs(lp.ms)}` }),
    lp.error ? h("div", { class: "cell-sub danger-text", title: lp.error, text: lp.error }) : null,
  );
}

export default {
  title: "Health",
  subtitle: "Provider health checks, automatic disables and their history",
  async mount(view, ctx) {
    const { el: errorSlot, show: showError } = errorCallout("health-error");
    const probeResult = h("div", { class: "result-slot", "data-testid": "probe-result", hidden: true });
    const probeBtn = button("Probe now", { kind: "primary", icon: "stethoscope", attrs: { "data-testid": "probe-now", title: "Run one round of health checks now" } });
    ctx.setActions(probeBtn);

    const tiles = statTiles([
      ["healthy", "Healthy", "circle-check", "green"],
      ["auto_disabled", "Auto-disabled", "robot", "pink"],
      ["disabled", "Disabled by operator", "user-gear", "violet"],
      ["cooling", "Cooling down", "hourglass-half", "amber"],
    ]);
    const providersHost = h("div");
    const eventsHost = h("div");
    clear(view).append(
      tiles,
      errorSlot,
      probeResult,
      h(
        "div",
        { class: "charts" },
        card({ title: "Providers", icon: "server", cls: "flush span-2", testid: "health-providers", body: providersHost, actions: h("a", { href: "#/providers", class: "small", text: "Enable or disable on the providers page" }) }),
        card({ title: "Events", icon: "clock-rotate-left", cls: "flush span-2", testid: "health-events", body: eventsHost }),
      ),
    );

    function renderProviders(list) {
      clear(providersHost);
      if (!list.length) {
        providersHost.appendChild(emptyState({ icon: "server", title: "No providers", text: "Add a provider; the health checks probe every enabled one." }));
        return;
      }
      const rows = list.map((p) => {
        const state = providerState(p);
        return h(
          "tr",
          { "data-id": p.provider_id, "data-name": p.name, "data-state": state },
          h("td", { class: "id", text: `#${p.provider_id}` }),
          h("td", {}, h("div", { class: "cell-main", text: p.name })),
          h("td", {}, stateBadge(state, p)),
          h("td", { class: "reason-cell" }, p.disabled_reason ? h("span", { class: state === "auto_disabled" ? "danger-text small" : "small", "data-testid": "health-reason", title: p.disabled_reason, text: p.disabled_reason }) : h("span", { class: "muted small", text: "–" })),
          h("td", { class: "small" }, p.probed ? h("span", { text: "probed" }) : h("span", { class: "muted", title: "Operator-disabled providers and those with options.health_check: false are not probed", text: "not probed" }), h("div", { class: "cell-sub", "data-testid": "recent-failures", text: `${fmtNum(p.recent_failures)} recent ${p.recent_failures === 1 ? "failure" : "failures"}` })),
          h("td", {}, probeCell(p.last_probe)),
        );
      });
      providersHost.appendChild(
        table([{ label: "ID" }, { label: "Provider" }, { label: "State" }, { label: "Reason" }, { label: "Checks" }, { label: "Last probe" }], rows, { testid: "health-table" }),
      );
    }

    function renderEvents(list) {
      clear(eventsHost);
      if (!list.length) {
        eventsHost.appendChild(emptyState({ icon: "clock-rotate-left", title: "No events yet", text: "Every automatic or operator disable and enable of a provider, and every pool key the upstream refused, is logged here." }));
        return;
      }
      const rows = list.map((e) =>
        h(
          "tr",
          { "data-id": e.id, "data-provider-id": e.provider_id, "data-event": e.event },
          h("td", { class: "nowrap small", title: new Date(e.ts_ms).toISOString(), text: fmtAt(e.ts_ms) }),
          h("td", {}, h("span", { class: "cell-main", text: e.provider_name }), h("span", { class: "muted small", text: ` #${e.provider_id}` })),
          h("td", {}, eventBadge(e.event), h("div", { class: "cell-sub", text: eventBy(e.event) })),
          h(
            "td",
            { class: "reason-cell" },
            h("span", { class: "small", "data-testid": "event-reason", title: e.reason, text: e.reason || "–" }),
            e.event === "key_set_aside" ? h("div", { class: "cell-sub" }, h("a", { href: `#/providers?keys=${e.provider_id}`, "data-testid": "event-keys-link", text: "Open its keys to put it back in use" })) : null,
          ),
        ),
      );
      eventsHost.appendChild(table([{ label: "Time" }, { label: "Provider" }, { label: "Event" }, { label: "Reason" }], rows, { testid: "events-table" }));
    }

    const refresh = oneAtATime(async () => {
      try {
        const [list, events] = await Promise.all([get("/api/health/providers"), get("/api/health/events?limit=100")]);
        if (!ctx.isCurrent()) return;
        showError("");
        renderProviders(list);
        renderEvents(events);
        const counts = { healthy: 0, auto_disabled: 0, disabled: 0, cooling: 0 };
        for (const p of list) counts[providerState(p)] += 1;
        for (const [k, n] of Object.entries(counts)) {
          const el = tiles.querySelector(`[data-stat="${k}"]`);
          el.dataset.value = String(n);
          el.querySelector(".tile-value").textContent = fmtNum(n);
          el.querySelector(".tile-sub").textContent = `of ${fmtNum(list.length)} providers`;
        }
        view.dataset.loaded = "true";
      } catch (e) {
        if (!ctx.isCurrent()) return;
        showError(`Health could not load: ${e.message}`);
        view.dataset.loaded = "true";
      }
    }, ctx.isCurrent);

    probeBtn.addEventListener("click", async () => {
      if (probeBtn.disabled) return;
      probeBtn.disabled = true;
      probeBtn.classList.add("busy");
      try {
        const results = await post("/api/health/probe", {});
        if (!ctx.isCurrent()) return;
        showError("");
        const ok = results.filter((r) => r.ok).length;
        const changed = results.filter((r) => r.changed);
        clear(probeResult);
        probeResult.hidden = false;
        probeResult.dataset.count = String(results.length);
        probeResult.dataset.ok = String(ok);
        probeResult.appendChild(
          h(
            "div",
            { class: ["callout", results.length === ok ? "callout-success" : "callout-warning"] },
            icon(results.length === ok ? "circle-check" : "triangle-exclamation"),
            h(
              "div",
              {},
              h("strong", { "data-testid": "probe-summary", text: results.length ? `${ok} of ${results.length} ${results.length === 1 ? "probe" : "probes"} passed` : "Nothing to probe: no enabled provider takes part in the checks" }),
              changed.length ? h("div", { class: "small", text: changed.map((r) => `${r.provider_name}: ${EVENTS[r.changed] ? EVENTS[r.changed].label.toLowerCase() : r.changed}`).join(" · ") }) : null,
              results.filter((r) => !r.ok).map((r) => h("div", { class: "small", text: `${r.provider_name}: ${r.error || (r.status ? `HTTP ${r.status}` : "failed")}` })),
            ),
          ),
        );
        toast(`Probed ${results.length} ${results.length === 1 ? "provider" : "providers"}`);
        await refresh(true);
      } catch (e) {
        showError(`The probe failed: ${e.message}`);
      } finally {
        probeBtn.disabled = false;
        probeBtn.classList.remove("busy");
      }
    });

    await refresh(true);
    return refreshWhileVisible(refresh, REFRESH_MS);
  },
};
