"""The `refit` command: a thin typer adapter over the core (one module per command group)."""

from __future__ import annotations

import sys

import typer

from refit import __version__
from refit.cli._output import run_app
from refit.cli.data import batches_app, ingest, init, snapshots_app
from refit.cli.demo import demo, feed
from refit.cli.deploy import deploy_app
from refit.cli.keys import keys_app
from refit.cli.models import models_app
from refit.cli.monitor import drift, monitor
from refit.cli.run import metrics, scheduler, up
from refit.cli.serve import serve
from refit.cli.status import status
from refit.cli.train import train

app = typer.Typer(
    name="refit",
    help="Keep a machine-learning model fresh: ingest data, retrain, gate, serve, monitor.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(init)
app.command()(ingest)
app.command()(train)
app.command()(serve)
app.command()(monitor)
app.command()(drift)
app.command()(up)
app.command()(status)
app.command()(demo)
app.command()(feed)
app.command()(scheduler)
app.command()(metrics)
app.add_typer(models_app, name="models")
app.add_typer(snapshots_app, name="snapshots")
app.add_typer(batches_app, name="batches")
app.add_typer(deploy_app, name="deploy")
app.add_typer(keys_app, name="keys")


def _version(value: bool) -> None:
    if value:
        print(f"refit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """refit: the ML loop as one tool."""


def main(args: list[str] | None = None) -> None:
    sys.exit(run_app(app, args))
