// /audit: every state-changing request the console answered (GET /api/v1/audit): who, when,
// how (session or token), what, and the answer's status; newest first.

import { api } from "/static/api.js";
import { badge, el, every, fmtTime, main, nav, pageHead, replace, showError, table } from "/static/ui.js";

function statusBadge(status) {
  const colour = status < 300 ? "green" : status < 400 ? "blue" : status < 500 ? "amber" : "red";
  return badge(String(status), colour);
}

function what(row) {
  const d = row.detail || {};
  const parts = [];
  if (d.code) parts.push(el("code", {}, d.code));
  if (d.message) parts.push(" ", d.message);
  if (d.alert) parts.push(" alert ", el("code", {}, d.alert));
  if (d.hold) parts.push(" hold ", el("code", {}, d.hold));
  if (d.state) parts.push(" → ", d.state);
  if (d.user && !row.user) parts.push(" as ", d.user);
  return el("span", {}, parts);
}

async function start() {
  await nav("audit");
  const root = main();
  const userInput = el("input", { id: "audit-user", name: "user", placeholder: "any user",
    maxlength: 64 });
  const limitInput = el("select", { id: "audit-limit", name: "limit" },
    ["50", "200", "1000"].map((n) => el("option", { value: n, selected: n === "200" }, n)));
  const holder = el("div", { id: "audit-table" });
  const errorBox = el("div", { id: "audit-error" });
  const form = el("form", { class: "inline panel", id: "audit-filter" },
    el("label", { class: "field", for: "audit-user" }, "User", userInput),
    el("label", { class: "field", for: "audit-limit" }, "Newest", limitInput),
    el("button", { type: "submit", class: "primary" }, "Show"));
  root.append(pageHead("Audit", el("span", { class: "muted" },
    "every change made through the console or the API: who, when, what, and the answer")),
  form, errorBox, holder);

  async function load() {
    const q = new URLSearchParams({ limit: limitInput.value });
    if (userInput.value.trim()) q.set("user", userInput.value.trim());
    try {
      const rows = await api("GET", `/api/v1/audit?${q}`);
      replace(errorBox);
      replace(holder, table([
        { label: "When", render: (r) => fmtTime(r.time) },
        { label: "Who", render: (r) => r.user || el("span", { class: "muted" }, "anonymous") },
        { label: "Via", key: "via" },
        { label: "Request", render: (r) => el("code", {}, `${r.method} ${r.path}`) },
        { label: "Status", render: (r) => statusBadge(r.status) },
        { label: "What", render: what },
        { label: "Client", key: "client" },
      ], rows, { empty: "No changes recorded yet.", id: "audit-rows" }));
    } catch (err) {
      showError(errorBox, err, "Cannot show the audit");
    }
  }
  form.addEventListener("submit", (e) => { e.preventDefault(); load(); });
  every(10000, load);
}

start();
