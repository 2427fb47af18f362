// Building blocks of the units, unit, recall, SPC, holds and checkpoints pages, on top of
// /static/ui.js: page start-up, andon badges for the words these pages show, array tables,
// sections and notices. No inline styles (the CSP forbids them): CSS classes from app.css
// and /assets/views.css.

import { el, nav, fmtTime, badge as uiBadge, errorText } from "/static/ui.js";

export { errorText };

const WORDS = {
  green: ["passed", "pass", "ok", "done", "completed", "shipped", "packed", "released",
          "in_control", "installed", "allowed"],
  red: ["failed", "fail", "held", "on_hold", "active", "scrapped", "error", "aborted",
        "out_of_control", "rejected", "refused"],
  amber: ["in_repair", "attention", "warning", "approved", "removed", "waiting"],
  blue: ["current", "in_progress", "info", "baseline", "collecting", "quality", "operational"],
};

/** The andon colour of a state, result or verdict word (grey when unknown: pending). */
export function andon(word) {
  const w = String(word ?? "").toLowerCase();
  for (const [colour, words] of Object.entries(WORDS)) if (words.includes(w)) return colour;
  return "grey";
}

/** A coloured badge for a state word. */
export function badge(word, colour = null, attrs = {}) {
  const text = word === null || word === undefined || word === "" ? "-" : String(word);
  return uiBadge(text, colour || andon(word), attrs);
}

/** A table: `columns` are header strings, `rows` arrays of cells (text, numbers or nodes). */
export function table(columns, rows, attrs = {}) {
  const head = el("tr", {}, columns.map((c) => el("th", { scope: "col" }, c)));
  const body = rows.map((r) => el("tr", {}, r.map((cell) => el("td", {}, cellOf(cell)))));
  return el("table", { ...attrs, class: ["data", attrs.class] }, el("thead", {}, head),
            el("tbody", {}, body));
}

function cellOf(cell) {
  if (cell === null || cell === undefined || cell === "") return "-";
  if (cell instanceof Node) return cell;
  return String(cell);
}

/** A titled panel. */
export function section(title, attrs = {}, ...children) {
  return el("section", { ...attrs, class: ["panel", "lt-section", attrs.class] },
            el("h2", {}, title), children);
}

/** A link to a unit's page. */
export function unitLink(serial) {
  return el("a", { href: `/units/${encodeURIComponent(serial)}`, class: "mono" }, serial);
}

/** A time, or "-". */
export function when(iso) {
  return iso ? fmtTime(iso) : "-";
}

/** A labelled form field. */
export function field(label, input, hint = null) {
  return el("label", { class: "field" }, label, input,
            hint ? el("span", { class: "hint" }, hint) : null);
}

/** Replace a node's children. */
export function fill(node, ...children) {
  node.replaceChildren();
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** A message banner: kind ok | error | warn | info. */
export function notice(kind, text, attrs = {}) {
  return el("div", { ...attrs, class: ["banner", kind, attrs.class],
                     role: kind === "error" ? "alert" : "status" }, text);
}

/** Start a page: the top bar (resolves to the session) and the <main> to fill. */
export function startPage(active, title) {
  const main = document.getElementById("main") || document.body.appendChild(el("main", {}));
  main.replaceChildren();
  main.classList.add("lt-views");
  if (title) document.title = `${title} · linetrace`;
  return { main, me: nav(active) };
}

/** Run `load()`; show its error in `where` instead of failing silently. */
export async function guarded(where, load) {
  try {
    await load();
  } catch (e) {
    where.append(notice("error", errorText(e), { "data-error": e && e.code ? e.code : "error" }));
  }
}

/** A number with up to `digits` decimals ("-" for none). */
export function num(v, digits = 1) {
  if (v === null || v === undefined || Number.isNaN(Number(v))) return "-";
  const n = Number(v);
  return Number.isInteger(n) ? String(n) : n.toFixed(digits);
}
