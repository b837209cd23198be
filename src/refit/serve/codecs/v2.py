"""The Open Inference Protocol's (KServe V2) wire format for a tabular model: predictions
written as its outputs, errors as `{"error": "..."}`, and a model's metadata. The request's
side (its wire objects, and its tensors read into checked columns) is
`refit.serve.codecs.v2_request`.

    response = answer(model, request_id, outputs(model, request), predictions)

A model's outputs: `predict` (the labels: a classifier's classes, a regressor's values, a
clustering's cluster ids as INT64, an anomaly detector's flags as BOOL), `predict_proba`
(FP64 `[N, C]`: a classifier's or a mixture's probabilities), `distances` (FP64 `[N, C]`: a
clustering's distance to each centre), `score` (FP64 `[N]`: an anomaly detector's) and, for a
version whose `postprocess` may withhold answers, `withheld` (BOOL `[N]`). A withheld row's
other outputs hold their type's zero value (0, 0.0, false or ""), which means nothing; so
`withheld` is answered whenever a row is withheld, even when the request's `outputs` left it
out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from starlette.responses import Response

from refit.errors import MalformedBodyError, NotFoundError, RefitError
from refit.predictions import Predictions
from refit.serve._numbers import shown
from refit.serve.codecs import JSONBody, withheld_rows
from refit.serve.codecs.v2_request import InferenceRequest
from refit.serve.failures import Failure
from refit.serve.predictor import LoadedModel
from refit.signature import ANOMALY_SCORE, DISTANCES
from refit.spec import FeatureType, Task

PLATFORM = "refit_sklearn"
PREDICT, PREDICT_PROBA = "predict", "predict_proba"
DISTANCES_OUTPUT, SCORE_OUTPUT, WITHHELD = DISTANCES, ANOMALY_SCORE, "withheld"
_DATATYPE = {
    FeatureType.FLOAT: "FP64",
    FeatureType.INT: "INT64",
    FeatureType.BOOL: "BOOL",
    FeatureType.CATEGORY: "BYTES",
}
_LABEL_DATATYPE = {"float": "FP64", "int": "INT64", "bool": "BOOL", "string": "BYTES"}
_ZERO: dict[str, Any] = {"float": 0.0, "int": 0, "bool": False, "string": ""}
"""What a withheld row's label is in `predict` (a tensor has no null)."""


def _gives(model: LoadedModel) -> list[tuple[str, str, bool]]:
    """(name, datatype, per class) of each output of `model`, in order."""
    output = model.signature.output
    gives = [(PREDICT, _LABEL_DATATYPE[output.type], False)]
    if output.probabilities and output.task is not Task.REGRESSION:
        gives.append((PREDICT_PROBA, "FP64", True))
    if output.scores == DISTANCES:
        gives.append((DISTANCES_OUTPUT, "FP64", True))
    elif output.scores == ANOMALY_SCORE:
        gives.append((SCORE_OUTPUT, "FP64", False))
    if model.withholds:
        gives.append((WITHHELD, "BOOL", False))
    return gives


def served(model: LoadedModel, version: str | None) -> LoadedModel:
    """`model`, when it is the `version` asked (or none is asked)."""
    if version is not None and version != str(model.version):
        raise NotFoundError(
            f"version {version} of {model.name} is not served here; this server serves "
            f"version {model.version}"
        )
    return model


def outputs(model: LoadedModel, request: InferenceRequest) -> list[str]:
    """The outputs to answer with, in the order asked (all of them when none is asked)."""
    gives = [name for name, _, _ in _gives(model)]
    if not request.outputs:
        return gives
    asked = list(dict.fromkeys(output.name for output in request.outputs))
    for name in asked:
        if name == PREDICT_PROBA and name not in gives:
            kind = "a regression" if model.signature.output.task is Task.REGRESSION else "a"
            raise MalformedBodyError(
                f"{model.name} is {kind} model without class probabilities: it has no output "
                f"{PREDICT_PROBA!r}, only {PREDICT!r}"
            )
        if name not in gives:
            raise MalformedBodyError(
                f"unknown output {shown(name)}; {model.name} gives {', '.join(map(repr, gives))}"
            )
    return asked


def answer(
    model: LoadedModel, request_id: str, names: list[str], predictions: Predictions
) -> Response:
    """The inference response: the outputs `names`, in that order (and `withheld` when a row
    is withheld)."""
    rows = len(predictions)
    withheld = withheld_rows(predictions)
    if withheld and WITHHELD not in names:
        names = [*names, WITHHELD]
    answered: list[dict[str, Any]] = []
    for name in names:
        if name == PREDICT:
            kind = model.signature.output.type
            data = predictions.label_list()
            for row in withheld:
                data[row] = _ZERO[kind]
            tensor = {"shape": [rows], "datatype": _LABEL_DATATYPE[kind], "data": data}
        elif name == WITHHELD:
            flags = predictions.withheld
            data = [False] * rows if flags is None else flags.astype(bool).tolist()
            tensor = {"shape": [rows], "datatype": "BOOL", "data": data}
        else:
            values = predictions.probabilities if name == PREDICT_PROBA else predictions.scores
            if values is None:
                raise RefitError(f"{model.name} v{model.version} gave no {name} output")
            if withheld:
                values = values.copy()
                values[withheld] = 0.0
            tensor = {"shape": list(values.shape), "datatype": "FP64", "data": _flat(values)}
        answered.append({"name": name, **tensor})
    return JSONBody(
        {
            "model_name": model.name,
            "model_version": str(model.version),
            "id": request_id,
            "outputs": answered,
        }
    )


def _flat(values: np.ndarray[Any, Any]) -> list[Any]:
    flat: list[Any] = values.ravel().tolist()
    return flat


def error(failure: Failure) -> Response:
    """`{"error": "..."}`; a request's own fault is 400 (refit's 422 included)."""
    status = 400 if failure.status == 422 else failure.status
    return JSONBody({"error": failure.line}, status_code=status, headers=failure.headers)


def metadata(model: LoadedModel) -> dict[str, Any]:
    """A model's metadata: one input per feature, in the order of an [N, F] tensor."""
    classes = len(model.signature.output.classes or [])
    outs = [
        {"name": name, "datatype": datatype, "shape": [-1, classes] if per_class else [-1]}
        for name, datatype, per_class in _gives(model)
    ]
    return {
        "name": model.name,
        "versions": [str(model.version)],
        "platform": PLATFORM,
        "inputs": [
            {"name": c.name, "datatype": _DATATYPE[c.type], "shape": [-1]}
            for c in model.signature.inputs
        ],
        "outputs": outs,
        "parameters": {"content_type": "pd"},
    }
