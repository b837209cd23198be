"""`serve.extra_fields`: fields that are no input of the model are refused (the default) or
ignored, on every protocol; a request of far more fields is refused before its values are read."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from refit.errors import InputError
from refit.examples import example_rows
from refit.project import load_project
from refit.serve.app import create_app
from refit.serve.records import MAX_EXTRA_FIELDS, RecordReader
from refit.serve.state import ServerState
from refit.services import Services, open_services
from refit.signature import InputColumn, Output, Signature
from refit.spec import FeatureType, Task

pytestmark = pytest.mark.anyio

SIGNATURE = Signature(
    inputs=[InputColumn("a", FeatureType.FLOAT), InputColumn("b", FeatureType.CATEGORY)],
    output=Output(Task.REGRESSION, "float"),
)
ROW = {"a": 1.5, "b": "x"}
EXTRA = {**ROW, "id": 7, "note": "from the CSV"}


def reader(extra_fields: Any) -> RecordReader:
    return RecordReader(SIGNATURE, max_rows=100, extra_fields=extra_fields)


def test_extra_fields_are_refused_by_default() -> None:
    with pytest.raises(InputError) as raised:
        reader("reject").one(EXTRA)
    assert [(p.field, p.problem) for p in raised.value.problems] == [
        ("id", "unknown field"),
        ("note", "unknown field"),
    ]


@pytest.mark.parametrize("rows", [1, 20], ids=["per-value", "checked-whole"])
def test_ignored_extra_fields_are_dropped_from_records(rows: int) -> None:
    frame = reader("ignore").many({"records": [EXTRA] * rows})
    assert list(frame.columns) == ["a", "b"]
    assert frame.iloc[0].tolist() == [1.5, "x"]
    assert reader("ignore").one(EXTRA).iloc[0].tolist() == [1.5, "x"]


def test_ignoring_extra_fields_still_needs_every_input() -> None:
    with pytest.raises(InputError) as raised:
        reader("ignore").one({"a": 1.5, "id": 7})
    assert [(p.field, p.problem) for p in raised.value.problems] == [("b", "missing")]


def test_ignored_extra_columns_are_dropped_from_tables() -> None:
    table = {"a": [1.5], "b": ["x"], "id": [7]}
    columns = reader("ignore").table_columns(table, lambda name, i: f"{name}[{i}]")
    assert columns == [[1.5], ["x"]]
    with pytest.raises(InputError):
        reader("reject").table_columns(table, lambda name, i: f"{name}[{i}]")


def test_a_record_or_table_of_far_more_fields_is_refused_before_its_values() -> None:
    wide = {**ROW, **{f"extra{k}": k for k in range(MAX_EXTRA_FIELDS + 1)}}
    with pytest.raises(InputError) as raised:
        reader("ignore").many({"records": [wide]})
    [problem] = raised.value.problems
    assert (problem.field, problem.problem, problem.received) == (
        "records[0]",
        "too many fields",
        MAX_EXTRA_FIELDS + 3,
    )
    table = {name: [value] for name, value in wide.items()}
    with pytest.raises(InputError) as raised:
        reader("ignore").table_columns(table, lambda name, i: name)
    assert [p.problem for p in raised.value.problems] == ["too many fields"]


# --- every protocol, from the spec -------------------------------------------------------------


@pytest.fixture
def ignoring(regressor_template: Path, tmp_path: Path) -> Iterator[Services]:
    """The diabetes project (v1 in production) with `serve.extra_fields: ignore`."""
    shutil.copytree(regressor_template, tmp_path / "p")
    environ = {"REFIT_SERVE__EXTRA_FIELDS": "ignore"}
    with open_services(load_project(tmp_path / "p", environ)) as services:
        yield services


@pytest.fixture
async def client(ignoring: Services) -> AsyncIterator[httpx.AsyncClient]:
    state = ServerState.open(ignoring)
    assert await state.follower.check()
    transport = httpx.ASGITransport(create_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://refit") as opened:
        yield opened


def diabetes_rows() -> list[dict[str, Any]]:
    """Rows as a CSV export holds them: the features, the target and an id and a note."""
    frame = example_rows("diabetes").head(3)
    rows: list[dict[str, Any]] = json.loads(frame.to_json(orient="records"))
    return [{**row, "id": k, "comment": "kept in the CSV"} for k, row in enumerate(rows)]


async def test_every_protocol_ignores_extra_fields_when_the_spec_says_so(
    client: httpx.AsyncClient, ignoring: Services
) -> None:
    rows = diabetes_rows()
    extra = ("progression", "id", "comment")
    plain = [{k: v for k, v in row.items() if k not in extra} for row in rows]
    expected = (await client.post("/predict/batch", json={"records": plain})).json()
    assert (await client.post("/predict", json=rows[0])).status_code == 200
    answer = await client.post("/predict/batch", json={"records": rows})
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == expected["predictions"]

    names = list(rows[0])
    split = {"columns": names, "data": [[row[n] for n in names] for row in rows]}
    invocations = await client.post("/invocations", json={"dataframe_split": split})
    assert invocations.status_code == 200, invocations.text
    assert invocations.json()["predictions"] == expected["predictions"]
    lines = [",".join(names)] + [",".join(str(row[n]) for n in names) for row in rows]
    csv_answer = await client.post(
        "/invocations", content="\n".join(lines), headers={"content-type": "text/csv"}
    )
    assert csv_answer.status_code == 200, csv_answer.text
    assert csv_answer.json()["predictions"] == pytest.approx(expected["predictions"])

    inputs = [
        {
            "name": name,
            "shape": [len(rows)],
            "datatype": "BYTES" if isinstance(rows[0][name], str) else "FP64",
            "data": [row[name] for row in rows],
        }
        for name in names
    ]
    name = ignoring.project.spec.name
    v2 = await client.post(f"/v2/models/{name}/infer", json={"inputs": inputs})
    assert v2.status_code == 200, v2.text
    assert v2.json()["outputs"][0]["data"] == pytest.approx(expected["predictions"])
