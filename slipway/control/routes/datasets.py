"""Datasets: upload chat JSONL, build one from traces, list, read, delete.

    POST   /api/v1/datasets               JSONL as the body (?name=&validation_fraction=&seed=),
                                          or multipart/form-data with a `file` part (and the same fields)
    POST   /api/v1/datasets/from_traces   {"name", "model", "environment", "since", "until", "tags",
                                           "min_feedback_score", "has_feedback", "validation_fraction", "seed"}
    GET    /api/v1/datasets               newest first, paged by `after` and `limit`
    GET    /api/v1/datasets/{id}
    DELETE /api/v1/datasets/{id}          refused while an unfinished fine-tuning job uses it

A bad upload answers 400 listing every bad line by number, and writes nothing. The file work is
done by the `DatasetFiles` the composition root injects (see `slipway.control.learning`).
"""

from __future__ import annotations

import asyncio
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import PurePath
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from slipway.control.auth import Principal
from slipway.control.learning import DatasetFiles, InvalidParamError, LearningServices, jobs_using_dataset
from slipway.control.plane import ControlPlane
from slipway.control.routes.common import Caller
from slipway.control.routes.usage import parse_time
from slipway.errors import ConflictError, NotFoundError, SlipwayError, SpecError
from slipway.store import DatasetRow, TraceFilter

MAX_UPLOAD_BYTES = 256 * 1024 * 1024
NAME_MAX_CHARS = 200


class DatasetTooLargeError(SpecError):
    status_code = 413
    code = "request_too_large"


class DatasetsUnavailableError(SlipwayError):
    status_code = 503
    code = "datasets_unavailable"


class DatasetOut(BaseModel):
    id: str
    object: str = "dataset"
    name: str
    source: str = Field(description="upload, or traces (picked by `filters`).")
    filters: dict[str, Any] | None = Field(description="The trace filter a dataset from traces was built with.")
    content_hash: str = Field(description="sha256 of the canonical rows in order.")
    train_rows: int
    validation_rows: int
    created_at: float

    @classmethod
    def from_row(cls, row: DatasetRow) -> DatasetOut:
        return cls(id=row.id, name=row.name, source=row.source, filters=row.filters, content_hash=row.content_hash,
                   train_rows=row.train_rows, validation_rows=row.validation_rows, created_at=row.created_at)


class DatasetCreated(DatasetOut):
    warnings: list[str] = Field(default_factory=list, description="Lines that train but look like mistakes.")


class DatasetPage(BaseModel):
    object: str = "list"
    data: list[DatasetOut]
    has_more: bool


class DatasetDeleted(BaseModel):
    id: str
    object: str = "dataset"
    deleted: bool = True


class FromTracesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("traces", min_length=1, max_length=NAME_MAX_CHARS, description="A label for the dataset.")
    model: str | None = Field(None, description="Only traces of this model.")
    environment: str | None = Field(None, description="Only traces served by this environment.")
    since: str | float | None = Field(None, description="Created at or after: ISO 8601 or Unix seconds.")
    until: str | float | None = Field(None, description="Created before: ISO 8601 or Unix seconds.")
    tags: list[str] = Field(default_factory=list, max_length=32, description="Traces carrying every one of these.")
    min_feedback_score: float | None = Field(None, ge=0, le=1, description="Scored at least this, or corrected.")
    has_feedback: bool | None = Field(None, description="true: only traces with feedback; false: only without.")
    validation_fraction: float = Field(0.1, ge=0, lt=1, description="Share of rows held out for validation.")
    seed: int = Field(0, ge=0, description="Seeds the train/validation split.")

    def trace_filter(self) -> TraceFilter:
        since = parse_time(None if self.since is None else str(self.since), "since")
        until = parse_time(None if self.until is None else str(self.until), "until")
        return TraceFilter(model=self.model, environment=self.environment, since=since, until=until,
                           tags=tuple(self.tags), min_feedback_score=self.min_feedback_score,
                           has_feedback=self.has_feedback)


def router(plane: ControlPlane, learning: LearningServices) -> APIRouter:
    api = APIRouter(prefix="/api/v1/datasets", tags=["datasets"])
    admin = Depends(Caller(plane))

    def files() -> DatasetFiles:
        if learning.datasets is None:
            raise DatasetsUnavailableError("this control plane builds no datasets (it was started without the "
                                           "training components); use `slipway up`")
        return learning.datasets

    @api.post("", status_code=201, response_model=DatasetCreated, openapi_extra=_UPLOAD_BODY,
              summary="Upload OpenAI chat fine-tuning JSONL as a dataset")
    async def upload_dataset(
        request: Request,
        caller: Principal = admin,
        name: str | None = Query(None, max_length=NAME_MAX_CHARS, description="A label (default: the file name)."),
        validation_fraction: float = Query(0.1, ge=0, lt=1, description="Share of rows held out for validation."),
        seed: int = Query(0, ge=0, description="Seeds the train/validation split."),
    ) -> DatasetCreated:
        body = await _read_body(request, MAX_UPLOAD_BYTES)
        data, fields = _upload_parts(request.headers.get("content-type", ""), body)
        name = fields.get("name") or name or "dataset"
        fraction = _number(fields, "validation_fraction", validation_fraction, float)
        seed = int(_number(fields, "seed", seed, int))
        if not 0 <= fraction < 1:
            raise InvalidParamError(f"validation_fraction must be in [0, 1), got {fraction}",
                                    param="validation_fraction")
        row, warnings = await asyncio.to_thread(files().from_jsonl, caller.workspace_id, data,
                                                name=name[:NAME_MAX_CHARS], validation_fraction=fraction, seed=seed)
        return DatasetCreated(**DatasetOut.from_row(row).model_dump(), warnings=warnings)

    @api.post("/from_traces", status_code=201, response_model=DatasetCreated,
              summary="Build a dataset from captured traces (corrected outputs preferred)")
    def dataset_from_traces(body: FromTracesRequest, caller: Principal = admin) -> DatasetCreated:
        row, warnings = files().from_traces(caller.workspace_id, body.trace_filter(), name=body.name,
                                            validation_fraction=body.validation_fraction, seed=body.seed)
        return DatasetCreated(**DatasetOut.from_row(row).model_dump(), warnings=warnings)

    @api.get("", response_model=DatasetPage, summary="The workspace's datasets, newest first")
    def list_datasets(caller: Principal = admin,
                      after: str | None = Query(None, description="Continue after this dataset id."),
                      limit: int = Query(20, ge=1, le=100)) -> DatasetPage:
        rows = plane.store.datasets.list(caller.workspace_id, limit=limit + 1, after=after)
        return DatasetPage(data=[DatasetOut.from_row(r) for r in rows[:limit]], has_more=len(rows) > limit)

    @api.get("/{dataset_id}", response_model=DatasetOut, summary="One dataset")
    def get_dataset(dataset_id: str, caller: Principal = admin) -> DatasetOut:
        return DatasetOut.from_row(_dataset(plane, caller.workspace_id, dataset_id))

    @api.delete("/{dataset_id}", response_model=DatasetDeleted, summary="Delete a dataset and its files")
    def delete_dataset(dataset_id: str, caller: Principal = admin) -> DatasetDeleted:
        _dataset(plane, caller.workspace_id, dataset_id)
        users = jobs_using_dataset(plane.store, caller.workspace_id, dataset_id)
        if users:
            raise ConflictError(f"dataset {dataset_id} is used by unfinished fine-tuning job(s) {', '.join(users)}; "
                                "cancel them or wait until they finish")
        if files().delete(caller.workspace_id, dataset_id) is None:
            raise NotFoundError(f"dataset {dataset_id!r} not found; GET /api/v1/datasets lists your datasets")
        return DatasetDeleted(id=dataset_id)

    return api


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "OpenAI chat fine-tuning JSONL, one example per line: as the body, or as the `file` part "
                       "of multipart/form-data (with optional `name`, `validation_fraction`, `seed` parts).",
        "content": {
            "application/jsonl": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                "file": {"type": "string", "format": "binary"}, "name": {"type": "string"},
                "validation_fraction": {"type": "number"}, "seed": {"type": "integer"}}}},
        },
    }
}


def _dataset(plane: ControlPlane, workspace_id: str, dataset_id: str) -> DatasetRow:
    row = plane.store.datasets.get(workspace_id, dataset_id)
    if row is None:
        raise NotFoundError(f"dataset {dataset_id!r} not found; GET /api/v1/datasets lists your datasets")
    return row


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it grows past `limit` bytes."""
    declared = request.headers.get("content-length")
    too_large = (f"the dataset upload is over the limit of {limit} bytes; split the file or build the "
                 "dataset from traces")
    if declared and declared.isdigit() and int(declared) > limit:
        raise DatasetTooLargeError(too_large)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise DatasetTooLargeError(too_large)
        chunks.append(chunk)
    if size == 0:
        raise SpecError("the request body is empty; send the JSONL file as the body or as the multipart "
                        "part `file`", code="invalid_dataset")
    return b"".join(chunks)


def _upload_parts(content_type: str, body: bytes) -> tuple[bytes, dict[str, str]]:
    """The JSONL bytes and the other form fields: from multipart/form-data, or the body as it is."""
    if not content_type.lower().startswith("multipart/form-data"):
        return body, {}
    # The standard library's MIME parser reads form-data well enough for a bounded body in memory.
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
                                                  + body)
    if not message.is_multipart():
        raise SpecError("the multipart body could not be read; send the file as the part `file` "
                        "(curl -F file=@data.jsonl)", code="invalid_request")
    data: bytes | None = None
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        field = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if field == "file":
            data = payload
            filename = part.get_filename()
            if filename:
                fields.setdefault("filename", PurePath(filename).stem)
        elif isinstance(field, str):
            fields[field] = payload.decode("utf-8", errors="replace").strip()
    if data is None:
        raise SpecError("the multipart body has no part named `file`; send the JSONL as `file` "
                        "(curl -F file=@data.jsonl)", code="invalid_request")
    if "name" not in fields and "filename" in fields:
        fields["name"] = fields["filename"]
    return data, fields


def _number(fields: dict[str, str], name: str, default: float, kind: type) -> float:
    if name not in fields or fields[name] == "":
        return default
    try:
        return kind(fields[name])
    except ValueError:
        raise InvalidParamError(f"{name}: {fields[name]!r} is not a number", param=name) from None
