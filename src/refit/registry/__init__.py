"""The registry: the metadata store every role reads and writes (SQLite or PostgreSQL)."""

from refit.registry.registry import PRODUCTION, Registry, open_registry
from refit.registry.tables import (
    AliasRow,
    DecisionRow,
    IngestBatchRow,
    ModelVersionRow,
    SnapshotRow,
    TrainingRunRow,
)

__all__ = [
    "PRODUCTION",
    "AliasRow",
    "DecisionRow",
    "IngestBatchRow",
    "ModelVersionRow",
    "Registry",
    "SnapshotRow",
    "TrainingRunRow",
    "open_registry",
]
