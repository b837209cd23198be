"""A project as a Docker Compose stack: the files `refit deploy compose` writes.

The stack is the loop of `refit up` in containers that share nothing but two stores:
PostgreSQL (the registry) and an S3 store (SeaweedFS) for artifacts and the data source's
files; a one-shot service creates the bucket, the scheduler ingests, trains and monitors (and
serves its Prometheus metrics on the stack's network), the server scales behind a proxy that
is the one published port, and, with `feed`, a feeder drops the breast-cancer example's rows
into the bucket.

Every refit service runs one image, built by the scheduler's service. Either the project's
image: refit's image plus the project's files, from the rendered `Dockerfile`; or, with
`refit_source` (a refit checkout, as the bundled example has), refit's own image built from
that checkout's Dockerfile, with the project's `refit.yaml` mounted into it.

    files = render_compose(load_project("churn"), Path("churn/deploy/compose"))
    write_files(Path("churn/deploy/compose"), files, keep=frozenset({ENV_FILE}))
"""

from __future__ import annotations

import json
import os
import re
from importlib import resources
from pathlib import Path

from refit.deploy.pod import STOP_SECONDS
from refit.deploy.roles import METRICS_PATH, SCHEDULER_ARGS, job_schedules, listed, metrics_port
from refit.errors import SpecError
from refit.examples import find_example
from refit.project import Project
from refit.spec import SPEC_FILE, CsvSource, SqlSource

ENV_FILE = ".env"
"""The stack's settings and credentials: the user's own once written, never replaced."""

FEED_EXAMPLE = "breast-cancer"
"""The example whose rows `refit feed` drops, and so the one a feeder service fits."""

DEFAULT_BUCKET = "refit"
"""The stack's bucket when the data source is not in one (a SQL source)."""

FEED_INTERVAL = 5

_TEMPLATES = ("compose.yaml", "nginx.conf", "Dockerfile", "Dockerfile.dockerignore")
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_PLAIN = re.compile(r"[\w./-]+")  # a path YAML reads as itself without quotes
# A Docker image reference: [host[:port]/]path[:tag], lowercase path components.
_IMAGE = re.compile(
    r"(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
)


def default_image(name: str) -> str:
    """The project image's name when `--image` is not given."""
    return f"refit-{name}"


def check_image(image: str) -> str:
    """`image` if it is a valid Docker image reference; ValueError says what one looks like."""
    if not _IMAGE.fullmatch(image):
        raise ValueError(
            f"{image!r} is not an image name: expected lowercase [REGISTRY/]NAME[:TAG], "
            "e.g. churn or registry.example.com/ml/churn:1.2"
        )
    return image


def render_compose(
    project: Project,
    out: Path,
    *,
    image: str | None = None,
    feed: bool = False,
    refit_source: Path | None = None,
) -> dict[str, str]:
    """The stack's files (name relative to `out` -> text), for the folder `out`.

    The data source must be one every container reaches: `s3://bucket/prefix/` files (in
    the stack's store) or SQL; a folder inside the image would never see new data, so it is
    refused, as is `feed` for a project that is not shaped like the breast-cancer example,
    and `refit_source` for a project whose model is a function of its own modules.
    """
    spec = project.spec
    bucket, source_path = data_location(project)
    if feed:
        _check_feedable(project, source_path)
    root = project.root.resolve()
    out = out.resolve()
    templates: tuple[str, ...] = _TEMPLATES
    if refit_source is None:
        dockerfile = relative_path(out / "Dockerfile", root).removeprefix("./")
        build = (
            "    build:\n"
            f"      context: {_yaml(relative_path(root, out))}\n"
            f"      dockerfile: {_yaml(dockerfile)}\n"
        )
        spec_mount = spec_config = ""
    else:
        _check_spec_only(project)
        templates = ("compose.yaml", "nginx.conf")
        checkout = _yaml(relative_path(refit_source.resolve(), out))
        build = f"    build: {checkout}  # refit's own Dockerfile\n"
        spec_mount = _SPEC_MOUNT
        spec_config = f"  project:\n    file: {_yaml(relative_path(root / SPEC_FILE, out))}\n"
    schedules = job_schedules(project)
    port = metrics_port(project)
    settings: list[str] = []
    if schedules:
        said = ", ".join(f"{job} {value}" for job, value in schedules.items())
        settings += [
            "",
            f"# How often the scheduler runs {listed(schedules)}",
            f"# (refit.yaml: {said}).",
        ]
        settings += [
            f"{job.upper()}_SCHEDULE={_env_value(value)}" for job, value in schedules.items()
        ]
    if feed:
        settings += [
            "",
            "# Seconds between the feeder's batches.",
            f"FEED_INTERVAL={FEED_INTERVAL}",
        ]
    values = {
        "name": spec.name,
        "image": check_image(image or ("refit" if refit_source else default_image(spec.name))),
        "bucket": bucket,
        "build": build,
        "spec_mount": spec_mount,
        "spec_config": spec_config,
        "stop_seconds": str(STOP_SECONDS),
        "data_note": ", the data source's files" if source_path else "",
        "feeder_note": ", and a feeder of new rows" if feed else "",
        "scheduler_jobs": listed(schedules),
        "scheduler_command": json.dumps(list(SCHEDULER_ARGS if port else ("scheduler",))),
        "scheduler_metrics": ""
        if port is None
        else render_template(_SCHEDULER_METRICS, {"port": str(port), "path": METRICS_PATH}),
        "schedule_environment": "".join(
            f"      REFIT_SCHEDULE__{job.upper()}: ${{{job.upper()}_SCHEDULE}}\n"
            for job in schedules
        )
        # The port the labels name, whatever the mounted refit.yaml says.
        + (f'      REFIT_SCHEDULE__METRICS_PORT: "{port}"\n' if port else ""),
        "feeder": render_template(
            _template("feeder.yaml"), {"source_path": json.dumps(source_path)}
        )
        if feed
        else "",
        "env_settings": "".join(f"{line}\n" for line in settings),
        "out_ignored": _ignored(out, root),
    }
    files = {name: render_template(_template(name), values) for name in templates}
    files[ENV_FILE] = render_template(_template("env"), values)
    return dict(sorted(files.items()))


def data_location(project: Project, level: str = "Compose") -> tuple[str, str | None]:
    """The stack's bucket, and the source's `s3://` path when its files are in it."""
    source = project.spec.data.source
    if isinstance(source, SqlSource):
        return DEFAULT_BUCKET, None
    path = source.path
    # The spec has checked an s3:// path's bucket name.
    bucket = path.removeprefix("s3://").split("/", 1)[0] if path.startswith("s3://") else ""
    if not bucket:
        raise SpecError(
            f"{project.root / SPEC_FILE}: data.source.path: got {path!r}: in {level} every "
            "container reads the data from object storage or a database, never from its own "
            "disk; expected s3://BUCKET/PREFIX/ or a sql source"
        )
    return bucket, path


_SCHEDULER_METRICS = """\
    # Its Prometheus metrics (GET {{path}}), on the stack's network only, no host port: a
    # Prometheus in the stack scrapes scheduler:{{port}}, or finds it by these labels.
    expose:
      - "{{port}}"
    labels:
      prometheus.io/scrape: "true"
      prometheus.io/port: "{{port}}"
      prometheus.io/path: {{path}}
"""

_SPEC_MOUNT = """\
  configs:  # the project is its refit.yaml, in the image's project folder
    - source: project
      target: /project/refit.yaml
"""


def _check_spec_only(project: Project) -> None:
    for field, path in project.spec.model.code_paths.items():
        raise SpecError(
            f"{project.root / SPEC_FILE}: {field}: got {path!r}: its modules must be "
            "in the image, and refit's own image holds only refit.yaml: leave out "
            "--refit-source to build the project's image"
        )


def _check_feedable(project: Project, source_path: str | None) -> None:
    spec = project.spec
    where = f"{project.root / SPEC_FILE}: --feed drops CSV files of the {FEED_EXAMPLE} rows"
    if not isinstance(spec.data.source, CsvSource) or source_path is None:
        raise SpecError(f"{where}, so it needs a csv source in s3://, not {spec.data.source.kind}")
    example = find_example(FEED_EXAMPLE).spec["data"]
    target = example["target"] if isinstance(example, dict) else None
    if spec.data.target != target:
        raise SpecError(
            f"{where}: data.target: got {spec.data.target!r}: expected {target!r}, the column "
            "those rows are labelled in"
        )


def _env_value(value: str) -> str:
    return f'"{value}"' if " " in value else value


def relative_path(path: Path, start: Path) -> str:
    """`path` from `start`, as Compose reads a path: `./project`, `../..`, `../Dockerfile`."""
    text = Path(os.path.relpath(path, start)).as_posix()
    return text if text.startswith(".") else f"./{text}"


def _ignored(out: Path, root: Path) -> str:
    """The rendered folder's line in the image's ignore file, when it is inside the project."""
    if out == root:
        return f"{ENV_FILE}\n"
    if out.is_relative_to(root):
        return f"{out.relative_to(root).as_posix()}\n"
    return ""


def _yaml(path: str) -> str:
    """A path as a YAML scalar: as it is when plain, else double-quoted (JSON is YAML)."""
    return path if _PLAIN.fullmatch(path) else json.dumps(path)


def _template(name: str) -> str:
    return (resources.files("refit.deploy") / "templates" / "compose" / name).read_text("utf-8")


def render_template(text: str, values: dict[str, str]) -> str:
    """`text` with each `{{name}}` replaced by `values[name]` (the templates of every level)."""
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], text)
