"""`deltaplay` as a user runs it: `python -m app` in a fresh process, for every command."""
from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import REPO

from app.cli import COMMANDS

pytestmark = pytest.mark.slow  # a fresh interpreter per command (the web UI's imports take seconds)


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_help(command):
    r = _run(command, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: deltaplay {command} "), r.stdout[:200]
    assert COMMANDS[command][1] in " ".join(r.stdout.split())  # the command's one-line help heads its page


def test_top_level_help_lists_the_commands_and_unknown_ones_fail():
    r = _run("--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: deltaplay ")
    for command in COMMANDS:
        assert command in r.stdout
    r = _run("no-such-command")
    assert r.returncode == 2 and "unknown command 'no-such-command'" in r.stderr
