"""What a performance-minded user writes by hand: FastAPI, a pydantic model of the record,
ONNX Runtime on the model's ONNX graph, orjson answers.

    MODEL_PATH=model.onnx CLASSES='["benign", "malignant"]' \
        uvicorn app:app --workers 2 --no-access-log

The graph is the one refit serves (its export of the same pipeline, `refit models show 1
--json` gives its file). ONNX Runtime runs it with one intra-op and one inter-op thread per
worker process, as refit does: the workers are the parallelism. The graph's inputs decide how
the record is fed: one `[N, 1]` input per feature (skl2onnx's layout for a pipeline that
selects columns by name) or one `[N, F]` matrix. `async def` routes run the model on the event
loop: ~10-40 us a call, less than a hop to a thread pool. The answer is built as a dict and
written by orjson into a plain `Response` (FastAPI's `ORJSONResponse` is deprecated and does
the same). Same wire format as refit's `/predict` and `/predict/batch`.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import orjson
from fastapi import FastAPI, Response
from pydantic import BaseModel

options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = ort.InferenceSession(
    os.environ["MODEL_PATH"], options, providers=["CPUExecutionProvider"]
)
inputs = [i.name for i in session.get_inputs()]
outputs = [o.name for o in session.get_outputs()]  # the labels, then the probabilities
classes = json.loads(os.environ["CLASSES"])  # in the order of the probability columns

app = FastAPI()


class Record(BaseModel):
    mean_radius: float
    mean_texture: float
    mean_perimeter: float
    mean_area: float
    mean_smoothness: float
    mean_compactness: float
    mean_concavity: float
    mean_concave_points: float
    mean_symmetry: float
    mean_fractal_dimension: float
    radius_error: float
    texture_error: float
    perimeter_error: float
    area_error: float
    smoothness_error: float
    compactness_error: float
    concavity_error: float
    concave_points_error: float
    symmetry_error: float
    fractal_dimension_error: float
    worst_radius: float
    worst_texture: float
    worst_perimeter: float
    worst_area: float
    worst_smoothness: float
    worst_compactness: float
    worst_concavity: float
    worst_concave_points: float
    worst_symmetry: float
    worst_fractal_dimension: float


class Batch(BaseModel):
    records: list[Record]


def run(records: list[Record]) -> tuple[list[str], list[list[float]]]:
    matrix = np.array([list(r.__dict__.values()) for r in records], dtype=np.float32)
    if len(inputs) == 1:
        feeds = {inputs[0]: matrix}
    else:
        feeds = {name: matrix[:, j : j + 1] for j, name in enumerate(inputs)}
    labels, proba = session.run(outputs, feeds)
    return labels.tolist(), proba.astype(np.float64).round(6).tolist()


def json_response(content: object) -> Response:
    return Response(orjson.dumps(content), media_type="application/json")


@app.get("/health")
async def health() -> Response:
    return json_response({"status": "ok"})


@app.post("/predict")
async def predict(record: Record) -> Response:
    labels, proba = run([record])
    return json_response(
        {"prediction": labels[0], "probabilities": dict(zip(classes, proba[0], strict=True))}
    )


@app.post("/predict/batch")
async def predict_batch(batch: Batch) -> Response:
    labels, proba = run(batch.records)
    return json_response(
        {
            "predictions": labels,
            "probabilities": [dict(zip(classes, row, strict=True)) for row in proba],
        }
    )
