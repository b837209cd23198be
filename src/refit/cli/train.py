"""`refit train`: one training run, from the newest snapshot to the gate's decision; and the
reporting it shares with `refit models register`."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
)

from refit.cli._output import (
    JsonOption,
    ProjectOption,
    UnderLeaseOption,
    err,
    out,
    print_json,
    progress,
    services_for,
)
from refit.cli._versions import actor, native_reason, version_dict
from refit.errors import ConflictError, LeaseHeldError
from refit.registry.jobs import holding, job_lease

if TYPE_CHECKING:
    from refit.services import Services
    from refit.train.run import TrainResult
    from refit.train.tuning import Progress as TuningProgress

# refit.train.run (scikit-learn) is imported by the commands that train: listing versions or
# promoting one should not wait a second for it.


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

    trials = TrialProgress(json)

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
                on_trial=trials.show,
            )

    run_and_report(project, json, "train", "Training", train_once, trials)


def run_and_report(
    project: Path,
    json: bool,
    command: str,
    title: str,
    run: Callable[[Services, Callable[[str], None] | None], TrainResult],
    trials: TrialProgress | None = None,
) -> None:
    """Run a training or registering run (SIGTERM ends it as interrupted) and print it;
    `trials` shows the tuning step's trials as they finish."""
    step = None if json else (lambda text: err.print(f"  {text}"))
    live = progress(title) if trials is None else trials.running(title)
    with _sigterm_interrupts(), services_for(project, command) as services, live:
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


class TrialProgress:
    """The tuning step's trials as they finish: on a terminal a progress bar (trials done of
    the planned number, the best score so far) under the run's spinner; elsewhere, and with
    --json (on stderr, for the scheduler to pass on), one line per trial."""

    def __init__(self, json: bool) -> None:
        self.bar = err.is_terminal and not json
        self.live: Progress | None = None
        self.task: TaskID | None = None

    @contextlib.contextmanager
    def running(self, title: str) -> Iterator[None]:
        if not self.bar:
            yield
            return
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn())
        more = (MofNCompleteColumn(), TextColumn("{task.fields[best]}"))
        with Progress(*columns, *more, console=err, transient=True) as self.live:
            self.live.add_task(title, total=None, best="")
            yield

    def show(self, progress: TuningProgress) -> None:
        from refit.train.tuning import trial_line

        if self.live is None:
            err.print(f"  {trial_line(progress)}", markup=False, highlight=False)
            return
        best = progress.best
        said = (
            "" if best is None or best.score is None else f"best {progress.metric} {best.score:.4f}"
        )
        if self.task is None:
            self.task = self.live.add_task("tuning", total=progress.total, best=said)
        self.live.update(self.task, completed=progress.done, best=said)


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
