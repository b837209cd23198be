"""Runs inside refit's virtual environment: train the benchmark's model through refit, export
its artifact for the peers, and compute the predictions every server must give.

    python prepare.py WORKDIR     # prints a JSON summary on stdout

WORKDIR gets `model/` (the refit project of the real model), `noop/` (the project of the no-op
model, `noop.py`), `model.joblib` (the same fitted pipeline, for the peers that run
scikit-learn), `model.onnx` (the ONNX graph refit serves for that version, for the peer that
runs ONNX Runtime), `records.json` (100 records from the dataset) and `expected.json` (labels
and class probabilities for them).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
from pathlib import Path

import joblib
import pandas as pd
from noop import noop_onnx

from refit.cli import main as refit_main

BATCH_ROWS = 100


def refit(*args: str, **env: str) -> str:
    """Run one `refit` command in this process (importing refit once, not per command: its
    import alone takes seconds); its stdout, or exit with its error."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    stdout = io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout):
            refit_main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if code != 0:
        sys.exit(f"refit {' '.join(args)} failed with exit code {code}")
    return stdout.getvalue()


def show(project: Path) -> dict:
    return json.loads(refit("models", "show", "1", "--json", "-p", str(project)))


def train_model(project: Path) -> dict:
    refit("init", str(project), "--example", "breast-cancer")
    refit("ingest", "-p", str(project))
    refit("train", "-p", str(project), REFIT_MODEL__PARAMS__MAX_ITER="100")
    return show(project)


def register_noop(project: Path, features: int, classes: int) -> dict:
    refit("init", str(project), "--example", "breast-cancer")
    refit("ingest", "-p", str(project))
    (project / "noop.onnx").write_bytes(noop_onnx(features, classes))
    refit("models", "register", str(project / "noop.onnx"), "-p", str(project))
    shown = show(project)
    if "production" not in shown.get("aliases", []):  # its scores are those of a coin
        refit("models", "promote", "1", "-p", str(project))
    return shown


def main() -> None:
    work = Path(sys.argv[1]).resolve()
    for name in ("model", "noop"):
        shutil.rmtree(work / name, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)

    shown = train_model(work / "model")
    artifact = work / "model" / ".refit" / "artifacts" / shown["artifact_uri"]
    shutil.copyfile(artifact, work / "model.joblib")
    onnx = shown.get("onnx") or {}
    if onnx.get("status") != "ok":
        sys.exit(f"refit did not export the model to ONNX ({onnx.get('status')}), which it serves")
    shutil.copyfile(work / "model" / ".refit" / "artifacts" / onnx["uri"], work / "model.onnx")
    if hashlib.sha256((work / "model.onnx").read_bytes()).hexdigest() != onnx["sha256"]:
        sys.exit("the ONNX file in the artifact store does not match its recorded sha256")
    model = joblib.load(work / "model.joblib")
    features = [c["name"] for c in shown["signature"]["inputs"]]
    noop = register_noop(work / "noop", len(features), len(model.classes_))
    data = pd.concat(
        pd.read_csv(f) for f in sorted((work / "model" / "data" / "incoming").glob("*.csv"))
    )
    frame = data[features].head(BATCH_ROWS).astype("float64").reset_index(drop=True)
    records = frame.to_dict(orient="records")
    classes = [str(c) for c in model.classes_]
    expected = {
        "classes": classes,
        "labels": [str(v) for v in model.predict(frame)],
        "probabilities": model.predict_proba(frame).round(6).tolist(),
    }
    (work / "records.json").write_text(json.dumps(records))
    (work / "expected.json").write_text(json.dumps(expected))
    json.dump(
        {
            "features": features,
            "model_version": shown["version"],
            "artifact_sha256": shown["artifact_sha256"],
            "onnx_sha256": onnx["sha256"],
            "noop_classes": noop["signature"]["output"]["classes"],
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
