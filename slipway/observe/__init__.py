"""Observability shared by every process: structured logs, metric names, timing helpers."""

from slipway.observe.logging import configure_logging, request_id_var

__all__ = ["configure_logging", "request_id_var"]
