"""The control plane: deployments, environments and promotion, keys, usage, the management API,
and the loop that keeps replicas matching the store (through the reconciler and a backend).

    plane = ControlPlane(store, backend, home=home)
    workspace, new_admin_key = plane.bootstrap()
    app = create_control_app(plane)          # FastAPI, /api/v1/... and /internal/snapshot
    await plane.run_forever()                # ticks until cancelled
    plane.snapshots                          # the gateway's in-process SnapshotSource
"""

from slipway.control.api import create_control_app
from slipway.control.auth import Principal
from slipway.control.config import ControlConfig, PackageLimits
from slipway.control.keys import ADMIN_KEY_FILE, DEFAULT_WORKSPACE
from slipway.control.plane import ControlPlane
from slipway.control.snapshot import SnapshotPublisher, build_snapshot

__all__ = [
    "ADMIN_KEY_FILE", "DEFAULT_WORKSPACE", "ControlConfig", "ControlPlane", "PackageLimits", "Principal",
    "SnapshotPublisher", "build_snapshot", "create_control_app",
]
