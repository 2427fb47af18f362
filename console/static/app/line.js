// The line view (/line): every station with its state in andon colours, WIP per route step,
// throughput, first-pass yield and the holds in force (GET /api/v1/line), refreshed every few
// seconds.

import { api } from "/static/api.js";
import {
  badge, el, errorBanner, every, fmtNum, fmtPct, fmtTime, lamp, main, nav, pageHead,
  replace, stat, table,
} from "/static/ui.js";

const REFRESH_MS = 3000;

/** A station state (ledger/line_status.py STATE_WORDS) -> andon colour. */
const STATION_COLOUR = {
  running: "green", idle: "amber", engineering: "blue", maintenance: "blue", down: "red",
  off: "grey", unknown: "grey",
};

const ui = {
  updated: el("span", { class: "live off", id: "updated" }, lamp("grey"), " loading…"),
  error: el("div", { id: "line-error" }),
  summary: el("section", { class: "panel", id: "summary" }),
  stations: el("div", { class: "stations", id: "stations" }),
  wip: el("div", { class: "steps", id: "wip" }),
  fpy: el("div", { id: "fpy" }),
  holds: el("div", { id: "holds" }),
};

function stationCard(s) {
  const colour = s.locked ? "red" : STATION_COLOUR[s.state] || "grey";
  const faults = s.faults_open || [];
  return el("div", { class: ["station", `andon-${colour}`], dataset: { station: s.id, state: s.state } },
    el("div", { class: "name" }, s.id),
    el("div", { class: "sub" }, s.type || ""),
    el("div", { class: "st" }, lamp(colour), " ", (s.state || "unknown").toUpperCase(),
      s.locked ? " · HOLD" : ""),
    s.state_name ? el("div", { class: "sub" }, s.state_name) : null,
    s.reason ? el("div", {}, s.reason) : null,
    s.since ? el("div", { class: "sub" }, `since ${fmtTime(s.since)}`) : null,
    s.unit ? el("div", {}, "unit ", el("a", { href: `/units/${encodeURIComponent(s.unit)}` }, s.unit),
      s.step !== null && s.step !== undefined ? ` at step ${s.step}` : "") : null,
    faults.length ? el("div", {}, badge(`${faults.length} open fault${faults.length > 1 ? "s" : ""}`, "red"),
      " ", faults.map((f) => f.code).join(", ")) : null,
    s.hold ? el("div", { class: "sub" }, `hold ${s.hold}`) : null);
}

function renderStations(stations) {
  const counts = {};
  for (const s of stations) counts[s.state] = (counts[s.state] || 0) + 1;
  replace(ui.stations, stations.length
    ? stations.map(stationCard)
    : el("div", { class: "empty" }, "No stations enrolled yet (`linetrace stations enroll`)."));
  return counts;
}

function renderWip(wip) {
  // one tile per (product, step): units per state inside
  const tiles = new Map();
  for (const w of wip || []) {
    const key = `${w.product}|${w.step}`;
    if (!tiles.has(key)) tiles.set(key, { product: w.product, kind: w.kind, step: w.step,
      operation: w.operation, states: {}, units: 0 });
    const t = tiles.get(key);
    t.states[w.state] = (t.states[w.state] || 0) + w.units;
    t.units += w.units;
  }
  const list = [...tiles.values()].sort((a, b) => a.product.localeCompare(b.product)
    || Number(a.step) - Number(b.step));
  const max = Math.max(1, ...list.map((t) => t.units));
  replace(ui.wip, list.length ? list.map((t) => {
    const held = t.states.on_hold || 0;
    const bar = el("span", { class: held ? "andon-red" : "andon-blue" });
    bar.style.width = `${Math.round((100 * t.units) / max)}%`;
    return el("div", { class: "step", dataset: { product: t.product, step: String(t.step) } },
      el("div", { class: "n" }, `${t.product} · step ${t.step}`),
      el("div", { class: "n" }, t.operation || ""),
      el("div", { class: "wip" }, fmtNum(t.units)),
      el("div", { class: "bar" }, bar),
      el("div", { class: "n" }, Object.entries(t.states).map(([k, v]) => `${k.replace(/_/g, " ")} ${v}`).join(" · ")));
  }) : el("div", { class: "empty" }, "No units on the line."));
}

function fpyColour(y) {
  if (y === null || y === undefined) return "grey";
  if (y >= 0.95) return "green";
  if (y >= 0.85) return "amber";
  return "red";
}

async function refresh() {
  let doc;
  try {
    doc = await api("GET", "/api/v1/line");
  } catch (err) {
    replace(ui.error, errorBanner(err, "Cannot show the line"));
    ui.updated.className = "live off";
    replace(ui.updated, lamp("red"), " not updating");
    return;
  }
  replace(ui.error);
  const counts = renderStations(doc.stations || []);
  renderWip(doc.wip);
  const tp = (doc.throughput && doc.throughput.windows) || {};
  const h1 = tp["1h"] || {};
  const h8 = tp["8h"] || {};
  const al = doc.alerts || {};
  const byP = al.by_priority || {};
  const holds = doc.holds || {};
  replace(ui.summary, el("div", { class: "stats" },
    stat("Line clock", fmtTime(doc.clock) || "–"),
    stat("Stations running", `${counts.running || 0} / ${(doc.stations || []).length}`),
    stat("Down", fmtNum(counts.down || 0), counts.down ? "over" : ""),
    stat("WIP", fmtNum(doc.wip_total)),
    stat("Packed 1 h", fmtNum(h1.completed)),
    stat("Packed 8 h", fmtNum(h8.completed)),
    stat("Shipped 8 h", fmtNum(h8.shipped)),
    stat("Operations 1 h", fmtNum(h1.operations)),
    stat("Holds in force", fmtNum(holds.count)),
    el("div", { class: "stat" }, el("span", { class: "label" }, "Alerts"),
      el("span", { class: "value" },
        el("a", { href: "/" }, badge(`${byP.high || 0} high`, byP.high ? "red" : "grey"), " ",
          badge(`${byP.medium || 0} medium`, byP.medium ? "amber" : "grey"), " ",
          badge(`${byP.low || 0} low`, byP.low ? "blue" : "grey"))))));
  replace(ui.fpy, table([
    { label: "Station", render: (r) => el("span", {}, lamp(fpyColour(r.yield)), " ", r.station) },
    { label: "Type", key: "type" },
    { label: "First passes", num: true, render: (r) => fmtNum(r.first_passes) },
    { label: "Failed", num: true, render: (r) => fmtNum(r.failed) },
    { label: "FPY", num: true, render: (r) => badge(fmtPct(r.yield), fpyColour(r.yield)) },
    { label: "Window", key: "window" },
  ], doc.first_pass_yield || [], { id: "fpy-rows", empty: "No tests or inspections yet." }));
  replace(ui.holds, table([
    { label: "Hold", render: (h) => el("code", {}, h.id) },
    { label: "Scope", render: (h) => badge(h.scope, "red") },
    { label: "Target", render: (h) => (h.scope === "unit"
      ? el("a", { href: `/units/${encodeURIComponent(h.target)}` }, h.target) : h.target) },
    { label: "Reason", key: "reason" },
    { label: "Placed", render: (h) => `${fmtTime(h.placed)} by ${h.placed_by || "the line"}` },
  ], holds.list || [], { id: "hold-rows", empty: "No holds in force." }));
  ui.updated.className = "live on";
  replace(ui.updated, lamp("green"), ` updated ${new Date().toLocaleTimeString()}`);
}

async function start() {
  await nav("line");
  main().append(
    pageHead("Line", ui.updated),
    ui.error, ui.summary,
    el("h2", {}, "Stations"), ui.stations,
    el("h2", {}, "Work in progress per step"), ui.wip,
    el("div", { class: "cols2" },
      el("section", {}, el("h2", {}, "First-pass yield"), ui.fpy),
      el("section", {}, el("h2", {}, el("a", { href: "/holds" }, "Holds in force")), ui.holds)));
  every(REFRESH_MS, refresh);
}

start();
