"""Errors raised by station software (StationClient, simulators).

Like aiokafka's errors: one hierarchy (under `linetrace.schemas.errors.LinetraceError`), a stable
machine-readable `code`, and a `retriable` flag saying whether trying the same call again later
can succeed. Messages say what to do.
"""

from __future__ import annotations

from linetrace.schemas.errors import LinetraceError


class StationError(LinetraceError):
    """Base class of every error the `stations` room raises on purpose."""

    code = "station.error"

    def __str__(self) -> str:
        return f"[{self.code}] {super().__str__()}"


#: Every code raised by this room, with what it means. Codes are stable; new ones are added.
STATION_ERROR_CODES: dict[str, str] = {
    "station.invalid_id": "the station id is not a valid CloudEvents `source` for linetrace",
    "station.invalid_event": "the event does not encode to a valid linetrace event (wrong body, bad field)",
    "station.unknown_type": "the event type has no topic in `linetrace.schemas.topics.TOPIC_OF_TYPE`",
    "station.state_corrupt": "the station's state file cannot be read; it is never guessed",
    "station.state_mismatch": "the state directory belongs to another station",
    "station.seq_exhausted": "`stationseq` reached 10^16 - 1 for a topic",
    "station.not_started": "`emit` was called before `start()` (or after `stop()`)",
    "station.stopped": "the client's sender stopped (or was stopped) while `flush` waited",
    "station.broker_unreachable": "no broker answered at the bootstrap address in time",
    "station.delivery_timeout": "`flush` ran out of time before the broker acknowledged the spooled events; they stay spooled and are still sent, in order",
    "station.spool_full": "the station's spool is at its limits with events the broker has not acknowledged; nothing was stored (is the broker reachable?)",
    "station.spool_failed": "the station's spool file could not be written (disk full, I/O error); nothing was stored",
    "station.send_failed": "the broker refused an event with a non-retriable error",
    "station.no_key": "a station of the line has no private key",
    "interlock.not_configured": "`validate` needs the console's URL (and an API token): `StationClient(console_url=..., console_token=...)`; or a setting is out of range",
    "interlock.refused": "the console refused the interlock question (a wrong or revoked API token, a station it does not know, a malformed question); not an outage, so `fail_closed` does not apply",
    "simulator.unknown_product": "the line simulator has no route for this product",
    "simulator.invalid_config": "a line simulator setting is out of range",
    "simulator.unknown_fault": "a `--faults` name is not one of DOMAIN.md §9's faults",
    "simulator.invalid_fault": "a `--faults` target is malformed, repeated, or beyond the run (too few servers)",
    "simulator.fault_not_applied": "a requested fault found nothing to strike in the run (too few units, or its target was scrapped first)",
    "simulator.route_mismatch": "a route installs a part category the simulator buys no part for",
    "burnin.invalid_config": "a burn-in duration, interval or serial list is out of range",
    "burnin.unknown_fault": "a simulated burn-in fault name is not one of DOMAIN.md §9's GPU faults",
    "burnin.unknown_sku": "the simulated baseboard has no figures for this GPU SKU",
    "burnin.no_nvml": "the NVML backend needs nvidia-ml-py (the [gpu] extra)",
    "burnin.nvml_unavailable": "NVML could not be initialised (no driver or no GPU)",
}
