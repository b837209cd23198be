"""`refit keys`: API keys for the server's routes."""

from __future__ import annotations

import json as json_module
import sys
from typing import Annotated

import typer

from refit.apikeys import KEY_HASHES_ENV, Scope, check_name, hash_key, key_line, new_key
from refit.cli._output import JsonOption, err

keys_app = typer.Typer(
    help="API keys: what a client sends, and the hash a server is configured with.",
    no_args_is_help=True,
)


def _name(value: str | None) -> str | None:
    if value is not None:
        try:
            check_name(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


@keys_app.command("create")
def create(
    scope: Annotated[
        Scope, typer.Option(help="What the key may call: predict, or admin (which holds predict).")
    ] = Scope.PREDICT,
    name: Annotated[
        str | None,
        typer.Option(
            help="A name for people (default: the scope and the hash's start).", callback=_name
        ),
    ] = None,
    json: JsonOption = False,
) -> None:
    """Make a new random API key: print it, once, and the hash line that configures it."""
    key = new_key()
    name = name or f"{scope.value}-{hash_key(key).hex()[:8]}"
    line = key_line(scope, name, key)
    # Written as is: the CLI's JSON output hides fields named like secrets, and this one is
    # the point of the command.
    if json:
        sys.stdout.write(json_module.dumps({"key": key, "hash_line": line}, indent=2) + "\n")
    else:
        sys.stdout.write(f"key        {key}\nhash line  {line}\n")
    err.print(
        "Give the key to its client now: it is shown only this once, and refit keeps only its "
        f"hash. Configure the hash line in serve.keys of refit.yaml, or in {KEY_HASHES_ENV} "
        "(one per line, or separated by commas).",
        markup=False,
    )
