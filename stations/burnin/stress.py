"""The stress load on real GPUs: a large GEMM repeated on every GPU, each result compared bit
for bit with that GPU's first.

Same inputs, same GPU, same cuBLAS algorithm give the same bits on every run (cuBLAS
reproducibility), so any difference means the silicon or its memory computed something else:
exactly the silent-data-corruption class burn-in exists to catch. TF32 is switched off so the
fp32 GEMM is a true fp32 one; CUDA ordinals follow PCI order like NVML indexes (unless
CUDA_VISIBLE_DEVICES narrows them). The engine is CuPy (`cupy-cuda12x` and the CUDA libraries it
loads, all in the `[gpu]` extra: a machine needs only the NVIDIA driver); torch with CUDA is
used instead where CuPy is absent; with neither, `available_engine()` is None and the backend
reports no stress load.

One thread per GPU; the CUDA calls release the GIL, so the sampling loop keeps its cadence.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from .backend import GemmResult

log = logging.getLogger(__name__)

DEFAULT_SIZE = 8192
SEED = 20260105
#: GEMM libraries in order of preference: CuPy is the one the `[gpu]` extra installs.
ENGINES = ("cupy", "torch")


def _cuda_env() -> None:
    """Before CUDA initialises: ordinals in PCI order (as NVML indexes), reproducible cuBLAS."""
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    # cuBLAS is bit-reproducible for a fixed workspace configuration (cuBLAS docs, 2.1.4).
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def available_engine() -> str | None:
    """'cupy' or 'torch' when that library is importable and sees a CUDA device, else None."""
    _cuda_env()
    for name in ENGINES:
        try:
            lib: Any = importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a broken install is as good as none
            continue
        try:
            if name == "torch" and lib.cuda.is_available():
                return name
            if name == "cupy" and lib.cuda.runtime.getDeviceCount() > 0:
                return name
        except Exception:  # noqa: BLE001
            continue
    return None


@dataclass
class _Tally:
    iterations: int = 0
    mismatches: int = 0
    nan_results: int = 0
    busy_s: float = 0.0
    error: str | None = None


class GemmStress:
    """Runs the GEMM loop on the given CUDA device ordinals until `stop()`."""

    def __init__(self, devices: list[int], *, size: int = DEFAULT_SIZE,
                 engine: str | None = None) -> None:
        self.devices = devices
        self.size = size
        self.engine = engine or available_engine()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._tallies: dict[int, _Tally] = {d: _Tally() for d in devices}

    def start(self) -> None:
        if self.engine is None:
            raise RuntimeError("no GEMM engine: pip install 'linetrace[gpu]' (CuPy), or torch "
                               "with CUDA support")
        _cuda_env()
        self._stop.clear()
        for d in self.devices:
            t = threading.Thread(target=self._run, args=(d,), name=f"gemm-stress-{d}",
                                 daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout_s: float = 30.0) -> list[GemmResult]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout_s)
            if t.is_alive():
                log.warning("%s did not stop within %.0f s", t.name, timeout_s)
        self._threads.clear()
        flops = 2.0 * self.size**3
        return [GemmResult(
            gpu_index=d, iterations=t.iterations, mismatches=t.mismatches,
            nan_results=t.nan_results, error=t.error,
            gflops=round(flops * t.iterations / t.busy_s / 1e9, 1) if t.busy_s > 0 else None)
            for d, t in sorted(self._tallies.items())]

    def _run(self, device: int) -> None:
        tally = self._tallies[device]
        try:
            if self.engine == "torch":
                self._loop_torch(device, tally)
            else:
                self._loop_cupy(device, tally)
        except Exception as e:  # noqa: BLE001 - recorded as this GPU's error, never lost
            tally.error = f"{type(e).__name__}: {e}"
            log.error("GEMM stress on GPU %d stopped: %s", device, tally.error)

    def _loop_torch(self, device: int, tally: _Tally) -> None:
        torch: Any = importlib.import_module("torch")
        torch.backends.cuda.matmul.allow_tf32 = False
        dev = torch.device("cuda", device)
        gen = torch.Generator(device=dev).manual_seed(SEED)
        a = torch.randn(self.size, self.size, device=dev, dtype=torch.float32, generator=gen)
        b = torch.randn(self.size, self.size, device=dev, dtype=torch.float32, generator=gen)
        with torch.cuda.device(dev):
            first = torch.matmul(a, b)
            first_bits = first.view(torch.int32)
            if bool(torch.isnan(first).any()):
                tally.nan_results += 1
            tally.iterations += 1
            while not self._stop.is_set():
                t0 = time.perf_counter()
                c = torch.matmul(a, b)
                torch.cuda.synchronize(dev)
                tally.busy_s += time.perf_counter() - t0
                nan = bool(torch.isnan(c).any())
                same = bool(torch.equal(c.view(torch.int32), first_bits))
                tally.iterations += 1
                tally.nan_results += nan
                tally.mismatches += not same

    def _loop_cupy(self, device: int, tally: _Tally) -> None:
        cp: Any = importlib.import_module("cupy")
        with cp.cuda.Device(device):
            rs = cp.random.RandomState(SEED)
            a = rs.standard_normal((self.size, self.size), dtype=cp.float32)
            b = rs.standard_normal((self.size, self.size), dtype=cp.float32)
            first = a @ b
            first_bits = first.view(cp.int32)
            if bool(cp.isnan(first).any()):
                tally.nan_results += 1
            tally.iterations += 1
            while not self._stop.is_set():
                t0 = time.perf_counter()
                c = a @ b
                cp.cuda.Device(device).synchronize()
                tally.busy_s += time.perf_counter() - t0
                nan = bool(cp.isnan(c).any())
                same = bool(cp.array_equal(c.view(cp.int32), first_bits))
                tally.iterations += 1
                tally.nan_results += nan
                tally.mismatches += not same
