"""docs/vine.md is what its data give: ``python benchmarks/vine.py report --check`` regenerates it from
docs/vine/*.jsonl and docs/vine/machine.json and fails on any difference (issue 27: every figure from a data file)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "vine.py"


def test_the_committed_vine_report_is_what_its_data_give() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "report", "--check"], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert done.returncode == 0, f"run python benchmarks/vine.py report:\n{done.stdout[-4000:]}{done.stderr[-2000:]}"


def test_a_hand_edit_of_the_vine_report_is_caught(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("vine_benchmark", SCRIPT)
    assert spec is not None and spec.loader is not None
    vine = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vine)
    edited = tmp_path / "vine.md"
    edited.write_text(vine.REPORT_FILE.read_text().replace("Python 3.11.7", "Python 3.12.0", 1))
    vine.REPORT_FILE = edited
    with pytest.raises(SystemExit) as stop:
        vine.write_report(check=True)
    assert stop.value.code == 1
    assert "+- Python 3.11.7" in capsys.readouterr().out
