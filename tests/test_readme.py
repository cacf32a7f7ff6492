"""The README's two commands are the ones CI and newcomers actually run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    first_block = re.search(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert first_block, "README.md must open with a sh block holding the two commands"
    return [line for line in first_block.group(1).splitlines() if line and line[0] != "#"]


def test_readme_gives_the_main_job_and_the_test_command() -> None:
    main_job, test_command = readme_commands()
    assert "python -m minisocketserver" in main_job
    assert "pytest" in test_command


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    _, test_command = readme_commands()
    ci_script = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci_script
