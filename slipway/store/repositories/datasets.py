"""Datasets: one row per dataset folder (train.jsonl, validation.jsonl, manifest.json) on disk.

The folder is written first and the row inserted after, so a row always names a complete folder.
`source` says where the rows came from: an uploaded file, or traces picked by `filters` (a
`TraceFilter.as_dict()`), which is enough to build the same selection again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import delete, insert, select

from slipway.store.repositories.base import Repository, new_id
from slipway.store.repositories.paging import newest_first
from slipway.store.tables import datasets

DatasetSource = Literal["upload", "traces"]
DATASET_SOURCES: tuple[str, ...] = ("upload", "traces")


@dataclass(frozen=True)
class DatasetRow:
    id: str
    workspace_id: str
    name: str
    source: str
    filters: dict[str, Any] | None
    content_hash: str
    train_rows: int
    validation_rows: int
    path: str
    created_at: float


def _row(r) -> DatasetRow:
    return DatasetRow(id=r.id, workspace_id=r.workspace_id, name=r.name, source=r.source,
                      filters=dict(r.filters) if r.filters is not None else None, content_hash=r.content_hash,
                      train_rows=r.train_rows, validation_rows=r.validation_rows, path=r.path,
                      created_at=r.created_at)


class DatasetRepository(Repository):
    @staticmethod
    def new_id() -> str:
        """An id for a dataset about to be written, so its folder can be named before the row exists."""
        return new_id("ds")

    def create(self, workspace_id: str, *, name: str, source: DatasetSource, content_hash: str,
               train_rows: int, validation_rows: int, path: str, now: float,
               filters: dict[str, Any] | None = None, dataset_id: str | None = None) -> DatasetRow:
        if source not in DATASET_SOURCES:
            raise ValueError(f"unknown dataset source {source!r}; one of {DATASET_SOURCES}")
        row = DatasetRow(id=dataset_id or self.new_id(), workspace_id=workspace_id, name=name, source=source,
                         filters=filters, content_hash=content_hash, train_rows=train_rows,
                         validation_rows=validation_rows, path=path, created_at=now)
        with self._scope() as conn:
            conn.execute(insert(datasets).values(**row.__dict__))
        return row

    def get(self, workspace_id: str, dataset_id: str) -> DatasetRow | None:
        with self._scope() as conn:
            r = conn.execute(select(datasets).where(datasets.c.workspace_id == workspace_id,
                                                    datasets.c.id == dataset_id)).first()
        return _row(r) if r else None

    def list(self, workspace_id: str, *, name: str | None = None, limit: int = 100,
             after: str | None = None) -> list[DatasetRow]:
        """The workspace's datasets, newest first; `after` (a dataset id) continues past it."""
        query = select(datasets).where(datasets.c.workspace_id == workspace_id)
        if name is not None:
            query = query.where(datasets.c.name == name)
        with self._scope() as conn:
            rows = newest_first(conn, query, datasets, workspace_id=workspace_id, after=after, limit=limit)
        return [_row(r) for r in rows]

    def delete(self, workspace_id: str, dataset_id: str) -> DatasetRow | None:
        """Remove the row (the caller removes the folder); returns what was deleted, None if nothing."""
        with self._scope() as conn:
            r = conn.execute(select(datasets).where(datasets.c.workspace_id == workspace_id,
                                                    datasets.c.id == dataset_id)).first()
            if r is None:
                return None
            conn.execute(delete(datasets).where(datasets.c.id == dataset_id))
        return _row(r)
