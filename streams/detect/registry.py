"""The detector stages every worker runs, in order, after route enforcement (one line each)."""

from __future__ import annotations

from linetrace.ledger.system_events import SystemContext

from ..stages import Stage
from .alert_tick import AlertTickStage
from .anomaly_stage import AnomalyStage
from .flow_stage import FlowStage
from .lots_stage import LotClusterStage
from .spc_stage import SpcStage
from .supply_stage import SupplyStage
from .verdict_stage import VerdictStage


def detector_stages(ctx: SystemContext | None, line_speed: float) -> list[Stage]:
    """The burn-in verdict first (a failing verdict routes the unit to repair), then the
    detectors; `ctx` is None in tools and benches that run without a plant key."""
    stages: list[Stage] = []
    if ctx is not None:
        stages.append(VerdictStage(ctx))  # first: the burn-in verdict (routes, never alerts)
    stages.append(FlowStage(routes=ctx.routes if ctx is not None else None))  # flow
    stages.append(SupplyStage.of(ctx, line_speed))  # supply chain: AVL, lots, clones, firmware
    stages += [LotClusterStage.of(ctx)] if ctx is not None else []  # lots: verdicts -> hold
    stages.append(AnomalyStage(speed=line_speed))  # burn-in anomalies (alerts, not verdicts)
    stages.append(SpcStage.of(ctx))  # SPC charts per (station type, measurement)
    stages.append(AlertTickStage(line_speed))  # last: shelve expiry and flood state
    return stages
