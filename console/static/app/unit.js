// /units/{serial}: one unit — route progress, as-built genealogy tree, burn-in verdict and
// per-GPU charts (temperature, power, SM clock; the GPU off its peers in red), test
// measurements, history, holds, and the HBOM / evidence downloads.
//
// Reads GET /api/v1/units/{serial} (the unit page document), .../trace (`trace --json`),
// .../burnin (`burnin show --json`) and .../telemetry (per-GPU series).

import { api } from "/static/api.js";
import { el, kv } from "/static/ui.js";
import { lineChart } from "/assets/chart.js";
import {
  badge, fill, guarded, notice, num, section, startPage, table, unitLink, when,
} from "/assets/views.js";

const serial = decodeURIComponent(location.pathname.replace(/^\/units\//, "").replace(/\/$/, ""));
const { main } = startPage("units", serial);
const base = `/api/v1/units/${encodeURIComponent(serial)}`;

const head = el("div", { class: "page-head" },
  el("h1", { id: "unit-serial", class: "mono" }, serial), el("span", { class: "spacer" }),
  el("a", { class: "btn", id: "dl-hbom", href: `${base}/hbom`, download: `${serial}.hbom.json` },
     "Download HBOM"),
  el("a", { class: "btn", id: "dl-evidence", href: `${base}/evidence`,
            download: `${serial}.evidence.zip` }, "Download evidence bundle"));
const summary = el("div", { id: "unit-summary" });
const route = section("Route progress", { id: "route" });
const burnin = section("Burn-in", { id: "burnin" });
const tree = section("As-built genealogy", { id: "genealogy" });
const tests = section("Test measurements", { id: "tests" });
const holds = section("Holds and alerts", { id: "holds" });
const history = section("History", { id: "history" });
main.append(head, summary, route, burnin, tree, tests, holds, history);

// --- helpers -----------------------------------------------------------------------------

function first(...values) {
  for (const v of values) if (v !== undefined && v !== null) return v;
  return undefined;
}

async function optional(path) {
  try {
    return await api("GET", path);
  } catch (e) {
    if (e && e.status === 404) return { missing: e };
    throw e;
  }
}

// --- summary + route ---------------------------------------------------------------------

function renderSummary(doc, trace) {
  const t = trace || {};
  const d = doc || {};
  fill(summary, el("div", { class: "lt-unit-state" },
    badge(first(d.state, t.state), null, { id: "unit-state", class: "lt-big" }),
    kv([["Product", first(d.product, t.product)], ["Kind", first(d.kind, t.kind)],
        ["Step", first(d.step, t.step)], ["Work order", first(d.work_order, t.work_order)],
        ["Order", first(d.order, t.order)], ["Carton", first(d.carton, t.carton)],
        ["Installed in", (d.installed_in || t.installed_in) ?
          unitLink(d.installed_in || t.installed_in) : null],
        ["Route", (d.route || t.route) ? `${(d.route || t.route).product} rev ${(d.route || t.route).revision}`
          + (d.route && d.route.in_force === false ? " (no longer in force)" : "") : null],
        ["Station", d.station], ["Sealed", d.sealed === undefined ? null : d.sealed ? "yes (HBOM sealed)" : "not yet"],
        ["Updated", when(first(d.updated, t.updated))]])));
}

/** The route's steps, each {step, operation, state: done|current|pending|failed}. */
function routeSteps(doc, trace) {
  const d = doc || {};
  const given = first(d.route_progress, d.progress, d.route && d.route.steps, d.steps);
  if (Array.isArray(given)) {
    return given.map((s) => ({
      step: s.step, operation: first(s.operation, s.name, ""),
      state: String(first(s.state, s.status, "pending")).toLowerCase(),
      station: s.station, result: s.result, time: first(s.completed, s.time, s.started),
    }));
  }
  // Without a route document: the operations done so far.
  return ((trace && trace.operations) || []).map((o) => ({
    step: o.step, operation: o.operation, station: o.station, result: o.result,
    time: o.completed || o.started,
    state: /fail/i.test(o.result || "") ? "failed" : o.completed ? "done" : "current",
  }));
}

const STEP_COLOUR = { done: "green", passed: "green", completed: "green", current: "blue",
  in_progress: "blue", failed: "red", held: "red", pending: "grey", skipped: "grey" };

function renderRoute(doc, trace) {
  const steps = routeSteps(doc, trace);
  if (!steps.length) {
    fill(route, el("h2", {}, "Route progress"), notice("info", "no route steps recorded yet"));
    return;
  }
  const list = el("ol", { class: "lt-route", id: "route-steps" }, steps.map((s) => el("li", {
    class: ["lt-step", `andon-${STEP_COLOUR[s.state] || "grey"}`],
    "data-state": s.state, "data-step": s.step,
    title: [s.station, s.result, s.time ? when(s.time) : null].filter(Boolean).join(" · "),
  }, el("span", { class: "lt-step-no" }, s.step ?? "?"),
     el("span", { class: "lt-step-op" }, s.operation || ""),
     el("span", { class: "lt-step-state" }, s.state))));
  fill(route, el("h2", {}, "Route progress"), list);
}

// --- genealogy tree ----------------------------------------------------------------------

function partLabel(p) {
  const where = p.slot !== null && p.slot !== undefined ? `slot ${p.slot}` : p.ref || null;
  return el("span", { class: "lt-part" },
    el("span", { class: "lt-part-cat" }, p.category || "part"), " ",
    p.serial ? el("span", { class: "mono lt-part-serial" }, p.serial)
             : el("span", { class: "muted" }, `${p.qty ?? ""} × (unserialized)`),
    where ? el("span", { class: "muted" }, ` ${where}`) : null,
    el("span", { class: "muted" }, ` · ${p.mpn} · lot `),
    el("a", { href: `/recall?lot=${encodeURIComponent(p.lot)}`, class: "mono" }, p.lot));
}

function buildTree(rootSerial, parts) {
  const children = new Map();
  for (const p of parts) {
    const parent = p.parent || rootSerial;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(p);
  }
  for (const list of children.values()) {
    list.sort((a, b) => String(a.category).localeCompare(String(b.category)) ||
      (a.slot ?? 999) - (b.slot ?? 999) || String(a.ref ?? a.serial).localeCompare(String(b.ref ?? b.serial)));
  }
  const seen = new Set();
  const node = (p) => {
    const kids = p.serial && !seen.has(p.serial) ? (seen.add(p.serial), children.get(p.serial) || [])
      : p.children || [];
    const item = el("li", { "data-serial": p.serial || null, "data-category": p.category || null },
      partLabel(p));
    if (kids.length) item.append(el("ul", {}, kids.map(node)));
    return item;
  };
  seen.add(rootSerial);
  return el("ul", { class: "lt-tree", id: "genealogy-tree" },
    el("li", { class: "lt-tree-root" }, el("strong", { class: "mono" }, rootSerial),
       el("ul", {}, (children.get(rootSerial) || []).map(node))));
}

function renderTree(doc, trace) {
  const src = doc && Array.isArray(doc.parts) ? doc : trace || {};
  const parts = src.parts || [];
  const removed = src.removed || [];
  const kids = [el("h2", {}, "As-built genealogy")];
  if (!parts.length) kids.push(notice("info", "no parts installed"));
  else kids.push(el("p", { class: "muted" }, `${parts.length} parts installed`), buildTree(serial, parts));
  if (removed.length) {
    kids.push(el("h3", {}, "Removed parts"), table(["Part", "MPN", "Lot", "Removed", "Reason"],
      removed.map((p) => [p.serial || "-", p.mpn, p.lot, when(p.removed), p.reason])));
  }
  fill(tree, ...kids);
}

// --- tests -------------------------------------------------------------------------------

function measurementRow(m) {
  const limits = [m.min !== null && m.min !== undefined ? `≥ ${num(m.min, 3)}` : null,
    m.max !== null && m.max !== undefined ? `≤ ${num(m.max, 3)}` : null].filter(Boolean).join(" ");
  const outside = m.pass === false || (m.min !== null && m.min !== undefined && m.value < m.min) ||
    (m.max !== null && m.max !== undefined && m.value > m.max);
  return [m.test, m.name, el("span", { class: outside ? "lt-out" : null }, num(m.value, 3)),
    m.unit, m.expected ?? "", limits || "-"];
}

function renderTests(doc, trace) {
  const kids = [el("h2", {}, "Test measurements")];
  let runs = [];
  if (doc && Array.isArray(doc.measurements)) {
    // The unit page's flat list, in test time order: one block per test run.
    const byRun = new Map();
    for (const m of doc.measurements) {
      const k = `${m.time}|${m.station}|${m.method}`;
      if (!byRun.has(k)) byRun.set(k, { time: m.time, station: m.station, method: m.method, measurements: [] });
      byRun.get(k).measurements.push(m);
    }
    runs = [...byRun.values()].map((r) => ({ ...r,
      result: r.measurements.some((m) => m.pass === false) ? "Failed" : "Passed",
      failedNames: r.measurements.filter((m) => m.pass === false).map((m) => m.name) }));
  } else if (trace && trace.tests) {
    runs = trace.tests.map((r) => ({ ...r,
      failedNames: (r.tests || []).filter((t) => !/pass/i.test(t.result)).map((t) => t.name) }));
  }
  if (!runs.length) kids.push(notice("info", "no tests recorded yet"));
  for (const r of runs) {
    const ms = r.measurements || [];
    const details = el("details", { class: "lt-test-run", "data-method": r.method },
      el("summary", {}, badge(r.result), ` ${r.method} · ${r.station} · ${when(r.time)} · `,
        `${ms.length} measurements`,
        r.failedNames.length ? el("span", { class: "lt-out" }, ` · out of limits: ${r.failedNames.slice(0, 8).join(", ")}`
          + (r.failedNames.length > 8 ? ` and ${r.failedNames.length - 8} more` : "")) : null),
      table(["Test", "Measurement", "Value", "Unit", "Expected", "Limits"], ms.map(measurementRow)));
    if (r.failedNames.length) details.open = true;
    kids.push(details);
  }
  fill(tests, ...kids);
}

// --- holds and history -------------------------------------------------------------------

function renderHolds(doc, trace) {
  const inForce = (doc && doc.holds) || [];
  const past = (doc && doc.hold_history) || (trace && trace.holds) || [];
  const kids = [el("h2", {}, "Holds")];
  kids.push(inForce.length
    ? table(["Hold in force", "On", "Category", "Reason", "Placed"], inForce.map((h) => [
      el("a", { href: `/holds#hold-${encodeURIComponent(h.id)}`, class: "mono" }, h.id),
      `${h.scope} ${h.target}`, badge(h.category), h.reason, when(h.placed)]), { id: "unit-holds" })
    : el("p", { class: "muted" }, "no hold stops this unit"));
  if (past.length) {
    kids.push(el("h3", {}, "Hold history"), table(["Hold", "State", "Reason", "Placed", "Released", "Decision"],
      past.map((h) => [el("span", { class: "mono" }, h.id), badge(h.state), h.reason, when(h.placed),
        when(h.released), h.decision])));
  }
  const alerts = (doc && doc.alerts) || [];
  if (alerts.length) {
    kids.push(el("h3", {}, "Alerts"), table(["Priority", "Alert", "State", "Raised", "Message"],
      alerts.map((a) => [badge(a.priority, a.priority === "high" ? "red" : a.priority === "medium" ? "amber" : "blue"),
        el("code", {}, a.condition), a.state, when(a.raised), a.message])));
  }
  fill(holds, ...kids);
}

function renderHistory(doc, trace) {
  const list = (doc && doc.history) || (trace && trace.history) || [];
  const kids = [el("h2", {}, "History")];
  if (!list.length) kids.push(notice("info", "no events yet"));
  else {
    kids.push(table(["Time", "Event", "What", "Step", "Station", "Operator"],
      list.map((h) => [when(h.time), el("code", {}, h.type), h.summary || "", h.step, h.station,
        h.operator]), { id: "history-table" }));
  }
  fill(history, ...kids);
}

// --- burn-in -----------------------------------------------------------------------------

const METRICS = [
  { key: "temperature", title: "GPU temperature", unit: "°C",
    fields: ["temp_c", "temperature", "temp"] },
  { key: "power", title: "Power", unit: "W", fields: ["power_w", "power"] },
  { key: "sm_clock", title: "SM clock", unit: "MHz", fields: ["sm_clock_mhz", "sm_clock", "clock"] },
];

/** The telemetry document's runs (chronological), each {run, station, start, verdict,
 * gpus: [{index, serial, outlier, why, series: {metric: [[seconds, value]]}}]}. */
export function telemetryRuns(doc) {
  const runs = (doc && Array.isArray(doc.runs)) ? doc.runs : [];
  return runs.map((r) => ({
    ...r,
    gpus: (r.gpus || []).map((g) => {
      const series = {};
      for (const m of METRICS) {
        series[m.key] = (g.samples || []).map((s) => [Number(s.t), first(...m.fields.map((f) => s[f]))])
          .filter(([t, v]) => Number.isFinite(t) && v !== null && v !== undefined);
      }
      return { index: g.index, serial: g.serial || "", outlier: g.outlier === true,
        why: g.why || [], peak: g.peak_delta_c, series };
    }),
  }));
}

function runCharts(run) {
  const gpus = run.gpus;
  if (!gpus.length) return [notice("info", `run ${run.run}: no telemetry samples`)];
  const out = gpus.filter((g) => g.outlier);
  const legend = el("div", { class: "lt-chart-legend" },
    out.length
      ? [el("span", { class: "lt-key lt-key-outlier" }),
        el("strong", {}, ` GPU ${out.map((g) => g.index).join(", ")} runs off its peers`),
        el("span", { class: "lt-key lt-key-peer" }), ` the other ${gpus.length - out.length} GPUs`]
      : [el("span", { class: "lt-key lt-key-peer" }), ` ${gpus.length} GPUs, none off its peers`]);
  const why = out.length ? el("ul", { class: "lt-reasons lt-outlier-why" }, out.map((g) =>
    el("li", {}, el("strong", {}, `GPU ${g.index} ${g.serial}: `), g.why.join("; ") || "off its peers"))) : null;
  const svgs = METRICS.map((m) => lineChart({
    title: `${m.title} (${m.unit}), ${gpus.length} GPUs`, metric: m.key, yLabel: m.unit,
    xLabel: "seconds into the run", xFormat: (x) => String(Math.round(x)), width: 520, height: 320,
    padRight: 120,
    cls: "lt-burnin-chart",
    series: gpus.map((g) => ({
      label: `GPU ${g.index}${g.outlier ? " off its peers" : ""}`,
      points: g.series[m.key], cls: g.outlier ? "outlier" : null, labelled: g.outlier,
      tag: `GPU ${g.index}`,
      data: { gpu: g.index, serial: g.serial },
    })),
  }));
  const notes = [run.downsampled ? "averaged to at most 600 points a GPU" : null,
    run.pruned ? `${run.pruned} telemetry events pruned` : null].filter(Boolean).join(" · ");
  return [legend, why, notes ? el("p", { class: "muted" }, notes) : null,
    el("div", { class: "lt-chart-row lt-burnin-charts" }, svgs)];
}

function verdictBlock(v) {
  const reasons = v.reasons || [];
  const byGpu = new Map();
  for (const r of reasons) {
    const k = r.gpu_index ?? "unit";
    if (!byGpu.has(k)) byGpu.set(k, []);
    byGpu.get(k).push(r);
  }
  const gpuRows = (v.gpus || []).map((g) => [
    `GPU ${g.gpu_index}`, el("span", { class: "mono" }, g.gpu_serial), badge(g.result),
    num(g.temp_max_c), num(g.temp_mean_c), num(g.margin_min_c), num(g.power_mean_w),
    num(g.sm_clock_mean_mhz, 0), (g.xids || []).join(", ") || "-",
    (byGpu.get(g.gpu_index) || []).map((r) => r.code).join(", ") || "-"]);
  return el("div", { class: "lt-verdict", "data-result": v.result },
    reasons.length ? el("ul", { class: "lt-reasons lt-verdict-reasons" }, reasons.map((r) =>
      el("li", {}, el("code", {}, r.code), " ",
        r.gpu_index !== null && r.gpu_index !== undefined ? el("strong", {}, `GPU ${r.gpu_index}: `) : null,
        r.message))) : el("p", { class: "muted" }, "every burn-in rule passed"),
    el("details", { class: "lt-verdict-gpus" }, el("summary", {}, "Per-GPU figures"),
      table(["GPU", "Serial", "Result", "Max °C", "Mean °C", "Min margin °C", "Power W",
        "SM MHz", "XIDs", "Failed rules"], gpuRows, { class: "lt-burnin-gpus" })));
}

/** One burn-in run: its verdict (linetrace's, with the reasons per GPU) and its charts. */
function runBlock(run, verdict, n, total) {
  const result = verdict ? verdict.result : run && run.verdict;
  const r = run || {};
  return el("div", { class: ["lt-burnin-run", "panel"], "data-run": r.run || (verdict && verdict.run_id),
    "data-verdict": result || "none" },
    el("div", { class: "lt-verdict-head" },
      badge(result || "no verdict", result ? null : "grey", { class: ["lt-huge", "lt-burnin-result"] }),
      el("span", { class: "lt-big-text" }, `Run ${n} of ${total}`),
      el("span", { class: "muted" }, [
        r.station || (verdict && verdict.station), verdict && verdict.sku,
        `${when(r.start || (verdict && verdict.started))} – ${r.end || (verdict && verdict.ended)
          ? when(r.end || verdict.ended) : "running"}`,
        verdict && verdict.station_result ? `station's own result: ${verdict.station_result}` : null,
      ].filter(Boolean).join(" · "))),
    verdict ? verdictBlock(verdict) : el("p", { class: "muted" }, "linetrace has not decided this run yet"),
    run ? runCharts(run) : notice("info", "no telemetry stored for this run"));
}

function renderBurnin(verdicts, tele) {
  const kids = [el("h2", {}, "Burn-in")];
  const list = Array.isArray(verdicts) ? verdicts : [];
  const runs = telemetryRuns(tele && !tele.missing ? tele : null);
  const byRun = new Map(list.map((v) => [v.run_id, v]));
  const blocks = [];
  runs.forEach((run, i) => blocks.push([run.start || "", runBlock(run, byRun.get(run.run), i + 1, runs.length)]));
  const shown = new Set(runs.map((r) => r.run));
  for (const v of list) if (!shown.has(v.run_id)) blocks.push([v.started || "", runBlock(null, v, "?", runs.length)]);
  if (!blocks.length) {
    kids.push(notice("info", "not burned in yet (or linetrace has not decided its run yet)"));
  } else {
    const latest = list[0];
    kids.push(el("p", { class: "lt-burnin-summary" }, "Latest verdict: ",
      badge(latest ? latest.result : "none", latest ? null : "grey", { id: "burnin-result", class: "lt-big" }),
      ` · ${blocks.length} run(s), in the order they ran`));
    blocks.sort((a, b) => String(a[0]).localeCompare(String(b[0])));
    kids.push(...blocks.map((b) => b[1]));
  }
  fill(burnin, ...kids);
}

// --- load --------------------------------------------------------------------------------

guarded(main, async () => {
  const doc = await api("GET", base);
  // The unit page document carries parts, history and measurements; `trace` only when not.
  const trace = Array.isArray(doc.parts) ? null : await optional(`${base}/trace`);
  const tr = trace && !trace.missing ? trace : null;
  renderSummary(doc, tr);
  renderRoute(doc, tr);
  renderTree(doc, tr);
  renderTests(doc, tr);
  renderHolds(doc, tr);
  renderHistory(doc, tr);
  const [verdicts, tele] = await Promise.all([optional(`${base}/burnin`), optional(`${base}/telemetry`)]);
  renderBurnin(verdicts && !verdicts.missing ? verdicts : [], tele);
  document.body.dataset.loaded = "true";
});
