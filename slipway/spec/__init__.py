"""Typed shapes of everything slipway keeps on disk or sends on the wire. No I/O here."""

from slipway.spec.package import Autoscaling, PackageSpec, Resources, RuntimeSettings, parse_package
from slipway.spec.replica import ReplicaLaunch, ReplicaObservation, ReplicaState
from slipway.spec.snapshot import RoutingSnapshot
from slipway.spec.usage import UsageRecord

__all__ = [
    "Autoscaling", "PackageSpec", "Resources", "RuntimeSettings", "parse_package",
    "ReplicaLaunch", "ReplicaObservation", "ReplicaState", "RoutingSnapshot", "UsageRecord",
]
