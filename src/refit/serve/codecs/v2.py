"""The Open Inference Protocol's (KServe V2) wire format for a tabular model: predictions
written as its outputs, errors as `{"error": "..."}`, and a model's metadata. The request's
side (its wire objects, and its tensors read into checked columns) is
`refit.serve.codecs.v2_request`.

    response = answer(model, request_id, outputs(model, request), predictions)
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from refit.errors import MalformedBodyError, NotFoundError, RefitError
from refit.predictions import Predictions
from refit.serve._numbers import shown
from refit.serve.codecs import JSONBody
from refit.serve.codecs.v2_request import InferenceRequest
from refit.serve.failures import Failure
from refit.serve.predictor import LoadedModel
from refit.spec import FeatureType, Task

PLATFORM = "refit_sklearn"
PREDICT, PREDICT_PROBA = "predict", "predict_proba"
_DATATYPE = {
    FeatureType.FLOAT: "FP64",
    FeatureType.INT: "INT64",
    FeatureType.BOOL: "BOOL",
    FeatureType.CATEGORY: "BYTES",
}
_LABEL_DATATYPE = {"float": "FP64", "int": "INT64", "bool": "BOOL", "string": "BYTES"}


def _probabilities(model: LoadedModel) -> bool:
    output = model.signature.output
    return output.task is Task.CLASSIFICATION and output.probabilities


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
    gives = [PREDICT, PREDICT_PROBA] if _probabilities(model) else [PREDICT]
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
    """The inference response: the outputs `names`, in that order."""
    rows = len(predictions)
    answered: list[dict[str, Any]] = []
    for name in names:
        if name == PREDICT:
            datatype = _LABEL_DATATYPE[model.signature.output.type]
            data = predictions.label_list()
            answered.append({"name": name, "shape": [rows], "datatype": datatype, "data": data})
            continue
        proba = predictions.probabilities
        if proba is None:
            raise RefitError(f"{model.name} v{model.version} gave no class probabilities")
        width = len(predictions.classes)
        answered.append(
            {
                "name": name,
                "shape": [rows, width],
                "datatype": "FP64",
                "data": proba.ravel().tolist(),
            }
        )
    return JSONBody(
        {
            "model_name": model.name,
            "model_version": str(model.version),
            "id": request_id,
            "outputs": answered,
        }
    )


def error(failure: Failure) -> Response:
    """`{"error": "..."}`; a request's own fault is 400 (refit's 422 included)."""
    status = 400 if failure.status == 422 else failure.status
    return JSONBody({"error": failure.line}, status_code=status, headers=failure.headers)


def metadata(model: LoadedModel) -> dict[str, Any]:
    """A model's metadata: one input per feature, in the order of an [N, F] tensor."""
    output = model.signature.output
    outs = [{"name": PREDICT, "datatype": _LABEL_DATATYPE[output.type], "shape": [-1]}]
    if _probabilities(model):
        classes = len(output.classes or [])
        outs.append({"name": PREDICT_PROBA, "datatype": "FP64", "shape": [-1, classes]})
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
