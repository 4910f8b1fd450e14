"""CliRunner.invoke builds the click command from the typer app on every call, which costs a
few hundred milliseconds of typing.get_type_hints (typer 0.29); a test module that invokes the
CLI hundreds of times builds it once instead. The command is static: the same app gives the
same command."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import typer
import typer.testing

from dicom_bq.cli import app


@functools.cache
def click_command() -> Any:
    return typer.main.get_command(app)


def build_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """For an autouse fixture: every invoke of the module reuses one click command."""
    command = click_command()
    monkeypatch.setattr(
        typer.testing,
        "_get_command",
        lambda given: command if given is app else typer.main.get_command(given),
    )


def command_paths() -> dict[str, Any]:
    """Every command the app registers, by its words ("operations wait"), from the app itself:
    a list of commands kept by hand in a test misses the next command added."""
    found: dict[str, Any] = {}

    def walk(command: Any, path: list[str]) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
        else:
            found[" ".join(path)] = command

    walk(click_command(), [])
    return found


def commands_taking(option: str) -> set[str]:
    """The commands that accept `option` (for example "--stack")."""
    return {
        path
        for path, command in command_paths().items()
        if any(option in getattr(param, "opts", ()) for param in command.params)
    }
