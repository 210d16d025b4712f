"""benchmarks/scale.py end to end at tiny sizes (``--tiny``: CartPole-v1, n_steps / 8, one repeat, one process
against 2 ranks on 127.0.0.1, a loopback of 2 sizes, 2 critic minibatch sizes): the script's processes start, are
released together, report, and the JSON holds every section docs/distributed.md reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "scale.py"


def test_scale_benchmark_runs_at_tiny_sizes(tmp_path):
    out = tmp_path / "scale.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--json", str(out)], capture_output=True, text=True, timeout=150
    )
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.loads(out.read_text())

    configs = payload["end_to_end"]["CartPole-v1"]
    assert set(configs) == {"one_process", "two_ranks"}
    for summary in configs.values():
        assert summary["steps_per_s"]["min"] > 0 and summary["train_s"] > 0
    assert "two_ranks/one_process" in payload["ratios"]["CartPole-v1"]

    inside = payload["inside_two_ranks"]["CartPole-v1/64x64"]
    kinds = inside["collectives_per_update_by_kind"]
    # per update: the actor's reductions (gradient, CG's products, line search) and the critic's gather
    assert kinds["all_reduce"]["count"] >= 4 and kinds["all_gather"]["count"] >= 2
    assert inside["collectives_per_update_by_phase"]["actor"]["count"] >= 3
    assert inside["meet_s"] >= 0 and inside["params"]["actor"] > 0
    assert payload["networks"]["64x64"]["bytes_per_update_measured"] > 0

    for condition in ("idle", "busy"):
        for kind in ("all_reduce", "all_gather"):
            assert set(payload["loopback"][condition][kind]["median_us"]) == {"1", "1000"}
    assert set(payload["critic_step_s"]) == {"64x64", "256x256"}
    rows = payload["projection"]["rows"]
    assert {row["ranks"] for row in rows} == {8, 64, 256}
    assert all(row["update_s"] > 0 and row["steps_per_s"] > 0 for row in rows)
    assert "PROJECTED" in payload["projection"]["label"]
