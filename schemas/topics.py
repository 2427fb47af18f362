"""The one place that knows topic names, partition counts and which event goes where."""

from __future__ import annotations

from dataclasses import dataclass

EVENTS = "line.events"
TELEMETRY = "line.telemetry"
RECEIPTS = "line.receipts"
STATIONS = "line.stations"
COMMANDS = "line.commands"
ALERTS = "line.alerts"
ERP_OUTBOUND = "erp.outbound"
HOLDS = "line.holds"
QUARANTINE = "line.quarantine"
DLQ_SUFFIX = ".dlq"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    keyed_by: str


#: Input topics: what stations (and linetrace's own system events) write and ingest reads.
INPUT_TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(EVENTS, 8, "unit serial"),
    TopicSpec(TELEMETRY, 8, "unit serial"),
    TopicSpec(RECEIPTS, 4, "lot id"),
    TopicSpec(STATIONS, 4, "station id"),
)

OUTPUT_TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(COMMANDS, 4, "station id"),
    TopicSpec(HOLDS, 4, "hold id / user id"),
    TopicSpec(ALERTS, 4, "alert id"),
    TopicSpec(ERP_OUTBOUND, 4, "work order"),
    TopicSpec(QUARANTINE, 1, "original key"),
)


def dlq_topic(input_topic: str) -> str:
    return input_topic + DLQ_SUFFIX


#: Every topic linetrace creates at broker start, with its partition count (CONTRACTS.md).
ALL_TOPICS: dict[str, int] = {
    **{t.name: t.partitions for t in INPUT_TOPICS},
    **{t.name: t.partitions for t in OUTPUT_TOPICS},
    **{dlq_topic(t.name): 1 for t in INPUT_TOPICS},
}

#: Event type -> the topic it travels on.
TOPIC_OF_TYPE: dict[str, str] = {
    **dict.fromkeys(
        [
            "unit.arrived", "unit.departed", "work.started", "work.completed",
            "unit.inspected", "unit.tested", "materials.installed", "materials.uninstalled",
            "unit.repaired", "unit.scrapped", "firmware.flashed", "unit.packed",
            "unit.shipped", "unit.sealed", "burnin.verdict",
        ],
        EVENTS,
    ),
    **dict.fromkeys(["burnin.telemetry", "burnin.xid", "burnin.run"], TELEMETRY),
    **dict.fromkeys(["material.received", "material.checked"], RECEIPTS),
    **dict.fromkeys(
        ["station.state", "fault.occurred", "fault.cleared", "station.enrolled",
         "station.revoked"], STATIONS
    ),
    **dict.fromkeys(["command.hold", "command.release", "command.route", "command.lock"],
                    COMMANDS),
    **dict.fromkeys(["hold.placed", "hold.approved", "hold.released", "hold.disposition",
                     "user.enrolled", "user.changed", "user.revoked", "user.removed",
                     "console.enrolled", "console.revoked"],
                    HOLDS),
    **dict.fromkeys(["alert.acknowledged", "alert.shelved", "alert.unshelved",
                     "alert.commented", "alert.outofservice", "alert.inservice"], ALERTS),
}

#: Types whose accepted events become leaves of the Merkle log (CONTRACTS.md).
LEAF_TOPICS = frozenset({EVENTS, RECEIPTS, STATIONS})


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (org.apache.kafka.common.utils.Utils.murmur2), as 32 unsigned bits."""
    length = len(data)
    seed, m, r = 0x9747B28C, 0x5BD1E995, 24
    h = (seed ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = length % 4
    if tail:
        rest = data[length - tail:]
        if tail >= 3:
            h ^= rest[2] << 16
        if tail >= 2:
            h ^= rest[1] << 8
        h ^= rest[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    return h ^ (h >> 15)


def partition_of(key: bytes, partitions: int) -> int:
    """The partition the murmur2 key partitioner (Java client, aiokafka, librdkafka's
    `murmur2_random`) assigns `key`: one unit, one partition (CONTRACTS.md)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
