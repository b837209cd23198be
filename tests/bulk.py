"""Registry rows in bulk, for the tests of what reads many of them: rows only, no files."""

from __future__ import annotations

from datetime import datetime, timedelta

from refit.registry import Registry
from refit.registry.tables import SnapshotRow


def add_snapshots(registry: Registry, project: str, count: int, before: datetime) -> None:
    """`count` snapshot rows of `project`, one a minute back from `before`; their files do not
    exist, so nothing may train on them."""
    with registry.write() as s:
        for i in range(count):
            s.add(
                SnapshotRow(
                    id=f"{i:064x}",
                    project=project,
                    created_at=before - timedelta(minutes=i),
                    uri="none",
                    sha256="0" * 64,
                    size_bytes=1,
                    row_count=i,
                    mode="append",
                    parent_id=None,
                    columns={},
                    stats={},
                )
            )
