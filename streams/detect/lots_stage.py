"""The lot-clustering stage: each burn-in verdict re-judges the lots of its GPUs (`lots.py`).

`load` reads, for each `burnin.verdict` of the batch (stored already, the batch's own
projections written): the lot of each GPU it names (`installs`, category of the policy), then
per lot its GPUs, the units they went into and those units' verdicts (decoded); a lot linetrace
held for a cluster once (the hold in force, or ended by quality) is not judged again. The
test runs per verdict in log order, counting only verdicts up to that one, so the verdict that
tips a lot over is the same however the batches fall. For a lot that fires, `load` reads what
the hold will reach (every unit containing the lot, through sub-assemblies; shipped ones are
listed, not held) and each held unit's station.

`decide` then places the hold, plant-signed: `hold.placed` (scope lot, category quality, code
`lot.failure_cluster`, `placed_by` linetrace, `cause` the verdict; id from the verdict and the
lot), a `command.hold` to the station of each unit it stops, and the `lot.failure_cluster`
condition. Units that take a part of the lot later join the hold at install (route stage).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from linetrace.ledger.alerts.conditions import Condition
from linetrace.ledger.hold_actions import command_cause, unit_station
from linetrace.ledger.holds import (
    NOT_STOPPED, hold_id_for, reached_units, split_reached, unit_states,
)
from linetrace.ledger.models import EventRow, Hold, Install
from linetrace.ledger.plant_data import LotPolicy, lot_policy
from linetrace.ledger.records import Candidate
from linetrace.ledger.sql import in_values
from linetrace.ledger.system_events import SystemContext, signed_system_event
from linetrace.ledger.unit_state import aware
from linetrace.schemas import bodies as b
from linetrace.schemas.envelope import SYSTEM_SOURCE, decode_stored_event, parse_time

from ..stages import NO_DECISIONS, Decisions
from . import lots

VERDICT = "burnin.verdict"
_CHUNK = 400

#: (verdict id, unit, time, {gpu serial: failed}) as `lots.gpu_outcomes` reads them.
VerdictGpus = tuple[str, str, datetime, dict[str, bool]]


def _utc(t: datetime) -> datetime:
    return aware(t).astimezone(UTC)


def verdict_gpus(body: b.BurninVerdict) -> dict[str, bool]:
    """GPU serial -> failed, for the GPUs a verdict names by serial."""
    return {g.gpu_serial: g.result == "Failed" for g in body.gpus if g.gpu_serial}


@dataclass(frozen=True)
class Firing:
    """A lot the test found clustering at verdict `cause` (the batch's event)."""

    cluster: lots.Cluster
    mpn: str | None
    cause: Candidate
    units: list[str]  # unfinished units the hold stops
    shipped: list[str]
    stations: dict[str, str]  # unit -> station of its latest event


@dataclass
class LotClusterStage:
    """Lot clustering (module docstring)."""

    plant_key: Ed25519PrivateKey
    policy: LotPolicy = field(default_factory=lot_policy)
    name: str = "lot-clusters"

    @classmethod
    def of(cls, ctx: SystemContext) -> LotClusterStage:
        return cls(plant_key=ctx.plant_key)

    def load(self, session: Session, batch: Sequence[Candidate]) -> list[Firing] | None:
        verdicts = [c for c in batch if c.event.type == VERDICT
                    and c.event.source == SYSTEM_SOURCE
                    and isinstance(c.event.body, b.BurninVerdict)]
        if not verdicts:
            return None
        named = {s for c in verdicts for s in verdict_gpus(_body(c))}
        lot_of: dict[str, tuple[str, str]] = {}  # gpu serial -> (lot, mpn)
        items = sorted(named)
        for i in range(0, len(items), _CHUNK):
            for serial, lot, mpn in session.execute(select(
                    Install.serial, Install.lot, Install.mpn).where(
                    in_values(session, Install.serial, items[i:i + _CHUNK]),
                    Install.category == self.policy.category)):
                if serial is not None:
                    lot_of.setdefault(serial, (lot, mpn))
        firings: list[Firing] = []
        for lot in sorted({lot_of[s][0] for s in named if s in lot_of}):
            found = self._judge_lot(session, lot, verdicts, lot_of)
            if found is not None:
                firings.append(found)
        return firings

    def _judge_lot(self, session: Session, lot: str, verdicts: Sequence[Candidate],
                   lot_of: dict[str, tuple[str, str]]) -> Firing | None:
        if session.scalar(select(Hold.hold_id).where(
                Hold.scope == "lot", Hold.target == lot, Hold.code == lots.HOLD_CODE).limit(1)):
            return None  # held already: quality is looking at it, or has decided
        rows = session.execute(select(Install.serial, Install.unit, Install.mpn).where(
            Install.lot == lot, Install.category == self.policy.category)).all()
        serials = {r[0] for r in rows if r[0] is not None}
        units = sorted({r[1] for r in rows})
        mpn = rows[0][2] if rows else None
        stored: list[tuple[int, VerdictGpus]] = []
        for i in range(0, len(units), _CHUNK):
            for seq, eid, subject, t, value in session.execute(select(
                    EventRow.seq, EventRow.event_id, EventRow.subject, EventRow.time,
                    EventRow.value).where(
                    in_values(session, EventRow.subject, units[i:i + _CHUNK]),
                    EventRow.type == VERDICT, EventRow.source == SYSTEM_SOURCE)):
                body = decode_stored_event(value).body
                if isinstance(body, b.BurninVerdict):
                    stored.append((seq, (eid, subject, _utc(t), verdict_gpus(body))))
        seq_of = {v[0]: seq for seq, v in stored}
        for c in verdicts:  # in log order: the verdict that tips the lot over is the cause
            if not any(lot_of.get(s, ("", ""))[0] == lot for s in verdict_gpus(_body(c))):
                continue
            upto = seq_of.get(c.event.id)
            if upto is None:
                continue
            cluster = lots.judge(lot, lots.gpu_outcomes(
                [v for seq, v in stored if seq <= upto], serials), self.policy)
            if cluster.fires:
                held, shipped = split_reached(session, reached_units(session, "lot", lot))
                states = unit_states(session, held)  # a board inside a held server: no command
                stations = {u: s for u in held if states.get(u) not in NOT_STOPPED
                            and (s := unit_station(session, u)) is not None}
                return Firing(cluster, mpn, c, held, shipped, stations)
        return None

    def decide(self, batch: Sequence[Candidate], state: list[Firing] | None) -> Decisions:
        if not state:
            return NO_DECISIONS
        system: list[Candidate] = []
        found: list[Condition] = []
        for f in state:
            ev, lot = f.cause.event, f.cluster.lot
            hold_id = hold_id_for(f"{ev.id}/{lot}", lots.HOLD_CODE)
            condition = lots.cluster_condition(f.cluster, self.policy, f.mpn, ev.id,
                                               parse_time(ev.envelope.time), hold_id, f.units)
            reason = condition.message[:4096]
            system.append(signed_system_event("hold.placed", hold_id, b.HoldPlaced(
                hold_id=hold_id, scope="lot", target=lot, reason=reason, category="quality",
                code=lots.HOLD_CODE, placed_by=SYSTEM_SOURCE, units=f.units,
                shipped=f.shipped, cause=ev.id), time=ev.envelope.time, cause_id=ev.id,
                plant_key=self.plant_key))
            for unit in f.units:
                station = f.stations.get(unit)
                if station is not None:
                    system.append(signed_system_event("command.hold", station, b.CommandHold(
                        unit=unit, reason=reason, hold_id=hold_id), time=ev.envelope.time,
                        cause_id=command_cause(hold_id, unit), plant_key=self.plant_key))
            found.append(condition)
        return Decisions(system=system, conditions=found)


def _body(c: Candidate) -> b.BurninVerdict:
    body = c.event.body
    assert isinstance(body, b.BurninVerdict)
    return body
