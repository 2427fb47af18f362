"""The API's contract, walked from the app's own OpenAPI document (issue 13's acceptance).

Every operation the app serves is looked up in `ROLES_OF` (the plan's table: who may call
it); an operation missing from the table fails `test_every_operation_has_a_role_entry` with
the line to add. The walk then asks each operation, with plausible path and query values:

- without credentials (none, a bad token, a bad cookie): 401 `{code, message}`;
- with each role the table does not allow: 403 `role.forbidden`;
- with a body of the wrong shape, as a role that is allowed: 422 `request.invalid` naming a
  body field;
- from a cookie session without / with a wrong `X-CSRF-Token`: 403 `csrf.missing` /
  `csrf.invalid`; with an API token no CSRF header is needed;
- the public ones answer without credentials.

Every answer carries the security headers (a CSP without 'unsafe-inline'), API answers are not
cached, and every error is `{"code", "message", "field"?}`. The pages and their assets are
walked the same way (`/signin` public, other pages redirect, `/assets` needs a session).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from httpx import Response

from linetrace.console import auth, pages
from linetrace.console.security import CSP, HEADERS
from linetrace.ledger.users import ROLES

from .conftest import PEOPLE, Console, make_console

VIEW = frozenset(ROLES)
ACT = frozenset({"supervisor", "quality", "admin"})
SUPERVISOR_ADMIN = frozenset({"supervisor", "admin"})
PUBLIC = None  # answers without credentials

#: Who may call each operation (path parameters written `{}`), as docs/console.md and the
#: plan's API table say. The walk checks the app's dependencies against it and every role
#: outside it gets 403. A new endpoint needs a line here.
ROLES_OF: dict[tuple[str, str], frozenset[str] | None] = {
    # sign-in and the session (core)
    ("POST", "/api/v1/session"): PUBLIC,
    ("GET", "/api/v1/session"): VIEW,
    ("DELETE", "/api/v1/session"): VIEW,
    ("POST", "/api/v1/session/password"): VIEW,
    ("GET", "/api/v1/audit"): ACT,
    ("GET", "/api/v1/tokens"): VIEW,
    ("POST", "/api/v1/tokens"): VIEW,
    ("DELETE", "/api/v1/tokens/{}"): VIEW,
    # alerts
    ("GET", "/api/v1/alerts"): VIEW,
    ("GET", "/api/v1/alerts/kpi"): VIEW,
    ("GET", "/api/v1/alerts/stream"): VIEW,
    ("GET", "/api/v1/alerts/{}"): VIEW,
    ("POST", "/api/v1/alerts/{}/ack"): ACT,
    ("POST", "/api/v1/alerts/{}/shelve"): ACT,
    ("POST", "/api/v1/alerts/{}/unshelve"): ACT,
    ("POST", "/api/v1/alerts/{}/comment"): ACT,
    ("POST", "/api/v1/alerts/{}/out-of-service"): SUPERVISOR_ADMIN,
    ("POST", "/api/v1/alerts/{}/return"): SUPERVISOR_ADMIN,
    # holds and the interlock
    ("GET", "/api/v1/holds"): VIEW,
    ("POST", "/api/v1/holds"): ACT,  # lot/mpn holds: quality/admin (the ledger refuses)
    ("POST", "/api/v1/holds/{}/release"): ACT,  # per hold (the ledger refuses)
    ("POST", "/api/v1/validate"): VIEW,
    # units, genealogy, recall
    ("GET", "/api/v1/units"): VIEW,
    ("GET", "/api/v1/units/{}"): VIEW,
    ("GET", "/api/v1/units/{}/trace"): VIEW,
    ("GET", "/api/v1/units/{}/burnin"): VIEW,
    ("GET", "/api/v1/units/{}/telemetry"): VIEW,
    ("GET", "/api/v1/units/{}/hbom"): VIEW,
    ("GET", "/api/v1/units/{}/evidence"): VIEW,
    ("GET", "/api/v1/recall"): VIEW,
    ("GET", "/api/v1/lots/{}"): VIEW,
    # the line and SPC
    ("GET", "/api/v1/line"): VIEW,
    ("GET", "/api/v1/spc"): VIEW,
    ("GET", "/api/v1/spc/{}/{}"): VIEW,
    # checkpoints and proofs: public, for witnesses and customers
    ("GET", "/api/v1/checkpoint"): PUBLIC,
    ("GET", "/api/v1/checkpoints"): PUBLIC,
    ("GET", "/api/v1/checkpoints/{}"): PUBLIC,
    ("GET", "/api/v1/proofs/consistency"): PUBLIC,
    ("GET", "/api/v1/verifier-key"): PUBLIC,
}

#: Role rules that depend on the body, which the handler applies after the dependencies'
#: (operation, a valid body, the roles it allows).
BODY_ROLES: list[tuple[tuple[str, str], dict[str, Any], frozenset[str]]] = [
    (("POST", "/api/v1/holds"), {"scope": scope, "target": "CONTRACT-1", "reason": "walk"},
     frozenset({"quality", "admin"})) for scope in ("lot", "mpn")]

#: The one public operation that is not a GET: it must still refuse a foreign Origin.
SIGN_IN = ("POST", "/api/v1/session")
#: One user of each role (conftest.PEOPLE).
USER_OF_ROLE = {role: next(u for u, r in sorted(PEOPLE.items()) if r == role) for role in ROLES}
#: Which allowed role makes the requests that should pass the role check.
PREFERRED = ("admin", "quality", "supervisor", "viewer")
#: Plausible values for path and query parameters, by name.
PLAUSIBLE = {"serial": "SN-CONTRACT-0001", "lot": "LOT-CONTRACT-1", "part": "PN-CONTRACT-1",
             "mpn": "MPN-CONTRACT-1", "station_type": "ict", "measurement": "rail_12v",
             "token_id": "0123456789ab", "product": "gpu-server", "state": "active",
             "kind": "server", "user": "ada", "size": "1", "from": "1", "to": "1"}
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


# --- the app's operations --------------------------------------------------------------------


def shape(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


class Op:
    """One operation of the OpenAPI document, with a URL filled with plausible values."""

    def __init__(self, doc: dict[str, Any], path: str, method: str, spec: dict[str, Any]):
        self.doc, self.path, self.method, self.spec = doc, path, method.upper(), spec
        self.key = (self.method, shape(path))
        self.url = self._url()

    def __repr__(self) -> str:
        return f"{self.method} {self.path}"

    def _params(self) -> list[dict[str, Any]]:
        return [self.resolve(p) for p in self.spec.get("parameters", [])]

    def _value(self, param: dict[str, Any]) -> str:
        schema = self.resolve(param.get("schema", {}))
        for alt in [schema, *schema.get("anyOf", [])]:
            alt = self.resolve(alt)
            if alt.get("enum"):
                return str(alt["enum"][0])
            if alt.get("type") in ("integer", "number"):
                return str(max(1, int(alt.get("minimum", 1))))
            if alt.get("type") == "boolean":
                return "false"
        name = param["name"]
        return PLAUSIBLE.get(name, "x1" if name.endswith("id") else f"contract-{name}")

    def _url(self) -> str:
        url = self.path
        query = []
        for p in self._params():
            if p["in"] == "path":
                url = url.replace("{" + p["name"] + "}", quote(self._value(p), safe=""))
            elif p["in"] == "query" and p.get("required"):
                query.append(f"{p['name']}={quote(self._value(p), safe='')}")
        return url + ("?" + "&".join(query) if query else "")

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            ref = node["$ref"]
            assert ref.startswith("#/"), ref
            target: Any = self.doc
            for part in ref[2:].split("/"):
                target = target[part]
            node = target
        return node

    @property
    def body_schema(self) -> dict[str, Any] | None:
        body = self.spec.get("requestBody")
        if body is None:
            return None
        content = body.get("content", {})
        assert "application/json" in content, f"{self}: a request body that is not JSON"
        schema = self.resolve(content["application/json"]["schema"])
        for alt in schema.get("anyOf", []):  # an optional body: Model | None
            if self.resolve(alt).get("type") != "null":
                return self.resolve(alt)
        return schema

    def body_fields(self) -> dict[str, dict[str, Any]]:
        schema = self.body_schema or {}
        return {k: self.resolve(v) for k, v in schema.get("properties", {}).items()}

    def wrong_body(self) -> dict[str, Any]:
        """Every field of the body with a value of the wrong type."""
        out: dict[str, Any] = {}
        for name, schema in self.body_fields().items():
            kinds = {self.resolve(a).get("type") for a in [schema, *schema.get("anyOf", [])]}
            out[name] = 12345 if "object" in kinds else {"not": ["this type"]}
        return out or {"unexpected": {"not": "a body"}}

    def send(self, client: TestClient, body: Any = None, **kw: Any) -> Response:
        if self.body_schema is not None and body is None:
            body = {}
        if body is not None:
            kw["json"] = body
        return client.request(self.method, self.url, **kw)


def operations(doc: dict[str, Any]) -> list[Op]:
    return [Op(doc, path, method, spec) for path, item in doc["paths"].items()
            for method, spec in item.items()
            if method.upper() in ("GET", "POST", "PUT", "PATCH", "DELETE")]


def api_routes(routes: list[Any], prefix: str = "", extra: tuple[Any, ...] = ()
               ) -> Iterator[tuple[str, APIRoute, tuple[Any, ...]]]:
    """Every APIRoute of the app: (full path, route, the include's dependencies). FastAPI
    keeps an included router as one node (`original_router`, `include_context`)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield prefix + route.path, route, extra
        elif hasattr(route, "original_router") and hasattr(route, "include_context"):
            ctx = route.include_context
            yield from api_routes(route.original_router.routes, prefix + (ctx.prefix or ""),
                                  extra + tuple(ctx.dependencies or ()))


def declared_roles(route: APIRoute, extra: tuple[Any, ...] = ()) -> frozenset[str] | None:
    """The roles the route's dependencies let through (`require(...)`: their intersection;
    `principal` alone: every role); None when nothing asks for credentials."""
    signed_in = False
    allowed = set(ROLES)
    calls: list[Any] = [d.dependency for d in extra]
    stack = list(route.dependant.dependencies)
    while stack or calls:
        if calls:
            call, subs = calls.pop(), []
        else:
            dep = stack.pop()
            call, subs = dep.call, dep.dependencies
        if call is auth.principal:
            signed_in = True
        code = getattr(call, "__code__", None)
        if code is not None and "allowed" in code.co_freevars and call.__closure__:
            cell = call.__closure__[code.co_freevars.index("allowed")]
            allowed &= set(cell.cell_contents)
            signed_in = True
        stack.extend(subs)
    return frozenset(allowed) if signed_in else None


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def the_walk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walk]:
    """One console for the whole walk (it only reads, or is refused)."""
    tmp = tmp_path_factory.mktemp("contract")
    console = make_console(f"sqlite:///{tmp / 'ledger.db'}", tmp)
    try:
        yield Walk(console)
    finally:
        console.close()
        console.ledger.close()


@pytest.fixture
def walk(the_walk: Walk) -> Walk:
    the_walk.problems = []
    return the_walk


class Walk:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.anon = console.anon()
        r = self.anon.get("/openapi.json")
        assert r.status_code == 200, r.text
        self.doc: dict[str, Any] = r.json()
        self.ops = operations(self.doc)
        self.sessions = {role: console.as_(user) for role, user in USER_OF_ROLE.items()}
        self.tokens = {role: console.token(user, f"contract {role}")
                       for role, user in USER_OF_ROLE.items()}
        self.problems: list[str] = []

    def roles_of(self, op: Op) -> frozenset[str] | None:
        assert op.key in ROLES_OF, f"{op}: not in ROLES_OF (see test_every_operation_...)"
        return ROLES_OF[op.key]

    def allowed_role(self, op: Op) -> str:
        roles = self.roles_of(op) or VIEW
        return next(r for r in PREFERRED if r in roles)

    def protected(self) -> list[Op]:
        return [op for op in self.ops if op.key in ROLES_OF and ROLES_OF[op.key] is not None]

    def bearer(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def check(self, op: Op | str, r: Response, status: int | Callable[[int], bool],
              code: str | None = None, field: Callable[[str | None], bool] | None = None
              ) -> None:
        """Collect what is wrong with answer `r`: its status, code and field, the error
        document's shape, the security headers."""
        ok = status(r.status_code) if callable(status) else r.status_code == status
        if not ok:
            self.problems.append(f"{op}: answered {r.status_code} {r.text[:200]!r}, wanted "
                                 f"{status if not callable(status) else 'otherwise'}")
            return
        for problem in header_problems(r) + error_shape_problems(r):
            self.problems.append(f"{op}: {problem}")
        if code is not None and r.json().get("code") != code:
            self.problems.append(f"{op}: code {r.json().get('code')!r}, wanted {code!r}")
        if field is not None and not field(r.json().get("field")):
            self.problems.append(f"{op}: field {r.json().get('field')!r} does not name a body "
                                 "field")

    def assert_clean(self) -> None:
        problems, self.problems = self.problems, []
        assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems)


def header_problems(r: Response) -> list[str]:
    out = []
    for name, value in HEADERS.items():
        if r.headers.get(name) != value:
            out.append(f"header {name} is {r.headers.get(name)!r}, wanted {value!r}")
    csp = r.headers.get("content-security-policy", "")
    if "unsafe-inline" in csp or "unsafe-eval" in csp:
        out.append(f"CSP allows inline code: {csp}")
    if "script-src 'self'" not in csp or "object-src 'none'" not in csp:
        out.append(f"CSP does not pin scripts to the console: {csp}")
    path = urlsplit(str(r.request.url)).path
    if path.startswith("/api/") and r.headers.get("cache-control") != "no-store":
        out.append(f"API answer cacheable: Cache-Control {r.headers.get('cache-control')!r}")
    return out


def error_shape_problems(r: Response) -> list[str]:
    if r.status_code < 400:
        return []
    try:
        doc = r.json()
    except ValueError:
        return [f"error {r.status_code} is not JSON: {r.text[:200]!r}"]
    if not isinstance(doc, dict):
        return [f"error {r.status_code} is not an object: {doc!r}"]
    out = []
    if set(doc) - {"code", "message", "field"}:
        out.append(f"error has keys beyond code/message/field: {sorted(doc)}")
    if not isinstance(doc.get("code"), str) or not doc.get("code"):
        out.append(f"error without a code: {doc!r}")
    if not isinstance(doc.get("message"), str) or not doc.get("message"):
        out.append(f"error without a message: {doc!r}")
    if "field" in doc and not isinstance(doc["field"], str):
        out.append(f"error's field is not a string: {doc!r}")
    return out


# --- the table and the app agree --------------------------------------------------------------


def test_every_operation_has_a_role_entry(walk: Walk) -> None:
    missing = [f'    ("{op.method}", "{shape(op.path)}"): <roles>,  # {op}' for op in walk.ops
               if op.key not in ROLES_OF]
    assert not missing, ("operations without an entry in ROLES_OF "
                         "(tests/console/test_api_contract.py): add who may call them:\n"
                         + "\n".join(missing))


def test_every_planned_operation_is_served(walk: Walk) -> None:
    served = {op.key for op in walk.ops}
    absent = [f"{m} {p}" for (m, p) in ROLES_OF if (m, p) not in served]
    assert not absent, "the plan's operations the app does not serve (or not in /openapi.json):" \
        "\n" + "\n".join(absent)


def test_every_api_route_is_in_the_openapi_document(walk: Walk) -> None:
    """The walk covers the API only if nothing under /api hides from the document."""
    listed = {(m, shape(p)) for p, item in walk.doc["paths"].items() for m in
              (k.upper() for k in item)}
    routes = list(api_routes(walk.console.app.routes))
    assert len(routes) >= len(walk.ops), "the walk of the app's routes missed some"
    hidden = [f"{m} {path}" for path, r, _ in routes if path.startswith("/api/")
              for m in r.methods if m != "HEAD" and (m, shape(path)) not in listed]
    assert not hidden, f"API routes left out of /openapi.json: {hidden}"


def test_dependencies_match_the_table(walk: Walk) -> None:
    """What each route's dependencies let through is what ROLES_OF says (a role check done in
    the handler instead would not show up here, nor in the OpenAPI document)."""
    wrong = []
    seen = 0
    for path, route, extra in api_routes(walk.console.app.routes):
        if not path.startswith("/api/"):
            continue
        for method in route.methods - {"HEAD"}:
            key = (method, shape(path))
            if key not in ROLES_OF:
                continue  # test_every_operation_has_a_role_entry says so
            seen += 1
            declared, wanted = declared_roles(route, extra), ROLES_OF[key]
            if declared != wanted:
                wrong.append(f"{method} {path}: dependencies let through "
                             f"{sorted(declared) if declared is not None else 'anyone'}, "
                             f"the table says {sorted(wanted) if wanted else 'anyone'}")
    assert seen == len([op for op in walk.ops if op.key in ROLES_OF]), seen
    assert not wrong, "\n".join(wrong)


# --- the walk ---------------------------------------------------------------------------------


def test_openapi_document_is_public(walk: Walk) -> None:
    r = walk.console.anon().get("/openapi.json")
    walk.check("GET /openapi.json", r, 200)
    walk.assert_clean()
    assert r.json()["openapi"].startswith("3.")
    assert all(p.startswith("/api/v1/") for p in r.json()["paths"]), "unversioned API paths"


def test_without_credentials_every_protected_operation_answers_401(walk: Walk) -> None:
    anon = walk.anon
    forged = walk.console.anon()
    forged.cookies.set(auth.SESSION_COOKIE, "forged-session")
    assert walk.protected(), "no protected operations found"
    for op in walk.protected():
        walk.check(op, op.send(anon), 401, "auth.required")
        walk.check(f"{op} (bad token)", op.send(
            anon, headers={"Authorization": "Bearer lt_0123456789ab_notthesecret"}), 401,
            "auth.required")
        walk.check(f"{op} (not a token)", op.send(
            anon, headers={"Authorization": "Bearer something"}), 401, "auth.required")
        walk.check(f"{op} (bad cookie)", op.send(forged), 401, "auth.required")
    walk.assert_clean()


def test_public_operations_answer_without_credentials(walk: Walk) -> None:
    for op in walk.ops:
        if op.key in ROLES_OF and ROLES_OF[op.key] is None and op.key != SIGN_IN:
            walk.check(op, op.send(walk.anon), lambda s: s not in (401, 403) and s < 500)
    walk.assert_clean()


def test_every_role_the_table_does_not_allow_gets_403(walk: Walk) -> None:
    checked = 0
    for op in walk.protected():
        allowed = walk.roles_of(op)
        assert allowed is not None
        for role in sorted(VIEW - allowed):
            checked += 1
            walk.check(f"{op} as {role}", op.send(walk.sessions[role]), 403, "role.forbidden")
            walk.check(f"{op} as {role} (token)", op.send(walk.console.anon(),
                                                          headers=walk.bearer(role)),
                       403, "role.forbidden")
    assert checked, "no operation refuses any role"
    walk.assert_clean()


def test_body_dependent_role_rules_refuse_the_other_roles(walk: Walk) -> None:
    ops = {op.key: op for op in walk.ops}
    for key, body, allowed in BODY_ROLES:
        assert key in ops, f"{key}: not served"
        for role in sorted(VIEW - allowed):
            walk.check(f"{ops[key]} {body} as {role}", ops[key].send(walk.sessions[role], body),
                       403, "role.forbidden")
    walk.assert_clean()


def test_a_viewer_is_refused_every_change_a_viewer_may_not_make(walk: Walk) -> None:
    """The issue's words: a viewer's state-changing request, where a viewer may not, is 403
    with the roles named."""
    for op in walk.protected():
        allowed = walk.roles_of(op)
        if op.method in WRITE_METHODS and allowed is not None and "viewer" not in allowed:
            r = op.send(walk.sessions["viewer"], body=op.wrong_body()
                        if op.body_schema is not None else None)
            walk.check(op, r, 403, "role.forbidden")
            if r.status_code == 403 and not any(role in r.json()["message"] for role in allowed):
                walk.problems.append(f"{op}: the refusal does not name the roles: {r.text}")
    walk.assert_clean()


def test_a_bad_body_gets_422_naming_the_field(walk: Walk) -> None:
    with_body = [op for op in walk.ops if op.body_schema is not None and op.key in ROLES_OF]
    assert with_body, "no operation takes a body"
    for op in with_body:
        fields = op.body_fields()
        role = walk.allowed_role(op)
        client = walk.anon if walk.roles_of(op) is None else walk.sessions[role]

        def names_a_field(f: str | None, fields: dict[str, Any] = fields) -> bool:
            return f is not None and f.startswith("body.") and f.split(".")[1] in fields

        walk.check(f"{op} wrong types as {role}", op.send(client, body=op.wrong_body()), 422,
                   "request.invalid", names_a_field)
        required = (op.body_schema or {}).get("required", [])
        if required:
            r = op.send(client, body={})
            walk.check(f"{op} {{}} as {role}", r, 422, "request.invalid",
                       lambda f, req=required: f is not None and f.startswith("body.")
                       and f.split(".")[1] in req)
        walk.check(f"{op} not an object as {role}", op.send(client, body=["a", "list"]), 422,
                   "request.invalid", lambda f: f is not None and f.startswith("body"))
    walk.assert_clean()


def streams(op: Op) -> bool:
    ok = op.spec.get("responses", {}).get("200", {})
    return "text/event-stream" in ok.get("content", {})


def test_every_read_answers_an_allowed_role_without_a_server_error(walk: Walk) -> None:
    """On an empty ledger with made-up names: a 200 or a clear error, never a 500."""
    for op in walk.ops:
        if op.method != "GET" or op.key not in ROLES_OF or streams(op):
            continue
        role = walk.allowed_role(op)
        client = walk.anon if walk.roles_of(op) is None else walk.sessions[role]
        walk.check(f"{op} as {role}", op.send(client), lambda s: s < 500 and s not in (401, 403))
    walk.assert_clean()


def test_a_cookie_session_change_needs_the_csrf_token(walk: Walk) -> None:
    changes = [op for op in walk.protected() if op.method in WRITE_METHODS]
    assert changes
    for op in changes:
        role = walk.allowed_role(op)
        user = USER_OF_ROLE[role]
        bare = walk.console.as_(user, csrf=False)
        walk.check(f"{op} without X-CSRF-Token", op.send(bare), 403, "csrf.missing")
        walk.check(f"{op} with a wrong X-CSRF-Token",
                   op.send(bare, headers={auth.CSRF_HEADER: "not-the-token"}), 403,
                   "csrf.invalid")
        other = walk.sessions["viewer" if role != "viewer" else "admin"]
        walk.check(f"{op} with another session's X-CSRF-Token", op.send(
            bare, headers={auth.CSRF_HEADER: other.headers[auth.CSRF_HEADER]}), 403,
            "csrf.invalid")
    walk.assert_clean()


def test_an_api_token_needs_no_csrf_token(walk: Walk) -> None:
    """Bearer requests pass authentication and CSRF: what answers is the handler (a bad
    body's 422, an unknown id's 404), never 401 or a csrf.* refusal."""
    for op in walk.protected():
        if op.method not in WRITE_METHODS or op.key == ("DELETE", "/api/v1/tokens/{}"):
            continue
        role = walk.allowed_role(op)
        client = walk.console.anon()
        r = op.send(client, body=op.wrong_body() if op.body_schema is not None else None,
                    headers=walk.bearer(role))
        walk.check(f"{op} with a {role}'s token", r,
                   lambda s: s != 401 and s < 500 and s != 403)
    walk.assert_clean()


def test_the_sign_in_is_refused_from_another_site(walk: Walk) -> None:
    client = walk.console.anon()
    body = {"user": "sam", "password": "sam-correct-horse-1"}
    for origin in ("https://evil.example", "null", "http://testserver.evil.example"):
        r = client.post("/api/v1/session", json=body, headers={"Origin": origin})
        walk.check(f"sign-in from {origin}", r, 403, "csrf.origin")
        assert auth.SESSION_COOKIE not in r.cookies
    walk.check("sign-in from the console's own page", client.post(
        "/api/v1/session", json=body, headers={"Origin": "http://testserver"}), 200)
    walk.assert_clean()


def test_unknown_api_paths_and_methods_answer_the_error_shape(walk: Walk) -> None:
    client = walk.sessions["admin"]
    walk.check("GET /api/v1/nothing-here", client.get("/api/v1/nothing-here"), 404)
    walk.check("PUT /api/v1/session", client.put("/api/v1/session", json={}), 405)
    walk.check("GET /api/v1/nothing-here (anon)", walk.anon.get("/api/v1/nothing-here"),
               lambda s: s in (401, 404))
    walk.assert_clean()


# --- pages and assets ---------------------------------------------------------------------------


def page_urls() -> list[str]:
    return [u.replace("{serial}", "SN-CONTRACT-0001") for u in pages.ROUTES]


def test_the_sign_in_page_and_public_assets_need_no_session(walk: Walk) -> None:
    r = walk.anon.get("/signin")
    walk.check("GET /signin", r, 200)
    assert r.headers["content-type"].startswith("text/html")
    public = sorted(p.name for p in pages.PUBLIC.iterdir() if p.is_file())
    assert public, "no public assets"
    for name in public:
        walk.check(f"GET /static/{name}", walk.anon.get(f"/static/{name}"), 200)
    walk.check("GET /static/missing.js", walk.anon.get("/static/missing.js"), 404)
    walk.assert_clean()


def test_pages_redirect_to_sign_in_without_a_session(walk: Walk) -> None:
    forged = walk.console.anon()
    forged.cookies.set(auth.SESSION_COOKIE, "forged-session")
    for url in page_urls():
        for target in (url, url + "?state=active"):
            r = walk.anon.get(target, follow_redirects=False)
            walk.check(f"GET {target}", r, 303)
            wanted = f"/signin?next={quote(target, safe='')}"
            if r.status_code == 303 and r.headers.get("location") != wanted:
                walk.problems.append(f"GET {target}: redirects to {r.headers.get('location')}, "
                                     f"wanted {wanted}")
        walk.check(f"GET {url} (forged cookie)", forged.get(url, follow_redirects=False), 303)
    walk.assert_clean()


def test_pages_answer_with_a_session(walk: Walk) -> None:
    for url in page_urls():
        r = walk.sessions["viewer"].get(url, follow_redirects=False)
        walk.check(f"GET {url} signed in", r, 200)
        if r.status_code == 200:
            assert r.headers["content-type"].startswith("text/html"), url
    walk.assert_clean()


def test_app_assets_need_a_session(walk: Walk) -> None:
    names = sorted(p.name for p in pages.APP.iterdir() if p.is_file())
    assert names, "no app assets"
    for name in names:
        walk.check(f"GET /assets/{name} (anon)", walk.anon.get(f"/assets/{name}"), 401,
                   "auth.required")
        r = walk.sessions["viewer"].get(f"/assets/{name}")
        walk.check(f"GET /assets/{name} signed in", r, 200)
    walk.check("GET /assets/missing.js signed in",
               walk.sessions["viewer"].get("/assets/missing.js"), 404)
    walk.assert_clean()


def test_no_asset_is_reached_outside_its_folder(walk: Walk) -> None:
    app_file = next(p.name for p in pages.APP.iterdir() if p.is_file())
    for url in (f"/static/..%2fapp%2f{app_file}", "/static/..%2fpages%2fsignin.html",
                "/static/..%2f..%2fapp.py", "/assets/..%2f..%2fapp.py",
                "/static/%2fetc%2fpasswd"):
        r = walk.anon.get(url)
        walk.check(f"GET {url} (anon)", r, lambda s: s in (401, 404))
        r = walk.sessions["viewer"].get(url)
        walk.check(f"GET {url} signed in", r, 404)
    walk.assert_clean()


def test_pages_have_no_inline_script_or_style(walk: Walk) -> None:
    """The CSP forbids inline code: a page that had any would break in the browser."""
    found = []
    for page in sorted(pages.PAGES.glob("*.html")):
        html = page.read_text()
        for m in re.finditer(r"<script\b([^>]*)>(.*?)</script>", html, re.S | re.I):
            if "src=" not in m.group(1) or m.group(2).strip():
                found.append(f"{page.name}: an inline <script>")
        if re.search(r"<style\b", html, re.I):
            found.append(f"{page.name}: a <style> element")
        if re.search(r"\sstyle\s*=", html, re.I):
            found.append(f"{page.name}: a style= attribute")
        if m := re.search(r"\son[a-z]+\s*=", html, re.I):
            found.append(f"{page.name}: an inline event handler {m.group(0).strip()}")
        if re.search(r"javascript:", html, re.I):
            found.append(f"{page.name}: a javascript: URL")
        if re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I):
            found.append(f"{page.name}: loads something from another site")
    assert not found, "\n".join(found)
    assert CSP.startswith("default-src 'self'")


def test_csp_is_one_policy_without_inline_allowances() -> None:
    directives = dict(d.strip().split(" ", 1) for d in CSP.split(";"))
    for name in ("default-src", "script-src", "style-src"):
        assert "'unsafe-inline'" not in directives[name] and "*" not in directives[name], name
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'"
