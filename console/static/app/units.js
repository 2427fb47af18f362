// /units: every unit (GET /api/v1/units), filtered as you type, each linked to its page.

import { api } from "/static/api.js";
import { el } from "/static/ui.js";
import { badge, fill, guarded, notice, startPage, table, unitLink, when } from "/assets/views.js";

const { main } = startPage("units", "Units");
const search = el("input", { type: "search", id: "unit-search", class: "lt-search",
                             placeholder: "serial, product, state…", "aria-label": "search units" });
const kind = el("select", { id: "unit-kind", "aria-label": "kind" },
                el("option", { value: "" }, "all kinds"), el("option", { value: "server" }, "servers"),
                el("option", { value: "assembly" }, "assemblies"));
const count = el("p", { class: "muted", id: "unit-count" });
const list = el("div", { id: "unit-list" });
main.append(el("div", { class: "page-head" }, el("h1", {}, "Units")),
            el("div", { class: "lt-toolbar" }, search, kind), count, list);

let units = [];

function render() {
  const q = search.value.trim().toLowerCase();
  const shown = units.filter((u) => (!kind.value || u.kind === kind.value) && (!q ||
    [u.serial, u.product, u.kind, u.state].some((v) => String(v ?? "").toLowerCase().includes(q))));
  count.textContent = `${shown.length} of ${units.length} units`;
  if (!shown.length) {
    fill(list, notice("info", units.length ? "no unit matches" : "no units in the ledger yet"));
    return;
  }
  fill(list, table(["Serial", "Product", "Kind", "State", "Step", "Updated"],
                   shown.map((u) => [unitLink(u.serial), u.product, u.kind, badge(u.state),
                                     u.step, when(u.updated)]), { id: "units-table" }));
}

search.addEventListener("input", render);
kind.addEventListener("change", render);
const initial = new URLSearchParams(location.search).get("q");
if (initial) search.value = initial;

guarded(main, async () => {
  units = await api("GET", "/api/v1/units");
  units.sort((a, b) => String(b.updated ?? "").localeCompare(String(a.updated ?? "")));
  render();
  search.focus();
});
