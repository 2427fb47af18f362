"""`linetrace console`, `linetrace users password`, `linetrace tokens`, and the first admin that
`linetrace up` creates (docs/console.md).

`linetrace console` runs the web console and REST API alone (uvicorn) over the configured
ledger: it reads the LINETRACE_* settings here and hands the console plain values
(`ConsoleConfig`); the console itself reads no environment. On the way it loads (or creates)
the console's own key, `<data dir>/keys/console.key`, and enrols it in the log with a
plant-signed `console.enrolled` event (once per key).

`users password` and `tokens` are an admin's commands on the plant host: the acting admin is
the user of LINETRACE_USER_KEY, as for every `linetrace users` command. A console password
and an API token are operational secrets (ledger/console_auth.py), not facts of the line: they
never enter the log, so these commands record no statement.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from linetrace.ledger.console_auth import (
    create_token,
    has_password,
    list_tokens,
    new_one_time_password,
    revoke_token,
    set_password,
    users_with_password,
)
from linetrace.ledger.db import Ledger
from linetrace.ledger.keys import load_or_create_plant_key
from linetrace.ledger.users import (
    UserError,
    admins_with_valid_key,
    enroll_user,
    list_users,
    user_of_key,
    user_role,
)
from linetrace.schemas import signing
from linetrace.schemas.statements import new_statement, sign_statement

from .ledger_cmds import open_ledger
from .output import print_json, print_table, say
from .query_cmds import read_ledger
from .settings import ConfigurationError, Settings
from .user_key import acting_user_key

if TYPE_CHECKING:  # imported when used: the console extra may be missing where the CLI runs
    from linetrace.console.config import ConsoleConfig

#: The first admin `linetrace up` enrols on an empty ledger, and their key's file name.
FIRST_ADMIN = "admin"
FIRST_ADMIN_KEY = "admin.key"


# --- the listening socket --------------------------------------------------------------------


def url_of(host: str, port: int) -> str:
    """The URL a person opens: a wildcard address is shown as this machine's loopback."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, host)
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port) (port 0: any free one), or a ConfigurationError
    (exit 2) saying the port is in use or the address is not this machine's."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ConfigurationError(f"cannot listen on {host!r}: {e.strerror}; set --host or "
                                 "LINETRACE_CONSOLE_HOST to an address of this machine "
                                 "(127.0.0.1, 0.0.0.0)") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT only, as uvicorn
    try:
        sock.bind(addr)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ConfigurationError(
                f"port {port} on {host} is in use (another console, or another program): "
                f"choose another with --port or LINETRACE_CONSOLE_PORT, or stop what holds it "
                f"(`ss -ltnp 'sport = :{port}'` shows it)", code="console.port_in_use") from None
        raise ConfigurationError(f"cannot listen on {host}:{port}: {e.strerror or e}; choose "
                                 "another --host/--port", code="console.port_in_use") from None
    sock.set_inheritable(True)
    return sock


# --- the console's configuration -------------------------------------------------------------


def console_config(settings: Settings) -> ConsoleConfig:
    """The console's plain values from the settings: the routes in force, the plant key, the
    console's own key (created if absent and enrolled in the log, once per key)."""
    from linetrace.console.config import ConsoleConfig
    from linetrace.ledger.console_key import enroll_console_key, load_or_create_console_key

    from .routes_cmds import routes_in_force

    routes = routes_in_force(settings)
    plant, _ = load_or_create_plant_key(settings.keys_dir)
    key, _ = load_or_create_console_key(settings.keys_dir)
    ledger = open_ledger(settings)  # creates or migrates the schema as `users add` does
    try:
        enroll_console_key(ledger, plant, key)
    finally:
        ledger.close()
    release = settings.quality_release
    if release not in ("console", "user-keys"):  # load() refused it already
        raise ConfigurationError(f"LINETRACE_QUALITY_RELEASE={release!r}")
    return ConsoleConfig(db_url=settings.db, data_dir=settings.data_dir,
                         keys_dir=settings.keys_dir, routes=routes, plant_key=plant,
                         console_key=key, origin=settings.origin,
                         quality_release=cast(Any, release),
                         secure_cookies=settings.console_https, spc_file=settings.spc)


def serve(config: ConsoleConfig, sock: socket.socket, log_level: str = "info") -> None:
    """Serve the console on `sock` until SIGTERM or SIGINT, then shut down gracefully (open
    requests finish, the alert streams end)."""
    import uvicorn

    from linetrace.console.app import create_app

    server = uvicorn.Server(uvicorn.Config(
        create_app(config), log_level=log_level, access_log=log_level == "debug",
        server_header=False, timeout_graceful_shutdown=5, lifespan="on",
        # The client's address is the peer's: no X-Forwarded-For is believed, so nothing on
        # this host can choose the address the sign-in throttle and the audit see.
        proxy_headers=False))
    # uvicorn re-raises the signal that stopped it to the handler it found: a quiet one, so
    # a stop by SIGTERM or Ctrl-C is a normal end (exit 0), not a death by signal.
    quiet = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        for s, h in quiet.items():
            signal.signal(s, h)


def cmd_console(args: argparse.Namespace, settings: Settings) -> int:
    from .extras import need_extra

    need_extra("console", "`linetrace console`")
    host = args.host if args.host is not None else settings.console_host
    port = args.port if args.port is not None else settings.console_port
    if args.fd is not None:  # `linetrace up` bound it and handed it over: no race for it
        sock = socket.socket(fileno=args.fd)
        host = str(sock.getsockname()[0])
    else:
        sock = bind(host, port)  # first: a port in use says so before any key or ledger work
    try:
        config = console_config(settings)
        url = url_of(host, int(sock.getsockname()[1]))
        print(f"linetrace console: {url} (data dir {settings.data_dir}; "
              f"quality release: {config.quality_release}; Ctrl-C stops)", flush=True)
        serve(config, sock, settings.log_level)
    finally:
        sock.close()
    print("linetrace console: stopped", flush=True)
    return 0


# --- the first admin (`linetrace up`) --------------------------------------------------------


@dataclass(frozen=True)
class FirstAdmin:
    user: str
    password: str
    key_file: Path


def _write_key(path: Path) -> None:
    """An Ed25519 key pair as `linetrace users keygen` writes it: PEM (0600) and FILE.pub."""
    key = signing.generate_key()
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(signing.private_key_pem(key))
        f.flush()
        os.fsync(f.fileno())
    Path(f"{path}.pub").write_text(signing.public_key_b64(key.public_key()) + "\n")
    os.replace(tmp, path)


def ensure_first_admin(settings: Settings, ledger: Ledger) -> FirstAdmin | None:
    """On a ledger without users, enrol `admin` with a key of their own (written to
    `<data dir>/keys/admin.key`, 0600, and `admin.key.pub`; the enrolment self-signed with it,
    as the first admin's must be) and give them a one-time console password; returns it to
    be printed once. Also finishes a first admin whose password a crash left unset (no
    console password exists yet and `admin` is enrolled with that file's key). Otherwise None:
    later runs print no password."""
    key_file = settings.keys_dir / FIRST_ADMIN_KEY
    with ledger.reader() as s:
        users = list_users(s)
        admins = admins_with_valid_key(s)
        passwords = users_with_password(s)
        admin_has_password = has_password(s, FIRST_ADMIN)
    if users:
        if passwords or admin_has_password or FIRST_ADMIN not in admins or not key_file.exists():
            return None
        key = signing.load_private_key_pem(key_file.read_bytes())
        with ledger.reader() as s:
            if user_of_key(s, signing.keyid_of(key.public_key())) != FIRST_ADMIN:
                return None
    else:
        settings.keys_dir.mkdir(parents=True, exist_ok=True)
        if not key_file.exists():
            _write_key(key_file)
        key = signing.load_private_key_pem(key_file.read_bytes())
        public = key.public_key()
        details = {"role": "admin", "public_key": signing.public_key_b64(public),
                   "keyid": signing.keyid_of(public)}
        plant, _ = load_or_create_plant_key(settings.keys_dir)
        signed = sign_statement(new_statement("user.add", FIRST_ADMIN, details,
                                              user=FIRST_ADMIN), key)
        enroll_user(ledger, plant, signed, user=FIRST_ADMIN, role="admin", public_key=public)
    password = new_one_time_password()
    set_password(ledger, FIRST_ADMIN, password, by="linetrace up", one_time=True)
    return FirstAdmin(FIRST_ADMIN, password, key_file)


# --- users password, tokens ------------------------------------------------------------------


def acting_user(settings: Settings, ledger: Ledger) -> tuple[str, str]:
    """(user, role) of the person running the command: the enrolled, active user of the key in
    LINETRACE_USER_KEY."""
    key = acting_user_key(settings)
    keyid = signing.keyid_of(key.public_key())
    with ledger.reader() as s:
        user = user_of_key(s, keyid)
        role = user_role(s, user) if user is not None else None
    if user is None or role is None:
        raise UserError(f"the key in LINETRACE_USER_KEY ({settings.user_key}, key id {keyid}) "
                        "is not enrolled for an active user; an admin enrols it with "
                        "`linetrace users add NAME --role ROLE --public-key FILE.pub`",
                        code="user.unknown")
    return user, role


def _admin_or_self(settings: Settings, ledger: Ledger, user: str, what: str) -> str:
    who, role = acting_user(settings, ledger)
    if role != "admin" and who != user:
        raise UserError(f"{what} for {user} needs an admin's key in LINETRACE_USER_KEY; "
                        f"{who} is {role}", code="user.forbidden")
    return who


def cmd_password(args: argparse.Namespace, settings: Settings) -> int:
    ledger = open_ledger(settings)
    try:
        by = _admin_or_self(settings, ledger, args.name, "a console password")
        password = new_one_time_password()
        set_password(ledger, args.name, password, by=by, one_time=True)
    finally:
        ledger.close()
    if args.json:
        print_json({"user": args.name, "password": password, "must_change": True,
                    "set_by": by})
    else:
        say(f"{args.name}: one-time console password {password}")
        say("  shown this once; the console asks for a new password at the first sign-in; "
            f"{args.name}'s open sessions have ended")
    return 0


def cmd_tokens_create(args: argparse.Namespace, settings: Settings) -> int:
    ledger = open_ledger(settings)
    try:
        by = _admin_or_self(settings, ledger, args.user, "an API token")
        secret, doc = create_token(ledger, args.user, args.name, by=by)
    finally:
        ledger.close()
    if args.json:
        print_json({**doc, "token": secret})
    else:
        say(f"token {doc['id']} for {doc['user']} ({doc['name']}): {secret}")
        say("  shown this once: keep it now. Send it as `Authorization: Bearer TOKEN`; "
            f"`linetrace tokens revoke {doc['id']}` ends it")
    return 0


def cmd_tokens_list(args: argparse.Namespace, settings: Settings) -> int:
    ledger = read_ledger(settings)
    try:
        with ledger.reader() as s:
            rows = list_tokens(s, args.user)
    finally:
        ledger.close()
    if args.json:
        print_json(rows)
    elif not rows:
        print("no API tokens; `linetrace tokens create USER --name N` makes one")
    else:
        print_table([[r["id"], r["user"], r["name"], r["created"], r["created_by"],
                      r["last_used"] or "-", r["revoked"] or "-"] for r in rows],
                    ["ID", "USER", "NAME", "CREATED", "BY", "LAST USED", "REVOKED"])
    return 0


def cmd_tokens_revoke(args: argparse.Namespace, settings: Settings) -> int:
    ledger = open_ledger(settings)
    try:
        who, role = acting_user(settings, ledger)
        doc = revoke_token(ledger, args.token_id, by=who, admin=role == "admin")
    finally:
        ledger.close()
    if args.json:
        print_json(doc)
    else:
        say(f"token {doc['id']} of {doc['user']} ({doc['name']}) revoked {doc['revoked']}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    from .users_cmds import user_name

    text = ("run the web console and REST API alone over the configured ledger "
            "(docs/console.md)")
    c = sub.add_parser("console", parents=[common], help=text, description=text)
    c.add_argument("--host", help="address to listen on (default $LINETRACE_CONSOLE_HOST, "
                                  "else 127.0.0.1)")
    c.add_argument("--port", type=_port, help="TCP port (default $LINETRACE_CONSOLE_PORT, "
                                              "else 8080; 0 = any free port)")
    c.add_argument("--fd", type=int, help=argparse.SUPPRESS)  # a listening socket from `up`
    c.set_defaults(fn=cmd_console)

    text = ("API tokens for machines and scripts: made for a user, shown once, revocable "
            "(an admin's LINETRACE_USER_KEY, or the user's own)")
    tokens = sub.add_parser("tokens", parents=[common], help=text, description=text)
    ts = tokens.add_subparsers(dest="tokens_command", required=True, metavar="SUBCOMMAND")
    p = ts.add_parser("create", parents=[common], help="a new token acting as USER (shown once)")
    p.add_argument("user", type=user_name, metavar="USER")
    p.add_argument("--name", required=True, help="what uses it, e.g. 'ict-31 interlock'")
    p.add_argument("--json", action="store_true", help="print {id, user, name, created, "
                   "created_by, last_used, revoked, token}")
    p.set_defaults(fn=cmd_tokens_create)
    p = ts.add_parser("list", parents=[common], help="every token (never its secret)")
    p.add_argument("--user", type=user_name, help="only this user's")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_tokens_list)
    p = ts.add_parser("revoke", parents=[common], help="revoke a token: it stops working at once")
    p.add_argument("token_id", metavar="ID")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_tokens_revoke)


def _port(s: str) -> int:
    try:
        port = int(s)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{s!r} is not a TCP port (0-65535; 0 = any free one)")
    return port
