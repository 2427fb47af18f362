"""Per-SKU burn-in limits and the hard-fail rule thresholds (DOMAIN.md §4), as data.

Kept as a data file (`ledger/data/burnin_limits.json`, or a plant's own file named by
`LINETRACE_BURNIN_LIMITS`) rather than code, like the approved vendor list: quality changes a
floor or adds a SKU without a release. Every `burnin.verdict` records the SHA-256 of the file
it used (over its RFC 8785 form, so whitespace edits do not change it) and its `version`, so an
auditor can tell which limits decided a unit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import rfc8785

from .errors import LedgerError

DEFAULT_LIMITS = "data/burnin_limits.json"


class LimitsMalformed(LedgerError):
    """The burn-in limits file is not the documented shape (docs/burnin.md)."""

    code = "burnin.limits_malformed"


@dataclass(frozen=True)
class SkuLimits:
    """One GPU SKU's figures: GPUs per unit, enforced power, performance floors, PCIe link."""

    gpus: int
    power_w: float
    gflops_target: float  # compute fails below compute_fraction x this
    mem_bw_floor_mbs: float  # memory bandwidth fails below this
    nccl_busbw_gbs: float  # NCCL all-reduce busbw fails below nccl_fraction x this
    pcie_gen: int
    pcie_width: int
    max_operating_c: float | None = None  # when the run reports no threshold of its own


@dataclass(frozen=True)
class Rules:
    """The SKU-independent thresholds of the hard-fail rules."""

    fatal_xids: frozenset[int]
    burnin_fatal_xids: frozenset[int]
    hard_clock_bits: Mapping[str, int]
    under_load_util_pct: float
    ecc_sbe_max: int
    pcie_replay_max: int
    nvlink_crc_per_s_max: float
    nvlink_recovery_max: int
    compute_fraction: float
    nccl_fraction: float
    #: which `unit.tested` measurement names (after `gpuN.`) carry which figure
    measurements: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @property
    def hard_clock_mask(self) -> int:
        mask = 0
        for bit in self.hard_clock_bits.values():
            mask |= bit
        return mask


@dataclass(frozen=True)
class BurninLimits:
    version: str
    rules: Rules
    skus: Mapping[str, SkuLimits]
    sha256: str

    @classmethod
    def from_json(cls, data: bytes | str, *, origin: str = "burn-in limits") -> BurninLimits:
        try:
            doc: Any = json.loads(data)
        except json.JSONDecodeError as e:
            raise LimitsMalformed(f"{origin} is not JSON ({e}); fix the file") from None
        try:
            r = doc["rules"]
            rules = Rules(
                fatal_xids=frozenset(int(x) for x in r["fatal_xids"]),
                burnin_fatal_xids=frozenset(int(x) for x in r.get("burnin_fatal_xids", [])),
                hard_clock_bits={str(k): int(v) for k, v in r["hard_clock_bits"].items()},
                under_load_util_pct=float(r["under_load_util_pct"]),
                ecc_sbe_max=int(r["ecc_sbe_max"]), pcie_replay_max=int(r["pcie_replay_max"]),
                nvlink_crc_per_s_max=float(r["nvlink_crc_per_s_max"]),
                nvlink_recovery_max=int(r["nvlink_recovery_max"]),
                compute_fraction=float(r["compute_fraction"]),
                nccl_fraction=float(r["nccl_fraction"]),
                measurements={str(k): frozenset(str(n) for n in v)
                              for k, v in r.get("measurements", {}).items()})
            skus = {str(name): SkuLimits(
                gpus=int(s["gpus"]), power_w=float(s["power_w"]),
                gflops_target=float(s["gflops_target"]),
                mem_bw_floor_mbs=float(s["mem_bw_floor_mbs"]),
                nccl_busbw_gbs=float(s["nccl_busbw_gbs"]), pcie_gen=int(s["pcie_gen"]),
                pcie_width=int(s["pcie_width"]),
                max_operating_c=None if s.get("max_operating_c") is None
                else float(s["max_operating_c"]))
                for name, s in doc["skus"].items()}
            version = str(doc["version"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise LimitsMalformed(
                f"{origin} must be {{\"version\", \"rules\": {{...}}, \"skus\": {{SKU: {{...}}}}}} "
                f"as docs/burnin.md shows ({type(e).__name__}: {e}); fix the file") from None
        if not version or not skus:
            raise LimitsMalformed(f"{origin} needs a non-empty version and at least one SKU")
        digest = hashlib.sha256(rfc8785.dumps(doc)).hexdigest()
        return cls(version, rules, skus, digest)

    @classmethod
    def load(cls, path: Path) -> BurninLimits:
        try:
            return cls.from_json(path.read_bytes(), origin=str(path))
        except OSError as e:
            raise LimitsMalformed(f"cannot read the burn-in limits {path}: {e}") from None

    def sku(self, name: str | None) -> SkuLimits | None:
        return None if name is None else self.skus.get(name)


_default: BurninLimits | None = None


def default_limits() -> BurninLimits:
    """The limits shipped with linetrace (DOMAIN.md §4 defaults), read once."""
    global _default
    if _default is None:
        packaged = resources.files("linetrace.ledger").joinpath(DEFAULT_LIMITS)
        if packaged.is_file():
            data = packaged.read_bytes()
        else:  # a strict editable install links modules only: read the source tree's copy
            data = (Path(__file__).resolve().parent / DEFAULT_LIMITS).read_bytes()
        _default = BurninLimits.from_json(data, origin=f"linetrace.ledger/{DEFAULT_LIMITS}")
    return _default


def load_limits(path: Path | None) -> BurninLimits:
    """A plant's own limits file, or the packaged defaults."""
    return default_limits() if path is None else BurninLimits.load(path)
