"""`linetrace users`: people enrolled like stations (keygen, add, list, role, revoke, remove).

Each change is signed by the person who runs the command (LINETRACE_USER_KEY, an admin's
key) and recorded in the ledger as a plant-signed `user.*` system event carrying that
statement (`linetrace.ledger.users`). The first admin signs their own enrolment.
docs/security.md explains the trust boundary.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

from linetrace.ledger.db import Ledger
from linetrace.ledger.keys import load_or_create_plant_key
from linetrace.ledger.users import (
    ROLES,
    UserChange,
    UserError,
    admins_with_valid_key,
    change_role,
    enroll_user,
    list_users,
    remove_user,
    revoke_user_key,
)
from linetrace.schemas import signing
from linetrace.schemas.bodies import SignedStatement
from linetrace.schemas.statements import new_statement, sign_statement

from .ledger_cmds import open_ledger, publish_outbox
from .output import print_json, print_table, say
from .query_cmds import read_ledger
from .settings import ConfigurationError, Settings
from .user_key import acting_user_key, sign_as

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")
_KEYID = re.compile(r"^[0-9a-f]{16}\Z")


def user_name(s: str) -> str:
    if not _NAME.match(s):
        raise argparse.ArgumentTypeError(f"{s!r} is not a user name: 1-64 of a-z 0-9 . _ -, "
                                         "starting with a letter or digit")
    return s


def key_id(s: str) -> str:
    if not _KEYID.match(s):
        raise argparse.ArgumentTypeError(f"{s!r} is not a key id (16 hex digits, as `linetrace "
                                         "users list` shows)")
    return s


def cmd_keygen(args: argparse.Namespace, settings: Settings) -> int:
    out = Path(args.out)
    pub = Path(f"{out}.pub")
    for p in (out, pub):
        if p.exists():
            raise ConfigurationError(f"{p} exists; choose another --out")
    key = signing.generate_key()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(signing.private_key_pem(key))
    public = signing.public_key_b64(key.public_key())
    pub.write_text(public + "\n")
    print(f"private key: {out} (yours alone: keep it where you are, mode 0600)")
    print(f"public key:  {public}")
    print(f"key id:      {signing.keyid_of(key.public_key())}")
    print(f"enrol it:    an admin runs `linetrace users add NAME --role ROLE --public-key {pub}`;"
          f" then set LINETRACE_USER_KEY={out}")
    return 0


def _report(args: argparse.Namespace, settings: Settings, ledger: Ledger, change: UserChange,
            done: str, already: str, **extra: Any) -> int:
    published = publish_outbox(settings, ledger) if change.new else True
    if args.json:
        print_json({"user": change.user, "event": change.event_type,
                    "event_id": change.event_id, "recorded": change.new, **extra})
    else:
        say(f"{change.user}: {done if change.new else already}"
            + ("" if published else " (broker not reachable; the outbox publishes it later)"))
    return 0


def _bootstrap_statement(settings: Settings, user: str, details: dict[str, str],
                         keyid: str) -> SignedStatement:
    """The first admin's own statement, signed with the key being enrolled."""
    if details["role"] != "admin":
        raise UserError(f"no admin is enrolled yet: enrol the first admin (`linetrace users add "
                        f"NAME --role admin --public-key FILE`, signed with that admin's own "
                        f"key) before a {details['role']}", code="user.forbidden")
    key = acting_user_key(settings)
    if signing.keyid_of(key.public_key()) != keyid:
        raise UserError(
            f"no admin is enrolled yet: the first user must be an admin who signs their own "
            f"enrolment; set LINETRACE_USER_KEY to the private key of the public key given "
            f"(key id {keyid}) and run `linetrace users add {user} --role admin ...`",
            code="user.forbidden")
    return sign_statement(new_statement("user.add", user, details, user=user), key)


def cmd_add(args: argparse.Namespace, settings: Settings) -> int:
    try:
        public = signing.load_public_key_file(Path(args.public_key).read_bytes())
    except (OSError, ValueError) as e:
        raise ConfigurationError(f"cannot read public key {args.public_key}: {e}; give the "
                                 "person's FILE.pub that `linetrace users keygen --out FILE` "
                                 "wrote") from None
    keyid = signing.keyid_of(public)
    details = {"role": args.role, "public_key": signing.public_key_b64(public), "keyid": keyid}
    plant, _ = load_or_create_plant_key(settings.keys_dir)
    ledger = open_ledger(settings)
    try:
        with ledger.reader() as session:
            bootstrap = not admins_with_valid_key(session)
        signed = (_bootstrap_statement(settings, args.name, details, keyid) if bootstrap
                  else sign_as(settings, ledger, "user.add", args.name, details))
        change = enroll_user(ledger, plant, signed, user=args.name, role=args.role,
                             public_key=public)
        return _report(args, settings, ledger, change,
                       f"enrolled as {args.role} with key {keyid}"
                       + (" (the first admin, self-signed)" if bootstrap else ""),
                       f"key {keyid} was already enrolled", role=args.role, keyid=keyid,
                       signed_by=signed.user)
    finally:
        ledger.close()


def cmd_role(args: argparse.Namespace, settings: Settings) -> int:
    plant, _ = load_or_create_plant_key(settings.keys_dir)
    ledger = open_ledger(settings)
    try:
        signed = sign_as(settings, ledger, "user.role", args.name, {"role": args.role})
        change = change_role(ledger, plant, signed, user=args.name, role=args.role)
        return _report(args, settings, ledger, change, f"role is now {args.role}",
                       f"role already {args.role}", role=args.role, signed_by=signed.user)
    finally:
        ledger.close()


def cmd_revoke(args: argparse.Namespace, settings: Settings) -> int:
    plant, _ = load_or_create_plant_key(settings.keys_dir)
    ledger = open_ledger(settings)
    try:
        signed = sign_as(settings, ledger, "user.revoke", args.name, {"keyid": args.keyid})
        change = revoke_user_key(ledger, plant, signed, user=args.name, keyid=args.keyid)
        return _report(args, settings, ledger, change, f"key {args.keyid} revoked",
                       f"key {args.keyid} was already revoked", keyid=args.keyid,
                       signed_by=signed.user)
    finally:
        ledger.close()


def cmd_remove(args: argparse.Namespace, settings: Settings) -> int:
    plant, _ = load_or_create_plant_key(settings.keys_dir)
    ledger = open_ledger(settings)
    try:
        signed = sign_as(settings, ledger, "user.remove", args.name, {})
        change = remove_user(ledger, plant, signed, user=args.name)
        return _report(args, settings, ledger, change, "removed (every key of theirs revoked)",
                       "was already removed", signed_by=signed.user)
    finally:
        ledger.close()


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    ledger = read_ledger(settings)
    try:
        with ledger.reader() as session:
            rows = list_users(session)
    finally:
        ledger.close()
    if args.json:
        print_json(rows)
    elif not rows:
        print("no users; enrol the first admin with `linetrace users add NAME --role admin "
              "--public-key FILE` (see docs/security.md)")
    else:
        print_table([[r["user"], r["role"], r["state"],
                      ",".join(r["keyids"]) or "-",  # type: ignore[arg-type]
                      r["enrolled"]] for r in rows],
                    ["USER", "ROLE", "STATE", "KEYS", "ENROLLED"])
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    help_ = ("people and their keys: each change is signed by an admin's own key "
             "(LINETRACE_USER_KEY) and recorded as a signed system event")
    users = sub.add_parser("users", parents=[common], help=help_, description=help_)
    us = users.add_subparsers(dest="users_command", required=True, metavar="SUBCOMMAND")

    def add(name: str, fn: Any, text: str) -> argparse.ArgumentParser:
        p = us.add_parser(name, parents=[common], help=text, description=text)
        p.set_defaults(fn=fn)
        return p

    p = add("keygen", cmd_keygen, "generate your own Ed25519 key pair (FILE, mode 0600, and "
            "FILE.pub for the admin who enrols you)")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="where to write the private key (PEM)")

    p = add("add", cmd_add, "enrol a person's public key with a role (the first user: an admin "
            "signing their own enrolment)")
    p.add_argument("name", type=user_name, metavar="NAME")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--public-key", required=True, help="the FILE.pub `users keygen` wrote")
    p.add_argument("--json", action="store_true",
                   help="print {user, event, event_id, recorded, role, keyid, signed_by}")

    p = add("list", cmd_list, "every user with role, state and valid keys")
    p.add_argument("--json", action="store_true",
                   help="print a list of {user, role, state, keyids, enrolled, revoked_keyids}")

    p = add("role", cmd_role, "change a user's role")
    p.add_argument("name", type=user_name, metavar="NAME")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--json", action="store_true")

    p = add("revoke", cmd_revoke, "revoke one key of a user (what it signs from now on is "
            "refused)")
    p.add_argument("name", type=user_name, metavar="NAME")
    p.add_argument("--keyid", required=True, type=key_id)
    p.add_argument("--json", action="store_true")

    p = add("remove", cmd_remove, "remove a user (every key of theirs revoked)")
    p.add_argument("name", type=user_name, metavar="NAME")
    p.add_argument("--json", action="store_true")

    from .console_cmds import cmd_password

    p = add("password", cmd_password, "set a one-time console password for an enrolled user "
            "and print it once (an admin's LINETRACE_USER_KEY; the console asks for a new one "
            "at the first sign-in)")
    p.add_argument("name", type=user_name, metavar="NAME")
    p.add_argument("--json", action="store_true",
                   help="print {user, password, must_change, set_by}")
