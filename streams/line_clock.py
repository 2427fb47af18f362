"""The line clock of one partition, and what an event's time says against it (pure): moved to
`linetrace.ledger.line_clock` (the console and the CLI read the line clock too), re-exported here."""

from __future__ import annotations

from linetrace.ledger.line_clock import (
    DEFAULT_BOUND as DEFAULT_BOUND,
    DEFAULT_SPEED as DEFAULT_SPEED,
    EXCLUDED as EXCLUDED,
    FAR as FAR,
    RESET as RESET,
    RESET_AFTER as RESET_AFTER,
    SILENCE_GRACE as SILENCE_GRACE,
    PartitionClock as PartitionClock,
    advanced as advanced,
    describe as describe,
    observe as observe,
)
