"""The exercises' checks: run them against the solutions, or against your answers.

    python -m pytest docs/exercises                       # every check, against solutions/
    python -m pytest docs/exercises -k chapter6           # one chapter's three checks
    python -m pytest docs/exercises/test_chapter1.py      # chapter 1 alone (-k chapter1
                                                          # would also pick chapter10)
    python -m pytest docs/exercises --answers mine -k chapter6
    EXERCISE_ANSWERS=mine python -m pytest docs/exercises -k chapter6

An answers directory holds one file per chapter, ``chapterN.py``, with the names the
chapter's exercises ask for (start from a copy of ``solutions/chapterN.py`` with the
bodies deleted, or from scratch).  A relative path is taken from the current directory
first, then from this directory (so ``--answers mine`` finds docs/exercises/mine/).
A check whose chapter file is missing from your directory is skipped, not failed, so
you can answer one chapter at a time.

Every check is loopback-only and bounded: the whole set runs in a few seconds.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).resolve().parent
SOLUTIONS = HERE / "solutions"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--answers",
        default=None,
        help="directory of your chapterN.py answers (default: $EXERCISE_ANSWERS, "
        "else docs/exercises/solutions)",
    )


def _answers_dir(config: pytest.Config) -> Path:
    chosen = config.getoption("--answers") or os.environ.get("EXERCISE_ANSWERS")
    if not chosen:
        return SOLUTIONS
    path = Path(chosen).expanduser()
    if path.is_absolute() or path.is_dir():
        return path.resolve()
    return HERE / path


@pytest.fixture(scope="module")
def answers(request: pytest.FixtureRequest) -> ModuleType:
    """The answers to this test file's chapter: ``chapterN.py`` from the chosen directory."""
    match = re.fullmatch(r"test_(chapter\d+)", request.module.__name__.rsplit(".", 1)[-1])
    assert match, request.module.__name__
    chapter = match.group(1)
    path = _answers_dir(request.config) / f"{chapter}.py"
    if not path.exists():
        pytest.skip(f"no {path} (answer that chapter to check it)")
    # A name of its own per directory, so that solutions and answers never mix.
    spec = importlib.util.spec_from_file_location(f"exercise_{chapter}_{abs(hash(path))}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
