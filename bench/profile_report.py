"""Where the time goes: py-spy's collapsed stacks (`--format raw --threads --idle`) as tables.

    .venv/bin/python -m bench.profile_report FILE [--top 15] [--events N] [--rate 200]
        [--thread NAME] [--markdown]

Prints, from one profile:

1. **threads**: samples per thread (at `--rate` Hz, samples / rate = seconds of wall time),
   the share of them spent waiting (the innermost Python frame is a known blocking point: the
   event loop's `select`, an executor thread waiting for work, a lock or future wait, a
   driver waiting for its server), and the top component of the busy rest;
2. **components per thread**: every sample is charged to the deepest frame that matches one
   of `COMPONENTS` (our code's parts: screening and its decode / schema / Ed25519, the
   writer's ORM objects, projections, dedupe lookups, log append, stages, seal / CycloneDX,
   the relay; Faust's per-event machinery: stream buffers, take_events, Event / Message
   objects, acks; aiokafka), with the layer the time is actually spent in (`LAYERS`, by the
   innermost frame: SQLAlchemy ORM / Core, the database driver, Faust, mode, aiokafka, asyncio,
   json, ...);
3. **top functions**: inclusive (the function is anywhere on the stack, counted once per
   sample) and self (innermost frame) sample counts of busy samples, with the thread.

`--events N` adds microseconds of wall time per event (samples / rate / N). py-spy samples
wall time: a thread waiting for the interpreter lock shows the frame it waits in as busy.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

#: (label, regex on a frame "function (file:line)"); a sample goes to the DEEPEST match.
COMPONENTS: list[tuple[str, str]] = [
    # Faust / mode: the per-event machinery of the agents' path (function markers only, so
    # a deeper generic faust/ frame never hides them)
    ("faust: fetcher loop (_drain_messages, wait_first: new tasks per poll)",
     r"^(Fetcher\._fetcher|Consumer\._drain_messages|Service\.wait_first) \("),
    ("faust: records from its consumer thread (getmany, _to_message, highwater)",
     r"^(Consumer\.getmany|ThreadDelegateConsumer\.\w+|AIOKafkaConsumerThread\.\w+"
     r"|Consumer\._to_message) \("),
    ("faust: on_message (key/value decode, create_event, buffer checks, queue put)",
     r"^Conductor\._compile_message_handler"),
    ("faust: stream drainer (queue get, sensors, current event)",
     r"^(Stream\._c_aiter|Stream\._passive_drainer|Channel\.__anext__) \("),
    ("faust: take_events and acks", r"^(Stream\.take_events|Stream\.ack|Event\.ack|Message\.ack"
                                    r"|Consumer\.ack) \("),
    ("faust: offset commits", r"^(Consumer\._commit_handler|Consumer\.commit|Consumer\._commit"
                              r"\w*|Consumer\.force_commit) \("),
    ("faust: agent actor", r"^Agent\.\w+ \(faust/agents/"),
    ("faust: producer buffer (publish; on_message checks it per record)",
     r"\(faust/transport/producer\.py|\(faust/topics\.py"),
    ("aiokafka: fetcher (consumer thread)", r"\(aiokafka/consumer/"),
    ("aiokafka: producer (publish)", r"\(aiokafka/producer/"),
    ("aiokafka: connection, protocol", r"\(aiokafka/(conn|client|protocol|record)"),
    # our code, the agents' side
    ("worker: agents, batch handling (processor, hand-off to the writer)",
     r"\((linetrace/)?streams/processor\.py|^(build_app\.<locals>\.\w+|process_until_done"
     r"|_observe_lag) \("),
    ("screening (other: screen, key lookup, partition check)",
     r"^screen \(|\((linetrace/)?streams/ingest\.py"),
    ("screening: duplicate-key and depth check (check_json: json.loads with a hook)",
     r"^check_json \("),
    ("screening: decode (msgspec envelope and body)",
     r"^decode_event \(|\((linetrace/)?schemas/envelope\.py"),
    ("screening: schema (bodies)", r"\((linetrace/)?schemas/bodies\.py|\(pydantic"),
    ("screening: Ed25519 verify", r"^verify_value \(|^read_signature \(|^check_headers \("),
    ("screening: key directory", r"\((linetrace/)?streams/keydir|KeyDirectory"),
    # our code, the writer's side
    ("writer: dedupe lookups (_existing: events by source and id)",
     r"^(_existing|keys_in|existing_keys) \("),
    ("writer: position and revocation checks", r"^(_positions|_revoked) \("),
    ("writer: upserts (station and ingest positions)", r"^upsert \("),
    ("writer: transaction begin and commit", r"^Ledger\.transaction \("),
    ("writer: log head lock", r"^lock_head \("),
    ("writer: rejections", r"^record_rejections \("),
    ("writer: pending seals", r"\((linetrace/)?ledger/pending\.py"),
    ("writer (other)", r"^write_batch \(|^store_events \(|\((linetrace/)?ledger/writer\.py"),
    ("writer: projections", r"\((linetrace/)?ledger/(projections|unit_state|lookups)\.py"),
    ("writer: telemetry store", r"\((linetrace/)?ledger/telemetry_store\.py"),
    ("writer: log append (Merkle)", r"\((linetrace/)?ledger/(log|proof/merkle|proof/leaf)\.py"),
    ("writer: checkpoints", r"\((linetrace/)?ledger/proof/checkpoints\.py"),
    ("writer: stages", r"\((linetrace/)?streams/(stages|system_stage|time_flags|line_clock)\.py"),
    ("writer: seal / CycloneDX", r"\((linetrace/)?ledger/(seals|proof/hbom)\.py|cyclonedx"),
    ("writer: positions", r"\((linetrace/)?ledger/positions\.py"),
    ("outbox (ledger/outbox.py: enqueue in the writer, take / mark sent in the relay)",
     r"\((linetrace/)?ledger/outbox\.py"),
    ("relay", r"\((linetrace/)?streams/relay\.py"),
]

#: (component, regex on the frame right below its marker, finer component).
REFINE: list[tuple[str, str, str]] = [
    ("writer (other)", r"^Session\.flush \(",
     "writer: ORM flush in store_events (events INSERT, projected rows)"),
    ("writer (other)", r"^(__init__|Session\.add) \(", "writer: EventRow objects (construct, add)"),
]

#: (label, regex on the innermost frame): where the time is spent, whoever asked for it.
WAITS: list[tuple[str, str]] = [
    ("wait: event loop idle (select)", r"^(Epoll|Poll|Select|Kqueue)?Selector\.select \("),
    ("wait: executor thread idle", r"^_worker \(concurrent/futures/thread\.py"),
    ("wait: lock / future / queue", r"^(wait|_wait_for_tstate_lock|join|get|acquire|result)"
                                    r" \((threading|queue|concurrent/futures/_base)\.py"),
    ("wait: sleep", r"^(sleep|_sleep) \("),
    ("wait: PostgreSQL round trip", r"\(psycopg/(waiting|_wait)|^wait_c \(|^_wait_conn"
                                    r"|^(Async)?Connection\.wait \(psycopg/"),
]
LAYERS: list[tuple[str, str]] = [
    ("database driver (SQLite C, psycopg)", r"^DefaultDialect\.do_(execute|executemany|commit"
                                            r"|rollback|begin)|\(psycopg/|\(sqlite3/"),
    ("SQLAlchemy ORM", r"\(sqlalchemy/orm/"),
    ("SQLAlchemy Core", r"\(sqlalchemy/"),
    ("Ed25519 (C)", r"^verify_value \(|^sign_value \("),
    ("json", r"\(json/"),
    ("faust", r"\(faust/"),
    ("mode", r"\(mode/"),
    ("aiokafka", r"\(aiokafka/"),
    ("asyncio", r"\(asyncio/"),
    ("our code", r"\((linetrace/)?(ledger|streams|schemas|cli)/"),
    ("import / start-up", r"<frozen importlib"),
]


@dataclass
class Profile:
    samples: dict[str, Counter[tuple[str, ...]]] = field(
        default_factory=lambda: defaultdict(Counter))

    @property
    def threads(self) -> list[str]:
        return sorted(self.samples, key=lambda t: -sum(self.samples[t].values()))


def thread_label(name: str) -> str:
    """Thread names, with their roles: executor threads are numbered, Faust's is Thread-N."""
    role = {"MainThread": "event loop", "asyncio": "default executor",
            "ledger-writer": "writer", "outbox-relay": "relay"}
    base = re.sub(r"_\d+$", "", name)
    if base in role:
        return f"{name} ({role[base]})"
    if re.fullmatch(r"Thread-\d+", name):
        return f"{name} (Faust consumer thread)"
    return name


def load(path: Path) -> Profile:
    """py-spy raw lines `thread (TID): NAME;frame;...;frame COUNT`; a thread seen before it
    was named gets the name it carries elsewhere."""
    names: dict[str, str] = {}
    raw: list[tuple[str, tuple[str, ...], int]] = []
    for line in path.read_text().splitlines():
        text, _, count = line.rpartition(" ")
        if not text or not count.isdigit():
            continue
        frames = text.split(";")
        head = frames[0]
        m = re.match(r"thread \((\w+)\)(?:: (.*))?$", head)
        if m is None:  # no --threads: one pseudo-thread
            raw.append(("all", tuple(frames), int(count)))
            continue
        tid, name = m.group(1), m.group(2)
        if name:
            names[tid] = name
        raw.append((tid, tuple(frames[1:]), int(count)))
    prof = Profile()
    for tid, stack, k in raw:
        prof.samples[thread_label(names.get(tid, f"thread {tid}"))][stack] += k
    return prof


def first(rules: list[tuple[str, str]], frame: str) -> str | None:
    for label, rx in rules:
        if re.search(rx, frame):
            return label
    return None


def waiting(frames: tuple[str, ...]) -> str | None:
    return first(WAITS, frames[-1]) if frames else None


def component(frames: tuple[str, ...]) -> str:
    for j in range(len(frames) - 1, -1, -1):
        if (label := first(COMPONENTS, frames[j])) is not None:
            for parent, rx, finer in REFINE:
                if parent == label and j + 1 < len(frames) and re.search(rx, frames[j + 1]):
                    return finer
            return label
    where = layer(frames)
    if where == "asyncio":  # nobody's frame below the loop: its own work
        return "event loop itself (_run_once, handles, wake-ups, socket reads)"
    return f"unattributed ({where})"


def layer(frames: tuple[str, ...]) -> str:
    for frame in reversed(frames):
        if (label := first(LAYERS, frame)) is not None:
            return label
    return "stdlib / other"


def part(component_label: str) -> str:
    """`faust: on_message (...)` -> `faust`; `writer (other)` -> `writer`."""
    return re.split(r"[:(]", component_label, maxsplit=1)[0].strip()


def func(frame: str) -> str:
    """`f (file:line)` -> `f (file)`: one row per function, not per line."""
    return re.sub(r":\d+\)$", ")", frame)


def table(rows: list[tuple[str, ...]], markdown: bool) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    if markdown:
        out = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
        return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows[1:]])
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def pct(a: float, b: float) -> str:
    return f"{100 * a / b:.1f}%" if b else "-"


def report(prof: Profile, top: int, events: int | None, rate: float, only: str | None,
           markdown: bool) -> str:
    threads = [t for t in prof.threads if only is None or only in t]
    total = sum(sum(prof.samples[t].values()) for t in threads)
    out: list[str] = []

    def us(n: int) -> str:
        return f"{n / rate / events * 1e6:,.0f}" if events else "-"

    rows: list[tuple[str, ...]] = [("thread", "samples", "s", "waiting", "busy",
                                    "busy us/event", "top busy component")]
    for t in threads:
        c = prof.samples[t]
        n = sum(c.values())
        idle = sum(k for f, k in c.items() if waiting(f))
        comps = Counter[str]()
        for f, k in c.items():
            if not waiting(f):
                comps[component(f)] += k
        best = comps.most_common(1)
        rows.append((t, f"{n:,}", f"{n / rate:.1f}", pct(idle, n), pct(n - idle, n),
                     us(n - idle),
                     f"{best[0][0]} ({pct(best[0][1], n)})" if best else "-"))
    out += ["Threads (share of each thread's own samples):", "", table(rows, markdown), ""]

    main = [t for t in threads if sum(prof.samples[t].values()) >= total * 0.02]
    grouped: dict[str, Counter[str]] = defaultdict(Counter)
    for t in main:
        for f, k in prof.samples[t].items():
            grouped[part(waiting(f) or component(f))][t] += k
    rows = [("part", *(t.split(" ")[0] for t in main))]
    for name in sorted(grouped, key=lambda x: -sum(grouped[x].values())):
        rows.append((name, *(pct(grouped[name][t], sum(prof.samples[t].values()))
                             if grouped[name][t] else "" for t in main)))
    out += ["Parts (components grouped by what precedes the colon), share of each thread:", "",
            table(rows, markdown), ""]

    for t in threads:
        c = prof.samples[t]
        n = sum(c.values())
        if n < total * 0.02:
            continue
        parts: Counter[str] = Counter()
        layers: dict[str, Counter[str]] = defaultdict(Counter)
        for f, k in c.items():
            w = waiting(f)
            key = w or component(f)
            parts[key] += k
            if not w:
                layers[key][layer(f)] += k
        rows = [("component", "samples", "of thread", "us/event", "spent in (innermost layer)")]
        for key, k in parts.most_common(top):
            spent = ", ".join(f"{lay} {pct(m, k)}" for lay, m in layers[key].most_common(3))
            rows.append((key, f"{k:,}", pct(k, n), us(k), spent or "-"))
        out += [f"Components of {t} ({n:,} samples):", "", table(rows, markdown), ""]

    incl: Counter[tuple[str, str]] = Counter()
    self_: Counter[tuple[str, str]] = Counter()
    busy = 0
    for t in threads:
        for f, k in prof.samples[t].items():
            if waiting(f) or not f:
                continue
            busy += k
            for fn in {func(x) for x in f}:
                incl[(t, fn)] += k
            self_[(t, func(f[-1]))] += k
    for title, counter in (("inclusive", incl), ("self", self_)):
        rows = [("function", "thread", "samples", "of busy samples", "us/event")]
        skip = re.compile(r"^(Thread\.|_worker |_WorkItem|BaseEventLoop\.run|BaseEventLoop\._run"
                          r"|Handle\._run|<module>|_run_module|_run_code|WorkerThread|"
                          r"ServiceThread\._start|Worker\.|.*execute_from_commandline|main |cmd_worker |run_worker )")
        picked = [(k, v) for k, v in counter.most_common() if title == "self"
                  or not skip.match(k[1])][:top]
        for (t, fn), k in picked:
            rows.append((fn, t.split(" ")[0], f"{k:,}", pct(k, busy), us(k)))
        out += [f"Top functions, {title} (busy samples of all threads: {busy:,}):", "",
                table(rows, markdown), ""]
    return "\n".join(out)


def main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", type=Path)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--events", type=int, help="records drained while profiling")
    ap.add_argument("--rate", type=float, default=200.0, help="py-spy's -r")
    ap.add_argument("--thread", help="only threads whose label contains this")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(None if argv is None else list(argv))
    print(report(load(args.file), args.top, args.events, args.rate, args.thread,
                 args.markdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
