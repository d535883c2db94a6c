"""Settings of the control plane: loop timing, upload limits, key cache. Defaults suit one machine."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MiB = 1024 * 1024


class PackageLimits(BaseModel):
    """Bounds on an uploaded package, checked while it is read and unpacked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_upload_bytes: int = Field(512 * MiB, ge=1, description="Largest compressed upload accepted.")
    max_unpacked_bytes: int = Field(4096 * MiB, ge=1, description="Largest total size of the unpacked files.")
    max_files: int = Field(20_000, ge=1, description="Most files (and folders) one package may hold.")


class ControlConfig(BaseModel):
    """How the control plane runs; every field has a default that suits `slipway up` on one machine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tick_interval: float = Field(1.0, gt=0, description="Seconds between control-loop ticks (a change wakes it early).")
    starting_tick_interval: float = Field(
        0.2, gt=0, description="Seconds between ticks while a replica is starting: its readiness reaches gateways, "
        "and requests held for a cold start, this much after it turns ready at most.")
    packages: PackageLimits = Field(default_factory=PackageLimits, description="Upload and unpack limits.")
    key_cache_seconds: float = Field(
        2.0, ge=0, description="How long a key lookup is reused before asking the store again (revokes apply at once)."
    )
    key_cache_entries: int = Field(4096, ge=1, description="Most key lookups cached.")
    max_replicas: int = Field(64, ge=1, description="Most replicas one deployment may be scaled to.")
    snapshot_max_wait: float = Field(60.0, gt=0, description="Longest long-poll of /internal/snapshot, in seconds.")
    log_tail_max: int = Field(10_000, ge=1, description="Most log lines returned per replica.")
