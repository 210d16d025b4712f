"""Saving and loading: round trips (in process and in a fresh interpreter), sb3-contrib TRPO checkpoints,
and the errors for files that are not TRPO checkpoints."""

import copy
import json
import os
import pathlib
import re
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from torch.nn.utils import parameters_to_vector

from sb3_trpo_ext import TRPO

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SMALL_NET = dict(net_arch=[16])


class Box3Env(gym.Env):
    """3-D continuous actions: sb3-contrib's target_kl is a mean over 3 dimensions here."""

    observation_space = spaces.Box(-1, 1, (4,), np.float32)
    action_space = spaces.Box(-1, 1, (3,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def _obs(self):
        self._state = self.np_random.uniform(-1, 1, 4).astype(np.float32)
        return self._state

    def step(self, action):
        self._t += 1
        reward = -float(np.sum((np.asarray(action) - self._state[:3]) ** 2))
        return self._obs(), reward, False, self._t >= 50, {}


def observations(space, n=20, seed=0):
    space = spaces.Box(space.low, space.high, space.shape, space.dtype, seed=seed)
    return np.stack([space.sample() for _ in range(n)])


def deterministic_actions(model, obs):
    return np.stack([model.predict(o, deterministic=True)[0] for o in obs])


def assert_same_state_dict(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert th.equal(a[key], b[key]), key


# ------------------------------------------------------------------------------------------ round trip
def test_round_trip(tmp_path):
    model = TRPO(
        "MlpPolicy",
        "Pendulum-v1",
        n_steps=64,
        batch_size=32,
        cg_rtol=1e-6,
        fisher="autograd",
        target_kl=0.02,
        policy_kwargs=SMALL_NET,
        seed=0,
    )
    model.learn(128)
    path = tmp_path / "trpo.zip"
    model.save(path)
    obs = observations(model.observation_space)

    loaded = TRPO.load(path)
    np.testing.assert_array_equal(deterministic_actions(loaded, obs), deterministic_actions(model, obs))
    assert_same_state_dict(loaded.policy.state_dict(), model.policy.state_dict())
    assert (loaded.cg_rtol, loaded.fisher, loaded.target_kl) == (1e-6, "autograd", 0.02)
    assert (loaded.n_steps, loaded.batch_size, loaded.num_timesteps, loaded._n_updates) == (64, 32, 128, 2)
    # the critic optimizer's Adam moments come back too
    saved_opt, loaded_opt = model.policy.optimizer.state_dict(), loaded.policy.optimizer.state_dict()
    assert saved_opt["state"].keys() == loaded_opt["state"].keys() and saved_opt["state"]
    for index, state in saved_opt["state"].items():
        assert th.equal(state["exp_avg"], loaded_opt["state"][index]["exp_avg"])
        assert th.equal(state["exp_avg_sq"], loaded_opt["state"][index]["exp_avg_sq"])

    # continued training with an env
    resumed = TRPO.load(path, env=gym.make("Pendulum-v1"))
    actor = parameters_to_vector(resumed.policy.action_net.parameters()).detach().clone()
    resumed.learn(256, reset_num_timesteps=False)
    assert resumed.num_timesteps == 128 + 256
    assert resumed._n_updates == 2 + 4
    assert not th.equal(parameters_to_vector(resumed.policy.action_net.parameters()), actor)


def test_load_from_an_open_file(tmp_path):
    model = TRPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, policy_kwargs=SMALL_NET, seed=0)
    model.save(tmp_path / "trpo.zip")
    with open(tmp_path / "trpo.zip", "rb") as stream:
        loaded = TRPO.load(stream)
    assert_same_state_dict(loaded.policy.state_dict(), model.policy.state_dict())


def test_load_in_a_fresh_process(tmp_path):
    model = TRPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, policy_kwargs=SMALL_NET, seed=1)
    model.learn(64)
    model.save(tmp_path / "trpo.zip")
    obs = observations(model.observation_space)
    np.save(tmp_path / "obs.npy", obs)
    code = f"""
import json, numpy as np
from sb3_trpo_ext import TRPO
model = TRPO.load({str(tmp_path / "trpo.zip")!r})
obs = np.load({str(tmp_path / "obs.npy")!r})
actions = [model.predict(o, deterministic=True)[0].tolist() for o in obs]
print(json.dumps({{"actions": actions, "target_kl": model.target_kl, "fisher": model.fisher}}))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout.strip().splitlines()[-1])
    expected = deterministic_actions(model, obs)
    np.testing.assert_array_equal(np.array(output["actions"], dtype=expected.dtype), expected)
    assert (output["target_kl"], output["fisher"]) == (model.target_kl, model.fisher)


# ------------------------------------------------------------------------------ sb3-contrib checkpoints
@pytest.mark.parametrize(
    ("make_env", "equivalent"),
    [(lambda: gym.make("Pendulum-v1"), 0.01), (lambda: gym.make("CartPole-v1"), 0.01), (Box3Env, 0.03)],
    ids=["pendulum", "cartpole", "box3"],
)
def test_load_sb3_contrib_checkpoint(tmp_path, make_env, equivalent):
    from sb3_contrib import TRPO as ContribTRPO

    contrib = ContribTRPO(
        "MlpPolicy", make_env(), n_steps=128, batch_size=64, target_kl=0.01, policy_kwargs=SMALL_NET, seed=0
    )
    contrib.learn(256)
    path = tmp_path / "contrib.zip"
    contrib.save(path)

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        loaded = TRPO.load(path)
    messages = [str(w.message) for w in record if "sb3-contrib" in str(w.message)]
    if equivalent == 0.01:  # one action dimension: nothing to convert, nothing to warn about
        assert not messages, messages
    else:
        values = {float(v) for m in messages for v in re.findall(r"target_kl=([0-9.eE+-]+\d)", m)}
        assert equivalent in values, messages
        assert values <= {0.01, equivalent}, messages
    assert loaded.target_kl == 0.01  # not rescaled silently

    obs = observations(contrib.observation_space)
    # ours predicts from the numpy actor, sb3-contrib's in torch: the same function, to float precision
    np.testing.assert_allclose(
        deterministic_actions(loaded, obs), deterministic_actions(contrib, obs), rtol=0, atol=1e-6
    )
    assert_same_state_dict(loaded.policy.state_dict(), contrib.policy.state_dict())

    # The critic optimizer holds exactly the critic's parameters, with sb3-contrib's Adam moments for them.
    loaded_names = {id(p): name for name, p in loaded.policy.named_parameters()}
    opt_params = loaded.policy.optimizer.param_groups[0]["params"]
    critic_names = [loaded_names[id(p)] for p in opt_params]
    assert sorted(critic_names) == sorted(n for n, _ in contrib.policy.named_parameters() if "value_net" in n)
    # sb3-contrib's optimizer covers every policy parameter; its state is indexed by position in its group
    contrib_names = {id(p): name for name, p in contrib.policy.named_parameters()}
    contrib_params = contrib.policy.optimizer.param_groups[0]["params"]
    assert len(contrib_params) == len(list(contrib.policy.parameters()))
    contrib_index = {contrib_names[id(p)]: i for i, p in enumerate(contrib_params)}
    contrib_state = contrib.policy.optimizer.state_dict()["state"]
    loaded_state = loaded.policy.optimizer.state_dict()["state"]
    assert len(loaded_state) == len(critic_names)
    for position, name in enumerate(critic_names):
        reference = contrib_state[contrib_index[name]]
        assert th.any(reference["exp_avg"] != 0)
        assert th.equal(loaded_state[position]["exp_avg"], reference["exp_avg"]), name
        assert th.equal(loaded_state[position]["exp_avg_sq"], reference["exp_avg_sq"]), name
        assert float(loaded_state[position]["step"]) == float(reference["step"])

    # training continues
    loaded.set_env(make_env())
    actor = parameters_to_vector(loaded.policy.action_net.parameters()).detach().clone()
    loaded.learn(128, reset_num_timesteps=False)
    assert loaded.num_timesteps == 256 + 128
    assert not th.equal(parameters_to_vector(loaded.policy.action_net.parameters()), actor)


def _actor_step(model, rollout_buffer) -> th.Tensor:
    """The change of the actor's parameters in one ``train()`` on a copy of ``rollout_buffer``."""
    model.rollout_buffer = copy.deepcopy(rollout_buffer)
    actor = [p for name, p in model.policy.named_parameters() if "value" not in name]
    before = parameters_to_vector(actor).detach().clone()
    model.train()
    return parameters_to_vector(actor).detach() - before


@pytest.mark.parametrize(
    ("make_env", "warns"), [(lambda: gym.make("Pendulum-v1"), False), (Box3Env, True)], ids=["pendulum", "box3"]
)
def test_sb3_contrib_conversion_warns_only_when_it_changes_the_values(tmp_path, make_env, warns):
    """With one action dimension the true KL is the per-dimension mean: the warning used to tell users to set
    target_kl and cg_damping to the values they already had."""
    from sb3_contrib import TRPO as ContribTRPO

    ContribTRPO("MlpPolicy", make_env(), n_steps=64, batch_size=64, policy_kwargs=SMALL_NET).save(tmp_path / "c.zip")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        TRPO.load(tmp_path / "c.zip")
    messages = [str(w.message) for w in record if "sb3-contrib" in str(w.message)]
    assert len(messages) == int(warns), messages
    if warns:
        assert "target_kl=0.03" in messages[0] and "cg_damping=0.3" in messages[0]  # 3 dimensions


def test_converted_sb3_contrib_settings_take_sb3_contribs_step():
    """With d action dimensions, target_kl and cg_damping times d (README, hyperparams/trpo_ext.yml) give
    sb3-contrib's step on the same batch from the same weights: its Fisher is that of the per-dimension mean KL,
    ours of the summed KL, d times larger. Converting target_kl alone gives a larger step."""
    from sb3_contrib import TRPO as ContribTRPO

    settings = dict(n_steps=256, batch_size=64, cg_max_steps=8, policy_kwargs=SMALL_NET, seed=0, device="cpu")
    contrib = ContribTRPO("MlpPolicy", Box3Env(), target_kl=0.01, cg_damping=0.1, **settings)
    _, callback = contrib._setup_learn(256)
    contrib.collect_rollouts(contrib.env, callback, contrib.rollout_buffer, n_rollout_steps=contrib.n_steps)
    start = copy.deepcopy(contrib.policy.state_dict())
    reference = _actor_step(contrib, contrib.rollout_buffer)
    assert contrib.logger.name_to_value["train/is_line_search_success"] == 1.0

    steps = {}
    for cg_damping in (0.3, 0.1):
        ours = TRPO("MlpPolicy", Box3Env(), target_kl=0.03, cg_damping=cg_damping, **settings)
        ours.policy.load_state_dict(start)
        ours._setup_learn(256)
        steps[cg_damping] = _actor_step(ours, contrib.rollout_buffer)
    scale = reference.abs().max().item()
    np.testing.assert_allclose(steps[0.3].numpy(), reference.numpy(), rtol=1e-3, atol=1e-4 * scale)
    assert (steps[0.1] - reference).norm() > 0.1 * reference.norm()  # the test can tell the two apart
    assert steps[0.1].norm() > reference.norm()


# -------------------------------------------------------------------------------------------- errors
def test_corrupt_file_raises_value_error(tmp_path):
    path = tmp_path / "x.zip"
    path.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(ValueError):
        TRPO.load(path)


def test_truncated_file_says_so_and_names_the_path(tmp_path):
    path = tmp_path / "trpo.zip"
    TRPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, policy_kwargs=SMALL_NET).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # an interrupted copy or download
    with pytest.raises(ValueError, match="truncated or corrupted") as error:
        TRPO.load(path)
    assert str(path) in str(error.value) and "nothing was loaded" in str(error.value)
    with open(path, "rb") as stream, pytest.raises(ValueError, match="truncated or corrupted"):
        TRPO.load(stream)
    with pytest.raises(ValueError, match="truncated or corrupted"):  # SB3's reader too (trusted=True)
        TRPO.load(path, trusted=True)


def test_ppo_checkpoint_is_rejected(tmp_path):
    PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, policy_kwargs=SMALL_NET).save(tmp_path / "ppo.zip")
    with pytest.raises(ValueError, match="not saved by a TRPO"):
        TRPO.load(tmp_path / "ppo.zip")


def test_missing_file_raises_like_sb3(tmp_path):
    missing = tmp_path / "does_not_exist.zip"
    with pytest.raises(Exception) as sb3_error:
        PPO.load(missing)
    assert isinstance(sb3_error.value, (FileNotFoundError, ValueError))
    with pytest.raises(type(sb3_error.value)):
        TRPO.load(missing)
    with pytest.raises(type(sb3_error.value)):
        TRPO.load(str(tmp_path / "does_not_exist"))


# -------------------------------------------------------------------- set_parameters: SB3's contract
def _without_last_entry(params):
    """SB3's tests/test_save_load.py::test_save_load: every object's state dict loses its last entry."""
    edited = copy.deepcopy(params)
    for state in edited.values():
        del state[list(state)[-1]]
    return edited


def test_set_parameters_incomplete_state_dicts_raise_torchs_runtime_error():
    """SB3's contract (issue 18, item 1): ValueError only for missing or unknown objects; the policy's state
    dict loads first, so an incomplete one raises torch's RuntimeError before the optimizer state is read."""
    model = TRPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, policy_kwargs=SMALL_NET, seed=0)
    params = model.get_parameters()
    assert list(params) == ["policy", "policy.optimizer"]
    with pytest.raises(RuntimeError, match="Missing key"):
        model.set_parameters(_without_last_entry(params), exact_match=True)
    # the same with the objects in the other order: the modules still load first
    reordered = _without_last_entry(params)
    reordered = {"policy.optimizer": reordered["policy.optimizer"], "policy": reordered["policy"]}
    with pytest.raises(RuntimeError, match="Missing key"):
        model.set_parameters(reordered, exact_match=True)
    # unknown and missing objects: SB3's ValueError, before anything is loaded
    before = copy.deepcopy(model.policy.state_dict())
    with pytest.raises(ValueError, match="invalid object name|do not match"):
        model.set_parameters({**params, "not_an_object": {}}, exact_match=True)
    with pytest.raises(ValueError, match="Names of parameters do not match"):
        model.set_parameters({"policy.optimizer": params["policy.optimizer"]}, exact_match=True)
    assert_same_state_dict(model.policy.state_dict(), before)
    # a complete policy with an edited optimizer state alone: the policy loads, then our clearer ValueError
    with pytest.raises(ValueError, match=r"params\['policy.optimizer'\].*'param_groups'"):
        model.set_parameters({"policy": params["policy"], "policy.optimizer": {"state": {}}}, exact_match=True)
    model.set_parameters(params, exact_match=True)


def test_set_parameters_partial_dict_without_exact_match_loads_the_policy_only():
    model = TRPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, policy_kwargs=SMALL_NET, seed=0)
    other = TRPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, policy_kwargs=SMALL_NET, seed=1)
    model.set_parameters({"policy": other.policy.state_dict()}, exact_match=False)
    assert_same_state_dict(model.policy.state_dict(), other.policy.state_dict())
