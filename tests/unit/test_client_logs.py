"""cli/client_logs.py: a burst of client-library errors is one line and one summary."""

from __future__ import annotations

import logging
import time

import pytest

from linetrace.cli.client_logs import Burst, quiet_client_logs


def _wait(pred, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_burst_is_its_first_record_and_a_summary(caplog: pytest.LogCaptureFixture) -> None:
    name = "test.noisy.client"
    quiet_client_logs((name,), quiet_s=0.2)
    quiet_client_logs((name,), quiet_s=0.2)  # idempotent: one handler
    noisy = logging.getLogger(name)
    assert sum(isinstance(h, Burst) for h in noisy.handlers) == 1
    with caplog.at_level(logging.INFO):
        for i in range(30):
            logging.getLogger(f"{name}.conn").error("Unable connect to node %s", i)
            logging.getLogger(f"{name}.fetcher").warning("Failed fetch from %s", i)
        noisy.info("still connected")  # below WARNING: passes unchanged
        _wait(lambda: any("more warning" in r.getMessage() for r in caplog.records))
        loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(loud) == 2, [r.getMessage() for r in loud]
        first, summary = loud
        assert first.getMessage().startswith("Unable connect to node 0 [test.noisy.client:")
        assert "59 more warning(s)/error(s)" in summary.getMessage()
        assert "30 x 'WARNING Failed fetch from %s'" in summary.getMessage()
        assert "29 x 'ERROR Unable connect to node %s'" in summary.getMessage()
        assert any(r.getMessage() == "still connected" for r in caplog.records)
        # quiet again: the next error starts a new burst and is logged at once
        noisy.error("Unable connect to node %s", 99)
        assert caplog.records[-1].getMessage().startswith("Unable connect to node 99")


def test_installing_again_turns_propagation_off_again(caplog: pytest.LogCaptureFixture) -> None:
    """Something turned the library logger's propagation back on after the handler was put
    there (one full run's outage test saw each aiokafka error twice: folded, and as it came).
    Calling `quiet_client_logs` again, as each command and station start does, mends it."""
    name = "test.noisy.reset"
    quiet_client_logs((name,), quiet_s=0.2)
    noisy = logging.getLogger(name)
    noisy.propagate = True  # as a logging configuration applied since may leave it
    quiet_client_logs((name,), quiet_s=0.2)
    assert noisy.propagate is False
    assert sum(isinstance(h, Burst) for h in noisy.handlers) == 1
    with caplog.at_level(logging.INFO):
        noisy.error("Unable connect to node %s", 1)
        assert [r.getMessage()[:26] for r in caplog.records] == ["Unable connect to node 1 ["]
