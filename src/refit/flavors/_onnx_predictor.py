"""The predictor of a version served by ONNX Runtime (`refit.flavors.onnx.OnnxModel`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from refit.flavors._onnx_outputs import check_outputs, unsupervised, unsupervised_answer
from refit.predictions import Columns, Predictions, check_finite
from refit.signature import Signature
from refit.spec import Task

if TYPE_CHECKING:
    from refit.flavors.onnx import OnnxModel


class OnnxPredictor:
    """An ONNX model run by ONNX Runtime: fed one matrix of the columns (numbers only), or each
    column to its own input (categories as text)."""

    quick = True  # tens of microseconds for a few rows

    def __init__(self, onnx: OnnxModel, signature: Signature) -> None:
        self.onnx = onnx
        output = signature.output
        self.output = output
        self.proba = output.task is Task.CLASSIFICATION and output.probabilities
        self.classes = tuple(str(c) for c in output.classes or [])
        self.regression = output.task is Task.REGRESSION
        self.unsupervised = unsupervised(output)
        if self.unsupervised:
            check_outputs(output, [o.shape for o in onnx.session.get_outputs()])
        self.dtype = np.float32 if onnx.float32 else np.float64

    def predict(self, columns: Columns) -> Predictions:
        matrix = getattr(columns, "matrix", None)  # float columns checked as one matrix
        if self.onnx.texts:  # categories: each feature to its own input
            results = self.onnx.column_results(columns)
        elif matrix is not None:  # results() casts it to the graph's type, a copy
            results = self.onnx.results(matrix)
        else:  # None becomes NaN, which the converted imputers treat as missing
            matrix = np.array(columns, dtype=self.dtype).T
            results = self.onnx.results(np.ascontiguousarray(matrix))
        if self.unsupervised:
            return self._unsupervised(results)
        labels, proba = self.onnx.read(results)
        labels = np.asarray(labels)
        proba = None if proba is None else np.asarray(proba, dtype=np.float64)
        check_finite(labels, proba if self.proba else None)
        if self.regression:
            return Predictions(np.asarray(labels, dtype=np.float64))
        if not self.proba or proba is None:
            return Predictions(labels)
        return Predictions(labels, proba.round(6), self.classes)

    def _unsupervised(self, results: list[Any]) -> Predictions:
        labels, proba, scores = unsupervised_answer(self.output, results)
        check_finite(labels, proba, scores)
        if proba is not None:
            proba = proba.round(6)
        if scores is not None and scores.ndim == 2:  # distances, rounded as natively
            scores = scores.round(6)
        return Predictions(labels, proba, self.classes, scores)
