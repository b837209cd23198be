"""The composition root: a project's open registry and artifact store, closed together."""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType

from refit.artifacts import ArtifactStore, open_artifact_store
from refit.project import Project
from refit.registry import Registry, open_registry
from refit.registry.signing import signing_key


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


def open_services(project: Project, *, create: bool = True) -> Services:
    """Open the project's registry and artifact store. A SQLite registry that does not exist
    yet is made only with `create`; without it, that is a `NoRegistryError` (the commands that
    only read, and the server, pass `create=False`). With `REFIT_SIGNING_KEY` set, the registry
    signs what it registers."""
    key = signing_key()
    store = open_artifact_store(project.artifacts_url, project.spec.storage.s3)
    registry = open_registry(project.metadata_url, create=create, signing_key=key)
    return Services(project, registry, store)
