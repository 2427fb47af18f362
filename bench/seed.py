"""Seed the genealogy tables at plant scale with bulk inserts, straight from the build plan.

Going through the writer would take hours at 100,000 servers; the point here is query latency
over tables of realistic size and shape, so rows are generated as tuples that match what the
projections write (same columns, same time format) and loaded with one executemany per table
and chunk on SQLite and COPY on PostgreSQL. Event values are real encoded events of one
template server with the envelope's id, subject, time and stationseq replaced (~650 bytes).

Rows are sorted by time within each chunk of servers, so the rows of one unit are interleaved
with those of the hundreds of units in work at the same time, as they are on a real line.
"""

from __future__ import annotations

import json
import operator
import os
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from linetrace.ledger.models import Base
from linetrace.schemas.envelope import encode_event

from . import plant

EPOCH = datetime(1970, 1, 1)
TEMPLATE_SERVER = 7  # a repaired server: its plan holds every kind of event
BULK_TABLES = ("units", "operations", "installs", "tests", "measurements", "firmware",
               "events", "lots")
COLUMNS = {t: [c.name for c in Base.metadata.tables[t].columns] for t in BULK_TABLES}
_ENVELOPE_KEYS = (b'"id":"', b'"time":"', b'"subject":"', b'"stationseq":"')


def ts(us: int) -> str:
    """The stored form of a time: what SQLAlchemy writes on SQLite, UTC text for PG's COPY."""
    return (EPOCH + timedelta(microseconds=us)).isoformat(" ", "microseconds")


def ts_env(us: int) -> str:
    """The envelope's form of a time (RFC 3339 UTC, milliseconds)."""
    return env_of(ts(us))


def env_of(stored: str) -> str:
    return f"{stored[:10]}T{stored[11:23]}Z"


def rand_uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


@dataclass(frozen=True)
class Shape:
    servers: int
    gpu_lot_units: int = 800
    in_progress: float = 0.03  # the newest servers are still on the line (at burn-in)
    packed: float = 0.02


@dataclass(frozen=True)
class Slot:
    """One position of the template plan: what every server emits there, and when."""

    planned: plant.Planned
    on_pcba: bool
    dt_us: int
    parts: tuple[bytes, ...]  # template value split around id, time, subject, stationseq


def _split(value: bytes) -> tuple[bytes, ...]:
    parts: list[bytes] = []
    rest = value
    for key in _ENVELOPE_KEYS:
        head, sep, tail = rest.partition(key)
        assert sep, f"template has no {key!r}"
        parts.append(head + sep)
        rest = tail[tail.index(b'"'):]
    parts.append(rest)
    return tuple(parts)


def template(shape: Shape) -> list[Slot]:
    start = plant.server_start_us(TEMPLATE_SERVER, shape.servers)
    slots = []
    for p in plant.build_plan(TEMPLATE_SERVER, shape.servers, shape.gpu_lot_units, "WO-0"):
        value = encode_event(event_type=p.type, source=p.source, subject=p.subject, body=p.body,
                             time=ts_env(p.t_us), stationseq=p.t_us,
                             event_id="00000000-0000-4000-8000-000000000000")
        slots.append(Slot(p, p.subject.startswith("MB-"), p.t_us - start, _split(value)))
    return slots


class Generator:
    """Tuples for every bulk table, server by server; ids continue across chunks."""

    def __init__(self, shape: Shape, seed: int = 1782) -> None:
        self.shape = shape
        self.rng = random.Random(seed)
        self.slots = template(shape)
        self.bom = plant.server_bom(shape.gpu_lot_units)
        self.next = {"installs": 1, "operations": 1, "tests": 1, "measurements": 1,
                     "firmware": 1, "events": 1}
        self.keyids = {s: zlib.crc32(s.encode()).to_bytes(8, "big").hex()
                       for s in {sl.planned.source for sl in self.slots}}
        self.measure = {m: [(f"{m} suite", x.name, x.value, x.unit, x.expected, x.min, x.max)
                            for x in plant.measurements(m)] for m in ("ICT", "FCT", "Burnin")}
        self.test_detail = {m: json.dumps({"fixture": f"FX-{m}-0007", "tests": [
            {"name": f"{m} suite", "result": "Passed"}]}) for m in ("ICT", "FCT", "Burnin")}

    def _id(self, table: str) -> int:
        n = self.next[table]
        self.next[table] = n + 1
        return n

    def state(self, i: int) -> str:
        n = self.shape.servers
        if i >= n * (1 - self.shape.in_progress):
            return "in_progress"
        if i >= n * (1 - self.shape.in_progress - self.shape.packed):
            return "packed"
        return "shipped"

    def chunk(self, lo: int, hi: int) -> dict[str, list[tuple[object, ...]]]:
        rows: dict[str, list[tuple[object, ...]]] = {t: [] for t in BULK_TABLES if t != "lots"}
        for i in range(lo, hi):
            self._server(i, rows)
        for table, key in (("operations", 8), ("installs", 12), ("tests", 4),
                           ("firmware", 8), ("events", 5)):
            rows[table].sort(key=operator.itemgetter(key))  # every row has its time there
            ids = sorted(int(r[0]) for r in rows[table])  # type: ignore[call-overload]
            if table in ("tests",):
                continue  # measurements point at test ids: keep them
            rows[table] = [(n, *r[1:]) for n, r in zip(ids, rows[table])]
        return rows

    def _server(self, i: int, rows: dict[str, list[tuple[object, ...]]]) -> None:
        srv, mb = plant.server_serial(i), plant.pcba_serial(i)
        state = self.state(i)
        start = plant.server_start_us(i, self.shape.servers)
        wo = f"WO-{i // 200:05d}"
        product = plant.PRODUCTS[i % len(plant.PRODUCTS)]
        part = zlib.crc32(srv.encode()) % 8
        rng = self.rng
        times, ids, keep = [], [], []
        for sl in self.slots:
            p = sl.planned
            ok = ((not p.repair or plant.repaired(i))
                  and (state != "in_progress" or sl.on_pcba or p.step <= 80)
                  and (state != "packed" or p.type != "unit.shipped"))
            keep.append(ok)
            times.append(start + sl.dt_us)
            ids.append(rand_uuid(rng))
        T = [ts(t) for t in times]
        started: dict[tuple[bool, int], int] = {}
        installed: dict[tuple[bool, int], int] = {}
        last = {True: 0, False: 0}
        ev, tests, meas, fw = rows["events"], rows["tests"], rows["measurements"], rows["firmware"]
        for k, sl in enumerate(self.slots):
            if not keep[k]:
                continue
            p, subject = sl.planned, (mb if sl.on_pcba else srv)
            last[sl.on_pcba] = k
            a = sl.parts
            value = b"".join((a[0], ids[k].encode(), a[1], env_of(T[k]).encode(), a[2],
                              subject.encode(), a[3], f"{times[k]:016d}".encode(), a[4]))
            ev.append((self._id("events"), p.source, ids[k], p.type, subject, T[k], times[k],
                       "line.events", part, k, None, self.keyids[p.source], os.urandom(64),
                       value, T[k], None))  # digest: telemetry only
            key = (sl.on_pcba, p.step)
            if p.type == "work.started":
                started[key] = k
            elif p.type == "work.completed":
                s = started[key]
                body = self.slots[s].planned.body
                rows["operations"].append((
                    self._id("operations"), subject, rand_uuid(rng), p.step, body.operation,
                    p.source, body.operator, wo, T[s], T[k], "Completed"))
            elif p.type == "materials.installed" and not p.repair:
                installed[key] = k
            elif p.type in ("unit.tested", "unit.inspected"):
                tid = self._id("tests")
                m = p.body.method
                detail = self.test_detail.get(m, '{"defects": []}')
                tests.append((tid, subject, ids[k], p.source, T[k],
                               "test" if p.type == "unit.tested" else "inspection", m,
                               "Passed", detail))
                meas.extend((self._id("measurements"), tid, *x) for x in self.measure.get(m, ()))
            elif p.type == "firmware.flashed":
                b = p.body
                fw.append((self._id("firmware"), subject, b.component, b.image, b.version,
                           b.sha256, b.target, p.source, T[k], ids[k]))
        self._installs(i, rows["installs"], T, ids, installed)
        created_mb, created_srv = T[0], next(
            T[k] for k, sl in enumerate(self.slots) if not sl.on_pcba)
        k20 = installed[(False, 20)]
        order = carton = None
        if state != "in_progress":
            order, carton = f"SO-{i // 40:06d}", f"CTN-{i:08d}"
        # route_product, route_revision, route_sha256: NULL (no route in force)
        rows["units"].append((mb, product, "assembly", "installed", 25, wo, created_mb, T[k20],
                              srv, None, None, None, None, None))
        rows["units"].append((srv, product, "server", state, 80 if state == "in_progress"
                              else 100, wo, created_srv, T[last[False]], None, order, carton,
                              None, None, None))

    def _installs(self, i: int, out: list[tuple[object, ...]], T: list[str], ids: list[str],
                  installed: dict[tuple[bool, int], int]) -> None:
        srv, mb = plant.server_serial(i), plant.pcba_serial(i)
        k = installed[(True, 10)]
        for r in plant.PCBA_REELS:
            out.append((self._id("installs"), mb, mb, None, r.mpn, plant.reel_lot(r, i), "reel",
                        None, r.per_board, None, r.ref, "smt-01", T[k], ids[k], None, None, None))
        bb = f"BASEBOARD-{i:09d}"
        parents = {"server": srv, "mainboard": mb, "baseboard": bb}
        station = {n: s for n, _, s in plant.SERVER_ROUTE}
        removed = None
        if plant.repaired(i):
            kr = next(n for n, sl in enumerate(self.slots)
                      if sl.planned.type == "materials.uninstalled")
            removed = (T[kr], ids[kr])
            ki = kr + 1
            g = plant.replacement_gpu(i, self.shape.gpu_lot_units)
            out.append((self._id("installs"), srv, bb, g.serial, g.mpn, g.lot, "gpu", g.pn, None,
                        3, "GPU3", "repair-01", T[ki], ids[ki], None, None, None))
        for spec in self.bom:
            k = installed[(False, spec.step)]
            par, st = parents[spec.on], station[spec.step]
            if spec.qty is not None:
                out.append((self._id("installs"), srv, par, None, spec.mpn,
                            plant.lot_of(spec, i, 0), spec.category, spec.pn, spec.qty, None,
                            spec.ref, st, T[k], ids[k], None, None, None))
                continue
            for s in range(spec.count):
                gone = removed if (spec.category == "gpu" and s == 3 and removed) else (None, None)
                out.append((self._id("installs"), srv, par, plant.part_serial(spec, i, s),
                            spec.mpn, plant.lot_of(spec, i, s), spec.category, spec.pn, None,
                            s if spec.count > 1 else None, spec.ref.format(slot=s), st, T[k],
                            ids[k], gone[0], gone[1], "DefectiveMaterial" if gone[0] else None))

    def lots(self) -> Iterator[tuple[object, ...]]:
        """One receipt row per lot that any server drew from."""
        n = self.shape.servers
        seen: dict[str, tuple[str, str, int]] = {}
        for spec in self.bom:
            per = spec.per_lot if spec.qty is None else spec.per_lot * spec.qty
            total = n * spec.count if spec.qty is None else n
            for x in range(0, total + spec.count + 8 * self.shape.gpu_lot_units, spec.per_lot):
                lot = f"LOT-{spec.category.upper()}-{x // spec.per_lot:05d}"
                seen.setdefault(lot, (spec.mpn, spec.supplier, per))
        for r in plant.PCBA_REELS:
            step = max(1, r.reel_qty // r.per_board)
            for x in range(0, n, step):
                seen.setdefault(plant.reel_lot(r, x), (r.mpn, "Arrow", r.reel_qty))
        for lot, (mpn, supplier, qty) in seen.items():
            yield (lot, mpn, supplier, "2451", qty, ts(plant.T0_US - plant.DAY_US), "receiving-01",
                   rand_uuid(self.rng), json.dumps({"documents": [
                       {"kind": "coc", "sha256": plant.sha(lot), "name": f"CoC-{lot}.pdf"}]}))
