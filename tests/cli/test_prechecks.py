"""Commands that will train refuse a model they could not build before they do anything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from refit.examples import create_project

CASES = [
    pytest.param(
        {"REFIT_MODEL__ESTIMATOR": "sklearn.ensemble.RandomForestClasifier"},
        "model.estimator: got 'sklearn.ensemble.RandomForestClasifier': module sklearn.ensemble "
        "has no attribute RandomForestClasifier; did you mean 'RandomForestClassifier'?",
        id="estimator",
    ),
    pytest.param(
        {"REFIT_MODEL__PARAMS__MAX_ITERS": "3"},
        "model.params: HistGradientBoostingClassifier does not accept 'max_iters'; "
        "did you mean 'max_iter'?",
        id="params",
    ),
]


def refit(root: Path, command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the command; one that starts anyway is stopped with every process it started."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REFIT_")}
    args = [sys.executable, "-m", "refit", command, "-p", str(root)]
    child = subprocess.Popen(
        args,
        env={**clean, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = child.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGTERM)
        out, err = child.communicate(timeout=60)
        pytest.fail(f"refit {command} started despite the bad model: {err[-500:]}")
    return subprocess.CompletedProcess(args, child.returncode, out, err)


@pytest.mark.parametrize("command", ["up", "scheduler"])
@pytest.mark.parametrize(("env", "message"), CASES)
def test_up_and_the_scheduler_refuse_a_bad_model_before_starting(
    tmp_path: Path, command: str, env: dict[str, str], message: str
) -> None:
    root = create_project(tmp_path / "p", "breast-cancer")
    done = refit(root, command, env)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (root / ".refit").exists(), "nothing was started: no registry, no artifact"


@pytest.mark.parametrize(("env", "message"), CASES)
def test_train_refuses_a_bad_model_with_the_same_words(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    root = create_project(tmp_path / "p", "breast-cancer")
    done = refit(root, "train", env)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
