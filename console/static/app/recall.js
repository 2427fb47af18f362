// /recall: which units hold (or held) a lot, a part serial or an MPN (GET /api/v1/recall),
// and a hold on the lot / MPN / the units found (POST /api/v1/holds). A lot or MPN hold
// needs the quality role: the API's refusal is shown as it says it.

import { api } from "/static/api.js";
import { el, toast } from "/static/ui.js";
import {
  badge, errorText, field, fill, guarded, notice, startPage, table, unitLink,
} from "/assets/views.js";

const { main, me } = startPage("recall", "Recall");
const params = new URLSearchParams(location.search);
const initialBy = ["lot", "part", "mpn"].find((k) => params.get(k)) || "lot";

const by = el("select", { id: "recall-by", name: "by" },
  el("option", { value: "lot" }, "lot"), el("option", { value: "part" }, "part serial"),
  el("option", { value: "mpn" }, "MPN"));
by.value = initialBy;
const what = el("input", { id: "recall-value", name: "value", required: true, class: "lt-search",
  placeholder: "LOT-…, GPU-…, 699-…", value: params.get(initialBy) || "" });
const from = el("input", { id: "recall-from", name: "from", type: "datetime-local" });
const to = el("input", { id: "recall-to", name: "to", type: "datetime-local" });
const go = el("button", { type: "submit", class: "primary", id: "recall-go" }, "Find units");
const form = el("form", { class: "inline", id: "recall-form" },
  field("By", by), field("Value", what), field("Installed from", from), field("to", to), go);
const result = el("div", { id: "recall-result" });
main.append(el("div", { class: "page-head" }, el("h1", {}, "Recall")),
  el("p", { class: "muted" }, "Every unit a lot, part or MPN went into (installed now or removed since), "
    + "with where it is: on the line, packed, shipped."), form, result);

function iso(input) {
  return input.value ? new Date(input.value).toISOString() : null;
}

async function place(scope, target, reasonInput, out) {
  const reason = reasonInput.value.trim();
  if (!reason) {
    fill(out, notice("error", "a hold needs a reason: say why (e.g. the supplier's notice)"));
    reasonInput.focus();
    return null;
  }
  try {
    const hold = await api("POST", "/api/v1/holds", { scope, target, reason });
    const msg = hold.message || `hold ${hold.id} placed on ${scope} ${target}`;
    out.append(notice("ok", msg, { "data-hold": hold.id }));
    toast(msg, "ok");
    return hold;
  } catch (e) {
    out.append(notice("error", `${scope} ${target}: ${errorText(e)}`, { "data-error": e.code || "error" }));
    return null;
  }
}

function holdPanel(kind, value, rows) {
  const reason = el("input", { id: "hold-reason", name: "reason", class: "lt-search",
    placeholder: "why (e.g. supplier notice SN-123)", required: true });
  const out = el("div", { id: "hold-result" });
  const buttons = [];
  if (kind === "lot" || kind === "mpn") {
    const b = el("button", { type: "button", class: "danger", id: `hold-${kind}` },
      `Hold ${kind === "lot" ? "lot" : "MPN"} ${value}`);
    b.addEventListener("click", async () => {
      fill(out);
      b.disabled = true;
      try { await place(kind, value, reason, out); } finally { b.disabled = false; }
    });
    buttons.push(b);
  }
  const open = rows.filter((r) => !["shipped", "scrapped"].includes(r.state));
  const units = [...new Set(open.map((r) => r.serial))];
  if (units.length) {
    const b = el("button", { type: "button", class: "danger", id: "hold-units" },
      `Hold the ${units.length} unit(s) not shipped`);
    b.addEventListener("click", async () => {
      fill(out);
      b.disabled = true;
      try {
        if (!reason.value.trim()) { await place("unit", units[0], reason, out); return; }
        for (const s of units) await place("unit", s, reason, out);
      } finally { b.disabled = false; }
    });
    buttons.push(b);
  }
  if (!buttons.length) return null;
  const hint = kind === "lot" || kind === "mpn"
    ? "A lot or MPN hold stops every unit that holds it now and later (quality role); "
      + "a unit hold stops that unit."
    : "A unit hold stops that unit at its station.";
  return el("div", { class: "panel", id: "hold-panel" }, el("h2", {}, "Place a hold"),
    el("p", { class: "muted" }, hint), field("Reason", reason), el("div", { class: "actions" }, buttons), out);
}

async function search(ev) {
  if (ev) ev.preventDefault();
  const value = what.value.trim();
  if (!value) {
    fill(result, notice("error", `give a ${by.value === "part" ? "part serial" : by.value} to search for`));
    what.focus();
    return;
  }
  const q = new URLSearchParams({ [by.value]: value });
  if (iso(from)) q.set("from", iso(from));
  if (iso(to)) q.set("to", iso(to));
  history.replaceState(null, "", `/recall?${by.value}=${encodeURIComponent(value)}`);
  fill(result, el("p", { class: "muted" }, "searching…"));
  go.disabled = true;
  try {
    const rows = await api("GET", `/api/v1/recall?${q}`);
    const servers = new Set(rows.map((r) => r.serial));
    const shipped = new Set(rows.filter((r) => r.state === "shipped").map((r) => r.serial)).size;
    fill(result,
      el("p", { id: "recall-count", class: "lt-big-text" },
        `${servers.size} unit(s) for ${by.value} ${value}`, shipped ? ` · ${shipped} of them shipped` : null),
      rows.length ? table(["Unit", "Product", "State", "Status", "Part", "Lot", "Via", "Order", "Carton"],
        rows.map((r) => [unitLink(r.serial), r.product, badge(r.state), badge(r.status),
          el("span", { class: "mono" }, r.part), el("span", { class: "mono" }, r.lot), r.via,
          r.order, r.carton]), { id: "recall-table" })
        : notice("info", `no unit holds or held ${by.value} ${value}`),
      holdPanel(by.value, value, rows));
  } catch (e) {
    fill(result, notice("error", errorText(e), { "data-error": e.code || "error" }));
  } finally {
    go.disabled = false;
  }
}

form.addEventListener("submit", search);
guarded(main, async () => {
  await me;
  if (what.value) await search();
  else what.focus();
});
