// /holds: the holds in force (GET /api/v1/holds), placing one (POST /api/v1/holds) and
// releasing one with a reason (POST /api/v1/holds/{id}/release). A quality hold takes two
// different quality users: the first one's release is an approval ("approved by X — waiting
// for a second quality user"), the second one's releases it. Refusals (same user twice, a
// role that may not, a plant that wants the users' own key signatures) are shown as the API
// says them.

import { api } from "/static/api.js";
import { el, toast } from "/static/ui.js";
import {
  badge, errorText, field, fill, guarded, notice, startPage, table, unitLink, when,
} from "/assets/views.js";

const { main, me } = startPage("holds", "Holds");

const SCOPES = [["unit", "unit (serial)"], ["lot", "lot (quality)"], ["mpn", "MPN (quality)"],
  ["work_order", "work order"], ["station", "station"]];
const scope = el("select", { id: "place-scope", name: "scope" },
  SCOPES.map(([v, l]) => el("option", { value: v }, l)));
const target = el("input", { id: "place-target", name: "target", required: true,
  placeholder: "SRV-…, LOT-…, 699-…, WO-…, ict-01" });
const reason = el("input", { id: "place-reason", name: "reason", required: true, class: "lt-search",
  placeholder: "why" });
const placeOut = el("div", { id: "place-result" });
const placeForm = el("form", { class: "inline", id: "place-form" },
  field("Scope", scope), field("Target", target), field("Reason", reason),
  el("button", { type: "submit", class: "danger", id: "place-go" }, "Place hold"));
const showAll = el("input", { type: "checkbox", id: "holds-all" });
const list = el("div", { id: "holds-list" });
main.append(
  el("div", { class: "page-head" }, el("h1", {}, "Holds"), el("span", { class: "spacer" }),
    el("label", { class: "lt-check" }, showAll, " show released holds too")),
  el("section", { class: "panel" }, el("h2", {}, "Place a hold"), placeForm, placeOut),
  list);

let holds = [];
const messages = new Map(); // hold id -> the last outcome banner

function waiting(h) {
  const users = (h.approvals || []).map((a) => a.user);
  return h.state === "active" && h.category === "quality" && users.length
    ? `approved by ${users.join(", ")} — waiting for a second quality user` : null;
}

function releaseCell(h) {
  if (h.state !== "active") {
    return el("span", { class: "muted" },
      `${(h.released_by || []).join(" and ") || "-"} · ${when(h.released)}`,
      h.release_reason ? ` · ${h.release_reason}` : null);
  }
  const r = el("input", { name: "release-reason", class: "lt-release-reason",
    placeholder: "reason for the release", "aria-label": `reason to release ${h.id}` });
  const b = el("button", { type: "button", class: "primary lt-release", "data-hold": h.id },
    h.category === "quality" && (h.approvals || []).length ? "Confirm release" : "Release");
  const form = el("div", { class: "lt-release-form" }, r, b);
  b.addEventListener("click", () => release(h, r, b));
  return form;
}

function unitList(list) {
  return list.length > 6 ? `${list.length}` : list.map((u, i) => [i ? ", " : "", unitLink(u)]);
}

function unitsCell(stopped, shipped) {
  if (!stopped.length && !shipped.length) return "-";
  return el("span", {}, stopped.length ? el("span", {}, "stops ", unitList(stopped)) : "stops none",
    shipped.length ? [el("br"), el("span", { class: "muted" }, "shipped: "), unitList(shipped)] : null);
}

function holdRow(h) {
  const wait = waiting(h);
  const msg = messages.get(h.id);
  const units = h.affected_units || [];
  return [
    el("span", { class: "mono", id: `hold-${h.id}` }, h.id),
    el("span", {}, h.scope, " ", h.scope === "unit" ? unitLink(h.target)
      : el("span", { class: "mono" }, h.target)),
    badge(h.category), badge(h.state, null, { class: "lt-hold-state" }),
    el("span", {}, h.reason, h.code && !/manual$/.test(h.code) ? el("span", { class: "muted" }, ` (${h.code})`) : null),
    el("span", {}, h.placed_by, el("br"), el("span", { class: "muted" }, when(h.placed))),
    unitsCell(units, h.shipped || []),
    el("div", { class: "lt-hold-status", "data-hold": h.id },
      wait ? notice("warn", wait, { class: "lt-waiting" }) : null, msg || null, releaseCell(h)),
  ];
}

function render() {
  if (!holds.length) {
    fill(list, notice("info", showAll.checked ? "no holds in the ledger" : "no holds in force"));
    return;
  }
  fill(list, table(["Hold", "On", "Category", "State", "Reason", "Placed", "Units", "Release"],
    holds.map(holdRow), { id: "holds-table" }));
}

async function load() {
  holds = await api("GET", `/api/v1/holds${showAll.checked ? "?all=true" : ""}`);
  render();
}

async function release(h, input, button) {
  const text = input.value.trim();
  if (!text) {
    messages.set(h.id, notice("error", "a release needs a reason: say why the hold may end",
      { class: "lt-outcome", "data-error": "reason.missing" }));
    render();
    return;
  }
  button.disabled = true;
  try {
    const out = await api("POST", `/api/v1/holds/${encodeURIComponent(h.id)}/release`,
      { reason: text });
    const still = out.state === "active";
    const who = (out.approvals || []).map((a) => a.user).join(", ");
    const msg = still ? `approved by ${who} — waiting for a second quality user`
      : out.message || `hold ${h.id} released`;
    messages.set(h.id, notice(still ? "warn" : "ok", still ? (out.message || msg) : msg,
      { class: "lt-outcome", "data-outcome": still ? "approved" : "released" }));
    toast(msg, still ? "warn" : "ok");
  } catch (e) {
    messages.set(h.id, notice("error", errorText(e), { class: "lt-outcome", "data-error": e.code || "error" }));
  } finally {
    button.disabled = false;
  }
  try {
    if (!showAll.checked) {
      // keep the released one in view (its outcome), with what the ledger says now
      const fresh = await api("GET", "/api/v1/holds?all=true");
      const now = fresh.find((x) => x.id === h.id);
      holds = await api("GET", "/api/v1/holds");
      if (now && !holds.some((x) => x.id === h.id)) holds.unshift(now);
      render();
    } else {
      await load();
    }
  } catch (e) {
    render();
  }
}

placeForm.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  fill(placeOut);
  if (!target.value.trim() || !reason.value.trim()) {
    fill(placeOut, notice("error", "a hold needs a target and a reason"));
    return;
  }
  try {
    const h = await api("POST", "/api/v1/holds",
      { scope: scope.value, target: target.value.trim(), reason: reason.value.trim() });
    fill(placeOut, notice("ok", h.message || `hold ${h.id} placed`, { "data-hold": h.id }));
    reason.value = "";
    await load();
  } catch (e) {
    fill(placeOut, notice("error", errorText(e), { "data-error": e.code || "error" }));
  }
});
showAll.addEventListener("change", () => guarded(list, load));

const pre = new URLSearchParams(location.search);
if (pre.get("scope")) scope.value = pre.get("scope");
if (pre.get("target")) target.value = pre.get("target");

guarded(main, async () => {
  await me;
  await load();
});
