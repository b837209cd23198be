"""Registering a model trained elsewhere: `refit models register FILE`.

The file (`.onnx`, `.joblib` or `.skops`) becomes a version the way a trained model does
(`refit.train.run.run_and_register`): scored on the holdout of a snapshot, stored, registered
with its lineage (a run with trigger `register`), and gated against production. Before that,
everything refit can check about it is checked, so that a version that registers also serves:

- an ONNX model takes the project's features (see `refit.flavors.onnx.OnnxModel`), any
  number of rows at once, with its weights inside the file;
- a classifier answers the data's classes, gives probabilities (in [0, 1], rows summing to 1,
  not scores or logits) whose most probable class is its label, in the order of `classes`;
- a pickle (`.joblib`) is refused by a project that chose artifacts that load without running
  code (`model.format: skops`).

Then, as for every version, each nullable feature the model cannot take missing is made not
nullable in its signature (`refit.train.nullability`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from refit.errors import ArtifactError, RefitError
from refit.flavors import DEFAULT_FLAVOR, ONNX_FLAVOR, SUFFIXES, load_model
from refit.flavors.onnx import onnx_estimator
from refit.services import Services
from refit.spec import ArtifactFormat, Task
from refit.train.pipeline import target_array
from refit.train.run import Candidate, Step, TrainResult, run_and_register
from refit.train.split import Split

PROBABILITY_SLACK = 1e-3
"""How far from 1 a row of probabilities may sum (float32 graphs), and outside [0, 1] lie."""


def register_model_file(
    services: Services,
    path: Path,
    *,
    classes: Sequence[str] | None = None,
    snapshot_id: str | None = None,
    actor: str = "refit models register",
    on_step: Step | None = None,
) -> TrainResult:
    """Register the model in `path`, scored on a snapshot's holdout (default: the newest's)
    and gated. An ONNX classifier's probability columns follow `classes` (default: the data's
    classes sorted, as scikit-learn orders them)."""
    spec = services.project.spec
    step = on_step or (lambda _: None)
    fmt = _format_of(path)
    classifier = spec.model.task is Task.CLASSIFICATION
    if classes is not None and (fmt is not ArtifactFormat.ONNX or not classifier):
        raise ArtifactError(
            "--classes applies to an ONNX classifier only (a scikit-learn model knows its "
            "classes, and a regressor has none)"
        )
    if fmt is ArtifactFormat.JOBLIB and spec.model.format is ArtifactFormat.SKOPS:
        raise ArtifactError(
            f"{path.name} is a pickle, which runs code when it is loaded, and this project "
            "takes artifacts that load without running code (model.format: skops): save the "
            "model with skops.io.dump to a .skops file"
        )
    data = _onnx_bytes(path) if fmt is ArtifactFormat.ONNX else _file_bytes(path)

    def load(parts: Split) -> Candidate:
        step(f"loading {path.name} ({len(data)} bytes)")
        params = {"file": path.name}
        if fmt is not ArtifactFormat.ONNX:
            model = load_model(data, fmt, trusted_types=spec.model.trusted_types)
            if not callable(getattr(model, "predict", None)):
                raise ArtifactError(f"{path.name} holds a {type(model).__name__}, not a model")
            return Candidate(model, DEFAULT_FLAVOR, fmt, params, data)
        known = _classes(target_array(parts.train, spec.data), classes) if classifier else None
        model = onnx_estimator(data, list(spec.data.features), known)
        try:
            if known is not None:
                _check_classifier(model, parts.holdout[list(spec.data.features)], classes)
            else:
                model.predict(parts.holdout[list(spec.data.features)])
        except RefitError:
            raise
        except Exception as exc:
            raise ArtifactError(
                f"the ONNX model failed on the holdout rows: {type(exc).__name__}: {exc}"
            ) from exc
        return Candidate(model, ONNX_FLAVOR, fmt, params, data)

    return run_and_register(services, load, "model_s", snapshot_id, "register", actor, step)


def _format_of(path: Path) -> ArtifactFormat:
    for fmt, suffix in SUFFIXES.items():
        if path.name.endswith(suffix):
            return fmt
    raise ArtifactError(
        f"cannot tell the format of {path.name}: expected a file ending in "
        f"{', '.join(SUFFIXES.values())}"
    )


def _file_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read the model file {path}: {exc.strerror}") from exc
    if not data:
        raise ArtifactError(f"the model file {path} is empty")
    return data


def _onnx_bytes(path: Path) -> bytes:
    """The ONNX file as stored: as it is, or, when its weights are saved beside it (large
    exports), with them inlined, since a server gets the one artifact only."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    data = _file_bytes(path)
    try:
        proto = onnx.load_from_string(data)
    except Exception as exc:
        raise ArtifactError(f"{path.name} is not an ONNX model: {exc}") from exc
    if not any(uses_external_data(t) for t in proto.graph.initializer):
        return data
    try:
        onnx.load_external_data_for_model(proto, str(path.parent))
        inlined: bytes = proto.SerializeToString()
    except Exception as exc:
        raise ArtifactError(
            f"{path.name} keeps its weights in other files, which refit cannot read into one "
            f"artifact ({type(exc).__name__}: {exc}); export it with its weights inside "
            "(onnx.save(model, path, save_as_external_data=False), under 2 GB)"
        ) from exc
    return inlined


def _classes(y: np.ndarray[Any, Any], given: Sequence[str] | None) -> list[Any]:
    """The classes of an ONNX classifier: `given` (in its order, matched to the data's
    classes by their text), else the data's classes sorted."""
    found = [v.item() if isinstance(v, np.generic) else v for v in np.unique(y)]
    if given is None:
        return found
    by_text = {str(v): v for v in found}
    names = [c.strip() for c in given if c.strip()]
    if sorted(names) != sorted(by_text):
        unknown = [c for c in names if c not in by_text]
        missing = [c for c in by_text if c not in names]
        details = [f"unknown: {', '.join(unknown)}"] if unknown else []
        details += [f"not named: {', '.join(missing)}"] if missing else []
        details += ["some named twice"] if len(set(names)) != len(names) else []
        raise ArtifactError(
            f"--classes {','.join(names)} should name each of the data's classes once "
            f"({', '.join(by_text)}): {'; '.join(details)}"
        )
    return [by_text[c] for c in names]


def _check_classifier(model: Any, X: Any, given: Sequence[str] | None) -> None:
    """An ONNX classifier's labels must be classes; its probabilities, probabilities (not
    scores) over the classes, whose most probable is the label: otherwise `classes` is not
    the order of its probability columns, or not its classes."""
    labels, proba = model.onnx.run_frame(X)
    classes = list(model.classes_)
    shown = ", ".join(map(str, classes))
    strange = sorted({str(v) for v in np.asarray(labels).tolist()} - {str(c) for c in classes})
    if strange:
        raise ArtifactError(
            f"the ONNX model answers labels {', '.join(strange[:5])} that are not the data's "
            f"classes ({shown})"
        )
    if proba is None:
        return
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[1] != len(classes):
        raise ArtifactError(
            f"the ONNX model gives probabilities of shape {list(proba.shape)} for "
            f"{len(classes)} classes ({shown})"
        )
    sums = proba.sum(axis=1)
    if (
        (proba < -PROBABILITY_SLACK).any()
        or (proba > 1 + PROBABILITY_SLACK).any()
        or (np.abs(sums - 1) > PROBABILITY_SLACK).any()
    ):
        raise ArtifactError(
            "the ONNX model's class outputs are scores, not probabilities (values outside "
            f"[0, 1], or rows summing to {sums.min():.3g}..{sums.max():.3g}, not 1): end the "
            "graph with a Softmax"
        )
    if model.onnx.proba_only:
        return  # the labels are the most probable classes by construction
    top = np.sort(proba, axis=1)
    clear = top[:, -1] - top[:, -2] > 1e-6 if len(classes) > 1 else np.ones(len(proba), bool)
    best = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    disagree = int(sum(str(a) != str(b) for a, b, c in zip(best, labels, clear, strict=True) if c))
    if disagree:
        hint = "" if given else "; pass --classes in the order of its probability columns"
        raise ArtifactError(
            f"the ONNX model's most probable class is not its label on {disagree} of "
            f"{len(proba)} holdout rows with the classes in the order {shown}{hint}"
        )
