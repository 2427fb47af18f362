// The console's API client: one function every page uses.
//
//   import { api, session, ApiError } from "/static/api.js";
//   const alerts = await api("GET", "/api/v1/alerts");
//   await api("POST", `/api/v1/alerts/${id}/ack`, { comment: "on it" });
//
// Changes (non-GET) carry the session's CSRF token (read once from GET /api/v1/session).
// A 401 sends the browser to /signin?next=<this page> (unless `{ redirect: false }`).
// Any other error answer is thrown as an ApiError {status, code, message, field, retryAfter}:
// the API's `{"code", "message", "field"?}` document.

export class ApiError extends Error {
  constructor(status, code, message, field = null, retryAfter = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.field = field;
    this.retryAfter = retryAfter;
  }
}

let current = null; // Promise of the session document (user, role, csrf, must_change, expires)

/** The signed-in session `{user, role, via, csrf, must_change, expires}` (cached; `fresh`
 * asks again). Redirects to /signin when there is none. */
export function session(fresh = false) {
  if (fresh || current === null) {
    current = request("GET", "/api/v1/session", undefined, {}).catch((e) => {
      current = null;
      throw e;
    });
  }
  return current;
}

/** Forget the cached session (after sign-in, sign-out or a password change). */
export function forgetSession() {
  current = null;
}

/** Go to the sign-in page, coming back here afterwards. */
export function toSignin() {
  const here = location.pathname + location.search;
  const next = here === "/signin" || here.startsWith("/signin?") ? "/" : here;
  location.assign("/signin?next=" + encodeURIComponent(next));
}

async function request(method, path, body, opts) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined && body !== null) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (method !== "GET" && method !== "HEAD" && !opts.noCsrf) {
    const s = await session();
    if (s && s.csrf) headers["X-CSRF-Token"] = s.csrf;
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "network.error",
      "the console did not answer (network or server down): try again in a moment");
  }
  if (res.status === 401 && opts.redirect !== false) {
    current = null;
    toSignin();
    // the page is leaving; callers see an error meanwhile
  }
  if (res.status === 204) return null;
  const type = res.headers.get("content-type") || "";
  let doc = null;
  if (type.includes("application/json")) {
    try {
      doc = await res.json();
    } catch (e) {
      doc = null;
    }
  } else if (res.ok) {
    return opts.raw ? res : await res.text();
  }
  if (!res.ok) {
    const retry = res.headers.get("retry-after");
    const code = doc && doc.code ? doc.code : `http.${res.status}`;
    const message = doc && doc.message ? doc.message : `${res.status} ${res.statusText}`;
    throw new ApiError(res.status, code, message, doc && doc.field ? doc.field : null,
      retry ? Number(retry) : null);
  }
  return doc;
}

/** Call the API. `method`: GET, POST, DELETE...; `path`: "/api/v1/..."; `body`: a JSON
 * value (or undefined). Returns the parsed JSON (null for 204, text for non-JSON answers).
 * `opts.redirect = false`: a 401 is thrown instead of going to /signin;
 * `opts.raw = true`: a non-JSON success returns the Response itself. */
export function api(method, path, body = undefined, opts = {}) {
  return request(method.toUpperCase(), path, body, opts);
}

/** Sign out: ends the session on the server and goes to /signin. */
export async function signOut() {
  try {
    await api("DELETE", "/api/v1/session", undefined, { redirect: false });
  } catch (e) {
    // already gone: fine
  }
  current = null;
  location.assign("/signin");
}
