"""One training run: snapshot -> split -> fit -> evaluate -> register -> gate.

The run is recorded before any work starts and ends recorded as succeeded, failed (with its
error) or interrupted. A version exists only once its artifact is in the store in full: the
artifact is written first, then one transaction allocates the version number, stores the
version and marks the run succeeded. Killing the process at any point therefore leaves no
version that points at a missing or partial file.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from refit.artifacts import ArtifactStore
from refit.columns import schema_change
from refit.errors import (
    CodeError,
    DataError,
    NotFoundError,
    RefitError,
    TrainingError,
)
from refit.flavors import SUFFIXES, save_model
from refit.flavors.hooked import unhooked
from refit.parquet import read_snapshot
from refit.registry import DecisionRow, ModelVersionRow, SnapshotRow
from refit.registry.jobs import interrupt_dead_runs
from refit.registry.monitoring import answer_request, open_request
from refit.registry.tables import TrainRequestRow
from refit.services import Services
from refit.signature import Output, signature_for
from refit.spec import ArtifactFormat, ModelSpec, Spec
from refit.train.checks import check_model_spec, check_target
from refit.train.evidence import detection_note
from refit.train.gating import gate, last_gate_evidence
from refit.train.hooks import (
    ProjectCode,
    check_postprocess,
    featured,
    flavor_of,
    hooked,
    not_converted,
    project_code,
    store_code,
)
from refit.train.metrics import evaluate, score
from refit.train.nullability import truthful
from refit.train.onnx_export import export_onnx
from refit.train.pipeline import fit_model, target_or_none
from refit.train.reference import holdout_reference
from refit.train.revision import code_revision
from refit.train.split import Split, split
from refit.train.tuning import OnTrial, tune_run
from refit.train.unsupervised import search_curve as curve

Step = Callable[[str], None]


@dataclass(frozen=True)
class TrainResult:
    """What a training run made and what the gate decided about it."""

    run_id: str
    version: ModelVersionRow
    decision: DecisionRow
    split_note: str | None = None
    nullable_note: str = ""
    """Which nullable features were made not nullable, because the model refused them missing."""
    trigger: str = "manual"
    cause: str | None = None
    """Why it ran, when the monitor asked for it (drift, a drop in live quality)."""
    detection_note: str | None = None
    """That the holdout is too small to detect `gate.min_improvement`, and the rows it would
    need: said by the first decision that finds it so, not again while it stays so."""

    @property
    def promoted(self) -> bool:
        return self.decision.promoted


@dataclass(frozen=True)
class Candidate:
    """A model to register: fitted by refit, or read from a user's file (`data`)."""

    model: Any
    flavor: str
    format: ArtifactFormat
    params: dict[str, Any]
    data: bytes | None = None
    """The artifact as the user gave it; None: refit saves the model."""
    code: ProjectCode | None = None
    """The project's code the model runs with (its hooks, a python model's classes)."""
    tuning: dict[str, Any] | None = None
    """The tuning step's record, when it chose `params`."""


def run_training(
    services: Services,
    *,
    snapshot_id: str | None = None,
    trigger: str = "manual",
    actor: str = "refit train",
    on_step: Step | None = None,
    on_trial: OnTrial | None = None,
) -> TrainResult:
    """Train on a snapshot (default: the newest), register the version, run the gate.

    With `model.tune` (or a clustering's default search of k) the tuning step searches the
    training rows first; each trial goes to `on_trial` (default: one line to `on_step`).
    The run answers the oldest open training request of the monitor, if any: it records the
    request's trigger (drift, quality) and cause instead of `trigger`."""
    project = services.project
    spec = project.spec
    step = on_step or (lambda _: None)
    check_model_spec(spec, project.root)
    code = project_code(spec, project.root)

    def fit(parts: Split) -> Candidate:
        frame, data, kinds = parts.train, spec.data, None
        if code is not None and code.features is not None:
            step(f"applying model.features {code.features} to {len(frame)} rows")
            frame, data, kinds = featured(frame, data, code)
        model_spec, tuning = tune_run(
            frame, data, spec, project.root, services.registry, step, on_trial
        )
        step(f"fitting on {len(parts.train)} rows")
        model = fit_model(frame, data, model_spec, project.root)
        flavor = flavor_of(model, spec, code)
        params = _params(model, model_spec)
        model = hooked(model, code, kinds)
        return Candidate(model, flavor, spec.model.format, params, code=code, tuning=tuning)

    request = open_request(services.registry, spec.name)
    return run_and_register(
        services, fit, "fit_s", snapshot_id, trigger, actor, step, request=request
    )


def run_and_register(
    services: Services,
    make: Callable[[Split], Candidate],
    make_timing: str,
    snapshot_id: str | None,
    trigger: str,
    actor: str,
    step: Step,
    *,
    request: TrainRequestRow | None = None,
) -> TrainResult:
    """One run on a snapshot (default: the newest): split it, `make` the candidate (fit it,
    or read it), evaluate it on the holdout, store and register it, and gate it; the run
    answers `request` (a training run the monitor asked for), recording its trigger and cause."""
    project, registry, store = services.project, services.registry, services.store
    spec = project.spec
    interrupt_dead_runs(registry, spec.name)
    snapshot = _snapshot(services, snapshot_id)
    change = schema_change(snapshot.columns, spec.data)
    if change is not None and change.missing_columns:
        fix = (
            "run `refit ingest`: it rebuilds the snapshot from the rows read so far"
            if snapshot_id is None
            else "give a snapshot made under the current spec, or none for the newest"
        )
        raise DataError(
            f"snapshot {snapshot.id[:12]} does not have the spec's columns ({change}): {fix}"
        )

    run_id = uuid.uuid4().hex
    if request is not None:
        trigger = request.trigger
    registry.start_run(run_id, spec.name, snapshot.id, trigger)
    if request is not None:
        answer_request(registry, request.id, run_id)
    timings: dict[str, float] = {}
    try:
        with _timed(timings, "load_s"):
            step(f"loading snapshot {snapshot.id[:12]} ({snapshot.row_count} rows)")
            frame = read_snapshot(store, snapshot)
        check_target(frame, spec)
        with _timed(timings, "split_s"):
            parts = split(frame, spec.data, spec.model)
        with _timed(timings, make_timing):
            candidate = make(parts)
        model = candidate.model
        # The holdout as the model will meet rows when served: validated, typed, unconverted.
        X = parts.holdout[list(spec.data.features)]
        y = target_or_none(parts.holdout, spec.data)
        signature = signature_for(
            model, spec.data, spec.model.task, target_or_none(parts.train, spec.data)
        )
        with _timed(timings, "probe_s"):
            step("probing each nullable feature with a missing value")
            signature, nullable_note = truthful(model, signature, X)
        with _timed(timings, "evaluate_s"):
            step(f"evaluating on {len(parts.holdout)} holdout rows")
            metrics = evaluate(model, X, y, spec.model.task)
            value = score(model, X, y, spec.model.task, spec.model.metric_name)
            reference = holdout_reference(model, X, y, spec.model.task)
            code = candidate.code
            withheld = check_postprocess(code, model, X, signature, step)
        with _timed(timings, "save_s"):
            step("saving the artifact")
            data = candidate.data
            ref = store.put(
                save_model(
                    unhooked(model),
                    candidate.format,
                    candidate.flavor,
                    trusted_types=spec.model.trusted_types,
                )
                if data is None
                else data,
                kind="models",
                suffix=SUFFIXES[candidate.format],
            )
            stored = store_code(store, code, model, candidate.flavor, withheld, step)
        if skipped := not_converted(candidate.flavor, code):
            onnx: dict[str, Any] = {"status": skipped}
        else:
            with _timed(timings, "onnx_s"):
                step("converting to ONNX and checking parity on the holdout")
                nullable = [c.name for c in signature.inputs if c.nullable]
                onnx = _onnx(model, X, spec, nullable, store, signature.output)
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
                metrics={**metrics, spec.model.metric_name: value, **curve(spec, candidate.tuning)},
                snapshot_id=snapshot.id,
                code_revision=code_revision(project.root),
                onnx=onnx,
                timings={
                    **timings,
                    "holdout_rows": len(parts.holdout),
                    "split": parts.method.value,
                },
                reference=reference,
                code=stored,
                tuning=candidate.tuning,
            ),
        )
    except RefitError as exc:
        registry.end_run(run_id, "failed", f"{type(exc).__name__}: {exc}", timings)
        if isinstance(exc, CodeError):  # the project's hook: the training run failed
            raise TrainingError(str(exc)) from exc
        raise
    except Exception as exc:
        registry.end_run(run_id, "failed", f"{type(exc).__name__}: {exc}", timings)
        what = "registering" if trigger == "register" else "training"
        raise TrainingError(f"{what} failed: {type(exc).__name__}: {exc}") from exc
    except BaseException:
        registry.end_run(run_id, "interrupted", "stopped before the run finished", timings)
        raise
    step(f"registered {spec.name} v{version.version}; running the gate")
    earlier = last_gate_evidence(services)
    decision = gate(services, version, model, X, y, value, actor)
    cause = None if request is None else request.cause
    detection = detection_note(decision.evidence, spec, earlier)
    return TrainResult(
        run_id, version, decision, parts.note, nullable_note, trigger, cause, detection
    )


def _onnx(
    model: Any, X: Any, spec: Spec, nullable: list[str], store: ArtifactStore, output: Output
) -> dict[str, Any]:
    """Convert to ONNX; keep the second artifact only when it passed the parity check."""
    export = export_onnx(model, X, spec.model.task, nullable, output)
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


def _params(model: Any, model_spec: ModelSpec) -> dict[str, Any]:
    params: dict[str, Any] = dict(model_spec.params)
    if model_spec.estimator is not None and hasattr(model, "steps"):
        estimator = model.steps[-1][1]
        params = {k: _json_safe(v) for k, v in estimator.get_params(deep=False).items()}
    return params


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


@contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = round(time.perf_counter() - start, 4)
