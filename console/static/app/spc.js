// /spc: the SPC charts (GET /api/v1/spc: one per station type and measurement, with their
// frozen limits and state) and one chart's points with its centre line, control limits and
// the rule violations marked (GET /api/v1/spc/{station_type}/{measurement}).
// /spc?chart=TYPE/MEASUREMENT opens that chart.

import { api } from "/static/api.js";
import { el } from "/static/ui.js";
import { fmtNum, lineChart } from "/assets/chart.js";
import { badge, fill, guarded, notice, startPage, table, unitLink, when } from "/assets/views.js";

const { main, me } = startPage("spc", "SPC charts");
const listBox = el("div", { id: "spc-list" });
const chartBox = el("div", { id: "spc-chart" });
main.append(el("div", { class: "page-head" }, el("h1", {}, "SPC charts")),
  el("p", { class: "muted" }, "Individuals charts per station type and measurement; limits are "
    + "frozen from each chart's baseline. Red points broke a rule."), chartBox, listBox);

function chartKey(c) {
  return `${c.station_type}/${c.measurement}`;
}

const STATE = { in_control: "green", out_of_control: "red", baseline: "blue", collecting: "blue" };

function renderList(charts) {
  if (!charts.length) {
    fill(listBox, notice("info", "no SPC charts yet: charts start once their station types report measurements"));
    return;
  }
  fill(listBox, table(["Chart", "Unit", "Centre", "LCL", "UCL", "Points", "State", "Last violation"],
    charts.map((c) => {
      const a = el("a", { href: `/spc?chart=${encodeURIComponent(chartKey(c))}`, class: "lt-chart-link",
        "data-chart": chartKey(c) }, chartKey(c));
      a.addEventListener("click", (ev) => { ev.preventDefault(); open(c.station_type, c.measurement); });
      const lv = c.last_violation;
      const f = (x) => (x === null || x === undefined ? "-" : fmtNum(x));
      return [a, c.unit, f(c.centre), f(c.lcl), f(c.ucl), c.points,
        badge(c.state, colourOf(c.state)),
        lv ? el("span", {}, (lv.rules || []).join(", "), " ", lv.unit ? unitLink(lv.unit) : null,
          " ", when(lv.time)) : "-"];
    }), { id: "spc-table" }));
}

function pointsOf(doc) {
  return (doc.points || []).map((p, i) => ({
    i: i + 1, value: Number(p.value), unit: p.serial ?? null, station: p.station ?? null,
    time: p.t ?? null, rules: [...new Set([...(p.violations || []), ...(p.alarm || [])])],
    baseline: p.baseline === true,
  })).map((p) => ({ ...p, violation: p.rules.length > 0 }));
}

function colourOf(state) {
  const s = String(state || "");
  return STATE[s] || (s.startsWith("collecting") ? "blue" : null);
}

function chartPath(stationType, measurement) {
  return `/api/v1/spc/${encodeURIComponent(stationType)}/`
    + measurement.split("/").map(encodeURIComponent).join("/");
}

async function open(stationType, measurement) {
  history.replaceState(null, "", `/spc?chart=${encodeURIComponent(`${stationType}/${measurement}`)}`);
  fill(chartBox, el("p", { class: "muted" }, "loading chart…"));
  try {
    const doc = await api("GET", chartPath(stationType, measurement));
    const pts = pointsOf(doc);
    const bad = pts.filter((p) => p.violation);
    const svg = lineChart({
      title: `${stationType} / ${measurement}${doc.unit ? ` (${doc.unit})` : ""}`,
      metric: "spc", yLabel: doc.unit || "", xLabel: "point (in order)", width: 1100, height: 360,
      xFormat: (x) => (Number.isInteger(x) ? String(x) : ""), padRight: 110,
      dots: true, cls: "lt-spc-chart",
      series: [{ label: measurement, points: pts.map((p) => [p.i, p.value]), cls: "spc" }],
      hlines: [{ y: doc.centre, label: "CL", cls: "centre" }, { y: doc.ucl, label: "UCL", cls: "limit" },
        { y: doc.lcl, label: "LCL", cls: "limit" }],
      marks: bad.map((p) => ({ x: p.i, y: p.value, cls: "violation",
        label: `#${p.i} ${p.unit || ""} ${p.time || ""}: ${p.rules.join(", ")}` })),
    });
    fill(chartBox, el("section", { class: "panel" },
      el("div", { class: "page-head" }, el("h2", {}, `${stationType} / ${measurement}`),
        badge(doc.state, colourOf(doc.state), { id: "spc-state" })),
      el("p", { class: "muted", id: "spc-summary" }, (doc.centre === null || doc.centre === undefined
        ? "no limits yet: the chart is collecting its baseline"
        : `centre ${fmtNum(doc.centre)} · limits ${fmtNum(doc.lcl)} .. ${fmtNum(doc.ucl)}`)
        + ` · ${pts.length} points · ${bad.length} rule violation(s)`),
      svg,
      bad.length ? table(["#", "Unit", "Station", "Time", "Value", "Rules"],
        bad.map((p) => [p.i, p.unit ? unitLink(p.unit) : "-", p.station, when(p.time), fmtNum(p.value),
          (p.rules || []).join(", ")]), { id: "spc-violations" }) : null));
  } catch (e) {
    fill(chartBox, notice("error", e.message || String(e), { "data-error": e.code || "error" }));
  }
}

guarded(main, async () => {
  await me;
  const charts = await api("GET", "/api/v1/spc");
  renderList(charts);
  const want = new URLSearchParams(location.search).get("chart");
  const pick = want ? charts.find((c) => chartKey(c) === want)
    : charts.find((c) => c.state === "out_of_control") || charts[0];
  if (pick) await open(pick.station_type, pick.measurement);
});
