"""Each extra works alone in a clean venv built from requirements.lock.

One wheel of this tree; the lock's wheels downloaded once into a wheelhouse (`pip download
--require-hashes`: the hashes are those of what this machine downloads); one venv per extra,
`pip install 'linetrace[EXTRA] @ wheel'` from that wheelhouse alone (`--no-index`) with the lock
as constraints (hash-checking mode), so an extra that needs anything the lock lacks fails to
resolve. What each venv must do:

- base (`pip install linetrace`, the auditor's install): `trace`, `hbom`, `checkpoint`,
  `evidence` and `verify` run (verify gives the same report as the full dev install); Faust
  and aiokafka are not importable; `linetrace worker` and `linetrace burnin` exit 2 naming
  the extra to install.
- `[station]`: importing linetrace.stations and using a StationClient (emit into its spool)
  loads neither Faust nor SQLAlchemy.
- `[worker]`: the worker and the embedded broker (its binary's checked SHA-256) load.
- `[console]`: FastAPI and uvicorn import beside linetrace.console.
- `[gpu]`: resolved in full from the lock (`pip install --dry-run --report`: NVML, CuPy and the
  CUDA libraries cuBLAS, cuRAND, NVRTC and the runtime); installed without those four library
  wheels (about 700 MB, of no use without a GPU, and nothing imports them before a GPU is
  used): the NVML backend, the GEMM library and the StationClient import, `burnin --backend
  nvml` gets as far as asking NVML for the driver, and with `[test]` added `pytest -m gpu`
  collects the GPU test (skipped here: no GPU).

Needs the package index (as `make venv` does); 1.5 to 2.5 minutes on two busy cores.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]

LOCK = REPO / "requirements.lock"
ROOMS = ("schemas", "stations", "ledger", "streams", "console", "cli")
#: CUDA libraries of the [gpu] extra, resolved but not installed here (see the module doc).
CUDA_LIBRARIES = {"nvidia-cublas-cu12", "nvidia-curand-cu12", "nvidia-cuda-nvrtc-cu12",
                  "nvidia-cuda-runtime-cu12"}
SERVER = "SRV-T-000001"  # the unit of tests/integration/cli_ledger.py

FORBIDDEN_IN_STATION = ("faust", "mode", "sqlalchemy", "alembic")
STATION_SCRIPT = """
import asyncio, sys
from pathlib import Path
import linetrace.stations
from linetrace.schemas.bodies import UnitArrived
from linetrace.schemas.signing import generate_key
from linetrace.stations.client import StationClient
from linetrace.stations.sync_client import SyncStationClient

async def main(state: Path) -> None:
    # no broker listens on port 9: emit must still spool the event durably
    client = StationClient("smt-01", generate_key(), "127.0.0.1:9", state)
    await client.start()
    await client.emit("unit.arrived", "SRV-X-000001", UnitArrived(step=10, lane=1),
                      time="2026-01-05T06:00:00Z")
    assert client.pending == 1, client.pending
    await client.stop(timeout_s=0)

asyncio.run(main(Path(sys.argv[1])))
print(sorted({m.split(".")[0] for m in sys.modules}))
"""


def pip_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PIP_NO_CACHE_DIR"}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def lock_without(names: set[str]) -> str:
    """requirements.lock without the pins of `names`."""
    blocks = re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text(encoding="utf-8"))
    return "\n".join(b for b in blocks if re.split(r"[=\s]", b, maxsplit=1)[0] not in names)


@dataclass
class Kit:
    root: Path
    wheel: Path
    cache: Path
    wheelhouse: Path

    def requirement(self, name: str, extras: str) -> Path:
        """A requirements file naming the wheel with its hash (hash-checking mode wants it)."""
        digest = hashlib.sha256(self.wheel.read_bytes()).hexdigest()
        path = self.root / f"{name}.txt"
        path.write_text(f"linetrace{extras} @ {self.wheel.as_uri()} --hash=sha256:{digest}\n")
        return path

    def pip(self, venv: Path, *args: str, index: bool = False) -> subprocess.CompletedProcess[str]:
        """pip for `venv`, constrained by the lock; from the wheelhouse only unless `index`."""
        where = [] if index else ["--no-index", "--find-links", str(self.wheelhouse)]
        cmd = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), *args,
               *where, "--cache-dir", str(self.cache), "-c", str(LOCK)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=pip_env())
        assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        return done

    def venv(self, name: str, extras: str = "") -> Path:
        venv = self.root / name
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        self.pip(venv, "install", "-q", "-r", str(self.requirement(name, extras)))
        return venv


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kit]:
    root = tmp_path_factory.mktemp("extras")
    src = root / "src"  # a copy: no stale build/ folder of the checkout gets into the wheel
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for room in ROOMS:
        shutil.copytree(REPO / room, src / room, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(root / "dist"), str(src)],
                   check=True, capture_output=True, timeout=300, env=pip_env())
    (wheel,) = (root / "dist").glob("linetrace-*.whl")
    pins = root / "lock-without-cuda.txt"
    pins.write_text(lock_without(CUDA_LIBRARIES))
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--require-hashes", "-r", str(pins), "-d", str(root / "wheelhouse"),
                    "--cache-dir", str(root / "pip-cache")],
                   check=True, capture_output=True, timeout=900, env=pip_env())
    yield Kit(root, wheel, root / "pip-cache", root / "wheelhouse")


def run(venv: Path, *args: str, cwd: Path = REPO,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    exe = args[0] if args[0].startswith("/") else str(venv / "bin" / args[0])
    return subprocess.run([exe, *args[1:]], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env={**pip_env(), "PYTHONPATH": ""})


def importable(venv: Path, *modules: str) -> dict[str, bool]:
    script = ("import importlib.util, json, sys; print(json.dumps({m: importlib.util.find_spec(m)"
              " is not None for m in sys.argv[1:]}))")
    done = run(venv, "python", "-c", script, *modules)
    assert done.returncode == 0, done.stderr
    found: dict[str, bool] = json.loads(done.stdout)
    return found


def imports(venv: Path, *modules: str) -> None:
    done = run(venv, "python", "-c", "import importlib, sys\n"
               "for m in sys.argv[1:]: importlib.import_module(m)", *modules)
    assert done.returncode == 0, done.stderr


def verify(linetrace: str, venv: Path, bundle: Path, key: str) -> str:
    done = run(venv, linetrace, "verify", str(bundle), "--key", key)
    assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stderr
    return f"rc={done.returncode}\n{done.stdout}"


def audit(venv: Path, data: Path) -> tuple[Path, str]:
    """Build the small fixed ledger, then trace, hbom, checkpoint and take the evidence of its
    server; returns the bundle and the verifier key."""
    done = run(venv, "python", "-c", "import sys; from pathlib import Path\n"
               "from tests.integration.cli_ledger import build_ledger\n"
               "build_ledger(Path(sys.argv[1])).close()", str(data))
    assert done.returncode == 0, done.stderr
    common = ["--data-dir", str(data)]
    trace = run(venv, "linetrace", "trace", SERVER, *common)
    assert trace.returncode == 0 and SERVER in trace.stdout, trace.stderr
    hbom = run(venv, "linetrace", "hbom", SERVER, "-o", str(data / "hbom.json"), *common)
    assert hbom.returncode == 0, hbom.stderr
    assert json.loads((data / "hbom.json").read_text())["bomFormat"] == "CycloneDX"
    cp = run(venv, "linetrace", "checkpoint", "--json", *common)
    assert cp.returncode == 0, cp.stderr
    key: str = json.loads(cp.stdout)["verifier_key"]
    ev = run(venv, "linetrace", "evidence", SERVER, "-o", str(data / "bundle"), *common)
    assert ev.returncode == 0, ev.stderr
    return data / "bundle", key


def test_base_install_is_the_auditors(kit: Kit) -> None:
    venv = kit.venv("base")
    assert importable(venv, "faust", "aiokafka", "fastapi", "pynvml") == {
        "faust": False, "aiokafka": False, "fastapi": False, "pynvml": False}
    for command in ("verify", "trace", "hbom"):
        done = run(venv, "linetrace", command, "--help")
        assert done.returncode == 0, done.stderr

    bundle, key = audit(venv, kit.root / "base-data")
    report = verify("linetrace", venv, bundle, key)
    assert "ok    signatures" in report and "ok    checkpoint" in report, report
    # the same checks and verdict as the full install of the checkout gives the same bundle
    full = Path(sys.executable).parent
    assert report == verify(str(full / "linetrace"), full.parent, bundle, key)

    data = ["--data-dir", str(kit.root / "base-data")]
    worker = run(venv, "linetrace", "worker", *data)
    assert worker.returncode == 2 and "pip install 'linetrace[worker]'" in worker.stderr, worker
    burnin = run(venv, "linetrace", "burnin", "--unit", SERVER, *data)
    assert burnin.returncode == 2 and "pip install 'linetrace[station]'" in burnin.stderr, burnin


def test_station_extra_sends_without_faust_or_sqlalchemy(kit: Kit) -> None:
    venv = kit.venv("station", "[station]")
    assert importable(venv, "aiokafka", "faust") == {"aiokafka": True, "faust": False}
    done = run(venv, "python", "-c", STATION_SCRIPT, str(kit.root / "station-state"))
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1].replace("'", '"')))
    assert "aiokafka" in loaded and "linetrace" in loaded
    assert not loaded & set(FORBIDDEN_IN_STATION), loaded & set(FORBIDDEN_IN_STATION)
    assert (kit.root / "station-state" / "spool.db").is_file()


def test_worker_extra_runs_the_worker_and_the_embedded_broker(kit: Kit) -> None:
    venv = kit.venv("worker", "[worker]")
    imports(venv, "faust", "aiokafka", "opentelemetry.sdk", "linetrace.streams.worker",
            "linetrace.streams.broker")
    done = run(venv, "python", "-c",
               "from linetrace.streams.broker import resolve_binary; print(resolve_binary())")
    assert done.returncode == 0, done.stderr
    help_ = run(venv, "linetrace", "worker", "--help")
    assert help_.returncode == 0, help_.stderr


def test_console_extra_imports_what_the_console_needs(kit: Kit) -> None:
    venv = kit.venv("console", "[console]")
    imports(venv, "fastapi", "uvicorn", "linetrace.console", "linetrace.ledger")
    assert importable(venv, "faust") == {"faust": False}


def test_gpu_extra_resolves_in_full_and_its_imports_work(kit: Kit) -> None:
    venv = kit.root / "gpu"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    report_file = kit.root / "gpu-report.json"
    kit.pip(venv, "install", "-q", "--dry-run", "--ignore-installed", "--report",
            str(report_file), "-r", str(kit.requirement("gpu", "[gpu]")), index=True)
    report = json.loads(report_file.read_text())
    resolved = {i["metadata"]["name"].lower(): i["metadata"]["version"]
                for i in report["install"]}
    assert {"nvidia-ml-py", "cupy-cuda12x", "aiokafka", *CUDA_LIBRARIES} <= set(resolved)
    assert "faust-streaming" not in resolved

    small = kit.root / "gpu-small.txt"
    small.write_text("".join(f"{name}=={version}\n" for name, version in resolved.items()
                             if name not in CUDA_LIBRARIES | {"linetrace"}))
    kit.pip(venv, "install", "-q", "--no-deps", "-r", str(small),
            "-r", str(kit.requirement("gpu", "[gpu]")))
    # what the NVML backend, the GEMM stress load and the GPU test import
    imports(venv, "pynvml", "cupy", "aiokafka", "linetrace.stations.burnin.nvml",
            "linetrace.stations.client")
    engine = run(venv, "python", "-c", "from linetrace.stations.burnin.stress import "
                 "available_engine; print(available_engine())")
    assert engine.returncode == 0 and engine.stdout.strip() == "None", engine  # no GPU here
    burnin = run(venv, "linetrace", "burnin", "--backend", "nvml", "--unit", SERVER,
                 "--data-dir", str(kit.root / "gpu-data"))
    assert burnin.returncode != 0 and "extra" not in burnin.stderr, burnin.stderr
    assert "burnin.nvml_unavailable" in burnin.stderr, burnin.stderr  # it asked NVML

    # `pytest -m gpu` runs in [gpu,test]: add the test tools and the embedded broker
    kit.pip(venv, "install", "-q", "-r", str(kit.requirement("gpu-test", "[test]")))
    # (collected, not run: with no GPU here it would fail under CI=true, as it must)
    collected = run(venv, "python", "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider",
                    "--collect-only", "-q", "tests/gpu")
    assert collected.returncode == 0, collected.stdout + collected.stderr
    assert "1 test collected" in collected.stdout, collected.stdout
