"""What a backend is asked to run and what it reports back, for replicas.

The control plane decides (desired replicas per deployment); a `Backend` acts. These shapes are
the whole conversation between them, so the reconciler can be tested with a fake backend.
"""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, Field


class ReplicaState(str, Enum):
    STARTING = "starting"      # process launched, /health/ready not yet 200
    READY = "ready"            # serving traffic
    DRAINING = "draining"      # finishing in-flight work, refusing new work
    STOPPED = "stopped"        # stopped on purpose
    CRASHED = "crashed"        # exited or stopped answering; will be restarted with backoff
    FAILED = "failed"          # the package's load() raised; not restarted


# Exit code a replica process uses when the package's load() raised: the backend reports
# FAILED (not CRASHED) so the reconciler stops restarting it and marks the deployment failed.
EXIT_LOAD_FAILED = 3

# Set by the gateway on a request for a fine-tuned model: the LoRA adapter to apply (its name, the
# request's `model`) and its folder, both percent-encoded. An llm replica registers the adapter on
# first sight (or when its folder changed), so every replica of a base model serves exactly the
# adapters the control plane has registered, with none to push or keep in sync. A client cannot
# set them: the gateway writes every upstream request's headers itself and passes none of the client's.
ADAPTER_HEADER = "x-slipway-adapter"
ADAPTER_PATH_HEADER = "x-slipway-adapter-path"


class ReplicaLaunch(BaseModel):
    """Everything a backend needs to start one replica."""

    replica_id: str = Field(description="Unique id, e.g. 'r-3f9a…'; names the log file and pid record.")
    deployment_id: str = Field(description="The deployment this replica serves.")
    package_dir: str = Field(description="Absolute path of the deployment's package snapshot.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for the process.")
    cpu: float = Field(1.0, description="CPU cores requested (a hint for the local backend).")
    memory_bytes: int = Field(0, description="Memory requested in bytes (0: no limit).")


class ReplicaObservation(BaseModel):
    """What a backend sees of one replica right now."""

    replica_id: str
    deployment_id: str
    url: str | None = Field(None, description="Base URL on 127.0.0.1, once a port is bound.")
    state: ReplicaState
    pid: int | None = None
    exit_code: int | None = None
    started_at: float = Field(0.0, description="Unix time the process started.")
    detail: str = Field("", description="Why the state is what it is, for logs and the dashboard.")
