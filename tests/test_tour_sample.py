"""docs/index.md's tour sample is the tour's own output (tools/tour_sample.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "tour_sample.py"


def tour_sample(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TOOL), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=50, check=False)


def test_the_committed_sample_matches_a_fresh_tour() -> None:
    done = tour_sample("--check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == "the tour sample in index.md matches a fresh run\n"


def test_the_sample_is_the_start_of_the_tour_and_holds_nothing_that_varies() -> None:
    page = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    sample = re.search(r"<!-- tour-sample:start -->\n```text\n(.*?)```\n<!-- tour-sample:end -->",
                       page, re.DOTALL)
    assert sample, "docs/index.md lost its tour-sample markers"
    text = sample.group(1)
    assert text.startswith("minisocketserver tour, threading model: ThreadingTCPServer")
    assert [line for line in text.splitlines() if line.startswith("== ")] == [
        "== the main thread constructs ThreadingTCPServer(address, SeedEchoHandler)",
        "== the main thread starts serve_forever() on a new thread, the loop thread",
    ]
    # Compared byte for byte, so nothing in it may change from run to run.
    assert not re.search(r"127\.0\.0\.1[:,]\s*\d|\b\d{4,}\b|/tmp/|0x[0-9a-f]{6,}", text)


def test_check_shows_a_stale_sample_and_write_regenerates_it(tmp_path: Path) -> None:
    page = tmp_path / "index.md"
    fresh = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    page.write_text(fresh.replace("TCPServer.server_bind()", "TCPServer.server_bound()"),
                    encoding="utf-8")
    stale = tour_sample("--check", "--page", str(page))
    assert stale.returncode == 1
    assert "-main thread         ThreadingTCPServer: TCPServer.server_bound()" in stale.stdout
    assert "+main thread         ThreadingTCPServer: TCPServer.server_bind()" in stale.stdout
    assert stale.stdout.endswith("stale tour sample in index.md "
                                 "(regenerate with python tools/tour_sample.py --write)\n")
    assert tour_sample("--write", "--page", str(page)).returncode == 0
    assert page.read_text(encoding="utf-8") == fresh
