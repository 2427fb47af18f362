// The live alert board (/): every alert not in normal, the most urgent first, kept current over
// server-sent events (GET /api/v1/alerts/stream) without a reload; acknowledge, shelve
// (duration + reason), comment; the flood banner; the ISA-18.2 KPIs; a drawer with one alert's
// history (who acknowledged or shelved it, and when). Readable across the room: andon colours
// and large type; unacknowledged alerts blink.

import { api } from "/static/api.js";
import {
  badge, el, errorBanner, errorText, every, fmtAgo, fmtNum, fmtPct, fmtTime, formDialog, kv, lamp,
  main, nav, pageHead, replace, stat, table, toast,
} from "/static/ui.js";

const RANK = { high: 0, medium: 1, low: 2 };
const UNACKED = new Set(["unacknowledged", "rtn_unacknowledged"]);
const PRIORITY_COLOUR = { high: "red", medium: "amber", low: "blue" };
const STATE_LABEL = {
  unacknowledged: "unacknowledged",
  acknowledged: "acknowledged",
  rtn_unacknowledged: "returned to normal, unacknowledged",
  shelved: "shelved",
  suppressed: "suppressed",
  out_of_service: "out of service",
  normal: "normal",
};

const alerts = new Map(); // id -> the alert's list document
let drawerId = null;
let kpiTimer = null;
let me = null;

const ui = {
  live: el("span", { class: "live off", id: "live" }, lamp("red"), " connecting…"),
  counts: el("div", { class: "board-counts", id: "counts" }),
  flood: el("div", { class: "banner warn flood hidden", id: "flood", role: "alert" }),
  error: el("div", { id: "board-error" }),
  list: el("div", { class: "alerts", id: "alerts", "aria-live": "polite" }),
  kpi: el("aside", { class: "panel kpi", id: "kpi" }, el("h2", {}, "Alarm system KPIs")),
  drawer: el("aside", { class: "drawer hidden", id: "drawer", "aria-label": "alert details" }),
};

function colourOf(a) {
  if (a.state === "out_of_service") return "grey";
  if (a.state === "shelved" || a.state === "suppressed") return "grey";
  return PRIORITY_COLOUR[a.priority] || "grey";
}

/** Shelved, suppressed and out-of-service alerts are not announced: they go below the rest. */
const QUIET = new Set(["shelved", "suppressed", "out_of_service"]);

function sorted() {
  return [...alerts.values()].sort((a, b) =>
    Number(QUIET.has(a.state)) - Number(QUIET.has(b.state))
    || (RANK[a.priority] ?? 3) - (RANK[b.priority] ?? 3)
    || (b.updated || "").localeCompare(a.updated || "")
    || a.id.localeCompare(b.id));
}

/** Keep an alert's newest document; one back in normal leaves the board. */
function upsert(doc, fresh = false) {
  if (!doc || !doc.id) return;
  const had = alerts.get(doc.id);
  if (had && doc.updated && had.updated && doc.updated < had.updated) return;
  if (doc.state === "normal") alerts.delete(doc.id);
  else alerts.set(doc.id, { ...doc, _fresh: fresh && (!had || had.state !== doc.state) });
  scheduleRender();
  if (drawerId === doc.id) openDrawer(doc.id, false);
  scheduleKpi();
}

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    render();
  });
}

function render() {
  const list = sorted();
  replace(ui.list, list.length === 0
    ? el("div", { class: "alert-empty", id: "no-alerts" }, lamp("green"), " No alerts: the line is normal.")
    : list.map(card));
  for (const a of list) a._fresh = false;
  const n = (p) => list.filter((a) => a.priority === p && !QUIET.has(a.state)).length;
  const unacked = list.filter((a) => UNACKED.has(a.state)).length;
  replace(ui.counts,
    badge(`${n("high")} high`, n("high") ? "red" : "grey"),
    badge(`${n("medium")} medium`, n("medium") ? "amber" : "grey"),
    badge(`${n("low")} low`, n("low") ? "blue" : "grey"),
    badge(`${unacked} unacknowledged`, unacked ? "red" : "green", { class: unacked ? "blink" : null }));
}

function card(a) {
  const unacked = UNACKED.has(a.state);
  const actions = [];
  if (unacked) {
    actions.push(el("button", { type: "button", class: "primary", "data-action": "ack",
      onclick: () => acknowledge(a) }, "Acknowledge"));
  }
  if (a.state === "shelved") {
    actions.push(el("button", { type: "button", "data-action": "unshelve",
      onclick: () => unshelve(a) }, "Unshelve"));
  } else if (a.state !== "out_of_service") {
    actions.push(el("button", { type: "button", "data-action": "shelve",
      onclick: () => shelve(a) }, "Shelve…"));
  }
  actions.push(el("button", { type: "button", "data-action": "comment",
    onclick: () => comment(a) }, "Comment…"));
  actions.push(el("button", { type: "button", "data-action": "details",
    onclick: () => openDrawer(a.id, true) }, "History"));
  const where = [a.station && `station ${a.station}`, a.unit && `unit ${a.unit}`, a.lot && `lot ${a.lot}`]
    .filter(Boolean).join(" · ");
  return el("article", {
    class: ["alert", `andon-${colourOf(a)}`, unacked ? "unacked" : null, a._fresh ? "fresh" : null,
      QUIET.has(a.state) ? "quiet" : null],
    dataset: { id: a.id, state: a.state, priority: a.priority },
    id: `alert-${a.id}`,
  },
  el("div", { class: "prio" }, badge(a.priority, PRIORITY_COLOUR[a.priority] || "grey"),
    unacked ? el("div", {}, badge("unack", "red", { class: "blink unack-mark" })) : null),
  el("div", { class: "body" },
    el("div", { class: "title" }, el("span", { class: "subject" }, a.subject), " ",
      el("span", { class: "muted" }, a.condition)),
    el("div", { class: "msg" }, a.message),
    el("div", { class: "meta" },
      el("span", { class: "state" }, STATE_LABEL[a.state] || a.state),
      el("span", {}, `raised ${fmtTime(a.raised)}`),
      a.updated !== a.raised ? el("span", {}, `changed ${fmtAgo(a.updated)}`) : null,
      a.occurrences > 1 ? el("span", {}, `${a.occurrences}×`) : null,
      a.shelved_until ? el("span", {}, `shelved until ${fmtTime(a.shelved_until)}`) : null,
      a.latched ? el("span", {}, "latched") : null,
      a.chattering ? el("span", {}, "chattering") : null,
      where ? el("span", {}, where) : null),
    a.action ? el("div", { class: "meta" }, "→ ", a.action) : null),
  el("div", { class: "actions" }, actions));
}

// --- actions ---------------------------------------------------------------------------------

/** An action's answer: the alert plus `recorded`, `new` and the outcome's `message` (which is
 * not the alert's message: the card keeps that). */
function acted(doc) {
  const had = alerts.get(doc.id);
  const { recorded, new: isNew, message, ...alert } = doc;
  upsert({ ...alert, message: had ? had.message : message });
}

function refused(what, a, err) {
  replace(ui.error, errorBanner(err, `${what} ${a.subject} refused`));
  toast(`${what} refused: ${errorText(err)}`, "error", 8000);
}

async function acknowledge(a) {
  try {
    const doc = await api("POST", `/api/v1/alerts/${encodeURIComponent(a.id)}/ack`, {});
    replace(ui.error);
    acted(doc);
    toast(`Acknowledged ${a.subject}`, "ok");
  } catch (err) {
    refused("Acknowledge", a, err);
  }
}

async function unshelve(a) {
  try {
    const doc = await api("POST", `/api/v1/alerts/${encodeURIComponent(a.id)}/unshelve`, {});
    replace(ui.error);
    acted(doc);
    toast(`Unshelved ${a.subject}`, "ok");
  } catch (err) {
    refused("Unshelve", a, err);
  }
}

async function shelve(a) {
  const doc = await formDialog({
    title: `Shelve ${a.subject}`,
    intro: "A shelved alert is not announced until the time is up (1 minute to 24 hours).",
    submit: "Shelve",
    fields: [
      { name: "for", label: "For", type: "select", value: "1h",
        options: [["15m", "15 minutes"], ["30m", "30 minutes"], ["1h", "1 hour"], ["2h", "2 hours"],
          ["4h", "4 hours"], ["8h", "8 hours (a shift)"], ["24h", "24 hours"]] },
      { name: "reason", label: "Reason", type: "textarea", required: true,
        placeholder: "why it may wait, e.g. maintenance on ICT-3 until 14:00" },
    ],
    onSubmit: (v) => api("POST", `/api/v1/alerts/${encodeURIComponent(a.id)}/shelve`,
      { for: v.for, reason: v.reason }),
  }).catch((err) => { refused("Shelve", a, err); return null; });
  if (doc) {
    replace(ui.error);
    acted(doc);
    toast(`Shelved ${a.subject}`, "ok");
  }
}

async function comment(a) {
  const doc = await formDialog({
    title: `Comment on ${a.subject}`,
    submit: "Add comment",
    fields: [{ name: "comment", label: "Comment", type: "textarea", required: true }],
    onSubmit: (v) => api("POST", `/api/v1/alerts/${encodeURIComponent(a.id)}/comment`,
      { comment: v.comment }),
  });
  if (doc) {
    replace(ui.error);
    acted(doc);
    toast("Comment added", "ok");
  }
}

// --- the history drawer ------------------------------------------------------------------------

function closeDrawer() {
  drawerId = null;
  ui.drawer.classList.add("hidden");
  replace(ui.drawer);
}

async function openDrawer(id, focus) {
  drawerId = id;
  ui.drawer.classList.remove("hidden");
  if (focus) replace(ui.drawer, el("p", { class: "muted" }, "Loading…"));
  let doc;
  try {
    doc = await api("GET", `/api/v1/alerts/${encodeURIComponent(id)}`);
  } catch (err) {
    if (drawerId === id) replace(ui.drawer, closeButton(), errorBanner(err, "Cannot show the alert"));
    return;
  }
  if (drawerId !== id) return;
  const details = doc.details && Object.keys(doc.details).length
    ? el("pre", { class: "mono" }, JSON.stringify(doc.details, null, 2)) : null;
  replace(ui.drawer, closeButton(),
    el("h2", {}, badge(doc.priority, PRIORITY_COLOUR[doc.priority]), " ", doc.subject),
    el("p", {}, doc.message),
    kv([["Alert", el("code", {}, doc.id)], ["Condition", doc.condition],
      ["State", STATE_LABEL[doc.state] || doc.state], ["Raised", fmtTime(doc.raised)],
      ["Changed", fmtTime(doc.updated)], ["Occurrences", String(doc.occurrences)],
      ["Shelved until", fmtTime(doc.shelved_until)], ["Cleared", fmtTime(doc.cleared)],
      ["Station", doc.station], ["Unit", doc.unit], ["Lot", doc.lot], ["What to do", doc.action]]),
    el("h3", {}, "History: who and when"),
    table([
      { label: "When", render: (h) => fmtTime(h.time) },
      { label: "What", render: (h) => h.transition.replace(/_/g, " ") },
      { label: "State", render: (h) => STATE_LABEL[h.state] || h.state },
      { label: "By", render: (h) => (h.by ? el("strong", {}, h.by) : el("span", { class: "muted" }, "the line")) },
      { label: "Note", render: (h) => h.note || "" },
    ], [...(doc.history || [])].reverse(), { id: "history", empty: "No history yet." }),
    details ? el("h3", {}, "Details") : null, details);
}

function closeButton() {
  return el("button", { type: "button", class: "close", id: "drawer-close", onclick: closeDrawer },
    "Close ✕");
}

// --- KPIs ------------------------------------------------------------------------------------

function scheduleKpi() {
  if (kpiTimer) return;
  kpiTimer = setTimeout(() => {
    kpiTimer = null;
    loadKpi();
  }, 1500);
}

function setFlood(active, text) {
  ui.flood.classList.toggle("hidden", !active);
  if (active) {
    replace(ui.flood, lamp("amber"), " Alarm flood: ", text || "more than 10 alarms in 10 minutes",
      el("span", { class: "muted" }, " — work the high-priority alarms first."));
  }
}

async function loadKpi() {
  let k;
  try {
    k = await api("GET", "/api/v1/alerts/kpi");
  } catch (err) {
    replace(ui.kpi, el("h2", {}, "Alarm system KPIs"), errorBanner(err));
    return;
  }
  const rate = k.alarms_per_10min || {};
  const target = (k.targets && k.targets.alarms_per_10min) || 1;
  const mix = k.priority_mix || {};
  const mixBar = el("div", { class: "mix", title: "priority mix" },
    ["high", "medium", "low"].map((p) => {
      const s = el("span", { class: `andon-${PRIORITY_COLOUR[p]}` });
      s.style.width = `${mix[p] || 0}%`;
      return s;
    }));
  const tmix = (k.targets && k.targets.priority_mix) || {};
  replace(ui.kpi,
    el("h2", {}, "Alarm system KPIs ", el("span", { class: "muted" }, "(last 24 h)")),
    el("div", { class: "stats" },
      stat("Alarms", fmtNum(k.alarms)),
      stat("Per 10 min (avg)", fmtNum(rate.average, 2), rate.average > target ? "over" : ""),
      stat("Last 10 min", fmtNum(rate.current), rate.current > target ? "over" : ""),
      stat("Peak 10 min", fmtNum(rate.peak), rate.peak > 10 ? "over" : ""),
      stat("Top-10 share", fmtPct(k.top10_share, true)),
      stat("Stale (>24 h)", fmtNum((k.stale || []).length), (k.stale || []).length ? "over" : ""),
      stat("Chattering", fmtNum((k.chattering || []).length), (k.chattering || []).length ? "over" : "")),
    el("h3", {}, "Priority mix"),
    mixBar,
    el("div", { class: "muted" }, ["high", "medium", "low"].map((p) =>
      `${p} ${fmtPct(mix[p], true)} (target ${tmix[p] ?? "–"} %)`).join(" · ")),
    (k.top10 || []).length ? el("h3", {}, "Most frequent") : null,
    (k.top10 || []).length ? el("ol", {}, k.top10.slice(0, 5).map((t) =>
      el("li", {}, `${t.subject} `, el("span", { class: "muted" }, t.condition), ` ×${t.alarms}`))) : null,
    el("p", { class: "muted" }, `EEMUA 191 target: ≤ ${target} alarm per 10 minutes.`));
  if (k.flood) setFlood(true, null);
}

// --- live updates ----------------------------------------------------------------------------

function live(on, text) {
  ui.live.className = `live ${on ? "on" : "off"}`;
  replace(ui.live, lamp(on ? "green" : "red"), ` ${text}`);
}

function connect() {
  const es = new EventSource("/api/v1/alerts/stream");
  es.addEventListener("open", () => live(true, "live"));
  es.addEventListener("alert", (e) => {
    try {
      upsert(JSON.parse(e.data), true);
    } catch (err) {
      // a malformed event: ignore it, the next one carries the alert's whole state
    }
  });
  es.addEventListener("flood", (e) => {
    try {
      const f = JSON.parse(e.data);
      setFlood(!!f.active, f.message);
    } catch (err) {
      // ignore
    }
  });
  let checking = false;
  es.addEventListener("error", async () => {
    live(false, "reconnecting…");
    if (checking) return;
    checking = true;
    try {
      await api("GET", "/api/v1/session"); // signed out or expired: goes to /signin
    } catch (err) {
      // the console is down: EventSource keeps retrying
    } finally {
      checking = false;
    }
  });
  return es;
}

async function start() {
  me = await nav("board");
  document.body.append(ui.drawer);
  document.addEventListener("keydown", (e) => { if (e.key === "Escape" && drawerId) closeDrawer(); });
  main().append(
    pageHead("Alert board", ui.counts, ui.live),
    ui.flood, ui.error,
    el("div", { class: "board-layout" }, ui.list, ui.kpi));
  render();
  try {
    for (const a of await api("GET", "/api/v1/alerts")) upsert(a);
  } catch (err) {
    replace(ui.error, errorBanner(err, "Cannot list the alerts"));
  }
  connect();
  every(30000, loadKpi);
  every(30000, scheduleRender); // "changed 5 min ago" stays true
  document.body.dataset.user = me.user;
}

start();
