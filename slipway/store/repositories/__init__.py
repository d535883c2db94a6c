"""Repositories: every query slipway runs, one class per table family."""

from slipway.store.repositories.datasets import DatasetRepository
from slipway.store.repositories.deployments import DeploymentRepository
from slipway.store.repositories.environments import EnvironmentRepository
from slipway.store.repositories.evals import EvalRepository
from slipway.store.repositories.fine_tuning import FineTuningRepository
from slipway.store.repositories.keys import KeyRepository, generate_secret, hash_key
from slipway.store.repositories.models import STANDARD_ENVIRONMENTS, ModelRepository
from slipway.store.repositories.replicas import ReplicaRepository
from slipway.store.repositories.state import StateRepository
from slipway.store.repositories.traces import TraceRepository
from slipway.store.repositories.usage import UsageRepository
from slipway.store.repositories.workspaces import WorkspaceRepository

__all__ = [
    "DatasetRepository", "EvalRepository", "FineTuningRepository", "TraceRepository",
    "DeploymentRepository", "EnvironmentRepository", "KeyRepository", "ModelRepository", "ReplicaRepository",
    "StateRepository", "UsageRepository", "WorkspaceRepository", "STANDARD_ENVIRONMENTS", "generate_secret",
    "hash_key",
]
