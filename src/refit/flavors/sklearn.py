"""The sklearn flavor: a fitted model (a scikit-learn pipeline, or any object with `predict`
that a user function returned) saved to bytes and loaded back.

- `joblib` (default) saves anything picklable. Loading a pickle runs code, so refit loads only
  artifacts whose sha256 it recorded itself.
- `skops` loads without running arbitrary code: only types from `sklearn.`, `numpy.` and
  `scipy.` and a short list of builtins and `collections` containers are trusted. An artifact
  holding anything else is refused on load, and refused already on save, so that training
  fails rather than the server later. `model.trusted_types` extends that list with more
  dotted type names (`mypackage.MyScaler`), for models whose types the user vouches for.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import joblib
import numpy as np
import pandas as pd

from refit.errors import ArtifactError, ArtifactPathError, RefitError
from refit.flavors.onnx import RUNTIME as ONNX_RUNTIME
from refit.flavors.onnx import OnnxModel, OnnxPredictor
from refit.predictions import Columns, Fetch, Predictions, Ready, check_finite, frame_of
from refit.redaction import for_clients
from refit.signature import DISTANCES, Signature
from refit.spec import ArtifactFormat, Task

if TYPE_CHECKING:
    from refit.registry.tables import ModelVersionRow

NATIVE_RUNTIME = "native"
"""The runtime of a version served by its own model object."""

TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.")
TRUSTED_TYPES = frozenset(
    {
        *(
            f"builtins.{name}"
            for name in (
                "bool",
                "bytearray",
                "bytes",
                "complex",
                "dict",
                "float",
                "frozenset",
                "int",
                "list",
                "NoneType",
                "range",
                "set",
                "slice",
                "str",
                "tuple",
            )
        ),
        "collections.Counter",
        "collections.OrderedDict",
        "collections.defaultdict",
        "collections.deque",
    }
)


def save(model: Any, fmt: ArtifactFormat, trusted_types: Collection[str] = ()) -> bytes:
    """The bytes of `model` in format `fmt` (a skops artifact may hold `trusted_types` too)."""
    if fmt is ArtifactFormat.SKOPS:
        return _save_skops(model, trusted_types)
    buffer = io.BytesIO()
    try:
        joblib.dump(model, buffer, compress=3)
    except Exception as exc:
        raise ArtifactError(f"cannot save the model with joblib: {_error(exc)}") from exc
    return buffer.getvalue()


def load(data: bytes, fmt: ArtifactFormat, trusted_types: Collection[str] = ()) -> Any:
    """The model saved in `data`; a skops artifact is checked against the trust list (and
    `trusted_types`) first."""
    if fmt is ArtifactFormat.SKOPS:
        found = _listed_types(data)
        refused = [name for name in found if not is_trusted(name, trusted_types)]
        if refused:
            more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
            raise ArtifactError(
                f"untrusted type {refused[0]} in a skops artifact{more}; if you vouch for it, "
                "add it to model.trusted_types"
            )
        try:
            return _skops().loads(data, trusted=found)
        except Exception as exc:
            raise ArtifactError(f"cannot load a skops artifact: {_error(exc)}") from exc
    try:
        return joblib.load(io.BytesIO(data))
    except Exception as exc:
        raise ArtifactError(f"cannot load a joblib artifact: {_error(exc)}") from exc


def is_trusted(type_name: str, trusted_types: Collection[str] = ()) -> bool:
    """Whether a skops artifact may hold `type_name` (a dotted `module.name`): a built-in
    trusted type, or one of `trusted_types` (`model.trusted_types`)."""
    return (
        type_name.startswith(TRUSTED_PREFIXES)
        or type_name in TRUSTED_TYPES
        or type_name in trusted_types
    )


def _save_skops(model: Any, trusted_types: Collection[str]) -> bytes:
    try:
        data: bytes = _skops().dumps(model, compression=zipfile.ZIP_DEFLATED)
    except Exception as exc:
        raise ArtifactError(
            f"skops cannot save this model ({_error(exc)}); set model.format: joblib"
        ) from exc
    refused = [name for name in _listed_types(data) if not is_trusted(name, trusted_types)]
    if refused:
        raise ArtifactError(
            f"the model holds {', '.join(refused)}, which a skops artifact does not trust; "
            "add them to model.trusted_types if you vouch for them, or set model.format: joblib"
        )
    return data


def _listed_types(data: bytes) -> list[str]:
    """The types in a skops artifact that skops itself does not trust by default."""
    try:
        found: list[str] = _skops().get_untrusted_types(data=data)
    except Exception as exc:
        raise ArtifactError(f"not a readable skops artifact: {_error(exc)}") from exc
    return found


def _skops() -> Any:
    """skops.io, imported when first needed: its import takes about a second (it lists
    scikit-learn's types), which every command and server worker would otherwise pay."""
    import skops.io

    return skops.io


def _error(exc: BaseException) -> str:
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class SklearnPredictor:
    """A scikit-learn style model: `predict`, and `predict_proba` for classifiers.

    A clustering answers its cluster ids (`predict`), each row's distance to each centre
    (`transform`, when its output has `distances`) and a mixture's memberships
    (`predict_proba`). An anomaly detector answers its score, `-decision_function(X)` (higher
    is more anomalous), and flags the rows whose score is above 0: the rows its `predict`
    answers -1 for (IsolationForest, OneClassSVM, LocalOutlierFactor with `novelty=True` and
    EllipticEnvelope all flag `decision_function(X) < 0`)."""

    quick = False  # a millisecond per call: run in a thread, beside the event loop

    def __init__(self, model: Any, signature: Signature) -> None:
        self.model = model
        self.inputs = signature.inputs
        output = signature.output
        self.task = output.task
        self.proba = output.probabilities and output.task in (Task.CLASSIFICATION, Task.CLUSTERING)
        self.distances = output.task is Task.CLUSTERING and output.scores == DISTANCES
        self.classes = tuple(str(c) for c in output.classes or [])
        from sklearn.pipeline import Pipeline  # loaded already: the model was unpickled

        self.final, self.head = model, None
        # A pipeline's steps before the estimator run once for all its answers, as each of
        # Pipeline.predict, predict_proba, transform and decision_function would run them.
        # (The pipeline's own class runs its steps, as its predict would: a subclass may skip
        # some, as imbalanced-learn's skips samplers.)
        self.labels_only = not (self.proba or self.distances or self.task is Task.ANOMALY)
        if isinstance(model, Pipeline) and not self.labels_only:
            self.final, self.head = model[-1], model[:-1]

    def predict(self, columns: Columns) -> Predictions:
        return self.predict_frame(frame_of(self.inputs, columns))

    def predict_frame(self, frame: pd.DataFrame) -> Predictions:
        """The answers for the rows of `frame` (the model's features, typed as served)."""
        if self.labels_only:
            values = np.asarray(self.model.predict(frame))
            check_finite(values, None)
            if self.task is Task.CLUSTERING:
                values = values.astype(np.int64, copy=False)  # ids as ONNX gives them
            return Predictions(values)
        final, features = self.final, frame
        if self.head is not None:
            features = self.head.transform(features)
        if self.task is Task.ANOMALY:
            score = -np.asarray(final.decision_function(features), dtype=np.float64).reshape(-1)
            flags = score > 0
            check_finite(flags, None, score)
            return Predictions(flags, scores=score)
        values = np.asarray(final.predict(features))
        if self.task is Task.CLUSTERING:
            values = values.astype(np.int64, copy=False)  # ids as ONNX gives them
        proba = distances = None
        if self.proba:
            proba = np.asarray(final.predict_proba(features), dtype=float).round(6)
        if self.distances:
            distances = np.asarray(final.transform(features), dtype=float).round(6)
        check_finite(values, proba, distances)
        return Predictions(values, proba, self.classes, distances)


def serve(
    row: ModelVersionRow, signature: Signature, fetch: Fetch, trusted_types: Collection[str]
) -> Ready:
    """The predictor of a version refit trained: ONNX Runtime on its converted graph when the
    conversion passed its parity check, else the model itself (joblib or skops)."""
    where = f"{row.name} v{row.version}"
    onnx = row.onnx or {"status": "not converted (registered before ONNX export)"}
    note, error = str(onnx.get("status")), None
    if onnx.get("status") == "ok":
        try:
            data = fetch(str(onnx["uri"]), str(onnx["sha256"]))
            model = OnnxModel(data, signature.names, signature.output.classes)
            return Ready(OnnxPredictor(model, signature), ONNX_RUNTIME)
        except ArtifactPathError:
            raise  # a forged path refuses the version, never falls back to the other file
        except RefitError as exc:
            # Served natively all the same, but counted and reported like any load failure:
            # a damaged ONNX file is a damaged artifact.
            error = f"{where}'s ONNX artifact failed to load: {exc}"
            note = f"its ONNX artifact failed to load ({for_clients(str(exc))}); served natively"
    data = fetch(row.artifact_uri, row.artifact_sha256)
    try:
        fitted = load(data, ArtifactFormat(row.format), trusted_types)
    except RefitError:
        raise
    except Exception as exc:
        raise ArtifactError(f"{where} cannot be loaded: {type(exc).__name__}: {exc}") from exc
    return Ready(SklearnPredictor(fitted, signature), NATIVE_RUNTIME, note, error)


def native_reason(row: ModelVersionRow) -> str | None:
    """Why a server runs this version natively rather than by ONNX Runtime (None: it does
    not): its conversion failed or disagreed, and the status says how."""
    status = str((row.onnx or {}).get("status", "not converted"))
    return None if status == "ok" else status


def artifacts(row: ModelVersionRow) -> list[tuple[str, str, str]]:
    """(what, key, sha256) of every file a server may load for this version."""
    files = [("artifact", row.artifact_uri, row.artifact_sha256)]
    onnx = row.onnx or {}
    if onnx.get("status") == "ok":
        files.append(("ONNX artifact", str(onnx["uri"]), str(onnx["sha256"])))
    return files
