"""docs/reliability.md carries the figures of the fault suite as it is now.

The tables are printed by tests/fault_figures.py; this checks that the page
has a row for every scenario and model that script runs today (a new model
or scenario means: run it again and paste), and that every row shows the
goals met: nothing lost, nothing leaked.
"""

from __future__ import annotations

from pathlib import Path

from fault_figures import STREAM_SCENARIOS
from fault_models import MODELS
from fault_scenarios import UDP_MODELS

PAGE = Path(__file__).resolve().parent.parent / "docs" / "reliability.md"


def figure_rows() -> dict[tuple[str, str], list[str]]:
    rows = {}
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[5].isdigit():
            rows[cells[0], cells[1]] = cells
    return rows


def test_the_page_names_the_command_that_made_its_figures() -> None:
    assert "python tests/fault_figures.py" in PAGE.read_text(encoding="utf-8")


def test_every_scenario_and_model_has_its_row_and_met_the_goals() -> None:
    rows = figure_rows()
    expected = {(title, model.name) for title, _ in STREAM_SCENARIOS for model in MODELS}
    assert expected <= set(rows), sorted(expected - set(rows))
    udp = {model for title, model in rows if title.startswith("UDP flood")}
    assert udp == set(UDP_MODELS)
    for cells in rows.values():
        assert cells[5] == "0" and cells[6] == "0 / 0 / 0", cells
