"""The composition root: a project's open registry and artifact store, closed together."""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType

from refit.artifacts import ArtifactStore, open_artifact_store
from refit.project import Project
from refit.registry import Registry, open_registry


@dataclass
class Services:
    """Everything a role needs, opened once: `with open_services(project) as services: ...`"""

    project: Project
    registry: Registry
    store: ArtifactStore

    def close(self) -> None:
        self.registry.close()

    def __enter__(self) -> Services:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_services(project: Project) -> Services:
    store = open_artifact_store(project.artifacts_url, project.spec.storage.s3)
    registry = open_registry(project.metadata_url)
    return Services(project, registry, store)
