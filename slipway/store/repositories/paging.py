"""Keyset paging, newest first, for workspace tables with `id` and `created_at` columns.

OpenAI's list endpoints page with `after=<id of the last item seen>`; the next page is what
comes strictly after that item in (created_at, id) descending order. Unlike OFFSET, a page does
not shift when rows are inserted meanwhile.
"""

from __future__ import annotations

from sqlalchemy import Connection, Select, Table, and_, or_, select

MAX_PAGE = 1000


def newest_first(conn: Connection, query: Select, table: Table, *, workspace_id: str, after: str | None,
                 limit: int) -> list:
    """Rows of `query` (already filtered to the workspace), newest first, after the row `after`.

    An `after` that names no row of the workspace yields an empty page rather than an error: the
    cursor came from an earlier page whose row may have been deleted since.
    """
    if after is not None:
        cursor = conn.execute(select(table.c.created_at).where(table.c.workspace_id == workspace_id,
                                                               table.c.id == after)).first()
        if cursor is None:
            return []
        query = query.where(or_(table.c.created_at < cursor.created_at,
                                and_(table.c.created_at == cursor.created_at, table.c.id < after)))
    limit = max(1, min(limit, MAX_PAGE))
    return list(conn.execute(query.order_by(table.c.created_at.desc(), table.c.id.desc()).limit(limit)).all())
