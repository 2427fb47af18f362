"""`linetrace ack|shelve|unshelve` and `linetrace alerts comment|out-of-service|return`: the
operator's actions on alerts, signed by the person who runs the command (LINETRACE_USER_KEY).

Each is a statement signed with the person's own key, recorded in the ledger as a
plant-signed `alert.*` system event and applied to the alert in one transaction
(`linetrace.ledger.alerts.actions`); docs/alerts.md "Operator actions" says who may do what.
Exit 0 done, 1 refused (a role that may not, a forged or unknown signature, an unknown alert,
an action the alert's state does not allow), 2 usage (no LINETRACE_USER_KEY, an empty reason,
a shelve duration that is not one or outside its limits).
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

from linetrace.ledger.alerts.actions import (
    SHELVE_MAX,
    SHELVE_MIN,
    STATEMENT_ACTION,
    AlertOutcome,
    act,
    parse_duration as ledger_parse_duration,
    shelve_until,
    statement_details,
)
from linetrace.ledger.alerts.engine import Action
from linetrace.ledger.alerts.views import AlertError
from linetrace.ledger.keys import load_or_create_plant_key

from .ledger_cmds import open_ledger, publish_outbox
from .output import print_json, say
from .settings import ConfigurationError, Settings
from .user_key import sign_as

_JSON_HELP = ("print the alert as `linetrace alerts --json` does, with recorded (the event "
              "types this call recorded), new (false when the same request was recorded "
              "before) and message")


def parse_duration(text: str) -> timedelta:
    """`30m`, `2h`, `1d`, `1h30m` (s, m, h, d) as a timedelta; a ConfigurationError otherwise."""
    try:
        return ledger_parse_duration(text)
    except AlertError as e:
        raise ConfigurationError(f"--for {e.message}") from None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    ack = subparsers.add_parser(
        "ack", parents=[common], help="acknowledge an alert (signed by you)",
        description="Acknowledge an alert, signed with LINETRACE_USER_KEY (supervisor, quality "
        "or admin): an unacknowledged alert becomes acknowledged, one that returned to normal "
        "unacknowledged becomes normal, a latched one is reset. Recorded as a plant-signed "
        "alert.acknowledged event naming you (docs/alerts.md).")
    ack.add_argument("alert_id", metavar="ID")
    ack.add_argument("--comment", help="a note kept with the acknowledgement")
    ack.add_argument("--json", action="store_true", help=_JSON_HELP)
    ack.set_defaults(fn=cmd_ack)

    shelve = subparsers.add_parser(
        "shelve", parents=[common], help="shelve an alert for a while (signed by you)",
        description="Shelve an alert for a time, with a reason, signed with LINETRACE_USER_KEY "
        "(supervisor, quality or admin). A shelved alert is not announced; when the time is up "
        f"it shows its state again by itself. A shelve lasts {_words(SHELVE_MIN)} to "
        f"{_words(SHELVE_MAX)} (ISA-18.2: shelving is time-limited).")
    shelve.add_argument("alert_id", metavar="ID")
    shelve.add_argument("--for", dest="duration", required=True, metavar="DURATION",
                        help="how long: 30m, 2h, 1h30m, 1d (s, m, h, d)")
    shelve.add_argument("--reason", required=True)
    shelve.add_argument("--json", action="store_true", help=_JSON_HELP)
    shelve.set_defaults(fn=cmd_shelve)

    unshelve = subparsers.add_parser(
        "unshelve", parents=[common], help="end an alert's shelve now (signed by you)",
        description="End a shelve before its time, signed with LINETRACE_USER_KEY (supervisor, "
        "quality or admin): the alert shows its state again.")
    unshelve.add_argument("alert_id", metavar="ID")
    unshelve.add_argument("--reason")
    unshelve.add_argument("--json", action="store_true", help=_JSON_HELP)
    unshelve.set_defaults(fn=cmd_unshelve)


def register_alert_subcommands(alerts: argparse._SubParsersAction[argparse.ArgumentParser],
                               common: argparse.ArgumentParser) -> None:
    """`alerts comment|out-of-service|return`, added to the `alerts` command's subparsers."""
    comment = alerts.add_parser(
        "comment", parents=[common], help="add a comment to an alert (signed by you)",
        description="Add a comment to an alert's record, signed with LINETRACE_USER_KEY "
        "(supervisor, quality or admin); the alert's state does not change.")
    comment.add_argument("alert_id", metavar="ID")
    comment.add_argument("text", metavar="TEXT")
    comment.add_argument("--json", action="store_true", help=_JSON_HELP)
    comment.set_defaults(fn=cmd_comment)

    oos = alerts.add_parser(
        "out-of-service", parents=[common], help="take an alert out of service (supervisor)",
        description="Take an alert out of service, with a reason (maintenance, a known-bad "
        "sensor), signed with LINETRACE_USER_KEY by a supervisor or admin: it is not announced "
        "until returned to service (`linetrace alerts return ID`).")
    oos.add_argument("alert_id", metavar="ID")
    oos.add_argument("--reason", required=True)
    oos.add_argument("--json", action="store_true", help=_JSON_HELP)
    oos.set_defaults(fn=cmd_out_of_service)

    ret = alerts.add_parser(
        "return", parents=[common], help="return an alert to service (supervisor)",
        description="Return an out-of-service alert to service, signed with "
        "LINETRACE_USER_KEY by a supervisor or admin: it shows its state again.")
    ret.add_argument("alert_id", metavar="ID")
    ret.add_argument("--reason")
    ret.add_argument("--json", action="store_true", help=_JSON_HELP)
    ret.set_defaults(fn=cmd_return)


def _words(d: timedelta) -> str:
    s = int(d.total_seconds())
    return f"{s // 3600} hours" if s >= 3600 else f"{s // 60} minute{'s' if s >= 120 else ''}"


def _run(args: argparse.Namespace, settings: Settings, action: Action, *,
         comment: str | None = None, reason: str | None = None, until: str | None = None
         ) -> int:
    """Sign the statement, record it, report; usage errors (an empty reason) before signing."""
    try:
        details = statement_details(action, comment=comment, reason=reason, until=until)
    except AlertError as e:
        raise ConfigurationError(e.message) from None
    plant, _ = load_or_create_plant_key(settings.keys_dir)
    ledger = open_ledger(settings)
    try:
        signed = sign_as(settings, ledger, STATEMENT_ACTION[action], args.alert_id, details)
        outcome = act(ledger, plant, signed, args.alert_id, action, comment=comment,
                      reason=reason, until=until)
        _report(args, outcome, publish_outbox(settings, ledger) if outcome.new else True)
        return 0
    finally:
        ledger.close()


def _report(args: argparse.Namespace, outcome: AlertOutcome, published: bool) -> None:
    if args.json:
        print_json(outcome.to_json())
        return
    say(outcome.message + ("" if published else
                           " (broker not reachable; the outbox publishes it later)"))


def cmd_ack(args: argparse.Namespace, settings: Settings) -> int:
    if args.comment is not None and not args.comment.strip():
        raise ConfigurationError("--comment is empty; give a comment or leave it out")
    return _run(args, settings, "acknowledge", comment=args.comment)


def cmd_shelve(args: argparse.Namespace, settings: Settings) -> int:
    duration = parse_duration(args.duration)
    try:
        until = shelve_until(duration, datetime.now(UTC))
    except AlertError as e:
        raise ConfigurationError(e.message) from None
    return _run(args, settings, "shelve", reason=args.reason, until=until)


def _optional_reason(text: str | None) -> str | None:
    if text is not None and not text.strip():
        raise ConfigurationError("--reason is empty; give a reason or leave it out")
    return text


def cmd_unshelve(args: argparse.Namespace, settings: Settings) -> int:
    return _run(args, settings, "unshelve", reason=_optional_reason(args.reason))


def cmd_comment(args: argparse.Namespace, settings: Settings) -> int:
    return _run(args, settings, "comment", comment=args.text)


def cmd_out_of_service(args: argparse.Namespace, settings: Settings) -> int:
    return _run(args, settings, "out_of_service", reason=args.reason)


def cmd_return(args: argparse.Namespace, settings: Settings) -> int:
    return _run(args, settings, "return_to_service", reason=_optional_reason(args.reason))
