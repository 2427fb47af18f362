"""Statistical process control: individuals / moving-range charts and their rules (DOMAIN.md §5).

The logic lives in `linetrace.ledger.spc_rules` (pure, no database), so the worker's SPC
stage, `linetrace spc` and the console judge charts by one definition; it is re-exported here
for the stages. Its docstring explains the limits, the rules and the alarm.
"""

from __future__ import annotations

from linetrace.ledger.spc_rules import (
    ALARM_RULES, D2, DEFAULT_SPC, RULE_SPAN, RULES, SLOPE_MOVE, SLOPE_POINTS, SLOPE_T, ChartRun,
    Judged, Limits, Point, SpcConfig, SpcConfigError, Transition, alarm_rules, baseline_limits,
    describe, load_config, run_chart, signals, slope_alarm, slope_t, slope_window, transitions,
)

__all__ = [
    "ALARM_RULES", "D2", "DEFAULT_SPC", "RULES", "RULE_SPAN", "SLOPE_MOVE", "SLOPE_POINTS",
    "SLOPE_T", "ChartRun", "Judged", "Limits", "Point", "SpcConfig", "SpcConfigError",
    "Transition", "alarm_rules", "baseline_limits", "describe", "load_config", "run_chart",
    "signals", "slope_alarm", "slope_t", "slope_window", "transitions",
]
