"""`linetrace alerts`: the ISA-18.2 alerts, their history and the alarm-system KPIs (issue 12).

Contract (docs/alerts.md): `linetrace alerts [--state S] [--json]` prints a list of
`{id, condition, subject, priority, state, occurrences, raised, updated, message, action}`
(plus added fields); without `--state` every alert not in `normal`, `--state all` every one.
`linetrace alerts kpi [--json]` and `linetrace alerts show ID [--json]`. Operator actions
(`ack`, `shelve`, `alerts comment`, ...) are registered by `alert_action_cmds`.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

from linetrace.ledger.alerts.conditions import STATES

from . import alert_action_cmds
from .output import print_json, print_table, say
from .settings import Settings

ALL = "all"
_FIELDS = ("id, condition, subject, priority, state, occurrences, raised, updated, message, "
           "action")


def _duration(text: str) -> timedelta:
    """`30m`, `24h`, `7d` (or plain seconds) for `--since`."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip().lower()
    try:
        if t and t[-1] in units:
            value = float(t[:-1]) * units[t[-1]]
        else:
            value = float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: write e.g. 30m, 24h or 7d") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the window must be longer than zero")
    return timedelta(seconds=value)


def _short(text: str, width: int = 72) -> str:
    """A message cut for the table (`alerts show ID` and `--json` give it whole)."""
    return text if len(text) <= width else text[: width - 3] + "..."


def _flood_banner(flood: Any) -> str:
    from linetrace.ledger.genealogy import iso

    return (f"ALARM FLOOD since {iso(flood.start)} (peak {flood.peak} alarms in 10 min): "
            "work the high-priority alarms first; `linetrace alerts kpi` shows the top alarms")


def cmd_alerts(args: argparse.Namespace, settings: Settings) -> int:
    from linetrace.ledger.alerts.kpi import in_flood
    from linetrace.ledger.alerts.views import list_alerts
    from linetrace.ledger.line_clock import line_clock

    from .query_cmds import read_ledger

    ledger = read_ledger(settings)
    try:
        with ledger.reader() as s:
            views = list_alerts(s, args.state)
            flood = in_flood(s, line_clock(s, datetime.now(UTC)))
    finally:
        ledger.close()
    if args.json:
        print_json([v.to_json() for v in views])
        return 0
    if flood is not None:
        say(_flood_banner(flood))
    if not views:
        say("no alerts" + ("" if args.state == ALL else
                           f" in state {args.state}" if args.state else " outside normal"))
        return 0
    rows = [[v.id, v.priority, v.state + (" (chattering)" if v.chattering else ""),
             v.occurrences, v.to_json()["raised"], v.condition, v.subject, _short(v.message)]
            for v in views]
    print_table(rows, ["ID", "PRIORITY", "STATE", "N", "RAISED", "CONDITION", "SUBJECT",
                       "MESSAGE"])
    say(f"{len(views)} alert{'s' if len(views) != 1 else ''}; `linetrace alerts show ID` for "
        "one alert's history and what to do")
    return 0


def cmd_kpi(args: argparse.Namespace, settings: Settings) -> int:
    from linetrace.ledger.alerts.kpi import kpis
    from linetrace.ledger.line_clock import line_clock

    from .query_cmds import read_ledger

    ledger = read_ledger(settings)
    try:
        with ledger.reader() as s:
            k = kpis(s, line_clock(s, datetime.now(UTC)), args.since)
    finally:
        ledger.close()
    doc = k.to_json()
    if args.json:
        print_json(doc)
        return 0
    if k.flood:
        say(_flood_banner(next(f for f in k.floods if f.end is None)))
    rate = doc["alarms_per_10min"]
    mix = doc["priority_mix"]
    rows: list[list[Any]] = [
        ["window", f"{doc['since']} .. {doc['until']}", ""],
        ["alarms", k.alarms, ""],
        ["alarms per 10 min (average)", rate["average"], "<= 1"],
        ["alarms per 10 min (last 10 min)", rate["current"], "<= 1"],
        ["peak 10-min count", rate["peak"], "<= 10 (more is a flood)"],
        ["priority mix low/medium/high %",
         f"{mix['low']}/{mix['medium']}/{mix['high']}", "80/15/5"],
        ["top-10 alerts' share of alarms %", k.top10_share, ""],
        ["stale (active > 24 h)", len(k.stale), "0"],
        ["chattering alerts", len(k.chattering), "0"],
        ["flood periods", len(k.floods), "0"],
    ]
    print_table(rows, ["KPI", "VALUE", "TARGET (EEMUA 191)"])
    if k.top10:
        say()
        print_table([[t["id"], t["alarms"], t["condition"], t["subject"]] for t in k.top10],
                    ["TOP ALERT", "ALARMS", "CONDITION", "SUBJECT"])
    for f in k.floods:
        say(f"flood {f.to_json()['start']} .. {f.to_json()['end'] or 'now'} peak {f.peak}")
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    from linetrace.ledger.alerts.views import alert_document, get_alert

    from .query_cmds import read_ledger

    ledger = read_ledger(settings)
    try:
        with ledger.reader() as s:
            view = get_alert(s, args.alert_id)
            doc = alert_document(s, args.alert_id)
    finally:
        ledger.close()
    if args.json:
        print_json(doc)
        return 0
    say(f"{view.id}  {view.priority.upper()}  {view.state}"
        + ("  (chattering)" if view.chattering else ""))
    say(f"  {view.condition} on {view.subject}: {view.message}")
    say(f"  what to do: {view.action}")
    say(f"  occurrences {view.occurrences}; raised {doc['raised']}; updated {doc['updated']}"
        + (f"; shelved until {doc['shelved_until']}" if view.shelved_until else ""))
    for name in ("unit", "station", "lot", "parent"):
        if doc[name]:
            say(f"  {name}: {doc[name]}")
    say()
    print_table([[h["time"], h["occurrence"], h["transition"], h["state"], h["by"] or "-",
                  h["note"] or ""] for h in doc["history"]],
                ["TIME", "OCC", "TRANSITION", "STATE", "BY", "NOTE"])
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    help_ = ("the ISA-18.2 alerts: every one not normal (or --state S), the most urgent "
             "first; `alerts kpi`, `alerts show ID`")
    p = sub.add_parser("alerts", parents=[common], help=help_, description=help_)
    p.add_argument("--state", choices=[*STATES, ALL],
                   help="only alerts in this state (all: every alert, normal included)")
    p.add_argument("--json", action="store_true", help=f"print a list of {{{_FIELDS}, ...}}")
    p.set_defaults(fn=cmd_alerts)
    alerts = p.add_subparsers(dest="alerts_command", required=False, metavar="SUBCOMMAND")

    kpi_help = ("alarm-system KPIs (EEMUA 191 / ISA-18.2): alarms per 10 min, peak, priority "
                "mix, stale, top-10 share, chattering, floods")
    k = alerts.add_parser("kpi", parents=[common], help=kpi_help, description=kpi_help)
    k.add_argument("--since", type=_duration, default=timedelta(hours=24),
                   help="the window, back from the line clock (the latest event time; e.g. "
                        "1h, 24h, 7d; default 24h)")
    k.add_argument("--json", action="store_true")
    k.set_defaults(fn=cmd_kpi)

    show_help = "one alert: its state, what to do, and every transition (who, when, why)"
    sh = alerts.add_parser("show", parents=[common], help=show_help, description=show_help)
    sh.add_argument("alert_id", metavar="ID")
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(fn=cmd_show)

    alert_action_cmds.register_alert_subcommands(alerts, common)  # comment, out-of-service, ...
