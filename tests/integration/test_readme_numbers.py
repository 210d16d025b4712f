"""The speed figures of README.md and docs/benchmark.md come from the committed data files.

``benchmarks/readme_numbers.py`` writes them into marked blocks; these tests fail when a block was edited by hand
or a data file changed without regenerating (``python benchmarks/readme_numbers.py`` fixes both), and check the
rules the blocks follow: ratios carry their spread, a target is met only when the whole spread meets it.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from sb3_trpo_ext.benchmark.report import _reference_lines

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "readme_numbers.py"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("readme_numbers", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


readme_numbers = _load_script()


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The files the script reads and writes, copied into a repository-shaped folder."""
    for relative in (*readme_numbers.TARGET_FILES, *readme_numbers.DATA.values()):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / relative, tmp_path / relative)
    return tmp_path


def _check(root: Path) -> tuple[int, str]:
    out: list[str] = []
    return readme_numbers.main(["--check", "--root", str(root)], write=out.append), "".join(out)


def test_committed_blocks_match_their_data() -> None:
    """What the repository holds: regenerating the blocks from the data files changes nothing."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=120, cwd=ROOT
    )  # fmt: skip
    assert done.returncode == 0, f"run python benchmarks/readme_numbers.py:\n{done.stdout[-4000:]}{done.stderr}"


def _cartpole_speedup(root: Path) -> float:
    """CartPole-v1's end-to-end speedup as docs/speed.json records it (the figure the README block shows)."""
    return json.loads((root / "docs" / "speed.json").read_text())["results"]["CartPole-v1"]["ratios"][
        "end_to_end_speedup"
    ]


def test_hand_edit_inside_a_block_fails(copy: Path) -> None:
    readme = copy / "README.md"
    text = readme.read_text()
    begin = text.index(readme_numbers.begin_marker("speed-table"))
    end = text.index(readme_numbers.end_marker("speed-table"))
    block = text[begin:end]
    speedup = f"{_cartpole_speedup(copy):.2f}x"
    assert speedup in block
    readme.write_text(text[:begin] + block.replace(speedup, "9.99x", 1) + text[end:])
    code, diff = _check(copy)
    assert code == 1
    assert "-| CartPole-v1" in diff and "+| CartPole-v1" in diff and "9.99x" in diff


def test_data_changed_without_regenerating_fails_then_regenerating_fixes_it(copy: Path) -> None:
    path = copy / "docs" / "speed_masked.json"
    data = json.loads(path.read_text())
    data["results"]["Taxi-v4"]["ratios"]["end_to_end_speedup"] = 3.5
    path.write_text(json.dumps(data))
    assert _check(copy)[0] == 1
    assert readme_numbers.main(["--root", str(copy)], write=lambda _: None) == 0
    assert _check(copy) == (0, "")
    # the figure changes, its spread (from the raw timings, untouched) stays the committed README's
    spread = re.search(r"[\d.]+x (\[[\d.]+-[\d.]+\]) MaskablePPO's end-to-end", (ROOT / "README.md").read_text())
    assert spread is not None
    assert f"3.50x {spread.group(1)} MaskablePPO's end-to-end steps/s" in (copy / "README.md").read_text()
    # outside the blocks nothing moved
    for relative in readme_numbers.TARGET_FILES:
        old, new = (ROOT / relative).read_text(), (copy / relative).read_text()
        assert old.split("<!-- readme_numbers:")[0] == new.split("<!-- readme_numbers:")[0]


def test_a_missing_block_is_an_error(copy: Path) -> None:
    readme = copy / "README.md"
    readme.write_text(readme.read_text().replace(readme_numbers.end_marker("speed-family"), ""))
    with pytest.raises(SystemExit, match="speed-family end"):
        _check(copy)


def test_spread_and_targets() -> None:
    raw = {
        "ours": {"learn_seconds": [1.0, 2.0], "learn_steps": [100, 100]},
        "sb3-contrib": {"learn_seconds": [4.0, 5.0], "learn_steps": [100, 100]},
    }
    # our slowest (50 steps/s) against their fastest (25), our fastest (100) against their slowest (20)
    assert readme_numbers.speedup_spread(raw) == pytest.approx((2.0, 5.0))
    assert readme_numbers.speedup_spread({"ours": raw["ours"]}) is None
    assert readme_numbers.verdict((4.0, 6.0), 4.0, at_least=True) == "met"
    assert readme_numbers.verdict((3.9, 6.0), 4.0, at_least=True) == "not shown"
    assert readme_numbers.verdict((3.0, 3.9), 4.0, at_least=True) == "missed"
    assert readme_numbers.verdict((0.3, 0.45), 0.45, at_least=False) == "met"
    assert readme_numbers.verdict(None, 4.0, at_least=True).startswith("not shown")
    assert readme_numbers.fmt_ratio(4.54, (2.74, 6.31)) == "4.54x [2.74-6.31]"
    assert readme_numbers.fmt_ratio(4.54, None) == "4.54x (one run, no spread recorded)"


def test_without_raw_timings_the_text_says_so(copy: Path) -> None:
    path = copy / "docs" / "speed.json"
    data = json.loads(path.read_text())
    del data["raw"]
    lines = readme_numbers.readme_speed_table(data)
    rows = [line for line in lines if line.startswith("| CartPole-v1")]
    expected = (
        f"{_cartpole_speedup(copy):.2f}x (one run, no spread recorded) (target >= 4x: not shown: no spread recorded)"
    )
    assert rows and expected in rows[0]


def test_report_says_d4rl_references_are_the_v2_tasks() -> None:
    """The report normalises -v5 MuJoCo scores with D4RL's -v2 reference scores and says so; the committed report
    holds the sentence its generator writes."""
    lines = _reference_lines([("set", ["CartPole-v1", "Hopper-v5", "Walker2d-v5"], [], [])])
    sentence = lines[-1]
    assert sentence.startswith("Hopper-v5, Walker2d-v5 are normalised with D4RL's reference scores of the -v2 tasks")
    assert "D4RL" not in _reference_lines([("set", ["CartPole-v1"], [], [])])[-1]
    committed = (ROOT / "docs" / "bench" / "report.md").read_text()
    mujoco = ["HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Acrobot-v1", "CartPole-v1", "Pendulum-v1"]
    assert "\n".join(_reference_lines([("set", mujoco, [], [])])[1:]) in committed
