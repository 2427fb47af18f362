"""The plant key and station enrolment (system events recorded in the ledger first).

The plant key signs linetrace's own system events and the log checkpoints. It is created on
first use (private key file mode 0600); its public half is registered in `station_keys` under
the reserved source `linetrace`, so ingest verifies system events like any other.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import (
    CONTENT_TYPE,
    SYSTEM_SOURCE,
    deterministic_id,
    format_seq,
)
from linetrace.schemas.topics import STATIONS

from .db import Ledger
from .errors import LedgerError
from .models import EventRow, Station, StationKey, StationPosition
from .system_events import register_plant_key, signed_system_event
from .writer import record_system_event

PLANT_KEY_FILE = "plant.key"


class KeyError_(LedgerError):
    code = "key.error"


def load_or_create_plant_key(keys_dir: Path) -> tuple[Ed25519PrivateKey, bool]:
    """The plant's private key, created (0600) if absent. Returns (key, created)."""
    return load_or_create_key(keys_dir, PLANT_KEY_FILE.removesuffix(".key"))


def load_or_create_key(keys_dir: Path, name: str) -> tuple[Ed25519PrivateKey, bool]:
    """`keys_dir/NAME.key`, created (0600, with `NAME.pub`) if absent. Returns (key, created).

    Several processes may be first at once (`linetrace up` and a `stations enroll`, or two
    enrolments on a fresh data dir): the key is written whole to a file of this call's own and
    linked into place, so a reader sees no file or the complete one, and exactly one key wins;
    the others load it."""
    path = keys_dir / f"{name}.key"
    if path.exists():
        return signing.load_private_key_pem(path.read_bytes()), False
    keys_dir.mkdir(parents=True, exist_ok=True)
    key = signing.generate_key()
    tmp = keys_dir / f".{name}.key.{os.getpid()}.{uuid.uuid4().hex}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(signing.private_key_pem(key))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic, and never replaces a key another process placed
        except FileExistsError:
            return signing.load_private_key_pem(path.read_bytes()), False
    finally:
        tmp.unlink()
    pub = keys_dir / f".{name}.pub.{os.getpid()}.{uuid.uuid4().hex}"
    pub.write_bytes(signing.public_key_pem(key.public_key()))
    os.replace(pub, keys_dir / f"{name}.pub")
    return key, True


@dataclass(frozen=True)
class SystemEvent:
    """A system event recorded in the ledger, ready to publish to its topic."""

    topic: str
    key: str
    value: bytes
    headers: list[tuple[str, bytes]]


def _record_station_event(
    session: Session,
    plant: Ed25519PrivateKey,
    event_type: str,
    station_id: str,
    keyid: str,
    now: datetime,
    make_body: Callable[[], b.Body],
) -> tuple[SystemEvent, bool]:
    """Record a plant-signed event about one station key once; (event, newly recorded).

    Its id derives from (type, station, key id), so asking again returns the recorded event.
    """
    event_id = deterministic_id(event_type, station_id, keyid)
    row = session.execute(select(EventRow).where(
        EventRow.source == SYSTEM_SOURCE, EventRow.event_id == event_id)).scalar_one_or_none()
    if row is not None:
        return SystemEvent(STATIONS, station_id, row.value, _headers(row.keyid, row.signature)), False
    register_plant_key(session, plant, now)
    cand = signed_system_event(event_type, station_id, make_body(), time=now, cause_id=keyid,
                               plant_key=plant)
    record_system_event(session, cand)
    return SystemEvent(STATIONS, station_id, cand.event.value, cand.record.headers), True


def enroll_station(
    ledger: Ledger,
    plant: Ed25519PrivateKey,
    station_id: str,
    station_type: str,
    public_key: Ed25519PublicKey,
    *,
    now: datetime | None = None,
) -> tuple[SystemEvent, bool]:
    """Record a plant-signed `station.enrolled` for this key; (event, newly enrolled).

    Enrolling the same key again returns the recorded event unchanged. A key already enrolled
    for another station is refused.
    """
    now = now or datetime.now(UTC)
    keyid = signing.keyid_of(public_key)
    with ledger.transaction() as session:
        existing = session.get(StationKey, keyid)
        if existing is not None and existing.station_id != station_id:
            raise KeyError_(f"key {keyid} is already enrolled for station {existing.station_id}; "
                            "generate a new key pair for this station (`linetrace stations keygen`)")
        station = session.get(Station, station_id)
        if station is not None and station.station_type != station_type:
            raise KeyError_(f"station {station_id} is enrolled with type {station.station_type}, "
                            f"not {station_type}")
        body = b.StationEnrolled(station_id=station_id, station_type=station_type,
                                 public_key=signing.public_key_b64(public_key), keyid=keyid)
        return _record_station_event(session, plant, "station.enrolled", station_id, keyid, now,
                                     lambda: body)


def revoke_station_key(
    ledger: Ledger,
    plant: Ed25519PrivateKey,
    station_id: str,
    keyid: str,
    *,
    reason: str | None = None,
    now: datetime | None = None,
) -> tuple[SystemEvent, bool]:
    """Record a plant-signed `station.revoked`; (event, newly revoked).

    The last valid stationseq per topic is the last one the ledger accepted from the station:
    what the key signed up to there stays valid, anything later signed by it is quarantined.
    """
    now = now or datetime.now(UTC)
    with ledger.transaction() as session:
        key = session.get(StationKey, keyid)
        if key is None or key.station_id != station_id:
            raise KeyError_(f"{station_id} has no enrolled key {keyid}; "
                            f"`linetrace stations show {station_id}` lists its keys")

        def body() -> b.StationRevoked:
            last = session.execute(
                select(StationPosition.topic, func.max(StationPosition.last_seq))
                .where(StationPosition.station_id == station_id)
                .group_by(StationPosition.topic).order_by(StationPosition.topic)).all()
            return b.StationRevoked(station_id=station_id, keyid=keyid, reason=reason,
                                    last_valid=[b.TopicSeq(topic=t, stationseq=format_seq(int(n)))
                                                for t, n in last])

        return _record_station_event(session, plant, "station.revoked", station_id, keyid, now,
                                     body)


def _headers(keyid: str, signature: bytes) -> list[tuple[str, bytes]]:
    import base64

    return [(signing.KEYID_HEADER, keyid.encode()),
            (signing.SIGNATURE_HEADER, base64.b64encode(signature)),
            (signing.CONTENT_TYPE_HEADER, CONTENT_TYPE.encode())]


@dataclass(frozen=True)
class KnownKey:
    keyid: str
    station_id: str
    public_key: Ed25519PublicKey
    revoked_after: dict[str, int] | None
    station_type: str | None = None  # as enrolled; None for the plant's own key


def known_keys(ledger: Ledger) -> dict[str, KnownKey]:
    """Every enrolled key (stations and the plant) with its station's type, for ingest's
    signature and sender checks."""
    with ledger.reader() as session:
        rows = session.scalars(select(StationKey)).all()
        types = {row[0]: row[1] for row in session.execute(
            select(Station.station_id, Station.station_type))}
        return {r.keyid: KnownKey(r.keyid, r.station_id, signing.load_public_key(r.public_key),
                                  dict(r.revoked_after) if r.revoked_after else None,
                                  types.get(r.station_id))
                for r in rows}


def list_stations(ledger: Ledger) -> list[dict[str, object]]:
    with ledger.reader() as session:
        stations = session.scalars(select(Station).order_by(Station.station_id)).all()
        keys = session.scalars(select(StationKey)).all()
        by_station: dict[str, list[StationKey]] = {}
        for k in keys:
            by_station.setdefault(k.station_id, []).append(k)
        return [{"station_id": s.station_id, "station_type": s.station_type,
                 "enrolled": s.enrolled_at,
                 "keys": [{"keyid": k.keyid, "revoked": k.revoked_at is not None}
                          for k in by_station.get(s.station_id, [])]}
                for s in stations if s.station_id != SYSTEM_SOURCE]
