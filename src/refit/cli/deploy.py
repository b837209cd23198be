"""`refit deploy compose|kubernetes|helm`: a project's deployment files, rendered from refit's
templates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from refit.cli._output import ProjectOption, err, out
from refit.project import load_project

deploy_app = typer.Typer(
    help="Render a project's deployment files (Docker Compose, Kubernetes, Helm).",
    no_args_is_help=True,
)


ForceOption = Annotated[
    bool, typer.Option("--force", help="Replace files in OUT that hold other content.")
]


def _image(value: str | None) -> str | None:
    from refit.deploy.compose import check_image

    if value is not None:
        try:
            check_image(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def _checkout(value: Path | None) -> Path | None:
    if value is not None and not (value / "Dockerfile").is_file():
        raise typer.BadParameter(f"no Dockerfile in {value}: give the folder of a refit checkout")
    return value


@deploy_app.command("compose")
def compose(
    directory: Annotated[
        Path, typer.Argument(metavar="OUT", help="The folder to write the stack's files into.")
    ],
    project: ProjectOption = Path("."),
    image: Annotated[
        str | None,
        typer.Option(
            help="The image the refit services run "
            "(default refit-NAME; refit with --refit-source).",
            callback=_image,
            show_default=False,
        ),
    ] = None,
    feed: Annotated[
        bool,
        typer.Option(
            "--feed", help="Add a feeder of the breast-cancer example's rows into the source."
        ),
    ] = False,
    refit_source: Annotated[
        Path | None,
        typer.Option(
            help="Build refit's own image from this refit checkout and mount refit.yaml into it, "
            "instead of a project image (as the bundled example does).",
            callback=_checkout,
            show_default=False,
        ),
    ] = None,
    force: ForceOption = False,
) -> None:
    """Write a Docker Compose stack for the project: PostgreSQL, S3, scheduler, scalable server."""
    from refit.deploy.compose import ENV_FILE, render_compose
    from refit.deploy.files import write_files

    loaded = load_project(project)
    files = render_compose(loaded, directory, image=image, feed=feed, refit_source=refit_source)
    for written in write_files(directory, files, force=force, keep=frozenset({ENV_FILE})):
        out.print(f"{written.action:<9} {written.path}")
    first = "" if refit_source else "`docker build -t refit .` in refit's repository, then "
    err.print(
        f"next: {first}`docker compose up --build` in {directory} "
        f"(edit {directory / ENV_FILE} first: its credentials are examples)"
    )


def _tagged_image(value: str | None) -> str | None:
    from refit.deploy.images import check_tagged_image

    if value is not None:
        try:
            check_tagged_image(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


PodImageOption = Annotated[
    str | None,
    typer.Option(
        help="The image every pod runs, NAME:TAG (default refit's own image of this "
        "version, with refit.yaml mounted from a ConfigMap).",
        callback=_tagged_image,
        show_default=False,
    ),
]


@deploy_app.command("kubernetes")
def kubernetes(
    directory: Annotated[
        Path, typer.Argument(metavar="OUT", help="The folder to write the Kustomize files into.")
    ],
    project: ProjectOption = Path("."),
    image: PodImageOption = None,
    force: ForceOption = False,
) -> None:
    """Write Kustomize files for the project: a base, and the overlays dev and prod."""
    from refit.deploy.files import write_files
    from refit.deploy.kubernetes import SETTINGS_FILE, credentials_secret, render_kubernetes

    loaded = load_project(project)
    files = render_kubernetes(loaded, image=image)
    for written in write_files(directory, files, force=force, keep=frozenset({SETTINGS_FILE})):
        out.print(f"{written.action:<9} {written.path}")
    secret = credentials_secret(loaded.spec.name)
    err.print(
        f"next: create the Secret {secret} (see {directory / 'secret.example.yaml'}), "
        f"edit {directory / SETTINGS_FILE}, then "
        f"`kubectl apply -k {directory / 'overlays' / 'dev'}` (or overlays/prod)"
    )


@deploy_app.command("helm")
def helm(
    directory: Annotated[
        Path, typer.Argument(metavar="OUT", help="The folder to write the chart into.")
    ],
    project: ProjectOption = Path("."),
    image: PodImageOption = None,
    force: ForceOption = False,
) -> None:
    """Write a Helm chart for the project: a scaled server, ingest and train as CronJobs."""
    from refit.deploy.files import write_files
    from refit.deploy.helm import render_helm

    files = render_helm(load_project(project), image=image)
    for written in write_files(directory, files, force=force):
        out.print(f"{written.action:<9} {written.path}")
    err.print(
        f"next: create the Secret (see {directory / 'values.yaml'}, secret.*), then "
        f"`helm install NAME {directory}`"
    )


def _stack(value: Path | None) -> Path | None:
    if value is not None and not (value / "compose.yaml").is_file():
        raise typer.BadParameter(
            f"no compose.yaml in {value}: give the folder `refit deploy compose` wrote"
        )
    return value


@deploy_app.command("monitoring")
def monitoring(
    directory: Annotated[
        Path, typer.Argument(metavar="OUT", help="The folder to write the monitoring files into.")
    ],
    project: ProjectOption = Path("."),
    compose: Annotated[
        Path | None,
        typer.Option(
            "--compose",
            metavar="STACK",
            help="Also a Compose file that runs the stack in STACK (from `refit deploy "
            "compose`) with Prometheus and Grafana beside it.",
            callback=_stack,
            show_default=False,
        ),
    ] = None,
    force: ForceOption = False,
) -> None:
    """Write refit's Prometheus alert rules (with their promtool tests) and Grafana dashboards."""
    from refit.deploy.compose import ENV_FILE
    from refit.deploy.files import write_files
    from refit.deploy.monitoring import render_monitoring

    files = render_monitoring(load_project(project), directory, stack=compose)
    for written in write_files(directory, files, force=force, keep=frozenset({ENV_FILE})):
        out.print(f"{written.action:<9} {written.path}")
    if compose is not None:
        err.print(
            f"next: `docker compose up --build` in {directory} "
            f"(edit {directory / ENV_FILE} first: Grafana's password is an example)"
        )
