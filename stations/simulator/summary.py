"""What a run did (`LineSummary`, `linetrace simulate`'s last line) and the routes it followed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from linetrace.schemas.envelope import format_time

from .products import products_of

if TYPE_CHECKING:
    from .line import LineConfig


@dataclass(frozen=True)
class LineSummary:
    """What a run did. `outcomes` counts servers by final state (shipped, packed, scrapped)."""

    seed: int
    product: str
    faults: list[str]
    units_started: int
    assemblies_started: int
    outcomes: dict[str, int]
    assembly_outcomes: dict[str, int]
    events_by_type: dict[str, int]
    first_event: datetime | None
    last_event: datetime | None
    #: The routes the run followed, product -> {revision, sha256}: every routing decision of
    #: the simulator (next step, repair, return step) was made from one of these.
    routes: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def events_total(self) -> int:
        return sum(self.events_by_type.values())

    def to_json(self) -> dict[str, object]:
        def ts(t: datetime | None) -> str | None:
            return format_time(t) if t else None

        return {
            "seed": self.seed, "product": self.product, "faults": list(self.faults),
            "units_started": self.units_started, "assemblies_started": self.assemblies_started,
            "outcomes": dict(self.outcomes), "assembly_outcomes": dict(self.assembly_outcomes),
            "events_by_type": dict(self.events_by_type), "events_total": self.events_total,
            "first_event": ts(self.first_event), "last_event": ts(self.last_event),
            "routes": {p: dict(r) for p, r in self.routes.items()},
        }



def followed_routes(config: LineConfig) -> dict[str, dict[str, str]]:
    """Route product -> {revision, sha256} of every route a run of `config` follows."""
    out: dict[str, dict[str, str]] = {}
    for p in products_of(config.product, config.routes):
        for r in (p.assembly_route, p.route):
            if r is not None:
                out[r.product] = {"revision": r.revision, "sha256": r.sha256}
    return dict(sorted(out.items()))
