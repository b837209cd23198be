"""The gate's run: the champion scored on the challenger's holdout, the two compared on its
rows (`gate.test`), the decision recorded, and production moved on success."""

from __future__ import annotations

import math
from typing import Any

from refit.errors import ConflictError, RefitError
from refit.flavors import load_version
from refit.registry import PRODUCTION, DecisionRow, ModelVersionRow
from refit.registry.signing import check_signed
from refit.services import Services
from refit.train.evidence import Evidence, paired
from refit.train.gate import decide
from refit.train.metrics import score
from refit.train.promotion import UnservableVersionError, check_artifacts


def last_gate_evidence(services: Services) -> dict[str, Any] | None:
    name = services.project.spec.name
    for decision in services.registry.list_decisions(name, limit=20):
        if decision.action == "gate":
            return decision.evidence
    return None


def gate(
    services: Services,
    challenger: ModelVersionRow,
    model: Any,
    X: Any,
    y: Any,
    value: float,
    actor: str,
) -> DecisionRow:
    """Score the champion on the challenger's holdout, compare the two on its rows (per
    `gate.test`), decide, and promote on success.

    A champion that cannot be scored on this holdout (its artifact is unreadable, or it was
    trained on other columns) does not block the challenger; the reason says so.
    """
    spec, registry, store = services.project.spec, services.registry, services.store
    metric = spec.model.metric_name
    champion_version = registry.alias_version(spec.name, PRODUCTION)
    champion_value: float | None = None
    evidence = Evidence(None)
    note = ""
    if champion_version is not None:
        champion = registry.get_version(spec.name, champion_version)
        try:
            check_signed(champion, registry.signing_key)  # before a byte of it is read
            # The champion with its own code: its features hook on this holdout.
            loaded = load_version(champion, store.get, spec.model.trusted_types)
            champion_value = score(loaded, X, y, spec.model.task, metric)
            evidence = paired(
                spec.gate, metric, spec.model.higher_is_better, y, loaded, model, X, spec.model.task
            )
        except (RefitError, ValueError, KeyError, TypeError) as exc:
            note = f" (production v{champion_version} could not be scored on this holdout: {exc})"
        if evidence.note:
            note = f" ({evidence.note})"
    # An unscorable champion is still there: to `decide` it has no score, not no existence.
    unscored = champion_version is not None and champion_value is None
    verdict = decide(
        metric,
        spec.model.higher_is_better,
        spec.gate,
        value,
        math.nan if unscored else champion_value,
        champion_version,
        evidence.comparison,
    )

    def row(promoted: bool, reason: str) -> DecisionRow:
        return DecisionRow(
            name=spec.name,
            action="gate",
            alias=PRODUCTION,
            promoted=promoted,
            candidate_version=challenger.version,
            previous_version=champion_version,
            metric=metric,
            candidate_value=value,
            champion_value=champion_value,
            reason=reason,
            actor=actor,
            evidence=evidence.to_dict(),
        )

    if not verdict.promote:
        return registry.record_decision(row(False, verdict.reason + note))
    try:
        check_artifacts(store, challenger, signing_key=registry.signing_key)
    except UnservableVersionError as exc:
        return registry.record_decision(row(False, f"{verdict.reason}, but not promoted: {exc}"))
    try:
        return registry.move_alias(row(True, verdict.reason + note), expected=champion_version)
    except ConflictError as exc:
        registry.record_decision(row(False, f"{verdict.reason}, but not promoted: {exc}"))
        raise
