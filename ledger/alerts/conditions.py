"""What detectors tell the alert engine: conditions, and the catalogue of the ones we know.

A detector (a pipeline stage, pure logic over plain data) never writes alerts itself: it
returns `Condition`s, findings about one `(condition, subject)` at one moment of event time,
active (the condition holds) or not (it returned to normal). The alert engine
(`linetrace.ledger.alerts.engine.apply_conditions`) turns them into alert state, ISA-18.2
transitions and `line.alerts` messages through the outbox, in the batch's transaction.

The alert id is derived from the condition and the subject alone (`alert_id`), so a replay
raises nothing new and a real recurrence counts as a new occurrence of the same alert.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Priority = Literal["low", "medium", "high"]
PRIORITIES: tuple[Priority, ...] = ("low", "medium", "high")

#: ISA-18.2 / IEC 62682 alarm states (DOMAIN.md §6), as `linetrace alerts --json` names them.
AlertState = Literal["normal", "unacknowledged", "acknowledged", "rtn_unacknowledged",
                     "shelved", "suppressed", "out_of_service"]
STATES: tuple[AlertState, ...] = ("normal", "unacknowledged", "acknowledged",
                                  "rtn_unacknowledged", "shelved", "suppressed",
                                  "out_of_service")


@dataclass(frozen=True)
class Spec:
    """A condition's defaults: its priority, a short title and what the operator should do."""

    priority: Priority
    title: str
    action: str
    latched: bool = False  # stays active until an operator acknowledges it (no clear)


@dataclass(frozen=True)
class Condition:
    """A detector's finding about one `(condition, subject)` at one moment of event time."""

    condition: str  # a name of `CATALOGUE`, e.g. "burnin.peer_deviation"
    subject: str  # what it is about: "SRV-1/gpu3", a station id, a lot id, "ict/12v_rail"
    active: bool  # True: the condition holds (raise, or keep); False: it returned to normal
    time: datetime  # event time (line clock) at which it was found
    cause: str  # id of the event that showed it; message ids derive from it (a replay: same)
    message: str = ""  # plain language: what happened and where ("" = the catalogue's title)
    action: str = ""  # what to do ("" = the catalogue's action)
    priority: Priority | None = None  # None = the catalogue's
    details: Mapping[str, Any] = field(default_factory=dict)  # figures, JSON-able
    unit: str | None = None  # the unit serial it concerns, if any
    station: str | None = None  # the station it concerns, if any
    lot: str | None = None  # the component lot it concerns, if any
    #: id of the alert this one is a consequence of (a stuck unit waiting at a station that is
    #: down): while that alert is active, this one is suppressed by design, not annunciated.
    parent: str | None = None


def alert_id(condition: str, subject: str) -> str:
    """The alert's id: `AL-` + 12 hex digits of SHA-256(condition NUL subject)."""
    digest = hashlib.sha256(f"{condition}\x00{subject}".encode()).hexdigest()
    return f"AL-{digest[:12]}"


_COOLING = ("check the GPU's cooling (heatsink seating, thermal interface, fans, airflow) "
            "and watch its verdict; repair before the unit ships if it fails")

#: Every condition a detector may raise, with its default priority. Natural failures (a unit
#: failing a test, going to repair) are handled by routing, not alarms: nothing a clean run
#: shows may be medium or high.
CATALOGUE: dict[str, Spec] = {
    # burn-in anomalies (DOMAIN.md §4; alerts, not verdicts)
    "burnin.peer_deviation": Spec("medium", "GPU runs hotter than its siblings", _COOLING),
    "burnin.power_clock_deviation": Spec(
        "low", "GPU power or SM clock off its siblings",
        "compare the GPU's power and clocks with its siblings; check its power cabling"),
    "burnin.thermal_headroom": Spec("medium", "GPU within 5 C of its slowdown threshold",
                                    _COOLING),
    "burnin.temp_rise": Spec("low", "GPU temperature rising fast at constant load", _COOLING),
    "burnin.ecc_sbe": Spec("low", "GPU reports new single-bit ECC errors",
                           "watch the count; more than 10 in a run fails the burn-in"),
    "burnin.telemetry_gap": Spec(
        "medium", "burn-in telemetry stopped",
        "check the burn-in rack and the unit: is it powered, is the station software running?"),
    "burnin.gpu_missing": Spec(
        "high", "a GPU is missing from the burn-in telemetry",
        "the GPU may have fallen off the bus: check its seating and power; expect a failed "
        "verdict"),
    "burnin.drift": Spec("low", "GPU drifting away from its siblings (EWMA/CUSUM)", _COOLING),
    # SPC (DOMAIN.md §5)
    "spc.out_of_control": Spec(
        "medium", "measurement out of statistical control",
        "look at the station's recent measurements and its fixture or calibration; the "
        "step may be held until quality reviews"),
    "spc.first_pass_yield": Spec("low", "first-pass yield below its baseline",
                                 "look at the station's recent failures for a common cause"),
    "spc.defect_rate": Spec("low", "defect rate above its control limit (p-chart)",
                            "look at the station's recent defects for a common cause"),
    # flow
    "flow.route_violation": Spec("medium", "unit broke its route and is held",
                                 "see `linetrace trace SERIAL`; release or disposition the hold"),
    "flow.stuck_unit": Spec("medium", "unit has not moved for longer than its step's max cycle",
                            "find the unit on the line and see why it stopped"),
    "flow.station_down": Spec("medium", "station is down",
                              "send maintenance to the station; units waiting for it are held up"),
    "flow.fault_storm": Spec("medium", "station reports faults in a burst",
                             "look at the station's fault log; consider taking it out of service"),
    # the alarm system itself (DOMAIN.md §6): low, it says how to work, not what broke
    "alerts.flood": Spec("low", "alarm flood: more than 10 alarms in 10 minutes",
                         "work the high-priority alarms first; the flood ends below 5 in 10 "
                         "minutes; `linetrace alerts kpi` shows the top alarms"),
    # security (CONTRACTS.md ingest rules 2-4; never-lose flags)
    "security.quarantine": Spec(
        "high", "records from this station were quarantined",
        "see `linetrace rejected`: a forged, unknown, equivocating or reordered record; check "
        "the station's key and software before trusting it", latched=True),
    "security.absurd_time": Spec(
        "high", "station sent events with absurd times",
        "check the station's clock (NTP); see `linetrace flags`", latched=True),
    # supply chain (DOMAIN.md §8)
    "supply.unknown_lot": Spec("high", "part installed from a lot never received",
                               "quarantine the lot's parts; check the receipt records"),
    "supply.avl_violation": Spec("high", "lot not from an approved vendor",
                                 "quarantine the lot; quality decides with the supplier",
                                 latched=True),
    "supply.unapproved_mpn": Spec("high", "part number not approved for this product",
                                  "stop using the part; quality decides on the units built",
                                  latched=True),
    "supply.cloned_serial": Spec("high", "the same serial installed in two units",
                                 "counterfeit indicator: hold both units and the lot; inspect",
                                 latched=True),
    "supply.firmware_mismatch": Spec("high", "firmware hash is not the golden one",
                                     "re-flash the golden image and find out where the other "
                                     "image came from", latched=True),
    # lot clustering (DOMAIN.md §5)
    "lot.failure_cluster": Spec("high", "failures cluster on one component lot",
                                "the lot is held automatically; quality investigates the lot",
                                latched=True),
}


def spec_of(condition: str) -> Spec:
    try:
        return CATALOGUE[condition]
    except KeyError:
        raise KeyError(f"unknown alert condition {condition!r}; add it to "
                       "linetrace.ledger.alerts.conditions.CATALOGUE") from None
