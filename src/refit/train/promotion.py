"""Moving `production` by hand: promote a chosen version, or roll back to the previous one.

Both are the same compare-and-set as the gate's promotion, recorded as a decision with the
metric values the versions were registered with. Every promotion (these and the gate's) first
reads each of the version's artifacts back from the store and checks its sha256
(`check_artifacts`): a version no server could load never takes the alias.
"""

from __future__ import annotations

from refit.artifacts import ArtifactStore
from refit.errors import ArtifactError, ConflictError, NotFoundError, UntrustedVersionError
from refit.flavors import version_artifacts
from refit.registry import PRODUCTION, DecisionRow, ModelVersionRow, Registry
from refit.registry.signing import check_signed


class UnservableVersionError(ArtifactError):
    """A version's artifact is missing from the store or does not match its sha256: it
    cannot be promoted, and the alias was not moved."""


def artifacts_of(row: ModelVersionRow) -> list[tuple[str, str, str]]:
    """(what, key, sha256) of every file a server loads for this version, its code
    artifact included."""
    return version_artifacts(row)


def check_artifacts(
    store: ArtifactStore,
    row: ModelVersionRow,
    alias: str = PRODUCTION,
    *,
    signing_key: bytes | None = None,
) -> None:
    """Fetch every artifact of `row` and check its sha256; `UnservableVersionError` names the
    first that is missing or altered. With `signing_key`, the version must be signed with it
    (checked first, as a server does)."""
    try:
        check_signed(row, signing_key)
    except UntrustedVersionError as exc:
        raise UnservableVersionError(
            f"{row.name} v{row.version} cannot take {alias}: {exc}. {alias} was not moved"
        ) from None
    for what, key, sha256 in artifacts_of(row):
        try:
            store.get(key, sha256)
        except (ArtifactError, NotFoundError) as exc:
            raise UnservableVersionError(
                f"{row.name} v{row.version} cannot take {alias}: its {what} {key} cannot be "
                f"served ({exc}). {alias} was not moved; train or register a new version, or "
                "promote another one"
            ) from None


def promote_version(
    registry: Registry, name: str, version: int, actor: str, *, store: ArtifactStore
) -> DecisionRow:
    """Point production at `version`, once its artifacts are checked in `store`."""
    target = registry.get_version(name, version)
    current = registry.alias_version(name, PRODUCTION)
    if current == version:
        raise ConflictError(f"{name} v{version} already holds {PRODUCTION}")
    check_artifacts(store, target, signing_key=registry.signing_key)
    champion = registry.get_version(name, current) if current is not None else None
    was = f"v{current}" if current is not None else "nothing"
    return registry.move_alias(
        DecisionRow(
            name=name,
            action="promote",
            alias=PRODUCTION,
            promoted=True,
            candidate_version=version,
            metric=target.metric,
            candidate_value=target.metrics.get(target.metric),
            champion_value=champion.metrics.get(target.metric) if champion else None,
            reason=f"promoted by hand over {was}",
            actor=actor,
        ),
        expected=current,
    )


def rollback(registry: Registry, name: str, actor: str, *, store: ArtifactStore) -> DecisionRow:
    """Point production back at the version it held before the current one was promoted,
    once its artifacts are checked in `store`."""
    current, previous = registry.rollback_target(name, PRODUCTION)
    now, before = registry.get_version(name, current), registry.get_version(name, previous)
    check_artifacts(store, before, signing_key=registry.signing_key)
    return registry.move_alias(
        DecisionRow(
            name=name,
            action="rollback",
            alias=PRODUCTION,
            promoted=True,
            candidate_version=previous,
            metric=before.metric,
            candidate_value=before.metrics.get(before.metric),
            champion_value=now.metrics.get(now.metric),
            reason=f"rolled back from v{current} to v{previous}",
            actor=actor,
        ),
        expected=current,
    )
