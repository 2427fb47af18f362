// /checkpoints: the latest signed checkpoint of the ledger's Merkle log (a C2SP note), every
// stored checkpoint, the plant's verifier key and how a witness or customer fetches the
// checkpoints and the consistency proofs between them (all public GETs, no credentials).

import { api } from "/static/api.js";
import { el } from "/static/ui.js";
import { field, fill, guarded, notice, startPage, table, when } from "/assets/views.js";

const { main, me } = startPage("checkpoints", "Checkpoints");
const latest = el("section", { class: "panel", id: "checkpoint-latest" }, el("h2", {}, "Latest checkpoint"));
const key = el("section", { class: "panel", id: "verifier-key" }, el("h2", {}, "Verifier key"));
const how = el("section", { class: "panel", id: "checkpoint-howto" }, el("h2", {}, "Fetch and check"));
const proofBox = el("section", { class: "panel", id: "proof" }, el("h2", {}, "Consistency proof"));
const all = el("section", { class: "panel", id: "checkpoint-list" }, el("h2", {}, "Stored checkpoints"));
main.append(el("div", { class: "page-head" }, el("h1", {}, "Checkpoints")),
  el("p", { class: "muted" }, "The ledger is an append-only Merkle log. Each checkpoint is its size "
    + "and root hash, signed by the plant. Keep the notes you fetch: a consistency proof between two "
    + "of them shows the log only grew."), latest, key, how, proofBox, all);

async function text(path) {
  const res = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  const body = await res.text();
  if (!res.ok) {
    let msg = body;
    try { msg = JSON.parse(body).message; } catch (e) { /* plain text */ }
    throw Object.assign(new Error(msg), { status: res.status });
  }
  return body;
}

function pre(content, id) {
  return el("pre", { class: "lt-note mono", id }, content);
}

function howTo(origin) {
  const o = origin;
  return [
    el("p", {}, "Anyone can fetch these without signing in:"),
    pre([`curl ${o}/api/v1/checkpoint            # the latest signed note`,
      `curl ${o}/api/v1/checkpoints           # every checkpoint: tree_size, root, time`,
      `curl ${o}/api/v1/checkpoints/SIZE      # the note of one tree size`,
      `curl '${o}/api/v1/proofs/consistency?from=M&to=N'   # proof that tree N extends tree M`,
      `curl ${o}/api/v1/verifier-key          # the key that signs the notes`].join("\n"), "howto-curl"),
    el("p", {}, "Check a note's signature with the verifier key (C2SP signed-note format), and a "
      + "proof with RFC 6962's consistency check between the two roots; `linetrace` does both "
      + "(docs/LEDGER.md)."),
  ];
}

guarded(main, async () => {
  await me;
  fill(how, el("h2", {}, "Fetch and check"), ...howTo(location.origin));
  try {
    const note = await text("/api/v1/checkpoint");
    fill(latest, el("h2", {}, "Latest checkpoint"), pre(note, "checkpoint-note"));
  } catch (e) {
    fill(latest, el("h2", {}, "Latest checkpoint"), notice("info", e.message));
  }
  try {
    fill(key, el("h2", {}, "Verifier key"), pre((await text("/api/v1/verifier-key")).trim(), "verifier-key-text"));
  } catch (e) {
    fill(key, el("h2", {}, "Verifier key"), notice("error", e.message));
  }
  const list = await api("GET", "/api/v1/checkpoints");
  const newest = [...list].reverse();
  fill(all, el("h2", {}, `Stored checkpoints (${list.length})`),
    list.length ? table(["Tree size", "Root (base64)", "Time", "Note"],
      newest.slice(0, 200).map((c) => [c.tree_size, el("span", { class: "mono" }, c.root), when(c.time),
        el("a", { href: `/api/v1/checkpoints/${c.tree_size}` }, "note")]), { id: "checkpoints-table" })
      : notice("info", "no checkpoints yet"));
  const from = el("input", { type: "number", min: 1, id: "proof-from", value: list.length > 1 ? list[0].tree_size : "" });
  const to = el("input", { type: "number", min: 1, id: "proof-to", value: list.length ? list[list.length - 1].tree_size : "" });
  const out = el("div", { id: "proof-result" });
  const form = el("form", { class: "inline", id: "proof-form" }, field("From size", from),
    field("To size", to), el("button", { type: "submit", class: "primary" }, "Get proof"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const p = await api("GET", `/api/v1/proofs/consistency?from=${encodeURIComponent(from.value)}&to=${encodeURIComponent(to.value)}`);
      fill(out, el("p", {}, `${p.proof.length} hash(es) prove tree ${p.to} extends tree ${p.from}:`),
        pre(p.proof.join("\n") || "(empty: the same tree)", "proof-hashes"),
        el("a", { href: `/api/v1/proofs/consistency?from=${p.from}&to=${p.to}` }, "JSON"));
    } catch (e) {
      fill(out, notice("error", e.message || String(e)));
    }
  });
  fill(proofBox, el("h2", {}, "Consistency proof"), form, out);
});
