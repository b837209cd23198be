"""With `REFIT_SIGNING_KEY` set, only versions signed with it load.

A version registered with the key carries the HMAC of its manifest and loads. A tampered row
(its sha256 and path changed to another real artifact in the store, a trap that creates a
marker when unpickled), an unsigned version and one signed with another key are refused
before a byte of their artifacts is read. `refit models sign` signs the versions registered
before the key was set, and `refit models show` says whether a version is signed.
"""

from __future__ import annotations

import json
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from refit.cli import app
from refit.cli._output import run_app
from refit.errors import RefitError, SpecError, UntrustedVersionError
from refit.project import load_project
from refit.registry import ModelVersionRow
from refit.registry.signing import SIGNING_KEY_ENV, signing_key
from refit.serve.predictor import LoadPolicy, load_predictor
from refit.services import Services, open_services
from refit.train.promotion import promote_version
from serving import NAME, make_project, serving, wait_until

KEY = "k" * 16 + "3f9a1c2e7b4d8f60"
OTHER_KEY = "o" * 16 + "3f9a1c2e7b4d8f60"


class Trap:
    """Unpickling it creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def project_with(root: Path, key: str | None) -> Path:
    """The example with v1 in production, trained while `key` (if any) was set."""
    with pytest.MonkeyPatch.context() as env:
        if key is not None:
            env.setenv(SIGNING_KEY_ENV, key)
        return make_project(root)


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return project_with(tmp_path_factory.mktemp("signed") / "p", KEY)


@pytest.fixture(scope="module")
def unsigned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return project_with(tmp_path_factory.mktemp("unsigned") / "p", None)


def opened(project: Path, key: str | None, monkeypatch: pytest.MonkeyPatch) -> Services:
    if key is None:
        monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    else:
        monkeypatch.setenv(SIGNING_KEY_ENV, key)
    return open_services(load_project(project))


@pytest.fixture
def services(signed: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    with opened(signed, KEY, monkeypatch) as s:
        yield s


def policy(key: str) -> LoadPolicy:
    return LoadPolicy(signing_key=key.encode())


def test_a_version_registered_with_the_key_is_signed_and_loads(services: Services) -> None:
    row = services.registry.get_version(NAME, 1)
    assert row.manifest_signature is not None and len(row.manifest_signature) == 64

    assert load_predictor(row, services.store, policy=policy(KEY)).version == 1


def test_a_tampered_manifest_is_refused_before_its_artifact_is_read(
    signed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with opened(signed, KEY, monkeypatch) as services:
        marker = tmp_path / "sprung"
        # A real artifact of the store, with its real sha256: only the signature can tell.
        ref = services.store.put(pickle.dumps(Trap(marker)), kind="models", suffix=".joblib")
        v1 = services.registry.get_version(NAME, 1)
        with services.registry.write() as s:
            s.execute(
                update(ModelVersionRow)
                .where(ModelVersionRow.id == v1.id)
                .values(artifact_uri=ref.uri, artifact_sha256=ref.sha256, onnx=None)
            )
        try:
            tampered = services.registry.get_version(NAME, 1)
            with pytest.raises(RefitError) as refused:
                load_predictor(tampered, services.store, policy=policy(KEY))
            assert not marker.exists(), "the tampered version's artifact was unpickled"
            assert isinstance(refused.value, UntrustedVersionError)
            assert "does not match its signature" in str(refused.value)
        finally:
            with services.registry.write() as s:
                s.execute(
                    update(ModelVersionRow)
                    .where(ModelVersionRow.id == v1.id)
                    .values(
                        artifact_uri=v1.artifact_uri,
                        artifact_sha256=v1.artifact_sha256,
                        onnx=v1.onnx,
                    )
                )


@pytest.mark.parametrize(
    "change",
    [
        {"onnx": {"status": "ok", "uri": "models/00/other.onnx", "sha256": "0" * 64}},
        {"format": "skops"},
        {"flavor": "onnx"},
        {"version": 7},
        {"signature": {"inputs": [], "output": {}}},
    ],
    ids=["onnx artifact", "format", "flavor", "version", "signature"],
)
def test_any_change_to_the_manifest_is_refused(services: Services, change: dict[str, Any]) -> None:
    row = services.registry.get_version(NAME, 1)  # detached: changed here, as a forger would
    for field, value in change.items():
        setattr(row, field, value)
    with pytest.raises(UntrustedVersionError, match="does not match its signature"):
        load_predictor(row, services.store, policy=policy(KEY))


def test_another_key_is_refused(services: Services) -> None:
    row = services.registry.get_version(NAME, 1)
    with pytest.raises(UntrustedVersionError, match="another key"):
        load_predictor(row, services.store, policy=policy(OTHER_KEY))


def test_without_a_key_a_signed_version_loads_as_before(services: Services) -> None:
    assert load_predictor(services.registry.get_version(NAME, 1), services.store).version == 1


def test_unsigned_versions_are_refused_until_refit_models_sign_signs_them(
    unsigned: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with opened(unsigned, KEY, monkeypatch) as services:
        row = services.registry.get_version(NAME, 1)
        assert row.manifest_signature is None
        with pytest.raises(UntrustedVersionError, match=r"not signed.*refit models sign"):
            load_predictor(row, services.store, policy=policy(KEY))

        assert run_app(app, ["models", "show", "1", "-p", str(unsigned), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["signed"] == "unsigned"

        assert run_app(app, ["models", "sign", "-p", str(unsigned)]) == 0
        assert f"{NAME} v1: signed" in capsys.readouterr().out

        row = services.registry.get_version(NAME, 1)
        assert load_predictor(row, services.store, policy=policy(KEY)).version == 1
        assert run_app(app, ["models", "show", "1", "-p", str(unsigned)]) == 0
        assert "signed    yes, with this REFIT_SIGNING_KEY" in capsys.readouterr().out
        # Signed once: a second run leaves it, and another key does not overwrite it.
        assert run_app(app, ["models", "sign", "-p", str(unsigned)]) == 0
        assert "v1: already signed" in capsys.readouterr().out
        monkeypatch.setenv(SIGNING_KEY_ENV, OTHER_KEY)
        assert run_app(app, ["models", "sign", "-p", str(unsigned)]) == 0
        assert "v1: not signed: signed with another key" in capsys.readouterr().out


def test_signing_needs_a_key_and_a_long_one(
    unsigned: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    assert run_app(app, ["models", "sign", "-p", str(unsigned)]) == SpecError.exit_code
    assert f"set {SIGNING_KEY_ENV}" in capsys.readouterr().err
    with pytest.raises(SpecError, match="at least 32"):
        signing_key({SIGNING_KEY_ENV: "short"})


def unsigned_copy_of_v1(services: Services) -> ModelVersionRow:
    """v1 registered again by a writer without the key: real artifacts, no signature."""
    v1 = services.registry.get_version(NAME, 1)
    columns = {c.key: getattr(v1, c.key) for c in ModelVersionRow.__table__.columns}
    columns.pop("id")
    columns["manifest_signature"] = None
    run = services.registry.start_run(f"unsigned-{uuid.uuid4().hex}", NAME, v1.snapshot_id, "x")
    return services.registry.register_version(run.id, ModelVersionRow(**columns))


def test_promoting_an_unsigned_version_is_refused_while_a_key_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    project = project_with(tmp_path / "p", KEY)
    with opened(project, None, monkeypatch) as services:
        v2 = unsigned_copy_of_v1(services)
    monkeypatch.setenv(SIGNING_KEY_ENV, KEY)

    code = run_app(app, ["models", "promote", str(v2.version), "-p", str(project)])

    message = capsys.readouterr().err
    assert code == UntrustedVersionError.exit_code, message
    assert "v2 cannot take production" in message and "not signed" in message
    with opened(project, KEY, monkeypatch) as services:
        assert services.registry.alias_version(NAME, "production") == 1


@pytest.mark.slow
def test_a_server_with_the_key_keeps_its_version_when_production_moves_to_an_unsigned_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = project_with(tmp_path / "p", KEY)
    with opened(project, None, monkeypatch) as services:
        v2 = unsigned_copy_of_v1(services)
        assert v2.manifest_signature is None
        with serving(project, 1, env={SIGNING_KEY_ENV: KEY}) as server:
            server.converge(1, workers=1)
            promote_version(services.registry, NAME, v2.version, "test", store=services.store)
            wait_until("the server refuses v2", lambda: "v2 is not signed" in server.output(), 15)
            served = server.served()
            assert served is not None and served["version"] == 1, server.output()
