"""Which event types a station may send, by the station type it was enrolled with.

A station's type is what the plant said it is (`linetrace stations enroll ID --type T`, the
`station_type` of its `station.enrolled`), from the station types of DOMAIN.md §1. Every station
reports its own state and faults and the flow of units through it; what it records beyond
that follows from what the station does: only receiving receives lots, only burn-in sends
telemetry, only the pack station packs. Ingest quarantines anything else
(`station.not_permitted`): an authentic event from the wrong kind of station is a
misconfiguration or a compromised station, never something to store as fact.

A type outside this table (a plant's own name) sends only what every station sends.
"""

from __future__ import annotations

#: What every enrolled station may send, whatever its type.
EVERY_STATION: frozenset[str] = frozenset({
    "station.state", "fault.occurred", "fault.cleared",
    "unit.arrived", "unit.departed", "work.started", "work.completed",
})

#: Station type (DOMAIN.md §1) -> the event types it may send beyond EVERY_STATION.
EVENTS_OF_STATION_TYPE: dict[str, frozenset[str]] = {
    "receiving": frozenset({"material.received"}),
    "smt": frozenset({"materials.installed"}),
    "aoi": frozenset({"unit.inspected"}),
    "ict": frozenset({"unit.tested"}),
    "kitting": frozenset(),
    "gpu-install": frozenset({"materials.installed"}),
    "integration": frozenset({"materials.installed"}),
    "firmware": frozenset({"firmware.flashed"}),
    "burnin": frozenset({"burnin.run", "burnin.telemetry", "burnin.xid", "unit.tested"}),
    "final-qa": frozenset({"unit.inspected", "unit.tested"}),
    "pack": frozenset({"unit.packed"}),
    "shipping": frozenset({"unit.shipped"}),
    "repair": frozenset({"materials.installed", "materials.uninstalled", "unit.repaired",
                         "unit.scrapped", "unit.inspected", "unit.tested", "firmware.flashed"}),
}

STATION_TYPES: tuple[str, ...] = tuple(EVENTS_OF_STATION_TYPE)


def may_send(station_type: str | None, event_type: str) -> bool:
    """Whether a station enrolled as `station_type` may send `event_type` (None: unknown)."""
    if event_type in EVERY_STATION:
        return True
    return event_type in EVENTS_OF_STATION_TYPE.get(station_type or "", frozenset())


def senders_of(event_type: str) -> list[str]:
    """The station types that may send `event_type` (every type for EVERY_STATION's)."""
    if event_type in EVERY_STATION:
        return list(STATION_TYPES)
    return [t for t, events in EVENTS_OF_STATION_TYPE.items() if event_type in events]
