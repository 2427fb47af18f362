"""The `line.alerts` message of one alert transition, written to the outbox.

Key: the alert id (UTF-8), so every transition of one alert lands on one partition in order.
Value: JSON, the alert as `linetrace alerts --json` shows it after the transition, plus
`transition`, `occurrence`, `time`, `cause`, `details`, `by` (the person who acted, or null)
and `note` (a shelve reason or a comment). The `linetrace-message-id` header is a UUIDv5 of
(alert id, occurrence, transition, cause): a replay or a redo of the same finding or action
gives the same id, and the outbox stores it once.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from linetrace.schemas.topics import ALERTS

from .. import outbox
from ..genealogy import iso
from .views import AlertView

KIND = "alert"
CONTENT_TYPE = ("content-type", b"application/json")


def message_id(alert_id: str, occurrence: int, transition: str, cause: str) -> str:
    return outbox.message_id(KIND, alert_id.encode(), f"{occurrence}\x00{transition}\x00{cause}")


def message_value(view: AlertView, *, transition: str, occurrence: int, time: datetime,
                  cause: str, by: str | None = None, note: str | None = None) -> dict[str, Any]:
    """The JSON document of one transition (see the module docstring)."""
    return {**view.to_json(), "transition": transition, "occurrence": occurrence,
            "time": iso(time), "cause": cause, "details": view.details, "by": by,
            "note": note}


def alert_message(view: AlertView, *, transition: str, occurrence: int, time: datetime,
                  cause: str, by: str | None = None, note: str | None = None
                  ) -> outbox.Message:
    value = message_value(view, transition=transition, occurrence=occurrence, time=time,
                          cause=cause, by=by, note=note)
    return outbox.Message(
        kind=KIND, topic=ALERTS, key=view.id.encode(),
        value=json.dumps(value, sort_keys=True, separators=(",", ":"),
                         default=str).encode(),
        headers=[CONTENT_TYPE],
        message_id=message_id(view.id, occurrence, transition, cause))
