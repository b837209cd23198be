"""The benchmark's model as a BentoML 1.4 service with adaptive batching.

    BENCH_MODEL=model.joblib BENCH_WORKERS=2 bentoml serve service:BreastCancer --port 3000

One batchable API: BentoML gathers the rows of concurrent requests into one array (up to
`max_batch_size` rows, waiting at most what its dispatcher learns is worth it within
`max_latency_ms`), predicts once, and splits the answer back per request. A client sends
`{"records": [[30 numbers in the model's feature order], ...]}`, one row or many, and gets one
`{"prediction", <class>: probability, ...}` object per row, from one model call per batch
(`predict_proba`, and the label of the most probable class, which is what `predict` gives).

The input is an array, as in BentoML's own scikit-learn examples, rather than a DataFrame:
in BentoML 1.4.39 a batchable DataFrame input fails (`PandasDataFrameContainer.get_batch_size`
returns the frame's shape, a tuple, where the dispatcher adds integers).
"""

import os

import bentoml
import joblib
import numpy as np
import pandas as pd


@bentoml.service(
    workers=int(os.environ.get("BENCH_WORKERS", "2")),
    logging={"access": {"enabled": False}},
)
class BreastCancer:
    def __init__(self) -> None:
        self.model = joblib.load(os.environ["BENCH_MODEL"])
        self.classes = np.asarray([str(c) for c in self.model.classes_])
        self.features = list(self.model.feature_names_in_)

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=1000, max_latency_ms=1000)
    def predict(self, records: np.ndarray) -> pd.DataFrame:
        records = pd.DataFrame(records, columns=self.features)
        proba = self.model.predict_proba(records)
        answer = pd.DataFrame(proba.round(6), columns=self.classes.tolist())
        answer.insert(0, "prediction", self.classes[proba.argmax(axis=1)])
        return answer
