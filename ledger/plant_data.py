"""Plant data the supply-chain and lot-clustering detectors check against (DOMAIN.md §5, §8).

Kept as data (`ledger/data/*.json`, or a plant's own file) rather than code, like the approved
vendor list (`avl.py`), so quality can change them without a release:

- the golden firmware baseline (`golden_firmware.json`): (image, version) -> the SHA-256 the
  approved image has. A plant points `LINETRACE_GOLDEN_FIRMWARE` at its own file;
- the approved parts list (`approved_parts.json`): route product -> the MPNs approved for it
  (its bill of materials);
- the lot-clustering policy (`lot_clustering.json`): the plant's baseline per-GPU burn-in
  failure rate and the test's window, minimum failures and significance.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import LedgerError

GOLDEN_FIRMWARE_ENV = "LINETRACE_GOLDEN_FIRMWARE"


class PlantDataMalformed(LedgerError):
    """A plant data file is not in the shape its module documents."""

    code = "plant_data.malformed"


def _packaged(name: str) -> tuple[bytes, str]:
    packaged = resources.files("linetrace.ledger").joinpath(f"data/{name}")
    if packaged.is_file():
        return packaged.read_bytes(), f"linetrace.ledger/data/{name}"
    path = Path(__file__).resolve().parent / "data" / name  # a strict editable install
    return path.read_bytes(), str(path)


def _doc(data: bytes | str, origin: str, key: str, shape: str) -> Any:
    try:
        doc: Any = json.loads(data)
    except json.JSONDecodeError as e:
        raise PlantDataMalformed(f"{origin} is not JSON ({e}); fix the file") from None
    if not isinstance(doc, dict) or key not in doc:
        raise PlantDataMalformed(f"{origin} must be {shape}; fix the file")
    return doc[key]


@dataclass(frozen=True)
class GoldenFirmware:
    """(image, version) -> the golden SHA-256 (lower-case hex)."""

    golden: Mapping[tuple[str, str], str]

    @classmethod
    def from_json(cls, data: bytes | str, *, origin: str = "golden firmware") -> GoldenFirmware:
        shape = '{"golden": [{"image": I, "version": V, "sha256": HEX}, ...]}'
        items = _doc(data, origin, "golden", shape)
        if not isinstance(items, list) or not all(
                isinstance(i, dict) and all(isinstance(i.get(k), str)
                                            for k in ("image", "version", "sha256"))
                for i in items):
            raise PlantDataMalformed(f"{origin} must be {shape}; fix the file")
        return cls({(i["image"], i["version"]): i["sha256"].lower() for i in items})

    @classmethod
    def load(cls, path: Path) -> GoldenFirmware:
        try:
            return cls.from_json(path.read_bytes(), origin=str(path))
        except OSError as e:
            raise PlantDataMalformed(f"cannot read the golden firmware list {path}: {e} "
                                     f"(check {GOLDEN_FIRMWARE_ENV})") from None

    def expected(self, image: str, version: str) -> str | None:
        return self.golden.get((image, version))


@dataclass(frozen=True)
class ApprovedParts:
    """Route product -> the MPNs approved for it."""

    approved: Mapping[str, frozenset[str]]

    @classmethod
    def from_json(cls, data: bytes | str, *, origin: str = "approved parts") -> ApprovedParts:
        shape = '{"approved": {"PRODUCT": ["MPN", ...]}}'
        approved = _doc(data, origin, "approved", shape)
        if not isinstance(approved, dict) or not all(
                isinstance(k, str) and isinstance(v, list) and all(isinstance(m, str) for m in v)
                for k, v in approved.items()):
            raise PlantDataMalformed(f"{origin} must be {shape}; fix the file")
        return cls({k: frozenset(v) for k, v in approved.items()})

    def allows(self, product: str, mpn: str) -> bool | None:
        """True/False for a listed product; None where the product is not listed."""
        listed = self.approved.get(product)
        return None if listed is None else mpn in listed


@dataclass(frozen=True)
class LotPolicy:
    """When failures on one component lot are a cluster (streams/detect/lots.py):
    at least `min_failures` failed among the lot's last `window` tested GPUs AND the binomial
    tail P(X >= k | n, baseline) below `alpha`."""

    baseline: float
    window: int
    min_failures: int
    alpha: float
    category: str = "gpu"

    @classmethod
    def from_json(cls, data: bytes | str, *, origin: str = "lot clustering") -> LotPolicy:
        shape = ('{"policy": {"baseline_failure_rate": P, "window": N, "min_failures": K, '
                 '"alpha": A}}')
        p = _doc(data, origin, "policy", shape)
        try:
            policy = cls(float(p["baseline_failure_rate"]), int(p["window"]),
                         int(p["min_failures"]), float(p["alpha"]), str(p.get("category", "gpu")))
        except (TypeError, KeyError, ValueError):
            raise PlantDataMalformed(f"{origin} must be {shape}; fix the file") from None
        if not (0 < policy.baseline < 1 and policy.window >= 1 and policy.min_failures >= 1
                and 0 < policy.alpha < 1):
            raise PlantDataMalformed(f"{origin}: need 0 < baseline_failure_rate < 1, window >= 1, "
                                     "min_failures >= 1 and 0 < alpha < 1; fix the file")
        return policy


_cache: dict[str, Any] = {}


def golden_firmware(own: Path | None = None) -> GoldenFirmware:
    """The plant's golden firmware: its own file `own` (LINETRACE_GOLDEN_FIRMWARE, read by the
    CLI's settings and passed down) if given, else the one shipped with linetrace (the
    simulated plant's images); read once per file."""
    key = f"golden:{own or ''}"
    if key not in _cache:
        if own is not None:
            _cache[key] = GoldenFirmware.load(own)
        else:
            data, origin = _packaged("golden_firmware.json")
            _cache[key] = GoldenFirmware.from_json(data, origin=origin)
    found: GoldenFirmware = _cache[key]
    return found


def approved_parts() -> ApprovedParts:
    """The approved parts list shipped with linetrace (read once)."""
    if "parts" not in _cache:
        data, origin = _packaged("approved_parts.json")
        _cache["parts"] = ApprovedParts.from_json(data, origin=origin)
    found: ApprovedParts = _cache["parts"]
    return found


def lot_policy() -> LotPolicy:
    """The lot-clustering policy shipped with linetrace (read once)."""
    if "lots" not in _cache:
        data, origin = _packaged("lot_clustering.json")
        _cache["lots"] = LotPolicy.from_json(data, origin=origin)
    found: LotPolicy = _cache["lots"]
    return found
