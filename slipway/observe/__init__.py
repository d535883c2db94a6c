"""Observability shared by every process: structured logs, metric names and families, metric history.

    logging     JSON log lines carrying the request id being served
    metrics     metric names (replica, LLM engine) and the families of the control plane and gateway
    histogram   bucket arithmetic: deltas between scrapes, merges, PromQL-style quantiles (pure)
    scrape      a replica's /metrics page as cumulative figures, and what changed between two reads (pure)
    history     per-deployment history, downsampled as it ages, bounded in memory (pure, time passed in)
"""

from slipway.observe.history import HistoryConfig, MetricHistory, MetricSample, SeriesPoint, Tier
from slipway.observe.logging import configure_logging, request_id_var
from slipway.observe.metrics import ControlMetrics, DeploymentFigures, GatewayMetrics

__all__ = [
    "ControlMetrics", "DeploymentFigures", "GatewayMetrics", "HistoryConfig", "MetricHistory", "MetricSample",
    "SeriesPoint", "Tier", "configure_logging", "request_id_var",
]
