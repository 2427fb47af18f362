// Shared building blocks of the console's pages (own code; no framework).
//
//   import { el, nav, toast, fmtTime, badge, table, errorBanner } from "/static/ui.js";
//   const me = await nav("board");          // top bar; resolves to the session document
//   main().append(el("h1", {}, "Alert board"));
//
// Styles come from /static/app.css classes only: the CSP allows no inline style attributes
// (set `node.style.x` from JS where a value is computed, e.g. a bar's width).

import { api, session, signOut, ApiError } from "/static/api.js";

export { api, ApiError };

// --- elements --------------------------------------------------------------------------------

/** Make an element. `attrs`: `class` (string or array), `text`, `html` is NOT supported (no
 * markup from data), `on<event>` functions (`onclick`), `dataset` object, `style` object
 * (applied through element.style), boolean attributes (true/false), others via setAttribute.
 * `children`: nodes, strings, numbers, arrays of them; null/undefined/false are skipped. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = Array.isArray(v) ? v.filter(Boolean).join(" ") : v;
    else if (k === "text") node.textContent = String(v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "style" && typeof v === "object") Object.assign(node.style, v);
    else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (k === "value" && "value" in node) node.value = v;
    else if (v === true) node.setAttribute(k, "");
    else node.setAttribute(k, String(v));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(node, c);
    else if (c instanceof Node) node.append(c);
    else node.append(document.createTextNode(String(c)));
  }
}

/** Replace a node's children. */
export function replace(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

/** The page's <main id="main"> (made if the page has none). */
export function main() {
  let m = document.getElementById("main");
  if (!m) {
    m = el("main", { id: "main" });
    document.body.append(m);
  }
  return m;
}

/** A page heading row: the title and whatever goes at its right (buttons, a live lamp). */
export function pageHead(title, ...right) {
  return el("div", { class: "page-head" }, el("h1", {}, title), el("span", { class: "spacer" }),
    ...right);
}

/** A labelled figure: `stat("FPY", "98.2 %")`. */
export function stat(label, value, cls = "") {
  return el("div", { class: ["stat", cls] }, el("span", { class: "label" }, label),
    el("span", { class: "value" }, value));
}

// --- the top bar -----------------------------------------------------------------------------

/** The pages in the top bar: [key, label, href]. */
export const PAGES = [
  ["board", "Alerts", "/"],
  ["line", "Line", "/line"],
  ["units", "Units", "/units"],
  ["recall", "Recall", "/recall"],
  ["spc", "SPC", "/spc"],
  ["holds", "Holds", "/holds"],
  ["checkpoints", "Checkpoints", "/checkpoints"],
  ["audit", "Audit", "/audit"],
  ["account", "Account", "/account"],
];

/** Put the top bar (links to every page, `active` marked; the user, role and Sign out) at the
 * top of the page. Resolves to the session `{user, role, csrf, must_change, ...}`; a user who
 * must change a one-time password is sent to /account first. */
export async function nav(active) {
  const who = el("span", { class: "who" });
  const bar = el("header", { class: "topnav", role: "navigation" },
    el("a", { class: "brand", href: "/" }, "linetrace"),
    el("nav", { class: "links" }, PAGES.map(([key, label, href]) =>
      el("a", { href, class: key === active ? "active" : null,
        "aria-current": key === active ? "page" : null }, label))),
    who);
  document.body.prepend(bar);
  const me = await session();
  replace(who,
    el("span", { class: "user", id: "nav-user" }, me.user),
    badge(me.role, "blue", { id: "nav-role" }),
    el("button", { type: "button", id: "signout", onclick: () => signOut() }, "Sign out"));
  if (me.must_change && active !== "account") {
    location.assign("/account?must_change=1");
  }
  return me;
}

// --- messages --------------------------------------------------------------------------------

/** A short message at the bottom right for a few seconds. `kind`: info, ok, warn, error. */
export function toast(msg, kind = "info", ms = 5000) {
  let box = document.getElementById("toasts");
  if (!box) {
    box = el("div", { id: "toasts", role: "status", "aria-live": "polite" });
    document.body.append(box);
  }
  const t = el("div", { class: ["toast", kind] }, msg);
  box.append(t);
  setTimeout(() => t.remove(), ms);
  return t;
}

/** What went wrong, as the user should read it: the API's message (it says what to do). */
export function errorText(err) {
  if (err instanceof ApiError) {
    let text = err.message;
    if (err.code === "role.forbidden" && !/role/i.test(text)) text = "your role may not: " + text;
    if (err.retryAfter && !/try again/i.test(text)) text += ` (retry in ${err.retryAfter} s)`;
    return text;
  }
  return err && err.message ? err.message : String(err);
}

/** A red banner saying why something failed (message + code). `title` leads it. */
export function errorBanner(err, title = null) {
  const code = err instanceof ApiError ? err.code : null;
  return el("div", { class: "banner error", role: "alert" },
    title ? title + ": " : null, errorText(err), code ? el("span", { class: "code" }, code) : null);
}

/** Show `err` in `container` (replacing what is there). */
export function showError(container, err, title = null) {
  replace(container, errorBanner(err, title));
}

// --- times and numbers -------------------------------------------------------------------------

function pad(n, w = 2) {
  return String(n).padStart(w, "0");
}

/** An RFC 3339 time in the browser's local time: "2026-03-01 08:00:05" ("" for none). */
export function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** A duration in seconds as "45 s", "12 min", "3 h 5 min", "2 d 4 h". */
export function fmtDuration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.round((s % 86400) / 3600)} h`;
}

/** How long ago an RFC 3339 time was, from now: "5 min ago". */
export function fmtAgo(iso) {
  if (!iso) return "";
  const d = new Date(iso).getTime();
  if (Number.isNaN(d)) return "";
  const s = (Date.now() - d) / 1000;
  return s >= 0 ? `${fmtDuration(s)} ago` : `in ${fmtDuration(-s)}`;
}

/** A number with thousands separators; `digits` decimals. null -> "–". */
export function fmtNum(n, digits = 0) {
  if (n === null || n === undefined || Number.isNaN(Number(n))) return "–";
  return Number(n).toLocaleString("en-US", { minimumFractionDigits: digits,
    maximumFractionDigits: digits });
}

/** A ratio (0..1) or percentage (>1 allowed with `isPct`) as "98.2 %". */
export function fmtPct(x, isPct = false, digits = 1) {
  if (x === null || x === undefined) return "–";
  return `${fmtNum(isPct ? x : x * 100, digits)} %`;
}

// --- andon colours ---------------------------------------------------------------------------

const ANDON = {
  red: ["high", "down", "unscheduled_down", "stop", "stopped", "failed", "fail", "error",
    "critical", "quarantined", "scrap", "scrapped", "rejected", "held", "hold", "unacknowledged"],
  amber: ["medium", "starved", "blocked", "attention", "warning", "warn", "rtn_unacknowledged",
    "pending", "retest", "rework", "degraded", "slow", "stuck", "shelved", "waiting"],
  blue: ["low", "info", "maintenance", "scheduled_down", "engineering", "setup", "acknowledged",
    "suppressed", "in_progress", "testing", "released_pending"],
  green: ["running", "run", "productive", "normal", "ok", "passed", "pass", "good", "released",
    "shipped", "complete", "completed", "up", "active_ok", "healthy"],
  grey: ["off", "out_of_service", "idle", "standby", "nonscheduled", "unknown", "none",
    "closed", "inactive"],
};
const ANDON_OF = new Map();
for (const [colour, words] of Object.entries(ANDON)) for (const w of words) ANDON_OF.set(w, colour);

/** The andon colour (green, amber, red, blue, grey) of a priority or state word; unknown words
 * are grey. */
export function andonOf(word) {
  if (!word) return "grey";
  return ANDON_OF.get(String(word).toLowerCase().replace(/[\s-]+/g, "_")) || "grey";
}

/** The CSS class of a colour or word: "andon-red". */
export function andonClass(wordOrColour) {
  const c = ["green", "amber", "red", "blue", "grey"].includes(wordOrColour)
    ? wordOrColour : andonOf(wordOrColour);
  return `andon-${c}`;
}

/** A coloured pill: `badge("high")` is red; `badge("ict-01 down", "red")`. */
export function badge(text, colour = null, attrs = {}) {
  const cls = andonClass(colour || text);
  return el("span", { ...attrs, class: ["badge", cls, attrs.class] }, String(text).replace(/_/g, " "));
}

/** A round andon lamp of a colour or word. */
export function lamp(colourOrWord, title = null) {
  return el("span", { class: ["lamp", andonClass(colourOrWord)], title, "aria-hidden": "true" });
}

// --- tables ----------------------------------------------------------------------------------

/** A data table. `columns`: [{label, key?, render?(row) -> node|string, num?, class?}];
 * `rows`: objects. `opts.empty`: text when there are no rows; `opts.onRow(row, tr)`: a click
 * handler (the row gets the `clickable` class); `opts.rowClass(row)`: extra classes;
 * `opts.id`: the table's id. */
export function table(columns, rows, opts = {}) {
  if (!rows || rows.length === 0) {
    return el("div", { class: "empty", id: opts.id || null }, opts.empty || "Nothing to show.");
  }
  const head = el("tr", {}, columns.map((c) => el("th", { class: c.num ? "num" : c.class || null,
    scope: "col" }, c.label)));
  const body = rows.map((row) => {
    const tr = el("tr", { class: [opts.onRow ? "clickable" : null,
      opts.rowClass ? opts.rowClass(row) : null] },
    columns.map((c) => {
      let v = c.render ? c.render(row) : row[c.key];
      if (v === null || v === undefined) v = "";
      return el("td", { class: c.num ? "num" : c.class || null }, v);
    }));
    if (opts.onRow) {
      tr.tabIndex = 0;
      tr.addEventListener("click", () => opts.onRow(row, tr));
      tr.addEventListener("keydown", (e) => { if (e.key === "Enter") opts.onRow(row, tr); });
    }
    return tr;
  });
  return el("table", { class: "data", id: opts.id || null }, el("thead", {}, head),
    el("tbody", {}, body));
}

/** A definition list of [label, value] pairs (values: nodes or strings; empty ones skipped). */
export function kv(pairs) {
  const dl = el("dl", { class: "kv" });
  for (const [k, v] of pairs) {
    if (v === null || v === undefined || v === "") continue;
    dl.append(el("dt", {}, k), el("dd", {}, v));
  }
  return dl;
}

// --- dialogs ---------------------------------------------------------------------------------

/** A modal form. `fields`: [{name, label, type: text|textarea|select|number|password,
 * required, options: [[value, label]], value, hint, placeholder, min, max}].
 * `onSubmit(values)` runs on submit; if it throws, the error is shown in the dialog and the
 * dialog stays open. Resolves to onSubmit's result, or null when cancelled. */
export function formDialog({ title, fields = [], submit = "OK", danger = false, intro = null,
  onSubmit = async (v) => v }) {
  return new Promise((resolve) => {
    const errorLine = el("p", { class: "error-text", role: "alert" });
    const inputs = {};
    const rows = fields.map((f) => {
      let input;
      const common = { name: f.name, id: `dlg-${f.name}`, required: !!f.required,
        placeholder: f.placeholder || null };
      if (f.type === "textarea") input = el("textarea", common);
      else if (f.type === "select") {
        input = el("select", common, (f.options || []).map(([v, l]) =>
          el("option", { value: v }, l)));
      } else {
        input = el("input", { ...common, type: f.type || "text", min: f.min ?? null,
          max: f.max ?? null, autocomplete: f.autocomplete || "off" });
      }
      if (f.value !== undefined && f.value !== null) input.value = f.value;
      inputs[f.name] = input;
      return el("label", { class: "field", for: common.id }, f.label, input,
        f.hint ? el("span", { class: "hint" }, f.hint) : null);
    });
    const ok = el("button", { type: "submit", class: danger ? "danger" : "primary" }, submit);
    const cancel = el("button", { type: "button", value: "cancel" }, "Cancel");
    const form = el("form", { method: "dialog" }, el("h2", {}, title),
      intro ? el("p", {}, intro) : null, rows, errorLine, el("div", { class: "actions" }, cancel, ok));
    const dlg = el("dialog", { class: "form-dialog" }, form);
    let done = false;
    const finish = (value) => {
      if (done) return;
      done = true;
      dlg.close();
      dlg.remove();
      resolve(value);
    };
    cancel.addEventListener("click", () => finish(null));
    dlg.addEventListener("cancel", (e) => { e.preventDefault(); finish(null); });
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const values = {};
      for (const [k, input] of Object.entries(inputs)) values[k] = input.value;
      ok.disabled = true;
      errorLine.textContent = "";
      try {
        finish(await onSubmit(values));
      } catch (err) {
        errorLine.textContent = errorText(err);
        if (err instanceof ApiError && err.field) {
          const name = err.field.split(".").pop();
          if (inputs[name]) inputs[name].focus();
        }
      } finally {
        ok.disabled = false;
      }
    });
    document.body.append(dlg);
    dlg.showModal();
    const first = fields.length ? inputs[fields[0].name] : ok;
    first.focus();
  });
}

/** Ask yes/no; resolves true/false. */
export async function confirmDialog(title, message, yes = "Yes", danger = false) {
  const r = await formDialog({ title, intro: message, submit: yes, danger,
    onSubmit: async () => true });
  return r === true;
}

// --- refreshing ------------------------------------------------------------------------------

/** Run `fn` now and every `ms` (skipped while the tab is hidden; never two at once).
 * Returns a function that stops it. */
export function every(ms, fn) {
  let busy = false;
  let stopped = false;
  const tick = async () => {
    if (busy || stopped || document.hidden) return;
    busy = true;
    try {
      await fn();
    } finally {
      busy = false;
    }
  };
  tick();
  const id = setInterval(tick, ms);
  const onVisible = () => { if (!document.hidden) tick(); };
  document.addEventListener("visibilitychange", onVisible);
  return () => {
    stopped = true;
    clearInterval(id);
    document.removeEventListener("visibilitychange", onVisible);
  };
}

/** The query string's value of `name` (or null). */
export function param(name) {
  return new URLSearchParams(location.search).get(name);
}

/** `next` as a path on this site, or "/" (never another origin, whatever the browser makes
 * of tabs, backslashes or schemes in it: it is resolved as the browser would, then checked). */
export function localPath(next) {
  if (!next) return "/";
  let url;
  try {
    url = new URL(next, location.origin);
  } catch {
    return "/";
  }
  if (url.origin !== location.origin) return "/";
  if (url.pathname === "/signin") return "/";
  return url.pathname + url.search + url.hash;
}
