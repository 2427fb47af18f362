// The sign-in page: POST /api/v1/session, then on to `next` (or /account first when the
// password is a one-time one that must be changed).

import { api, forgetSession } from "/static/api.js";
import { errorBanner, localPath, replace } from "/static/ui.js";

/** Where to go after signing in: a path on this site only (never another origin). */
function nextPath() {
  return localPath(new URLSearchParams(location.search).get("next"));
}

const form = document.getElementById("signin-form");
const errorBox = document.getElementById("signin-error");
const submit = document.getElementById("signin-submit");

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  const user = form.elements.user.value.trim();
  const password = form.elements.password.value;
  if (!user || !password) {
    replace(errorBox, errorBanner(new Error("enter your user name and password")));
    (user ? form.elements.password : form.elements.user).focus();
    return;
  }
  submit.disabled = true;
  replace(errorBox);
  try {
    const me = await api("POST", "/api/v1/session", { user, password },
      { redirect: false, noCsrf: true });
    forgetSession();
    const next = nextPath();
    if (me && me.must_change) {
      location.assign("/account?must_change=1&next=" + encodeURIComponent(next));
    } else {
      location.assign(next);
    }
  } catch (err) {
    let title = "Sign-in refused";
    if (err.code === "auth.throttled") title = "Too many failed sign-ins";
    replace(errorBox, errorBanner(err, title));
    form.elements.password.value = "";
    form.elements.password.focus();
    submit.disabled = false;
  }
});
