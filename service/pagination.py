"""Cursor pagination, newest first: ``?after=<id>&limit=`` -> a list envelope. An empty ``after`` is no cursor (a
client that puts the previous page's ``last_id`` into the URL unconditionally sends ``?after=`` for the first page)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import Session

from service.errors import NotFound
from service.schemas import ListObject


def page(
    session: Session,
    query: Select,
    model: Any,
    *,
    owner: str,
    after: str | None,
    limit: int,
    render: Callable[[Any], Any],
) -> ListObject:
    if after:
        # Scoped to the owner: another owner's id must look exactly like an unknown one.
        anchor = session.execute(
            select(model.created_at, model.id).where(model.id == after, model.owner == owner)
        ).first()
        if anchor is None:
            raise NotFound(f"no object {after!r} to page after", param="after")
        created, identifier = anchor
        query = query.where(or_(model.created_at < created, and_(model.created_at == created, model.id < identifier)))
    rows = list(session.scalars(query.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)))
    return envelope([render(row) for row in rows[:limit]], has_more=len(rows) > limit)


def envelope(data: list, *, has_more: bool) -> ListObject:
    """The list object around one page: ``first_id``/``last_id`` are the cursors for the neighbouring pages."""
    return ListObject(
        data=data, has_more=has_more, first_id=data[0].id if data else None, last_id=data[-1].id if data else None
    )
