"""The approved vendor list (AVL): manufacturer part number -> suppliers approved to deliver it.

Kept as data (`ledger/data/avl.json`, or a plant's own file) rather than code so quality can
change it without a release. Every `material.received` is checked against it and the result is
appended, plant-signed, as `material.checked`; the check records the SHA-256 of the list it
used (over its RFC 8785 form, so whitespace edits do not change it), so an auditor can tell
which revision of the list approved a lot.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import rfc8785

from .errors import LedgerError

DEFAULT_AVL = "data/avl.json"


class AvlMalformed(LedgerError):
    """The AVL file is not `{"approved": {MPN: [supplier, ...]}}`."""

    code = "avl.malformed"


@dataclass(frozen=True)
class AvlCheck:
    """Outcome of checking one receipt: `Passed`, or `Failed` with the reason."""

    result: Literal["Passed", "Failed"]
    reason: str | None


@dataclass(frozen=True)
class ApprovedVendorList:
    approved: Mapping[str, frozenset[str]]
    sha256: str = field(default="")

    @classmethod
    def from_json(cls, data: bytes | str, *, origin: str = "AVL") -> ApprovedVendorList:
        try:
            doc: Any = json.loads(data)
        except json.JSONDecodeError as e:
            raise AvlMalformed(f"{origin} is not JSON ({e}); fix the file") from None
        approved = doc.get("approved") if isinstance(doc, dict) else None
        if not isinstance(approved, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and all(isinstance(s, str) for s in v)
            for k, v in approved.items()
        ):
            raise AvlMalformed(
                f'{origin} must be {{"approved": {{"MPN": ["supplier", ...]}}}}; fix the file'
            )
        canonical = {k: sorted(set(v)) for k, v in approved.items()}
        digest = hashlib.sha256(rfc8785.dumps(canonical)).hexdigest()
        return cls({k: frozenset(v) for k, v in canonical.items()}, digest)

    @classmethod
    def load(cls, path: Path) -> ApprovedVendorList:
        try:
            return cls.from_json(path.read_bytes(), origin=str(path))
        except OSError as e:
            raise AvlMalformed(f"cannot read the AVL {path}: {e}") from None

    def check(self, mpn: str, supplier: str) -> AvlCheck:
        suppliers = self.approved.get(mpn)
        if suppliers is None:
            return AvlCheck("Failed", f"MPN {mpn} is not on the approved vendor list")
        if supplier not in suppliers:
            listed = ", ".join(sorted(suppliers)) or "none"
            return AvlCheck(
                "Failed", f"supplier {supplier} is not approved for MPN {mpn} (approved: {listed})"
            )
        return AvlCheck("Passed", None)


_default: ApprovedVendorList | None = None


def default_avl() -> ApprovedVendorList:
    """The AVL shipped with linetrace (the simulated plant's parts), read once."""
    global _default
    if _default is None:
        packaged = resources.files("linetrace.ledger").joinpath(DEFAULT_AVL)
        if packaged.is_file():
            data = packaged.read_bytes()
        else:  # a strict editable install links modules only: read the source tree's copy
            data = (Path(__file__).resolve().parent / DEFAULT_AVL).read_bytes()
        _default = ApprovedVendorList.from_json(data, origin=f"linetrace.ledger/{DEFAULT_AVL}")
    return _default
