"""Every subcommand is listed by ``readingroom --help`` and in the README's command table.

The reference is the CLI's dispatch table (the parser's commands plus the pass-through ones):
a command that runs but is not listed, or a listed one that does not run, fails here.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys

import pytest

from app import PASSTHROUGH, dispatch_table
from readingroom.settings import PROJECT_ROOT


def _help_commands(text: str) -> list[str]:
    """The command names of argparse's listing: the lines under COMMAND indented by 4 spaces."""
    block = text.split("positional arguments:", 1)[1].split("options:", 1)[0]
    return re.findall(r"^ {4}([a-z][\w-]*)(?: |$)", block, flags=re.M)


def _readme_commands() -> list[str]:
    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("## The command line", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `readingroom ([a-z][\w-]*)", table, flags=re.M)


@pytest.fixture(scope="module")
def help_text() -> str:
    env = {**os.environ, "COLUMNS": "100"}
    run = subprocess.run([sys.executable, "-m", "app", "--help"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_help_lists_exactly_the_commands_that_dispatch(help_text):
    listed = _help_commands(help_text)
    table = dispatch_table()
    assert {"phantoms", "train", "evaluate", "sites", "models"} <= set(table)
    assert sorted(listed) == sorted(table), f"hidden: {set(table) - set(listed)}, unknown: {set(listed) - set(table)}"
    assert len(listed) == len(set(listed))


def test_every_command_has_a_handler_that_exists():
    for name, target in dispatch_table().items():
        assert target, f"`readingroom {name}` has no handler"
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), target
    assert set(PASSTHROUGH) <= set(dispatch_table())


def test_readme_command_table_lists_every_command():
    documented = _readme_commands()
    table = dispatch_table()
    assert set(documented) == set(table), (f"missing from README: {set(table) - set(documented)}, "
                                           f"not a command: {set(documented) - set(table)}")


def test_the_help_parser_finds_a_hidden_command():
    """The comparison above can fail: a command registered without help text is not listed."""
    from app import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    action.add_parser("secret")          # what a careless new command looks like
    assert "secret" not in _help_commands(parser.format_help())
    assert "secret" in action.choices
