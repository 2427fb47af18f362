"""The `linetrace` command: parses arguments, loads settings once, dispatches to the rooms."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from linetrace.schemas.errors import LinetraceError
from linetrace.streams.faults import FAULT_POINTS  # a pure module: no Faust, no Kafka

from . import ledger_cmds as lc
from . import line_cmds as ln
from . import query_cmds as qc
from .client_logs import quiet_client_logs
from .output import print_json, print_table, printable
from .settings import SETTINGS, ConfigurationError, Settings, load

Handler = Callable[[argparse.Namespace, Settings], int]

#: Modules under cli/ that add their own subcommands with `register(subparsers, common)`.
COMMAND_MODULES: tuple[str, ...] = ("routes_cmds", "burnin_cmds", "proof_cmds", "flags_cmds",
                                    "retention_cmds", "users_cmds", "hold_cmds",
                                    "validate_cmds", "alert_action_cmds", "alert_cmds",
                                    "spc_cmds", "console_cmds", "line_status_cmds")


def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    rows = settings.masked()
    if args.json:
        print_json({env: {"value": v, "source": src} for env, v, src, _ in rows})
    else:
        print_table([[env, v, src] for env, v, src, _ in rows], ["SETTING", "VALUE", "FROM"])
        if args.verbose:
            print()
            for s in SETTINGS:
                print(f"{s.env}\n    {s.doc}\n    default: {s.default}")
    return 0


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from .extras import need_extra
    from .routes_cmds import routes_in_force
    from .supervisor import run_up

    need_extra("worker")  # up runs the broker, the worker and the simulator
    routes_in_force(settings)  # before anything starts; worker and simulator check them again
    extra = ["--product", args.product, "--faults", args.faults]
    return run_up(settings, args.units, args.seed, args.until_idle, args.speed, extra,
                  conducted=not args.unconducted,
                  console=None if args.no_console else (
                      args.console_port if args.console_port is not None
                      else settings.console_port))


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=argparse.SUPPRESS,
                        help="data directory (default $LINETRACE_DATA_DIR, else ./linetrace-data)")
    p = argparse.ArgumentParser(prog="linetrace", parents=[common],
                                description="Orchestration and verifiable traceability for "
                                            "AI-server assembly lines.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Handler, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, parents=[common], help=help_, description=help_)
        sp.set_defaults(fn=fn)
        return sp

    c = add("config", cmd_config, "print the effective LINETRACE_* settings (secrets masked)")
    c.add_argument("--json", action="store_true")
    c.add_argument("-v", "--verbose", action="store_true", help="also describe every setting")

    up = add("up", cmd_up, "start broker, worker, line simulator and web console; print where "
             "to look")
    up.add_argument("--units", type=int, default=10)
    up.add_argument("--seed", type=int)
    up.add_argument("--speed", type=float, default=0.0,
                    help="simulated seconds per wall second (0 = as fast as possible)")
    up.add_argument("--until-idle", action="store_true",
                    help="stop once the line is drained and every unit left is on hold; "
                         "print the held units")
    up.add_argument("--unconducted", action="store_true",
                    help="the simulator routes and scraps failed units itself instead of "
                         "obeying linetrace (see docs/simulator.md)")
    up.add_argument("--product", choices=["A", "B", "mix"], default="A",
                    help="what the simulated line builds (see `linetrace simulate`)")
    up.add_argument("--faults", default="none",
                    help="faults to inject, e.g. hot-gpu,skip-step (see docs/simulator.md)")
    up.add_argument("--console-port", type=int, metavar="PORT",
                    help="the web console's port (default $LINETRACE_CONSOLE_PORT, else 8080; "
                         "if it is in use, a free one is taken and printed)")
    up.add_argument("--no-console", action="store_true",
                    help="do not start the web console (docs/console.md)")

    b = add("broker", ln.cmd_broker, "run the embedded Kafka-compatible broker and create topics")
    b.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    tp = add("topics", ln.cmd_topics,
             "check the topics and partition counts on the configured broker")
    tp.add_argument("--create", action="store_true",
                    help="create missing topics (a wrong count on your own Kafka is an error)")
    wk = add("worker", ln.cmd_worker, "run the Faust worker: ingest, ledger writer")
    # Fault injection for the recovery tests only (never documented as a feature).
    wk.add_argument("--fault-inject", choices=sorted(FAULT_POINTS), help=argparse.SUPPRESS)
    sim = add("simulate", ln.cmd_simulate, "simulate the line against the configured broker")
    sim.add_argument("--units", type=int, default=10, help="servers to build")
    sim.add_argument("--seed", type=int)
    sim.add_argument("--speed", type=float, default=0.0,
                     help="simulated seconds per wall second (0 = as fast as possible)")
    sim.add_argument("--rate", type=float, default=0.0, help="max events/s sent (0 = no cap)")
    sim.add_argument("--product", choices=["A", "B", "mix"], default="A",
                     help="A (8-GPU HGX + its PCBA), B (8-card PCIe) or mix (A, B alternating)")
    sim.add_argument("--faults", default="none",
                     help="comma-separated faults of DOMAIN.md §9, each optionally NAME:N (the "
                          "server, lot or PCBA it strikes), or none; see docs/simulator.md")
    sim.add_argument("--burnin-seconds", type=int, default=60,
                     help="simulated seconds of burn-in telemetry per unit (default 60)")
    sim.add_argument("--start", help="simulated start time, RFC 3339 (default "
                                     "2026-01-05T06:00:00Z); event times follow from it")
    sim.add_argument("--conducted", action="store_true",
                     help="obey linetrace: its routes, dispositions, locks and interlock decide "
                          "what failed units do (the default under `linetrace up`)")

    u = add("units", qc.cmd_units, "list units with state and step")
    u.add_argument("--json", action="store_true")
    u.add_argument("--kind", choices=["server", "assembly"])
    u.add_argument("--state")
    u.add_argument("--product")
    t = add("trace", qc.cmd_trace, "one unit's genealogy: parts (as-built tree) and operations")
    t.add_argument("serial")
    t.add_argument("--json", action="store_true")

    rc = add("recall", qc.cmd_recall,
             "every unit that contains or ever contained a lot, part serial or MPN")
    which = rc.add_mutually_exclusive_group(required=True)
    which.add_argument("--lot")
    which.add_argument("--part", help="a part serial")
    which.add_argument("--mpn")
    rc.add_argument("--from", dest="since", help="installed at or after (RFC 3339)")
    rc.add_argument("--to", dest="until", help="installed at or before (RFC 3339)")
    rc.add_argument("--json", action="store_true")
    w = add("wip", qc.cmd_wip, "work in progress: open units by step and state")
    w.add_argument("--json", action="store_true")
    qc.add_rejected(sub, common)
    lots = sub.add_parser("lots", help="received lots").add_subparsers(dest="lots_cmd",
                                                                       required=True)
    lsh = lots.add_parser("show", parents=[common], help="a lot's receipt, checks and use")
    lsh.add_argument("lot")
    lsh.add_argument("--json", action="store_true")
    lsh.set_defaults(fn=qc.cmd_lots_show)

    db = sub.add_parser("db", help="the ledger database schema").add_subparsers(
        dest="db_cmd", required=True)
    dbu = db.add_parser("upgrade", parents=[common], help="migrate the ledger schema (Alembic)")
    dbu.add_argument("revision", nargs="?", default="head")
    dbu.set_defaults(fn=lc.cmd_db_upgrade)
    dbs = db.add_parser("status", parents=[common], help="schema revision vs what is needed")
    dbs.set_defaults(fn=lc.cmd_db_status)

    keys = sub.add_parser("keys", help="the plant key").add_subparsers(dest="keys_cmd",
                                                                       required=True)
    ki = keys.add_parser("init", parents=[common], help="create the plant key if absent")
    ki.set_defaults(fn=lc.cmd_keys_init)

    st = sub.add_parser("stations", help="station keys and enrolment").add_subparsers(
        dest="stations_cmd", required=True)
    kg = st.add_parser("keygen", parents=[common], help="generate a station key pair")
    kg.add_argument("--out", default="station.key", help="private key file (PEM, 0600)")
    kg.set_defaults(fn=lc.cmd_stations_keygen)
    en = st.add_parser("enroll", parents=[common],
                       help="register a station's public key (plant-signed station.enrolled)")
    en.add_argument("station_id")
    en.add_argument("--type", required=True, help="station type, e.g. smt, ict, burnin")
    en.add_argument("--public-key", required=True, help="PEM or base64 of the 32 raw bytes")
    en.set_defaults(fn=lc.cmd_stations_enroll)
    ls = st.add_parser("list", parents=[common], help="enrolled stations and their keys")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(fn=lc.cmd_stations_list)
    ro = st.add_parser("rotate", parents=[common],
                       help="enrol a new key for an enrolled station (old events stay verifiable)")
    ro.add_argument("station_id")
    ro.add_argument("--public-key", required=True)
    ro.add_argument("--revoke-old", action="store_true",
                    help="also revoke the station's other keys after their last accepted event")
    ro.set_defaults(fn=lc.cmd_stations_rotate)
    rv = st.add_parser("revoke", parents=[common],
                       help="revoke a station key; its later events are quarantined")
    rv.add_argument("station_id")
    rv.add_argument("--keyid", required=True)
    rv.add_argument("--reason")
    rv.set_defaults(fn=lc.cmd_stations_revoke)
    ss = st.add_parser("show", parents=[common], help="a station's keys, states and faults")
    ss.add_argument("station_id")
    ss.add_argument("--json", action="store_true")
    ss.set_defaults(fn=qc.cmd_stations_show)

    import importlib

    for name in COMMAND_MODULES:
        module = importlib.import_module(f"linetrace.cli.{name}")
        module.register(sub, common)
    return p


#: Codes of errors the person at the keyboard fixes by changing the command line or the
#: settings: exit 2, as argparse does for its own usage errors. Every other LinetraceError is
#: a failed check or operation: exit 1. docs/errors.md lists them.
USAGE_CODES = frozenset({
    "config.invalid", "db.config", "db.missing", "db.schema_out_of_date", "db.schema_unknown",
    "route.invalid", "route.unreadable", "route.unknown_product", "recall.query",
    "evidence.exists", "simulator.unknown_product", "simulator.invalid_config",
    "simulator.unknown_fault", "simulator.invalid_fault", "burnin.invalid_config",
    "burnin.unknown_fault", "burnin.unknown_sku",
})


def exit_status(e: LinetraceError) -> int:
    """2 for a usage or configuration error, 1 for a failed check or operation."""
    return 2 if isinstance(e, ConfigurationError) or e.code in USAGE_CODES else 1


def report_error(e: LinetraceError) -> int:
    """Print `linetrace: <message> [<code>]` on stderr (and say when retrying may help)."""
    retry = " (retriable: the same command may succeed later)" if e.retriable else ""
    print(f"linetrace: {printable(e.message)} [{e.code}]{retry}", file=sys.stderr)
    return exit_status(e)


#: Commands that do the line's work and so export telemetry when OTEL_*_EXPORTER asks.
TRACED_COMMANDS = frozenset({"worker", "simulate", "burnin", "broker"})


def burnin_argv(argv: Sequence[str]) -> list[str]:
    """`linetrace burnin --unit S ...` (before `burnin run` and `burnin show` existed) still
    runs a burn-in: `burnin` followed by anything but a subcommand or help becomes `burnin run`."""
    out = list(argv)
    i = 0
    while i < len(out):
        token = out[i]
        if token == "--data-dir":
            i += 2
            continue
        if token.startswith("-"):
            i += 1
            continue
        if token == "burnin" and (i + 1 >= len(out) or out[i + 1] not in (
                "run", "show", "-h", "--help")):
            out.insert(i + 1, "run")
        return out
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(burnin_argv(sys.argv[1:] if argv is None else argv))
    try:
        settings = load(data_dir=getattr(args, "data_dir", None))
    except ConfigurationError as e:
        return report_error(e)
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))
    quiet_client_logs()  # a broker outage: one line when it starts, a summary when it ends
    try:
        if getattr(args, "command", None) in TRACED_COMMANDS:
            from .telemetry import configure

            configure(os.environ, f"linetrace-{args.command}")
        rc: int = args.fn(args, settings)
        return rc
    except BrokenPipeError:  # `linetrace ... | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return 0
    except LinetraceError as e:  # every error of every room: code, message, exit 1 or 2
        return report_error(e)


if __name__ == "__main__":
    sys.exit(main())
