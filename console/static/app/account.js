// /account: change your password (required first after a one-time password), and your API
// tokens: list, make (the secret is shown once), revoke.

import { api, forgetSession } from "/static/api.js";
import {
  badge, confirmDialog, el, errorBanner, fmtTime, localPath, main, nav, pageHead, param, replace,
  table, toast,
} from "/static/ui.js";

function passwordPanel(me) {
  const box = el("div", { id: "password-msg" });
  const field = (name, label, auto) => el("label", { class: "field", for: `pw-${name}` }, label,
    el("input", { id: `pw-${name}`, name, type: "password", autocomplete: auto, required: true }));
  const form = el("form", { id: "password-form" },
    field("current", "Current password", "current-password"),
    field("new", "New password (at least 10 characters)", "new-password"),
    field("again", "New password again", "new-password"),
    el("button", { type: "submit", class: "primary" }, "Change password"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const v = Object.fromEntries(new FormData(form).entries());
    if (v.new !== v.again) {
      replace(box, errorBanner(new Error("the two new passwords differ")));
      return;
    }
    try {
      await api("POST", "/api/v1/session/password", { current: v.current, new: v.new });
      form.reset();
      forgetSession();
      replace(box, el("div", { class: "banner ok" }, "Password changed. Your other sessions were signed out."));
      const next = param("next");
      if (me.must_change) {
        setTimeout(() => location.assign(localPath(next)), 800);
      }
    } catch (err) {
      replace(box, errorBanner(err, "Password not changed"));
    }
  });
  return el("section", { class: "panel" }, el("h2", {}, "Password"),
    me.must_change || param("must_change")
      ? el("div", { class: "banner warn", id: "must-change" },
        "You signed in with a one-time password: choose your own before going on.")
      : null,
    box, form);
}

function tokensPanel(me) {
  const list = el("div", { id: "tokens" });
  const shown = el("div", { id: "token-new" });
  const errorBox = el("div", { id: "tokens-error" });
  const name = el("input", { id: "token-name", name: "name", maxlength: 128, required: true,
    placeholder: "what uses it, e.g. ict-31 interlock" });
  const forUser = me.role === "admin"
    ? el("input", { id: "token-user", name: "user", maxlength: 64, placeholder: me.user })
    : null;
  const form = el("form", { class: "inline", id: "token-form" },
    el("label", { class: "field", for: "token-name" }, "Name", name),
    forUser ? el("label", { class: "field", for: "token-user" }, "Acts as (admins)", forUser) : null,
    el("button", { type: "submit", class: "primary" }, "Make token"));

  async function load() {
    try {
      const rows = await api("GET", "/api/v1/tokens");
      replace(list, table([
        { label: "Name", key: "name" },
        { label: "User", key: "user" },
        { label: "Id", render: (t) => el("code", {}, t.id) },
        { label: "Made", render: (t) => `${fmtTime(t.created)} by ${t.created_by}` },
        { label: "Last used", render: (t) => fmtTime(t.last_used) || "never" },
        { label: "State", render: (t) => (t.revoked ? badge("revoked", "grey") : badge("active", "green")) },
        { label: "", render: (t) => (t.revoked ? "" : el("button", { type: "button", class: "danger",
          dataset: { token: t.id }, onclick: () => revoke(t) }, "Revoke")) },
      ], rows, { empty: "No API tokens.", id: "token-rows" }));
    } catch (err) {
      replace(list, errorBanner(err, "Cannot list tokens"));
    }
  }

  async function revoke(t) {
    if (!await confirmDialog("Revoke token", `Revoke “${t.name}” (${t.id})? Whatever uses it stops working at once.`, "Revoke", true)) return;
    try {
      await api("DELETE", `/api/v1/tokens/${encodeURIComponent(t.id)}`);
      toast(`Token ${t.name} revoked`, "ok");
      load();
    } catch (err) {
      replace(errorBox, errorBanner(err, "Not revoked"));
    }
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { name: name.value.trim() };
    if (forUser && forUser.value.trim()) body.user = forUser.value.trim();
    try {
      const t = await api("POST", "/api/v1/tokens", body);
      replace(errorBox);
      replace(shown, el("div", { class: "banner warn" },
        el("p", {}, `Token “${t.name}” for ${t.user}: copy it now, it is not shown again.`),
        el("div", { class: "secret", id: "token-secret" }, t.token),
        el("p", { class: "muted" }, "Send it as: Authorization: Bearer <token>")));
      form.reset();
      load();
    } catch (err) {
      replace(errorBox, errorBanner(err, "No token made"));
    }
  });
  load();
  return el("section", { class: "panel" }, el("h2", {}, "API tokens"),
    el("p", { class: "muted" }, "For machines and scripts: a token acts as its user, with that user's role."),
    errorBox, shown, form, list);
}

async function start() {
  const me = await nav("account");
  main().append(pageHead("Account", el("span", { class: "muted" }, `${me.user} · ${me.role}`)),
    passwordPanel(me), tokensPanel(me));
}

start();
