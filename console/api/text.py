"""Free-text fields of request bodies (reasons, comments, targets): their bound and the
blank-text checks, one place for every router's body models."""

from __future__ import annotations

#: The longest reason or comment a body may carry (characters).
TEXT_MAX = 4096


def required_text(value: str, field: str) -> str:
    """A pydantic validator's body: refuse text that is only whitespace."""
    if not value.strip():
        raise ValueError(f"{field} may not be empty")
    return value


def optional_text(value: str | None, field: str) -> str | None:
    """The same for an optional field: absent is fine, blank is not."""
    if value is not None and not value.strip():
        raise ValueError(f"{field} is empty: give one or leave it out")
    return value
