"""Attribute SPC: first-pass yield per station and a p-chart of defect rates per station type.

The logic lives in `linetrace.ledger.spc_rates` (pure), so the worker's SPC stage and the line
status count first passes by one definition; re-exported here for the stages. Its docstring
explains the rules.
"""

from __future__ import annotations

from linetrace.ledger.spc_rates import (
    FPY_ALPHA, FPY_CLEAR, FPY_WINDOW, P_ALPHA, P_BASELINE, P_SUBGROUP, RateFinding, Result,
    binomial_tail, first_passes, fpy_findings, p_chart_findings,
)

__all__ = [
    "FPY_ALPHA", "FPY_CLEAR", "FPY_WINDOW", "P_ALPHA", "P_BASELINE", "P_SUBGROUP",
    "RateFinding", "Result", "binomial_tail", "first_passes", "fpy_findings",
    "p_chart_findings",
]
