"""Only refit's own artifacts load: a registry row cannot point a server at another file.

Each forged row records the real sha256 of an outside file that is a trap: unpickling it
creates a marker file. An absolute path, a `..` path or a symlink that leads out of the store
is refused by name, before a byte of the trap is read, and the marker never appears.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from refit.artifacts import FsspecArtifactStore, LocalArtifactStore, confined
from refit.errors import ArtifactPathError, RefitError, UntrustedVersionError
from refit.project import load_project
from refit.registry import ModelVersionRow
from refit.serve.predictor import LoadPolicy, load_predictor
from refit.services import Services, open_services
from serving import NAME, make_project


class Trap:
    """Unpickling it creates `marker`: proof that the file was deserialised."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("paths") / "p")


@pytest.fixture
def services(project: Path) -> Any:
    with open_services(load_project(project)) as opened:
        yield opened


def trap(folder: Path) -> tuple[Path, Path, str]:
    """An outside pickle that creates a marker when loaded: (its path, the marker, sha256)."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "sprung"
    data = pickle.dumps(Trap(marker))
    path = folder / "trap.joblib"
    path.write_bytes(data)
    return path, marker, hashlib.sha256(data).hexdigest()


def forged(services: Services, uri: str, sha256: str) -> ModelVersionRow:
    """A copy of v1's row, pointing at `uri`, as a writer of the registry could make it."""
    v1 = services.registry.get_version(NAME, 1)
    columns = {c.key: getattr(v1, c.key) for c in ModelVersionRow.__table__.columns}
    columns.pop("id")
    row = ModelVersionRow(**{**columns, "artifact_uri": uri, "artifact_sha256": sha256})
    row.onnx = {"status": "not converted"}  # so that the native artifact is the one read
    run = services.registry.start_run(uuid.uuid4().hex, NAME, v1.snapshot_id, "manual")
    services.registry.register_version(run.id, row)
    return services.registry.get_version(NAME, row.version)


def test_an_absolute_path_is_refused_before_the_file_is_read(
    services: Services, tmp_path: Path
) -> None:
    path, marker, sha256 = trap(tmp_path / "outside")
    row = forged(services, str(path), sha256)

    with pytest.raises(RefitError) as refused:
        load_predictor(row, services.store)

    assert not marker.exists(), "the outside file was unpickled"
    assert isinstance(refused.value, ArtifactPathError)
    assert re.search(rf"{NAME} v{row.version} is refused: .*absolute", str(refused.value))


def test_a_path_climbing_out_with_dotdot_is_refused(services: Services, tmp_path: Path) -> None:
    root = Path(services.store.url).resolve()
    path, marker, sha256 = trap(tmp_path / "outside")
    climb = "/".join([".."] * len(root.parts)) + str(path)  # ../../..  /tmp/.../trap.joblib
    row = forged(services, f"models/{climb}", sha256)

    with pytest.raises(RefitError) as refused:
        load_predictor(row, services.store)

    assert not marker.exists(), "the outside file was unpickled"
    assert isinstance(refused.value, ArtifactPathError)
    assert re.search(r"is refused: .*'\.\.'", str(refused.value))


def test_a_symlink_leading_out_of_the_store_is_refused(services: Services, tmp_path: Path) -> None:
    path, marker, sha256 = trap(tmp_path / "outside")
    link = Path(services.store.url) / "models" / "ff" / f"{sha256}.joblib"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(path)
    row = forged(services, f"models/ff/{sha256}.joblib", sha256)

    with pytest.raises(RefitError) as refused:
        load_predictor(row, services.store)

    assert not marker.exists(), "the outside file was unpickled"
    assert isinstance(refused.value, ArtifactPathError)
    assert re.search(r"is refused: .*outside the store through a symlink", str(refused.value))


def test_a_real_artifact_still_loads(services: Services) -> None:
    loaded = load_predictor(services.registry.get_version(NAME, 1), services.store)
    assert loaded.version == 1


@pytest.mark.parametrize(
    "uri",
    ["/etc/passwd", "../x", "models/../../x", "models/./x", "models//x", "s3://other/x", "C:\\x"],
)
def test_every_store_refuses_a_key_outside_its_root(uri: str, tmp_path: Path) -> None:
    with pytest.raises(ArtifactPathError):
        confined(uri)
    with pytest.raises(ArtifactPathError):
        LocalArtifactStore(tmp_path).get(uri, "0" * 64)
    with pytest.raises(ArtifactPathError):
        FsspecArtifactStore("memory://refit-paths/prefix").get(uri, "0" * 64)
    with pytest.raises(ArtifactPathError):
        FsspecArtifactStore("memory://refit-paths/prefix").exists(uri)


def test_keys_inside_the_root_are_untouched(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    ref = store.put(b"bytes", kind="models", suffix=".joblib")
    assert store.get(ref.uri, ref.sha256) == b"bytes"
    # A symlink that stays inside the root is followed.
    inside = tmp_path / "store" / "models" / "alias.joblib"
    inside.symlink_to(tmp_path / "store" / ref.uri)
    assert store.get("models/alias.joblib", ref.sha256) == b"bytes"


def test_a_server_that_refuses_pickles_never_reads_one(services: Services, tmp_path: Path) -> None:
    marker = tmp_path / "sprung"
    ref = services.store.put(pickle.dumps(Trap(marker)), kind="models", suffix=".joblib")
    row = forged(services, ref.uri, ref.sha256)  # inside the store, with its real sha256

    with pytest.raises(RefitError) as refused:
        load_predictor(row, services.store, policy=LoadPolicy(allow_pickle=False))

    assert not marker.exists(), "a pickle was loaded despite serve.allow_pickle: false"
    assert isinstance(refused.value, UntrustedVersionError)
    assert "is a pickle" in str(refused.value) and "serve.allow_pickle is false" in str(
        refused.value
    )
