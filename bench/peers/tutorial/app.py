"""The server most projects write by hand, straight from a FastAPI tutorial: a pydantic model
of the record, the joblib model loaded at import, one `predict` call per request.

    MODEL_PATH=model.joblib uvicorn app:app --workers 2 --no-access-log

`async def` routes: measured here, they beat `def` routes (which run in a thread pool) on a
model this fast, so the benchmark gives the tutorial server its better variant.
"""

import os

import joblib
import numpy as np
import pandas as pd
from fastapi import FastAPI
from pydantic import BaseModel

model = joblib.load(os.environ["MODEL_PATH"])
classes = np.asarray([str(c) for c in model.classes_])

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


@app.get("/health")
async def health():
    return {"status": "ok"}


@app.post("/predict")
async def predict(record: Record):
    frame = pd.DataFrame([record.model_dump()])
    proba = model.predict_proba(frame)[0]
    return {
        "prediction": str(classes[proba.argmax()]),
        "probabilities": dict(zip(classes.tolist(), proba.round(6).tolist(), strict=True)),
    }


@app.post("/predict/batch")
async def predict_batch(batch: Batch):
    frame = pd.DataFrame([record.model_dump() for record in batch.records])
    proba = model.predict_proba(frame)
    names = classes.tolist()
    return {
        "predictions": classes[proba.argmax(axis=1)].tolist(),
        "probabilities": [dict(zip(names, row, strict=True)) for row in proba.round(6).tolist()],
    }
