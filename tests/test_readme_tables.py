"""The README documents every spec field, every command and every endpoint, in the form it
documents them today:

- a spec field in the sketch of `## The spec (refit.yaml)`, as a key (`leaf:`, also in a
  comment, such as `# or function: ...`) or in a `# + a, b` list of more keys, on the lines of
  its top-level section (`serve: {...}` and its continuation lines); or as the first cell of a
  `| setting |` table whose introduction names the section ("the settings are in `serve:`");
- a command as the first cell of a `| command |` table: `` `refit models promote VERSION` ``,
  or, after such a span, a sibling of it (`` `refit snapshots list` / `show ID` ``);
- an endpoint as the first cell of an `| endpoint |` table: `` `POST /v2/models/{name}/infer` ``,
  with `[...]` for an optional part and any name for a path parameter; HEAD is documented once
  for every GET, and a mount (`/docs/static`) by a span of its path in such a table.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer.main
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel

from refit.cli import app as cli
from refit.examples import create_project
from refit.project import load_project
from refit.serve.app import create_app
from refit.serve.state import ServerState
from refit.services import open_services
from refit.spec import Spec

README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
SPAN = re.compile(r"`([^`]+)`")


# --- the README's tables ----------------------------------------------------------------------


def tables(text: str) -> Iterator[tuple[str, list[str], list[list[str]]]]:
    """Each Markdown table of `text`: the paragraph before it, its header cells, its rows."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            before: list[str] = []
            j = i - 1
            while j >= 0 and not lines[j].strip():
                j -= 1
            while j >= 0 and lines[j].strip():
                before.insert(0, lines[j])
                j -= 1
            header = cells(lines[i])
            i += 2
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(cells(lines[i]))
                i += 1
            yield " ".join(before), header, rows
        else:
            i += 1


def cells(line: str) -> list[str]:
    # `\|` is a pipe inside a cell (`text\|json`), not a column boundary.
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def first_cells(kind: str) -> Iterator[tuple[str, str]]:
    """The first cell of each row of each table whose first column is `kind`, with the
    paragraph before the table."""
    for before, header, rows in tables(README):
        if header and header[0] == kind:
            for row in rows:
                yield before, row[0]


# --- spec fields ------------------------------------------------------------------------------


def models_in(annotation: Any) -> Iterator[tuple[type[BaseModel], bool]]:
    """The pydantic models an annotation holds, and whether each is a mapping's value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation, False
        return
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin is typing.Annotated:
        yield from models_in(arguments[0])
    elif origin is dict:
        for model, _ in models_in(arguments[1]):
            yield model, True
    elif origin in (list, typing.Union, types.UnionType):
        for argument in arguments:
            yield from models_in(argument)


def spec_fields(model: type[BaseModel] = Spec, prefix: str = "") -> Iterator[str]:
    """Every field reachable from the top-level spec, by dotted name (`*` for a mapping's
    keys: `data.features.*.nullable`)."""
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        yield path
        for inner, mapped in models_in(field.annotation):
            yield from spec_fields(inner, f"{path}.*." if mapped else f"{path}.")


def sketch_sections() -> dict[str, str]:
    """The lines of each top-level section of the spec's sketch, by its key."""
    spec = README.split("## The spec (`refit.yaml`)", 1)[1]
    sketch = spec.split("```yaml\n", 1)[1].split("```", 1)[0]
    sections: dict[str, str] = {}
    key = ""
    for line in sketch.splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            key = line.split(":", 1)[0]
        sections[key] = sections.get(key, "") + line + "\n"
    return sections


def in_sketch(section: str, leaf: str) -> bool:
    if re.search(rf"(?<![\w.]){re.escape(leaf)}:", section):
        return True
    listed = (m.split(",") for m in re.findall(r"#\s*\+\s*([\w, ]+)", section))
    return any(leaf == name.strip() for names in listed for name in names)


def in_settings_table(top: str, leaf: str) -> bool:
    return any(
        f"`{top}:`" in before and cell == f"`{leaf}`" for before, cell in first_cells("setting")
    )


def test_every_spec_field_is_in_the_readme() -> None:
    sections = sketch_sections()
    fields = list(spec_fields())
    assert "serve.max_connections" in fields and "data.features.*.nullable" in fields
    missing = [
        path
        for path in fields
        if not in_sketch(sections.get(path.split(".")[0], ""), path.rsplit(".", 1)[-1])
        and not in_settings_table(path.split(".")[0], path.rsplit(".", 1)[-1])
    ]
    assert not missing, f"spec fields the README does not document: {missing}"


# --- commands ---------------------------------------------------------------------------------


def commands(command: Any = None, prefix: tuple[str, ...] = ()) -> Iterator[str]:
    """Every command and subcommand of `refit` that its help lists: `refit models promote`."""
    command = command or typer.main.get_command(cli)
    subcommands = getattr(command, "commands", None)
    if not subcommands:
        yield " ".join(("refit", *prefix))
        return
    for name, sub in subcommands.items():
        if not sub.hidden:
            yield from commands(sub, (*prefix, name))


def words(span: str) -> list[str]:
    """The command words a span begins with (those before its first argument or option)."""
    found = []
    for word in span.split():
        if not re.fullmatch(r"[a-z][a-z0-9-]*", word):
            break
        found.append(word)
    return found


def documented_commands() -> set[str]:
    documented = set()
    for _, cell in first_cells("command"):
        group: list[str] = []
        for span in SPAN.findall(cell):
            named = words(span)
            if named[:1] == ["refit"]:
                group = named[:-1]
                documented.add(" ".join(named))
            elif group and named:
                documented.add(" ".join([*group, *named]))
    return documented


def test_every_command_is_in_the_readme() -> None:
    every = list(commands())
    assert "refit models promote" in every and "refit serve" in every
    missing = [name for name in every if name not in documented_commands()]
    assert not missing, f"commands the README's command table does not list: {missing}"


# --- endpoints --------------------------------------------------------------------------------


def without_names(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def spelled_out(span: str) -> Iterator[str]:
    """A documented `METHOD /path` with each `[...]` part there and not there."""
    optional = re.search(r"\[([^\[\]]*)\]", span)
    if optional is None:
        yield without_names(span)
        return
    for part in (optional[1], ""):
        yield from spelled_out(span[: optional.start()] + part + span[optional.end() :])


def documented_endpoints() -> tuple[set[str], list[str]]:
    """`METHOD /path` of every endpoint the tables list, and every code span in their rows."""
    endpoints, spans = set(), []
    for _, cell in first_cells("endpoint"):
        for span in SPAN.findall(cell):
            endpoints.update(spelled_out(span))
    for _, header, rows in tables(README):
        if header and header[0] == "endpoint":
            spans += [span for row in rows for cell in row for span in SPAN.findall(cell)]
    return endpoints, spans


def test_every_endpoint_is_in_the_readme(tmp_path: Path) -> None:
    root = create_project(tmp_path / "p", "breast-cancer")
    with open_services(load_project(root)) as services:
        app = create_app(ServerState.open(services, heartbeat=False))
    endpoints, spans = documented_endpoints()
    missing, served = [], 0
    for context in iter_route_contexts(app.routes):
        path = context.path
        if path is None:
            continue
        served += 1
        if context.methods is None:  # a mount: the files under a path
            if not any(span.startswith(path) for span in spans):
                missing.append(f"{path}/...")
            continue
        for method in sorted(context.methods - {"HEAD"}):  # every GET answers HEAD
            if f"{method} {without_names(path)}" not in endpoints:
                missing.append(f"{method} {path}")
    assert served >= 20
    assert not missing, f"endpoints the README's endpoint tables do not list: {missing}"
