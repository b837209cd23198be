"""No path to a client: what a server tells its clients of a failure (error bodies, the 503
before the first load, `/v1/models`) names a version, a kind of failure and an artifact key at
most, never the store's folder, bucket or endpoint; the server's log keeps the full message.

Checked on the real messages of the local store, of an S3 store (moto's real endpoint) and of
a flavor that cannot load its file, then on a real `refit serve`.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from refit.artifacts import FsspecArtifactStore, LocalArtifactStore, s3_storage_options
from refit.errors import StoreError
from refit.project import load_project
from refit.redaction import for_clients, public_reason
from refit.registry import ModelVersionRow
from refit.serve.app import create_app
from refit.serve.predictor import load_predictor
from refit.serve.state import ServerState
from refit.services import open_services
from refit.spec import S3Options
from servers import S3Location
from serving import NAME, example_records, make_project, serving

KEY = f"models/ab/{'ab' * 32}.joblib"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("paths") / "p")


def version(project: Path, **changes: Any) -> ModelVersionRow:
    """v1's row with some columns changed (e.g. `artifact_uri=`), served natively."""
    with open_services(load_project(project)) as services:
        first = services.registry.get_version(NAME, 1)
    columns = {c.key: getattr(first, c.key) for c in ModelVersionRow.__table__.columns}
    columns.update(onnx=None, **changes)
    return ModelVersionRow(**columns)


def refusal(row: ModelVersionRow, store: Any) -> tuple[str, str]:
    """(the full message, what a client sees) of the failure to load `row` from `store`."""
    with pytest.raises(Exception) as failed:
        load_predictor(row, store)
    return str(failed.value), public_reason(failed.value)


def s3_store(location: S3Location, endpoint: str | None = None) -> FsspecArtifactStore:
    options = S3Options(
        endpoint_url=endpoint or location.endpoint_url,
        region=location.region,
        access_key_id=location.key,
        secret_access_key=location.secret,
    )
    storage = s3_storage_options(options)
    storage["config_kwargs"] = {"retries": {"max_attempts": 1}, "connect_timeout": 1}
    return FsspecArtifactStore(location.url, **storage)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assert_hidden(shown: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in shown, f"{secret!r} shown to a client: {shown}"
    assert "://" not in shown, shown


def test_local_store_failures_show_the_key_and_never_the_folder(project: Path) -> None:
    root = project / ".refit" / "artifacts"
    store = LocalArtifactStore(root)
    missing = version(project, artifact_uri=KEY)
    full, shown = refusal(missing, store)
    assert str(root) in full  # the log knows where
    assert shown == f"artifact missing: artifact {KEY} is missing from <path>"
    assert_hidden(shown, str(project), "/tmp")

    ref = store.put(b"the bytes whose checksum is recorded", kind="models", suffix=".joblib")
    (root / ref.uri).write_bytes(b"other bytes")
    full, shown = refusal(version(project, artifact_uri=ref.uri, artifact_sha256=ref.sha256), store)
    assert str(root) in full
    assert shown.startswith(f"artifact corrupt: artifact {ref.uri} is corrupt: its sha256 is ")
    assert_hidden(shown, str(project))

    garbage = store.put(b"not a model", kind="models", suffix=".joblib")
    row = version(project, artifact_uri=garbage.uri, artifact_sha256=garbage.sha256)
    full, shown = refusal(row, store)
    assert shown == "artifact error: cannot load a joblib artifact: KeyError: 110"
    assert_hidden(shown, str(project))


def test_s3_store_failures_show_the_key_and_never_the_bucket_or_endpoint(
    project: Path, s3_storage: S3Location
) -> None:
    store = s3_store(s3_storage)
    bucket, endpoint = s3_storage.bucket, s3_storage.endpoint_url
    full, shown = refusal(version(project, artifact_uri=KEY), store)
    assert bucket in full
    assert shown == f"artifact missing: artifact {KEY} is missing"
    assert_hidden(shown, bucket, endpoint, "127.0.0.1")

    ref = store.put(b"recorded bytes", kind="models", suffix=".joblib")
    store.fs.pipe_file(f"{s3_storage.url}/{ref.uri}", b"other bytes")
    full, shown = refusal(version(project, artifact_uri=ref.uri, artifact_sha256=ref.sha256), store)
    assert bucket in full
    assert shown.startswith(f"artifact corrupt: artifact {ref.uri} is corrupt: ")
    assert_hidden(shown, bucket, endpoint)

    unreachable = f"http://127.0.0.1:{closed_port()}"
    full, shown = refusal(version(project, artifact_uri=ref.uri), s3_store(s3_storage, unreachable))
    assert unreachable in full or bucket in full
    assert shown.startswith(f"artifact error: cannot read artifact {ref.uri}: ")
    assert_hidden(shown, bucket, unreachable, "127.0.0.1:")


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        (
            "registry database sqlite:////srv/p/.refit/refit.db failed: locked",
            "registry database <url> failed: locked",
        ),
        ("cannot reach postgresql+psycopg://refit:pw@db.internal:5432/refit", "cannot reach <url>"),
        ("cannot read /srv/p/.refit/artifacts/x.bin: denied", "cannot read <path>: denied"),
        (f"FileNotFoundError: my-bucket/prefix/{KEY}", f"FileNotFoundError: {KEY}"),
        ("3 of 64 labels differ; rows 1/2", "3 of 64 labels differ; rows 1/2"),
    ],
)
def test_urls_and_paths_are_cut_from_any_message(message: str, shown: str) -> None:
    assert for_clients(message) == shown


@pytest.mark.slow
def test_a_real_server_shows_clients_no_path_of_its_stores(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    with open_services(load_project(root)) as services:
        row = services.registry.get_version(NAME, 1)
        (root / ".refit" / "artifacts" / row.artifact_uri).write_bytes(b"damaged")
        (root / ".refit" / "artifacts" / row.onnx["uri"]).write_bytes(b"damaged")
    record = example_records(1)[0]
    with serving(root, workers=1) as server:
        bodies = {
            "/predict": server.http.post("/predict", json=record),
            "/v1/models": server.http.get("/v1/models"),
            f"/v1/models/{NAME}": server.http.get(f"/v1/models/{NAME}"),
            "/health/ready": server.http.get("/health/ready"),
            "/invocations": server.http.post("/invocations", json={"dataframe_records": [record]}),
            "/v2 infer": server.http.post(
                f"/v2/models/{NAME}/infer",
                json={"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}]},
            ),
        }
        assert bodies["/predict"].status_code == 503
        said = bodies["/predict"].json()["error"]["message"]
        assert said.startswith(f"{NAME} is not ready: v1 failed to load: artifact corrupt: ")
        assert f"artifact {row.artifact_uri} is corrupt" in said
        for where, response in bodies.items():
            assert_hidden(response.text, str(root), str(tmp_path), "/tmp/")
            assert response.status_code in (200, 503), (where, response.text)
        reason = json.loads(bodies["/v1/models"].text)["models"][0]["reason"]

        def without_time(text: str) -> str:
            return text.rsplit(", retrying in ", 1)[0]

        assert without_time(reason) == without_time(said.removeprefix(f"{NAME} is not ready: "))
    assert str(root / ".refit" / "artifacts") in server.output()  # the log has it all


def test_a_long_message_is_cut_before_it_is_searched() -> None:
    path = "/srv/" + "x" * 100_000
    shown = for_clients(f"cannot read {path}")
    assert shown == "cannot read <path>"


@pytest.mark.anyio
async def test_an_error_of_refit_s_own_answers_500_without_the_database_url(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{project}/.refit/refit.db"
    with open_services(load_project(project)) as services:
        state = ServerState.open(services, heartbeat=False)
        assert await state.follower.check()

        async def failing(*args: Any) -> Any:
            raise StoreError(f"registry database {url} failed: disk I/O error")

        monkeypatch.setattr(state.batcher, "predict", failing)
        transport = httpx.ASGITransport(create_app(state))
        async with httpx.AsyncClient(transport=transport, base_url="http://refit") as client:
            answer = await client.post("/predict", json=example_records(1)[0])
    assert answer.status_code == 500
    assert answer.json()["error"] == {
        "code": "error",
        "message": "registry database <url> failed: disk I/O error",
    }
