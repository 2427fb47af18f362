"""Dialect-neutral statements the writer needs (insert-or-ignore, upsert)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, any_, bindparam, or_, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_ignore(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING, one executemany."""
    if not rows:
        return
    ins = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(ins(table).on_conflict_do_nothing(), list(rows))


def upsert(
    session: Session, table: Table, rows: Sequence[dict[str, Any]], keys: Sequence[str]
) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE SET the other columns."""
    if not rows:
        return
    ins = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = ins(table)
    cols = [c for c in rows[0] if c not in keys]
    stmt = stmt.on_conflict_do_update(
        index_elements=list(keys), set_={c: stmt.excluded[c] for c in cols}
    )
    session.execute(stmt, list(rows))


def keys_in(session: Session, columns: Sequence[Any], keys: Sequence[tuple[Any, ...]]
            ) -> ColumnElement[bool]:
    """`(c1, c2, ...) IN keys` that uses the index on those columns.

    SQLite scans the whole table for a row-value IN list but searches the index once per term
    of an OR of ANDs; PostgreSQL plans the row-value IN well.
    """
    if session.get_bind().dialect.name == "sqlite":
        return or_(*(and_(*(c == v for c, v in zip(columns, key, strict=True))) for key in keys))
    return tuple_(*columns).in_(list(keys))


def in_values(session: Session, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
    """`column IN values`. On PostgreSQL `column = ANY(array)`, one parameter: the statement's
    text is the same whatever the count, so psycopg does not parse a new query (nor the
    server plan one) per length of the list."""
    clause: ColumnElement[bool]
    if session.get_bind().dialect.name == "postgresql":
        clause = column == any_(bindparam(None, list(values),
                                          type_=postgresql.ARRAY(column.type)))
    else:
        clause = column.in_(list(values))
    return clause
