"""Moving `production` by hand: promote a chosen version, or roll back to the previous one.

Both are the same compare-and-set as the gate's promotion, recorded as a decision with the
metric values the versions were registered with.
"""

from __future__ import annotations

from refit.errors import ConflictError
from refit.registry import PRODUCTION, DecisionRow, Registry


def promote_version(registry: Registry, name: str, version: int, actor: str) -> DecisionRow:
    """Point production at `version`."""
    target = registry.get_version(name, version)
    current = registry.alias_version(name, PRODUCTION)
    if current == version:
        raise ConflictError(f"{name} v{version} already holds {PRODUCTION}")
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


def rollback(registry: Registry, name: str, actor: str) -> DecisionRow:
    """Point production back at the version it held before the current one was promoted."""
    current, previous = registry.rollback_target(name, PRODUCTION)
    now, before = registry.get_version(name, current), registry.get_version(name, previous)
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
