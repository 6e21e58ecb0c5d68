"""The README stays true to the code: Quick start, CI command, every setting."""

from __future__ import annotations

import re

from pipeline.runtime.settings import Settings
from tests.helpers import REPO

README = (REPO / "README.md").read_text()


def _quick_start_commands() -> list[str]:
    section = README.split("## Quick start", 1)[1]
    block = re.search(r"```\w*\n(.*?)```", section, re.S)
    assert block, "Quick start has no code block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_quick_start_holds_exactly_two_commands_run_first() -> None:
    commands = _quick_start_commands()
    assert len(commands) == 2
    assert "demo" in commands[0]
    assert "test" in commands[1]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    last = [line for line in ci.splitlines() if line.strip() and not line.startswith("#")][-1]
    assert last.removeprefix("exec ").strip() == _quick_start_commands()[1]


def test_every_setting_is_documented() -> None:
    missing = ["DROPSHIP_" + name.upper() for name in Settings.model_fields
               if f"`DROPSHIP_{name.upper()}`" not in README]
    assert missing == []
