"""`refit train` and `refit models`: training runs, versions and the production alias."""

from __future__ import annotations

import contextlib
import getpass
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from refit._spec_problems import shown
from refit.cli._output import (
    JsonOption,
    ProjectOption,
    UnderLeaseOption,
    err,
    out,
    print_json,
    print_table,
    progress,
    services_for,
    when,
)
from refit.errors import ConflictError, LeaseHeldError
from refit.flavors import get_flavor
from refit.registry import PRODUCTION, DecisionRow, ModelVersionRow
from refit.registry.jobs import holding, job_lease
from refit.registry.signing import sign_versions, signature_state
from refit.train.promotion import promote_version, rollback

if TYPE_CHECKING:
    from refit.cli._serving import Rollout
    from refit.services import Services
    from refit.train.run import TrainResult

# refit.train.run (scikit-learn) is imported by the commands that train: listing versions or
# promoting one should not wait a second for it.

models_app = typer.Typer(
    help="List, inspect, register, promote and roll back model versions.", no_args_is_help=True
)


def actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def train(
    project: ProjectOption = Path("."),
    snapshot: Annotated[
        str | None, typer.Option(help="Train on this snapshot instead of the newest.")
    ] = None,
    json: JsonOption = False,
    trigger: Annotated[str, typer.Option(hidden=True, help="Who asked: manual or schedule.")] = (
        "manual"
    ),
    under_lease: UnderLeaseOption = None,
) -> None:
    """Train on the newest snapshot, register a version and run the gate.

    It runs under the project's train lease: while another training runs, it exits 4."""
    from refit.train.run import run_training

    def train_once(services: Services, step: Callable[[str], None] | None) -> TrainResult:
        spec = services.project.spec
        lease = job_lease(spec.name, "train")
        with holding(services.registry, lease, spec.schedule.lease_timeout, under_lease):
            return run_training(
                services,
                snapshot_id=snapshot,
                trigger=trigger,
                actor=f"refit train ({actor()})",
                on_step=step,
            )

    _run_and_report(project, json, "train", "Training", train_once)


def _run_and_report(
    project: Path,
    json: bool,
    command: str,
    title: str,
    run: Callable[[Services, Callable[[str], None] | None], TrainResult],
) -> None:
    """Run a training or registering run (SIGTERM ends it as interrupted) and print it."""
    step = None if json else (lambda text: err.print(f"  {text}"))
    with _sigterm_interrupts(), services_for(project, command) as services, progress(title):
        try:
            result = run(services, step)
        except ConflictError as exc:
            if not isinstance(exc, LeaseHeldError):  # lost the promotion race
                err.print(f"[yellow]not promoted:[/] {exc.message}")
            raise
        aliases = services.registry.aliases(services.project.spec.name)
    _print_result(result, aliases, json)


def _print_result(result: TrainResult, aliases: dict[str, int], json: bool) -> None:
    version, decision = result.version, result.decision
    if json:
        print_json(
            {
                "run_id": result.run_id,
                "version": version_dict(version, aliases),
                "decision": decision.to_dict(),
                "nullable_note": result.nullable_note or None,
                "trigger": result.trigger,
                "cause": result.cause,
            }
        )
        return
    metric = version.metric
    out.print(
        f"{version.name} v{version.version}: {metric} {version.metrics[metric]:.4f} "
        f"on snapshot {version.snapshot_id[:12]}"
    )
    others = ", ".join(f"{k} {v:.4f}" for k, v in version.metrics.items() if k != metric)
    if others:
        out.print(f"  {others}")
    if result.split_note:
        out.print(f"  note: {result.split_note}")
    reason = native_reason(version)
    if reason is not None:
        out.print(f"  served natively, not by ONNX Runtime: {reason}", markup=False)
    if result.nullable_note:
        out.print(f"  note: {result.nullable_note}", markup=False)
    if result.cause is not None:
        out.print(f"  asked for by {result.trigger}: {result.cause}", markup=False)
    verdict = "[green]promoted to production[/]" if decision.promoted else "[yellow]not promoted[/]"
    out.print(f"{verdict}: {decision.reason}")


def native_reason(row: ModelVersionRow) -> str | None:
    """Why a server runs this version natively rather than by ONNX Runtime (None: it does
    not): its conversion failed or disagreed, and the status says how."""
    return get_flavor(row.flavor).native_reason(row)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (refit up stopping, Kubernetes evicting) ends a run as "interrupted"."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def version_dict(
    row: ModelVersionRow, aliases: dict[str, int], key: bytes | None = None
) -> dict[str, Any]:
    data = row.to_dict()
    data["aliases"] = sorted(a for a, v in aliases.items() if v == row.version)
    data["signed"] = signature_state(row, key)
    return data


@models_app.command("register")
def register(
    file: Annotated[
        Path,
        typer.Argument(help="A model trained elsewhere: an .onnx, .joblib or .skops file."),
    ],
    project: ProjectOption = Path("."),
    classes: Annotated[
        str | None,
        typer.Option(
            help="An ONNX classifier's classes in the order of its probability columns, "
            "comma-separated (default: the data's classes, sorted)."
        ),
    ] = None,
    snapshot: Annotated[
        str | None, typer.Option(help="Score it on this snapshot instead of the newest.")
    ] = None,
    json: JsonOption = False,
) -> None:
    """Register a model trained elsewhere: scored on the holdout like a trained one, then gated.

    The model takes the project's features (an ONNX model: one input per feature, named like
    it, or one [N, features] matrix in the spec's order) and its score on the snapshot's
    holdout goes through the same gate as a version refit trains.
    """
    from refit.train.register import register_model_file

    _run_and_report(
        project,
        json,
        "models register",
        "Registering",
        lambda services, step: register_model_file(
            services,
            file,
            classes=classes.split(",") if classes else None,
            snapshot_id=snapshot,
            actor=f"refit models register ({actor()})",
            on_step=step,
        ),
    )


@models_app.command("list")
def list_models(project: ProjectOption = Path("."), json: JsonOption = False) -> None:
    """Every version of the project's model, newest first."""
    with services_for(project, "models list") as services:
        name = services.project.spec.name
        rows = services.registry.list_versions(name)
        aliases = services.registry.aliases(name)
        key = services.registry.signing_key
    if json:
        print_json([version_dict(r, aliases, key) for r in rows])
        return
    print_table(
        ["version", "created", "metric", "snapshot", "aliases", "status"],
        [
            (
                f"v{r.version}",
                when(r.created_at),
                f"{r.metric} {r.metrics.get(r.metric, float('nan')):.4f}",
                r.snapshot_id[:12],
                ", ".join(version_dict(r, aliases)["aliases"]),
                r.status,
            )
            for r in rows
        ],
    )


@models_app.command("show")
def show_model(
    version: Annotated[int, typer.Argument(help="The version number.")],
    project: ProjectOption = Path("."),
    json: JsonOption = False,
) -> None:
    """One version: metrics, signature, parameters and lineage."""
    with services_for(project, "models show") as services:
        name = services.project.spec.name
        row = services.registry.get_version(name, version)
        aliases = services.registry.aliases(name)
        key = services.registry.signing_key
    data = version_dict(row, aliases, key)
    if json:
        print_json(data)
        return
    out.print(f"{row.name} v{row.version}  {', '.join(data['aliases'])}")
    out.print(f"created   {when(row.created_at)}   status {row.status}   task {row.task}")
    out.print(f"snapshot  {row.snapshot_id}")
    out.print(f"run       {row.run_id}   code {row.code_revision or '-'}")
    out.print(f"artifact  {row.artifact_uri} ({row.format}, {row.artifact_size} bytes)")
    out.print(f"signed    {SIGNED[data['signed']]}", markup=False)
    reason = native_reason(row)
    if reason is not None:
        out.print(f"onnx      not used, served natively: {reason}", markup=False)
    elif row.onnx:
        out.print(f"onnx      {row.onnx.get('status')}", markup=False)
    out.print("metrics   " + ", ".join(f"{k} {v:.4f}" for k, v in row.metrics.items()))
    out.print("params    " + ", ".join(f"{k}={shown(k, v)}" for k, v in row.params.items()))
    inputs = row.signature.get("inputs", [])
    out.print(
        f"inputs    {len(inputs)}: " + ", ".join(f"{i['name']}:{i['type']}" for i in inputs),
        markup=False,
    )
    required = [i["name"] for i in inputs if not i.get("nullable", True)]
    if required:
        out.print(f"not null  {len(required)}: {', '.join(required)}", markup=False)
    out.print(f"output    {row.signature.get('output')}")


SIGNED = {
    "valid": "yes, with this REFIT_SIGNING_KEY",
    "invalid": "NO: its signature does not match this REFIT_SIGNING_KEY (servers refuse it)",
    "unchecked": "yes (not checked: REFIT_SIGNING_KEY is not set here)",
    "unsigned": "no",
}
"""How `refit models show` says each `signature_state`."""


@models_app.command("sign")
def sign(
    versions: Annotated[
        list[int] | None, typer.Argument(help="The versions to sign (default: every one).")
    ] = None,
    project: ProjectOption = Path("."),
    force: Annotated[
        bool, typer.Option("--force", help="Also re-sign versions signed with another key.")
    ] = False,
    json: JsonOption = False,
) -> None:
    """Sign versions with REFIT_SIGNING_KEY (those registered before it was set), after
    checking each one's artifacts against their sha256."""
    with services_for(project, "models sign") as services:
        name = services.project.spec.name
        outcome = sign_versions(
            services.registry, services.store, name, versions or None, force=force
        )
    if json:
        print_json([{"version": v, "result": r} for v, r in outcome.items()])
        return
    for version, result in outcome.items():
        out.print(f"{name} v{version}: {result}", markup=False)


def _print_decision(decision: DecisionRow, json: bool) -> None:
    if json:
        print_json(decision.to_dict())
    else:
        out.print(
            f"{decision.name}@{decision.alias} -> v{decision.candidate_version}: {decision.reason}"
        )


def _seconds(value: float) -> float:
    if not value > 0:
        raise typer.BadParameter(f"{value:g} is not a number of seconds above 0")
    return value


@models_app.command("promote")
def promote(
    version: Annotated[int, typer.Argument(help="The version to put in production.")],
    project: ProjectOption = Path("."),
    wait: Annotated[
        bool, typer.Option("--wait", help="Return once every live server serves the version.")
    ] = False,
    timeout: Annotated[
        float,
        typer.Option(help="Seconds --wait waits at most (then exit 11).", callback=_seconds),
    ] = 120.0,
    json: JsonOption = False,
) -> None:
    """Point production at a version, whatever the gate said (a success if it is there already);
    with --wait, return once every live server serves it."""
    with services_for(project, "models promote") as services:
        name = services.project.spec.name
        try:
            decision = promote_version(
                services.registry, name, version, actor(), store=services.store
            )
            said: dict[str, Any] = decision.to_dict()
            message = (
                f"{decision.name}@{decision.alias} -> v{decision.candidate_version}: "
                f"{decision.reason}"
            )
        except ConflictError:
            if services.registry.alias_version(name, PRODUCTION) != version:
                raise  # someone else moved production first
            message = f"{name} v{version} already holds {PRODUCTION}: nothing to change"
            said = {"name": name, "version": version, "changed": False, "message": message}
        if not json:
            out.print(message, markup=False)
        if wait:
            served = _wait_until_served(services, name, version, timeout)
            said["served"] = {"version": version, "serving": served.serving, "live": served.live}
    if json:
        print_json(said)


def _wait_until_served(services: Services, name: str, version: int, timeout: float) -> Rollout:
    from refit.cli._serving import wait_until_served

    served = wait_until_served(
        services.registry,
        name,
        version,
        timeout,
        lambda state: err.print(f"waiting: {state}", markup=False) if state.live else None,
    )
    if served.live:
        err.print(f"{name} v{version} is served by every live server ({served.live})")
    else:
        err.print(f"no live server of {name} has reported: nothing to wait for", markup=False)
    return served


@models_app.command("rollback")
def rollback_model(project: ProjectOption = Path("."), json: JsonOption = False) -> None:
    """Point production back at the version it held before the current one."""
    with services_for(project, "models rollback") as services:
        decision = rollback(
            services.registry, services.project.spec.name, actor(), store=services.store
        )
    _print_decision(decision, json)


@models_app.command("decisions")
def decisions(project: ProjectOption = Path("."), json: JsonOption = False) -> None:
    """The gate's and people's decisions about production, newest first."""
    with services_for(project, "models decisions") as services:
        rows = services.registry.list_decisions(services.project.spec.name, limit=50)
    if json:
        print_json([r.to_dict() for r in rows])
        return
    print_table(
        ["when", "action", "version", "from", "promoted", "reason"],
        [
            (
                when(r.created_at),
                r.action,
                f"v{r.candidate_version}",
                f"v{r.previous_version}" if r.previous_version else "-",
                "yes" if r.promoted else "no",
                r.reason,
            )
            for r in rows
        ],
    )


__all__ = ["PRODUCTION", "models_app", "train"]
