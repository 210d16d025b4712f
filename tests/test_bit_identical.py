"""Training is bit-identical to a reference commit on the speed benchmark's configurations (issue 18).

The reference is the code of ``reference_code.REFERENCE`` itself, run here in a subprocess from ``git archive``, so
both sides run on the same machine and the comparison is exact (a stored hash would depend on the CPU's kernels).
"""

from __future__ import annotations

import json
from pathlib import Path

from reference_code import ROOT, reference_source, run_with

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
    fingerprints = json.loads(run_with(source, FINGERPRINT, cwd))
    assert Path(fingerprints.pop("module")).resolve().is_relative_to(source.resolve())  # the code meant
    return fingerprints


def test_training_is_bit_identical_to_the_reference_commit(tmp_path: Path) -> None:
    assert _fingerprints(ROOT, tmp_path) == _fingerprints(reference_source(tmp_path), tmp_path)
