"""One training run: snapshot -> split -> fit -> evaluate -> register -> gate.

The run is recorded before any work starts and ends recorded as succeeded, failed (with its
error) or interrupted. A version exists only once its artifact is in the store in full: the
artifact is written first, then one transaction allocates the version number, stores the
version and marks the run succeeded. Killing the process at any point therefore leaves no
version that points at a missing or partial file.
"""

from __future__ import annotations

import math
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from refit.artifacts import ArtifactStore
from refit.data.ingest import read_snapshot
from refit.errors import (
    ArtifactError,
    ConflictError,
    NotFoundError,
    RefitError,
    SpecError,
    TrainingError,
)
from refit.flavors import DEFAULT_FLAVOR, SUFFIXES, load_model, save_model
from refit.flavors.onnx import onnx_estimator
from refit.registry import PRODUCTION, DecisionRow, ModelVersionRow, SnapshotRow
from refit.services import Services
from refit.signature import Signature, signature_for
from refit.spec import ArtifactFormat, Spec, Task
from refit.train.gate import decide
from refit.train.metrics import evaluate, score
from refit.train.onnx_export import export_onnx
from refit.train.pipeline import (
    fit_model,
    resolve_estimator,
    resolve_function,
    target_array,
)
from refit.train.split import Split, split

Step = Callable[[str], None]


@dataclass(frozen=True)
class TrainResult:
    """What a training run made and what the gate decided about it."""

    run_id: str
    version: ModelVersionRow
    decision: DecisionRow
    split_note: str | None = None

    @property
    def promoted(self) -> bool:
        return self.decision.promoted


def check_model_spec(spec: Spec, root: Path) -> None:
    """Resolve the estimator or function now, so a bad spec fails before any work."""
    if spec.model.trained_elsewhere:
        raise SpecError(
            "model.trained_elsewhere is true: this project's versions come from "
            "`refit models register FILE`, not from `refit train`"
        )
    if spec.model.estimator is not None:
        resolve_estimator(spec.model.estimator, spec.model.params, spec.model.task)
    elif spec.model.function is not None:
        resolve_function(spec.model.function, root)


@dataclass(frozen=True)
class _Candidate:
    """A model to register: fitted by refit, or read from a user's file (`data`)."""

    model: Any
    flavor: str
    format: ArtifactFormat
    params: dict[str, Any]
    data: bytes | None = None
    """The artifact as the user gave it; None: refit saves the model."""


def run_training(
    services: Services,
    *,
    snapshot_id: str | None = None,
    trigger: str = "manual",
    actor: str = "refit train",
    on_step: Step | None = None,
) -> TrainResult:
    """Train on a snapshot (default: the newest), register the version, run the gate."""
    project = services.project
    spec = project.spec
    step = on_step or (lambda _: None)
    check_model_spec(spec, project.root)

    def fit(parts: Split) -> _Candidate:
        step(f"fitting on {len(parts.train)} rows")
        model = fit_model(parts.train, spec.data, spec.model, project.root)
        return _Candidate(model, DEFAULT_FLAVOR, spec.model.format, _params(model, spec))

    return _run(services, fit, "fit_s", snapshot_id, trigger, actor, step)


def register_model_file(
    services: Services,
    path: Path,
    *,
    classes: Sequence[str] | None = None,
    snapshot_id: str | None = None,
    actor: str = "refit models register",
    on_step: Step | None = None,
) -> TrainResult:
    """Register a model trained elsewhere (an `.onnx`, `.joblib` or `.skops` file): scored on
    the holdout of a snapshot (default: the newest) exactly like a model refit trains, then
    gated. An ONNX model's probability columns are taken to follow `classes`, by default the
    sorted classes of the data, as scikit-learn orders them; its labels must agree."""
    spec = services.project.spec
    step = on_step or (lambda _: None)
    fmt = _format_of(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read the model file {path}: {exc.strerror}") from exc
    if not data:
        raise ArtifactError(f"the model file {path} is empty")

    def load(parts: Split) -> _Candidate:
        step(f"loading {path.name} ({len(data)} bytes)")
        params = {"file": path.name}
        if fmt is not ArtifactFormat.ONNX:
            model = load_model(data, fmt)
            if not callable(getattr(model, "predict", None)):
                raise ArtifactError(f"{path.name} holds a {type(model).__name__}, not a model")
            return _Candidate(model, DEFAULT_FLAVOR, fmt, params, data)
        known = None
        if spec.model.task is Task.CLASSIFICATION:
            known = _classes(target_array(parts.train, spec.data), classes)
        model = onnx_estimator(data, list(spec.data.features), known)
        if known is not None:
            _check_class_order(model, parts.holdout[list(spec.data.features)], classes)
        return _Candidate(model, "onnx", fmt, params, data)

    return _run(services, load, "model_s", snapshot_id, "register", actor, step)


def _run(
    services: Services,
    make: Callable[[Split], _Candidate],
    make_timing: str,
    snapshot_id: str | None,
    trigger: str,
    actor: str,
    step: Step,
) -> TrainResult:
    project, registry, store = services.project, services.registry, services.store
    spec = project.spec
    registry.interrupt_dead_runs(spec.name)
    snapshot = _snapshot(services, snapshot_id)

    run_id = uuid.uuid4().hex
    registry.start_run(run_id, spec.name, snapshot.id, trigger)
    timings: dict[str, float] = {}
    try:
        with _timed(timings, "load_s"):
            step(f"loading snapshot {snapshot.id[:12]} ({snapshot.row_count} rows)")
            frame = read_snapshot(store, snapshot)
        with _timed(timings, "split_s"):
            parts = split(frame, spec.data, spec.model)
        with _timed(timings, make_timing):
            candidate = make(parts)
        model = candidate.model
        # The holdout as the model will meet rows when served: validated, typed, unconverted.
        X = parts.holdout[list(spec.data.features)]
        y = target_array(parts.holdout, spec.data)
        with _timed(timings, "evaluate_s"):
            step(f"evaluating on {len(parts.holdout)} holdout rows")
            metrics = evaluate(model, X, y, spec.model.task)
            value = score(model, X, y, spec.model.task, spec.model.metric_name)
        signature = signature_for(
            model, spec.data, spec.model.task, target_array(parts.train, spec.data)
        )
        with _timed(timings, "save_s"):
            step("saving the artifact")
            data = candidate.data
            ref = store.put(
                save_model(model, candidate.format) if data is None else data,
                kind="models",
                suffix=SUFFIXES[candidate.format],
            )
        if candidate.flavor == "onnx":
            onnx: dict[str, Any] = {"status": "the model is ONNX"}
        else:
            with _timed(timings, "onnx_s"):
                step("converting to ONNX and checking parity on the holdout")
                onnx = _onnx(model, X, spec, store)
        timings["total_s"] = round(sum(timings.values()), 4)
        version = registry.register_version(
            run_id,
            ModelVersionRow(
                name=spec.name,
                task=spec.model.task.value,
                flavor=candidate.flavor,
                format=candidate.format.value,
                artifact_uri=ref.uri,
                artifact_sha256=ref.sha256,
                artifact_size=ref.size,
                signature=signature.to_dict(),
                params=candidate.params,
                metric=spec.model.metric_name,
                metrics={**metrics, spec.model.metric_name: value},
                snapshot_id=snapshot.id,
                code_revision=code_revision(project.root),
                onnx=onnx,
                timings={
                    **timings,
                    "holdout_rows": len(parts.holdout),
                    "split": parts.method.value,
                },
            ),
        )
    except RefitError as exc:
        registry.end_run(run_id, "failed", f"{type(exc).__name__}: {exc}", timings)
        raise
    except Exception as exc:
        registry.end_run(run_id, "failed", f"{type(exc).__name__}: {exc}", timings)
        raise TrainingError(f"training failed: {type(exc).__name__}: {exc}") from exc
    except BaseException:
        registry.end_run(run_id, "interrupted", "stopped before the run finished", timings)
        raise
    step(f"registered {spec.name} v{version.version}; running the gate")
    decision = gate(services, version, X, y, value, actor)
    return TrainResult(run_id, version, decision, parts.note)


def _format_of(path: Path) -> ArtifactFormat:
    for fmt, suffix in SUFFIXES.items():
        if path.name.endswith(suffix):
            return fmt
    raise ArtifactError(
        f"cannot tell the format of {path.name}: expected a file ending in "
        f"{', '.join(SUFFIXES.values())}"
    )


def _classes(y: np.ndarray[Any, Any], given: Sequence[str] | None) -> list[Any]:
    """The classes of an ONNX classifier: `given` (in its order, matched to the data's
    classes by their text), else the data's classes sorted."""
    found = [v.item() if isinstance(v, np.generic) else v for v in np.unique(y)]
    if given is None:
        return found
    by_text = {str(v): v for v in found}
    unknown = [c for c in given if c not in by_text]
    if unknown or len(set(given)) != len(given):
        raise ArtifactError(
            f"--classes {','.join(given)} should name each of the data's classes once "
            f"({', '.join(by_text)})" + (f"; unknown: {', '.join(unknown)}" if unknown else "")
        )
    return [by_text[c] for c in given]


def _check_class_order(model: Any, X: Any, given: Sequence[str] | None) -> None:
    """An ONNX classifier's labels must be classes, and its most probable class its label:
    otherwise `classes` is not the order of its probability columns (or not its classes)."""
    labels, proba = model.onnx.run_frame(X)
    classes = list(model.classes_)
    strange = sorted({str(v) for v in np.asarray(labels).tolist()} - {str(c) for c in classes})
    if strange:
        raise ArtifactError(
            f"the ONNX model answers labels {', '.join(strange[:5])} that are not the data's "
            f"classes ({', '.join(map(str, classes))})"
        )
    if proba is None or model.onnx.proba_only:
        return
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[1] != len(classes):
        raise ArtifactError(
            f"the ONNX model gives probabilities of shape {list(proba.shape)} for "
            f"{len(classes)} classes"
        )
    top = np.sort(proba, axis=1)
    clear = top[:, -1] - top[:, -2] > 1e-6 if len(classes) > 1 else np.ones(len(proba), bool)
    best = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    disagree = int(sum(str(a) != str(b) for a, b, c in zip(best, labels, clear, strict=True) if c))
    if disagree:
        order = ", ".join(map(str, classes))
        hint = "" if given else "; pass --classes in the order of its probability columns"
        raise ArtifactError(
            f"the ONNX model's most probable class is not its label on {disagree} of "
            f"{len(proba)} holdout rows with the classes in the order {order}{hint}"
        )


def gate(
    services: Services,
    challenger: ModelVersionRow,
    X: Any,
    y: Any,
    value: float,
    actor: str,
) -> DecisionRow:
    """Score the champion on the challenger's holdout, decide, and promote on success.

    A champion that cannot be scored on this holdout (its artifact is unreadable, or it was
    trained on other columns) does not block the challenger; the reason says so.
    """
    spec, registry, store = services.project.spec, services.registry, services.store
    metric = spec.model.metric_name
    champion_version = registry.alias_version(spec.name, PRODUCTION)
    champion_value: float | None = None
    note = ""
    if champion_version is not None:
        champion = registry.get_version(spec.name, champion_version)
        try:
            data = store.get(champion.artifact_uri, champion.artifact_sha256)
            loaded = load_model(
                data,
                ArtifactFormat(champion.format),
                champion.flavor,
                Signature.from_dict(champion.signature),
            )
            champion_value = score(loaded, X, y, spec.model.task, metric)
        except (RefitError, ValueError, KeyError, TypeError) as exc:
            note = f" (production v{champion_version} could not be scored on this holdout: {exc})"
    # An unscorable champion is still there: to `decide` it has no score, not no existence.
    unscored = champion_version is not None and champion_value is None
    verdict = decide(
        metric,
        spec.model.higher_is_better,
        spec.gate,
        value,
        math.nan if unscored else champion_value,
        champion_version,
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
        )

    if not verdict.promote:
        return registry.record_decision(row(False, verdict.reason + note))
    try:
        return registry.move_alias(row(True, verdict.reason + note), expected=champion_version)
    except ConflictError as exc:
        registry.record_decision(row(False, f"{verdict.reason}, but not promoted: {exc}"))
        raise


def _onnx(model: Any, X: Any, spec: Spec, store: ArtifactStore) -> dict[str, Any]:
    """Convert to ONNX; keep the second artifact only when it passed the parity check."""
    export = export_onnx(model, X, spec.model.task)
    if export.data is None:
        return {"status": export.status}
    ref = store.put(export.data, kind="models", suffix=".onnx")
    return {
        "status": export.status,
        "uri": ref.uri,
        "sha256": ref.sha256,
        "size": ref.size,
        "checked_rows": export.checked_rows,
        "max_difference": export.max_difference,
    }


def _snapshot(services: Services, snapshot_id: str | None) -> SnapshotRow:
    name = services.project.spec.name
    if snapshot_id is not None:
        return services.registry.get_snapshot(snapshot_id, name)
    latest = services.registry.latest_snapshot(name)
    if latest is None:
        raise NotFoundError(f"{name} has no snapshot yet: run `refit ingest` first")
    return latest


def _params(model: Any, spec: Spec) -> dict[str, Any]:
    params: dict[str, Any] = dict(spec.model.params)
    if spec.model.estimator is not None and hasattr(model, "steps"):
        estimator = model.steps[-1][1]
        params = {k: _json_safe(v) for k, v in estimator.get_params(deep=False).items()}
    return params


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def code_revision(root: Path) -> str | None:
    """The git commit of the project (with `-dirty` for local changes), if it is a git repo."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


@contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = round(time.perf_counter() - start, 4)
