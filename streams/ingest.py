"""Ingest rules 1 and 2 (CONTRACTS.md): decode and validate, then establish authorship.

Pure functions over a record and the directory of enrolled keys: no Kafka, no DB. Rules 3 and
4 need the ledger's state and run inside the batch transaction (ledger.writer).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from linetrace.ledger.keys import KnownKey
from linetrace.ledger.records import Candidate, Rejection, SourceRecord
from linetrace.ledger.writer import error_headers as error_headers  # DLQ copies are built there
from linetrace.ledger.writer import revocation_violation
from linetrace.schemas import signing
from linetrace.schemas.envelope import SYSTEM_SOURCE, decode_event
from linetrace.schemas.errors import ForgedEvent, MalformedEvent
from linetrace.schemas.station_types import may_send, senders_of
from linetrace.schemas.topics import ALL_TOPICS, QUARANTINE, TOPIC_OF_TYPE, dlq_topic, partition_of

log = logging.getLogger("linetrace.ingest")


class KeyDirectory:
    """Enrolled keys by key id, reloaded from the ledger when an unknown id shows up.

    Enrolment commits to the ledger before the command returns, so a key a station uses is
    in the DB by then; the reload is rate-limited so a flood of forged ids costs one query
    per `min_reload` seconds. The limit is short (0.1 s): an event of a station enrolled just
    after the last reload must not be quarantined as unknown (seen at 1 s, in 1 of 4 suites).
    """

    def __init__(self, load: Callable[[], Mapping[str, KnownKey]], min_reload: float = 0.1,
                 max_age: float = 2.0):
        self._load = load
        self.max_age = max_age  # revocations recorded by the CLI take effect within this
        self._keys: Mapping[str, KnownKey] = load()
        self._stations = {k.station_id for k in self._keys.values()}
        self._loaded = time.monotonic()
        self.min_reload = min_reload

    def reload(self) -> None:
        self._keys = self._load()
        self._stations = {k.station_id for k in self._keys.values()}
        self._loaded = time.monotonic()

    def lookup(self, keyid: str, station: str) -> KnownKey | None:
        age = time.monotonic() - self._loaded
        key = self._keys.get(keyid)
        if age >= self.max_age or ((key is None or station not in self._stations)
                                   and age >= self.min_reload):
            self.reload()
            key = self._keys.get(keyid)
        return key

    def has_station(self, station: str) -> bool:
        return station in self._stations


def _reject(record: SourceRecord, dest: str, code: str, message: str, stage: str,
            source: str | None = None, event_id: str | None = None) -> Rejection:
    return Rejection(record=record, destination=dest, code=code, message=message, stage=stage,
                     source=source, event_id=event_id)


def screen(record: SourceRecord, keys: KeyDirectory) -> Candidate | Rejection:
    """Rule 1 (-> `<topic>.dlq`) then rule 2 (-> quarantine)."""
    dlq = dlq_topic(record.topic)
    if record.value is None:
        return _reject(record, dlq, "event.not_json", "record has no value (tombstone)", "decode")
    try:
        signing.check_headers(record.headers)
        event = decode_event(record.value)
    except MalformedEvent as e:
        return _reject(record, dlq, e.code, str(e), "decode")
    env = event.envelope
    if TOPIC_OF_TYPE.get(env.type) != record.topic:
        return _reject(record, dlq, "event.wrong_topic",
                       f"{env.type} events go to {TOPIC_OF_TYPE.get(env.type)}, not {record.topic}",
                       "decode", env.source, env.id)
    if record.key is None:
        return _reject(record, dlq, "event.key_mismatch",
                       f"record has no Kafka key; the key must be the UTF-8 bytes of subject "
                       f"{env.subject!r} (one unit, one partition)", "decode", env.source, env.id)
    if record.key != env.subject.encode("utf-8"):
        return _reject(record, dlq, "event.key_mismatch",
                       f"Kafka key {record.key[:200]!r} must be the UTF-8 bytes of subject "
                       f"{env.subject!r} (one unit, one partition)", "decode", env.source, env.id)
    partitions = ALL_TOPICS.get(record.topic)
    if record.partition is not None and partitions is not None:
        expected = partition_of(record.key, partitions)
        if record.partition != expected:
            return _reject(record, dlq, "event.wrong_partition",
                           f"key {env.subject!r} belongs on {record.topic}[{expected}] (murmur2 of "
                           f"the key modulo {partitions}), not [{record.partition}]; use the murmur2 "
                           "partitioner (librdkafka clients: partitioner=murmur2_random)",
                           "decode", env.source, env.id)
    try:
        keyid, signature = signing.read_signature(record.headers)
        key = keys.lookup(keyid, env.source)
        if not keys.has_station(env.source):
            raise ForgedEvent(f"station {env.source} is not enrolled; run `linetrace stations "
                              f"enroll {env.source} --type TYPE --public-key FILE`",
                              code="station.unknown")
        if key is None or key.station_id != env.source:
            raise ForgedEvent(f"key {keyid} is not an enrolled key of {env.source}; enrol it "
                              "(`linetrace stations enroll`) before using it", code="key.unknown")
        signing.verify_value(record.value, signature, key.public_key)
        why = revocation_violation(keyid, env.source, key.revoked_after, record.topic, event.seq)
        if why is not None:  # the writer checks again inside its transaction
            raise ForgedEvent(why, code="key.revoked")
        if env.source != SYSTEM_SOURCE and not may_send(key.station_type, env.type):
            raise ForgedEvent(
                f"{env.source} is enrolled as a {key.station_type or 'station of unknown type'} "
                f"station, which may not send {env.type} (sent by: "
                f"{', '.join(senders_of(env.type)) or 'linetrace only'}; schemas/README.md)",
                code="station.not_permitted")
    except ForgedEvent as e:
        return _reject(record, QUARANTINE, e.code, str(e), "verify", env.source, env.id)
    return Candidate(record=record, event=event, keyid=keyid, signature=signature)
