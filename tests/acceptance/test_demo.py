"""The demo of the README (`make demo`) runs end to end: a real cluster, real tasks, a clean stop."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[2] / "example" / "run_demo.py"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_demo_runs_end_to_end(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(DEMO_DB=str(tmp_path / "demo.sqlite3"), DEMO_TIMEOUT="150", COLUMNS="160", TERM="dumb")
    try:
        proc = subprocess.run(
            [sys.executable, str(DEMO)],
            check=False,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=270,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the demo did not finish within 270 s; output so far:\n{exc.stdout}\n{exc.stderr}")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output

    counts = re.search(r"demo: (\d+) tasks, (\d+) succeeded, (\d+) failed", output)
    assert counts, output
    total, succeeded, failed = map(int, counts.groups())
    assert total >= 300
    assert (succeeded, failed) == (total - 1, 1), output
    assert "PaymentDeclined: card declined for order 17" in output
    assert "cluster stopped, exit code 0" in output
    assert (tmp_path / "demo.sqlite3").exists(), "the demo did not use DEMO_DB"
