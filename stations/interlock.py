"""The interlock as a station asks it: `POST /api/v1/validate` on the console, over HTTP.

"May unit SERIAL start step N here (installing these lots, these part serials)?" The console
answers from the ledger and the holds in force (`{"allowed", "reasons": [{"code",
"message"}]}`, the document of `linetrace validate --json`). This module speaks plain HTTP with
the standard library (`urllib`, in a worker thread): the `[station]` install needs nothing more.

Configured per station (`StationClient(..., console_url=, console_token=,
validate_timeout_s=, fail_closed=)`):

- `console_url`: the console's base URL, e.g. `http://console.plant.local:8080`;
- `console_token`: an API token of a `viewer` user made for this station (`linetrace tokens
  create USER --name "ict-01 interlock"`, or the console's Account page);
- `validate_timeout_s` (default 2 s): the longest one question may take, connecting included;
- `fail_closed` (default True): when the console cannot answer in time (not reachable, too
  slow, a 5xx answer) the verdict is *not allowed* with the reason `interlock.unavailable`;
  with `fail_closed=False` (fail-open) it is *allowed*, with that same reason recorded in the
  verdict, so the station can log or show that the unit started unchecked.

A question the console refuses (a wrong or revoked token: 401/403; a station it does not
know: 404; a malformed question: 422) is not an outage: `validate` raises `StationError` with
the console's code (`interlock.refused`), whatever `fail_closed` says, since a fail-open
station with a revoked token would otherwise pass every unit unchecked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import StationError

log = logging.getLogger(__name__)

#: The reason code of a verdict the console could not give (`fail_closed` decides the verdict).
UNAVAILABLE = "interlock.unavailable"
DEFAULT_TIMEOUT_S = 2.0
PATH = "/api/v1/validate"


@dataclass(frozen=True)
class InterlockReason:
    code: str
    message: str


@dataclass(frozen=True)
class InterlockVerdict:
    """The interlock's answer: `allowed` and every reason it is not (or, `unavailable`, why
    the console gave none: then `allowed` is what the station's `fail_closed` says)."""

    allowed: bool
    reasons: tuple[InterlockReason, ...] = ()
    unavailable: bool = False

    @property
    def codes(self) -> list[str]:
        return [r.code for r in self.reasons]

    def to_json(self) -> dict[str, Any]:
        return {"allowed": self.allowed,
                "reasons": [{"code": r.code, "message": r.message} for r in self.reasons]}


@dataclass(frozen=True)
class InterlockSettings:
    """How one station reaches the console's interlock (module docstring)."""

    console_url: str
    token: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    fail_closed: bool = True
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.console_url.startswith(("http://", "https://")):
            raise StationError(f"console_url {self.console_url!r} must be an http:// or "
                               "https:// URL (the console's base URL)",
                               code="interlock.not_configured")
        if not 0 < self.timeout_s <= 60:
            raise StationError(f"validate_timeout_s {self.timeout_s} must be above 0 and at "
                               "most 60 s", code="interlock.not_configured")


class _Unavailable(StationError):
    """The console gave no answer (module docstring: `fail_closed` decides)."""

    code = "interlock.unavailable"
    retriable = True


def _post(settings: InterlockSettings, body: bytes) -> dict[str, Any]:
    """One blocking request (run in a thread); the console's JSON answer."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if settings.token:
        headers["Authorization"] = f"Bearer {settings.token}"
    req = urllib.request.Request(settings.console_url.rstrip("/") + PATH, data=body,
                                 headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=settings.timeout_s,
                                    context=settings.ssl_context) as resp:
            doc: dict[str, Any] = json.loads(resp.read())
            return doc
    except urllib.error.HTTPError as e:
        if e.code >= 500 or e.code in (408, 429):
            raise _Unavailable(f"the console answered {e.code}") from None
        try:
            err = json.loads(e.read())
        except ValueError:
            err = {}
        raise StationError(
            f"the console refused the interlock question ({e.code} {err.get('code', '')}): "
            f"{err.get('message', e.reason)}", code="interlock.refused") from None
    except (urllib.error.URLError, OSError, ValueError) as e:  # refused, reset, timeout, junk
        reason = getattr(e, "reason", e)
        raise _Unavailable(f"{type(reason).__name__}: {reason}") from None


async def ask(settings: InterlockSettings, station: str, serial: str, step: int,
              lots: Iterable[str] = (), parts: Iterable[str] = ()) -> InterlockVerdict:
    """Ask the console; an answer within `settings.timeout_s` or the `fail_closed` verdict."""
    body = json.dumps({"serial": serial, "step": step, "station": station,
                       "lots": list(lots), "parts": list(parts)}).encode()
    try:
        doc = await asyncio.wait_for(asyncio.to_thread(_post, settings, body),
                                     timeout=settings.timeout_s)
        reasons = tuple(InterlockReason(str(r["code"]), str(r["message"]))
                        for r in doc.get("reasons", []))
        return InterlockVerdict(bool(doc["allowed"]), reasons)
    except (_Unavailable, TimeoutError, KeyError, TypeError, AttributeError) as e:
        why = (e.message if isinstance(e, _Unavailable) else str(e)) or "no answer in time"
        if isinstance(e, TimeoutError):
            why = f"no answer within {settings.timeout_s:g} s"
        elif not isinstance(e, _Unavailable):
            why = f"an answer that is not the interlock's document ({type(e).__name__})"
        verdict = "not allowed (fail-closed)" if settings.fail_closed else \
            "allowed unchecked (fail-open)"
        message = (f"the interlock at {settings.console_url} could not be asked about {serial} "
                   f"step {step}: {why}; {verdict}")
        log.warning("station %s: %s", station, message)
        return InterlockVerdict(not settings.fail_closed,
                                (InterlockReason(UNAVAILABLE, message),), unavailable=True)
