"""The deployment files are rendered from a project's `refit.yaml` alone."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def spec_metrics_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not the free port every other test's scheduler gets (tests/servers.py): a rendering
    takes `schedule.metrics_port` from the spec, as `refit deploy` does for a user."""
    monkeypatch.delenv("REFIT_SCHEDULE__METRICS_PORT", raising=False)
