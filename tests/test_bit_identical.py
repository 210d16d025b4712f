"""Training is bit-identical to a reference commit on the speed benchmark's configurations (issue 18).

The reference is the code of :data:`REFERENCE` itself, run here in a subprocess from ``git archive``, so both
sides run on the same machine and the comparison is exact (a stored hash would depend on the CPU's kernels).
Update :data:`REFERENCE` only for a change meant to alter training, and say so in its commit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: main before the refactors of issues 17-20 (what the published benchmark sweeps ran)
REFERENCE = "9b2679b"

FINGERPRINT = r"""
import hashlib, json, sys
import torch as th
from stable_baselines3.common.env_util import make_vec_env
import sb3_trpo_ext
from sb3_trpo_ext import TRPO

th.set_num_threads(1)
configurations = {
    # benchmarks/speed.py: sb3-contrib's defaults, one environment, n_steps 2048
    "CartPole-v1": ("CartPole-v1", 1, {}),
    "Hopper-v5": ("Hopper-v5", 1, {}),
    # the sweep's Hopper-v5 block (two environments) and vine
    "Hopper-v5 block": ("Hopper-v5", 2, dict(n_steps=1024, target_kl=0.03, cg_damping=0.3, cg_max_steps=25,
                                              n_critic_updates=20)),
    "Pendulum-v1 vine": ("Pendulum-v1", 2, dict(sampling="vine", n_steps=512, vine_n_states=16)),
}
out = {"module": sb3_trpo_ext.__file__}
for name, (env_id, n_envs, kwargs) in configurations.items():
    model = TRPO("MlpPolicy", make_vec_env(env_id, n_envs=n_envs, seed=0), seed=0, **kwargs).learn(4096)
    weights = b"".join(p.detach().numpy().tobytes() for p in model.policy.parameters())
    out[name] = hashlib.sha256(weights).hexdigest()
print(json.dumps(out))
"""


def _fingerprints(source: Path, cwd: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(source), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", FINGERPRINT], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    fingerprints = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(fingerprints.pop("module")).resolve().is_relative_to(source.resolve())  # the code meant
    return fingerprints


def test_training_is_bit_identical_to_the_reference_commit(tmp_path: Path) -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git history (a clone of the repository)")
    archive = tmp_path / "reference.tar"
    done = subprocess.run(
        ["git", "archive", "--format=tar", "-o", str(archive), REFERENCE, "sb3_trpo_ext", "hyperparams"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:  # a shallow clone without the reference commit
        pytest.skip(f"reference commit {REFERENCE} not in this clone: {done.stderr.strip()}")
    reference = tmp_path / "reference"
    with tarfile.open(archive) as tar:
        tar.extractall(reference, filter="data")
    assert _fingerprints(ROOT, tmp_path) == _fingerprints(reference, tmp_path)
