"""The worked example of schemas/README.md, run as a station vendor would run it.

The fenced Python block is extracted from the README as it is, run as a separate process that
imports nothing of ours (checked), against a real `linetrace broker` and `linetrace worker`;
its events must be accepted into the ledger.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from ..conftest import REPO, Proc, run_cli, wait_for

README = REPO / "schemas" / "README.md"


def readme_example() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(), re.S | re.M)
    assert blocks, f"no ```python block in {README}"
    return str(blocks[0])


def test_the_readme_example_uses_only_aiokafka_and_cryptography() -> None:
    allowed = set(sys.stdlib_module_names) | {"aiokafka", "cryptography"}
    imported = set()
    for node in ast.walk(ast.parse(readme_example())):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported and imported <= allowed, imported - allowed


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_events_sent_by_the_readme_example_are_accepted_by_a_running_worker(
        broker: str, worker: Proc, line_dir: Path, tmp_path: Path) -> None:
    from linetrace.ledger.db import Ledger
    from linetrace.ledger.models import EventRow, Rejected
    from linetrace.schemas.envelope import decode_event

    station = "vendor-07"
    key = tmp_path / "vendor.key"
    assert run_cli("stations", "keygen", "--out", str(key), data_dir=line_dir).returncode == 0
    r = run_cli("stations", "enroll", station, "--type", "burnin", "--public-key", f"{key}.pub",
                data_dir=line_dir)
    assert r.returncode == 0, r.stderr
    script = tmp_path / "send_event.py"
    script.write_text(readme_example())
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINETRACE_")}
    env.update(BOOTSTRAP=f"kafka://{broker}", STATION_ID=station, KEY_FILE=str(key))
    for _ in range(2):  # twice: the second run must number above the first
        out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        sent = r"sent \d+ bytes to line\.stations\[\d\] at offset \d+"
        assert re.search(sent, out.stdout), out.stdout

    ledger = Ledger(f"sqlite:///{line_dir / 'ledger.db'}")

    def stored() -> list[bytes]:
        with ledger.reader() as s:
            return list(s.scalars(select(EventRow.value).where(EventRow.source == station)
                                  .order_by(EventRow.seq)))

    try:
        values = wait_for(lambda: len(stored()) == 2 and stored(), 60,
                          what="both README events in the ledger")
    except AssertionError:
        raise AssertionError(f"ledger holds {len(stored())}\n{worker.tail()}") from None
    with ledger.reader() as s:
        assert list(s.scalars(select(Rejected.code).where(Rejected.source == station))) == []
    events = [decode_event(v) for v in values]
    assert [(e.type, e.subject) for e in events] == [("station.state", station)] * 2
    assert (events[0].seq or 0) < (events[1].seq or 0)
