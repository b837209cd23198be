"""`refit models`: versions and the production alias."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from refit._spec_problems import shown
from refit.cli._output import (
    JsonOption,
    ProjectOption,
    err,
    out,
    print_json,
    print_table,
    services_for,
    when,
)
from refit.cli._versions import actor, native_reason, tuning_lines, version_dict
from refit.cli.train import run_and_report
from refit.errors import ConflictError
from refit.intervals import difference_text
from refit.registry import PRODUCTION, DecisionRow
from refit.registry.signing import sign_versions
from refit.train.promotion import promote_version, rollback

if TYPE_CHECKING:
    from refit.cli._serving import Rollout
    from refit.services import Services

# refit.train.run (scikit-learn) is imported by the commands that train: listing versions or
# promoting one should not wait a second for it.

models_app = typer.Typer(
    help="List, inspect, register, promote and roll back model versions.", no_args_is_help=True
)


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

    run_and_report(
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
    if row.code:
        hooks = [
            f"{k} {row.code[k]}" for k in ("features", "postprocess", "function") if row.code.get(k)
        ]
        files = ", ".join(row.code.get("files") or row.code.get("modules") or [])
        out.print(f"own code  {files} ({row.code['uri']}): {'; '.join(hooks)}", markup=False)
    reason = native_reason(row)
    if reason is not None:
        out.print(f"onnx      not used, served natively: {reason}", markup=False)
    elif row.onnx:
        out.print(f"onnx      {row.onnx.get('status')}", markup=False)
    out.print("metrics   " + ", ".join(f"{k} {v:.4f}" for k, v in row.metrics.items()))
    out.print("params    " + ", ".join(f"{k}={shown(k, v)}" for k, v in row.params.items()))
    for line in tuning_lines(row.tuning):
        out.print(line, markup=False)
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
        ["when", "action", "version", "from", "promoted", "difference", "reason"],
        [
            (
                when(r.created_at),
                r.action,
                f"v{r.candidate_version}",
                f"v{r.previous_version}" if r.previous_version else "-",
                "yes" if r.promoted else "no",
                difference_text(r.evidence) or "-",
                r.reason,
            )
            for r in rows
        ],
    )


__all__ = ["PRODUCTION", "models_app"]
