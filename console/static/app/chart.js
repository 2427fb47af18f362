// SVG line charts, own code: one chart = axes with ticks, any number of series (one <path>
// each, class "series"), optional horizontal lines (centre line, control limits) and marked
// points (rule violations). Colours come from CSS classes (/assets/views.css): a series is
// grey unless it has a class of its own (`outlier`: red, thicker, labelled at its end).

const NS = "http://www.w3.org/2000/svg";

export function svgEl(tag, attrs = {}, ...children) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== null && v !== undefined && v !== false) node.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** About `count` round tick values covering [lo, hi]. */
export function ticks(lo, hi, count = 5) {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [];
  if (hi === lo) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    out.push(Math.round(v / step) * step);
  }
  return out;
}

export function fmtNum(v) {
  const a = Math.abs(v);
  if (a === 0) return "0";
  if (a >= 1000) return v.toFixed(0);
  if (a >= 10) return v.toFixed(a % 1 === 0 ? 0 : 1);
  if (a >= 0.01) return String(Math.round(v * 1000) / 1000);
  return v.toPrecision(3);  // small quantities (farads, seconds): 1.02e-7
}

/**
 * A line chart.
 *  - title, yLabel, xLabel: text
 *  - series: [{label, points: [[x, y], ...], cls, data: {key: value}, labelled, tag}]
 *    (`labelled`: `tag`, else `label`, written at the line's end)
 *  - hlines: [{y, label, cls}]    - marks: [{x, y, label, cls}]
 *  - dots: draw a circle per point (SPC charts)
 *  - xFormat(x): tick text for x
 *  - metric: set as data-metric on the <svg>
 */
export function lineChart(opts) {
  const width = opts.width || 760;
  const height = opts.height || 280;
  const pad = { l: 64, r: opts.padRight ?? 130, t: 34, b: 40 };
  const series = opts.series || [];
  const hlines = (opts.hlines || []).filter((h) => Number.isFinite(h.y));
  const marks = opts.marks || [];
  const xs = [], ys = [];
  for (const s of series) for (const [x, y] of s.points) {
    if (Number.isFinite(x) && Number.isFinite(y)) { xs.push(x); ys.push(y); }
  }
  for (const h of hlines) ys.push(h.y);
  const root = svgEl("svg", {
    class: `lt-chart ${opts.cls || ""}`.trim(), viewBox: `0 0 ${width} ${height}`,
    width, height, role: "img", "aria-label": opts.title || "chart",
    "data-metric": opts.metric, preserveAspectRatio: "xMinYMin meet",
  });
  root.append(svgEl("title", {}, opts.title || "chart"));
  root.append(svgEl("text", { x: pad.l, y: 20, class: "lt-chart-title" }, opts.title || ""));
  if (!xs.length) {
    root.append(svgEl("text", { x: pad.l, y: height / 2, class: "lt-chart-empty" },
                      opts.empty || "no data"));
    return root;
  }
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (x1 === x0) { x0 -= 1; x1 += 1; }
  const yPad = (y1 - y0) * 0.08 || Math.abs(y0) * 0.05 || 1;
  y0 -= yPad; y1 += yPad;
  const W = width - pad.l - pad.r, H = height - pad.t - pad.b;
  const sx = (x) => pad.l + ((x - x0) / (x1 - x0)) * W;
  const sy = (y) => pad.t + H - ((y - y0) / (y1 - y0)) * H;

  const axes = svgEl("g", { class: "lt-axes" });
  axes.append(svgEl("line", { x1: pad.l, y1: pad.t + H, x2: pad.l + W, y2: pad.t + H }));
  axes.append(svgEl("line", { x1: pad.l, y1: pad.t, x2: pad.l, y2: pad.t + H }));
  for (const t of ticks(y0, y1, 5)) {
    axes.append(svgEl("line", { class: "lt-grid", x1: pad.l, x2: pad.l + W, y1: sy(t), y2: sy(t) }));
    axes.append(svgEl("text", { x: pad.l - 6, y: sy(t) + 4, class: "lt-tick lt-tick-y" }, fmtNum(t)));
  }
  const xf = opts.xFormat || fmtNum;
  for (const t of ticks(x0, x1, 6)) {
    axes.append(svgEl("text", { x: sx(t), y: pad.t + H + 16, class: "lt-tick lt-tick-x" }, xf(t)));
  }
  if (opts.yLabel) {
    axes.append(svgEl("text", { x: 14, y: pad.t + H / 2, class: "lt-axis-label",
                                transform: `rotate(-90 14 ${pad.t + H / 2})` }, opts.yLabel));
  }
  if (opts.xLabel) {
    axes.append(svgEl("text", { x: pad.l + W / 2, y: height - 4, class: "lt-axis-label" },
                      opts.xLabel));
  }
  root.append(axes);

  for (const h of hlines) {
    const y = sy(h.y);
    root.append(svgEl("line", { class: `lt-hline ${h.cls || ""}`.trim(), x1: pad.l,
                                x2: pad.l + W, y1: y, y2: y }));
    root.append(svgEl("text", { class: `lt-hline-label ${h.cls || ""}`.trim(), x: pad.l + W + 6,
                                y: y + 4 }, `${h.label} ${fmtNum(h.y)}`));
  }

  // Plain series first, then the classed ones on top (an outlier is never hidden).
  const ordered = [...series].sort((a, b) => (a.cls ? 1 : 0) - (b.cls ? 1 : 0));
  for (const s of ordered) {
    const pts = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
    if (!pts.length) continue;
    const d = pts.map(([x, y], i) => `${i ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`)
      .join("");
    const attrs = { class: `series ${s.cls || ""}`.trim(), d };
    for (const [k, v] of Object.entries(s.data || {})) attrs[`data-${k}`] = v;
    const path = svgEl("path", attrs, svgEl("title", {}, s.label));
    root.append(path);
    if (opts.dots) {
      const g = svgEl("g", { class: "lt-dots" });
      for (const [x, y] of pts) g.append(svgEl("circle", { cx: sx(x), cy: sy(y), r: 2.5 }));
      root.append(g);
    }
    if (s.labelled) {
      const [lx, ly] = pts[pts.length - 1];
      root.append(svgEl("text", { class: `lt-series-label ${s.cls || ""}`.trim(),
                                  x: Math.min(sx(lx) + 6, width - pad.r + 6), y: sy(ly) + 4 },
                        s.tag || s.label));
    }
  }
  for (const m of marks) {
    if (!Number.isFinite(m.x) || !Number.isFinite(m.y)) continue;
    root.append(svgEl("circle", { class: `lt-mark ${m.cls || ""}`.trim(), cx: sx(m.x),
                                  cy: sy(m.y), r: 6 }, svgEl("title", {}, m.label || "")));
  }
  return root;
}
