"""The hand-derived regression of plain MLP critics against autograd: the same losses and the same parameters
after several optimizer steps, with Adam and with SGD; other critics keep autograd."""

import numpy as np
import pytest
import torch as th
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from sb3_trpo_ext import TRPO
from sb3_trpo_ext.fast.critic import PlainMlpCritic
from sb3_trpo_ext.trpo.critic import optimizer_step
from sb3_trpo_ext.trpo.policies import MlpPolicy

CRITICS = [
    dict(net_arch=[16]),
    dict(net_arch=dict(pi=[8], vf=[12, 7]), activation_fn=nn.ReLU),
    dict(net_arch=dict(pi=[8], vf=[])),
]
OPTIMIZERS = [dict(), dict(optimizer_class=th.optim.SGD, optimizer_kwargs=dict(momentum=0.9))]


def _trained_critic(policy_kwargs, hand_derived, monkeypatch):
    if not hand_derived:
        monkeypatch.setattr(PlainMlpCritic, "from_policy", classmethod(lambda cls, policy: None))
    model = TRPO(
        "MlpPolicy", "Pendulum-v1", n_steps=96, batch_size=32, n_critic_updates=3, policy_kwargs=policy_kwargs, seed=0
    )
    model.learn(96)  # a real batch of observations and returns
    batch = next(model.rollout_buffer.get(batch_size=None))
    np.random.seed(1)  # the minibatch permutations
    loss = model._update_critic(batch)
    monkeypatch.undo()
    return loss, [p.detach().clone() for p in model._critic_params]


@pytest.mark.parametrize("critic", range(len(CRITICS)))
@pytest.mark.parametrize("optimizer", range(len(OPTIMIZERS)))
def test_hand_derived_regression_equals_autograd(critic, optimizer, monkeypatch):
    policy_kwargs = {**CRITICS[critic], **OPTIMIZERS[optimizer]}
    model = TRPO("MlpPolicy", "Pendulum-v1", n_steps=96, batch_size=32, policy_kwargs=policy_kwargs)
    assert PlainMlpCritic.from_policy(model.policy) is not None
    fast_loss, fast_params = _trained_critic(policy_kwargs, True, monkeypatch)
    slow_loss, slow_params = _trained_critic(policy_kwargs, False, monkeypatch)
    assert fast_loss == pytest.approx(slow_loss, rel=1e-5)
    for fast, slow in zip(fast_params, slow_params):
        th.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)


def test_gradients_equal_autograd_on_one_minibatch():
    model = TRPO("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(net_arch=[9, 5], activation_fn=nn.ReLU), seed=3)
    critic = PlainMlpCritic.from_policy(model.policy)
    obs, returns = th.randn(40, 3), th.randn(40) * 5
    loss = critic.set_gradients(obs, returns)
    fast = [p.grad.clone() for p in model._critic_params]
    expected = nn.functional.mse_loss(model.policy.predict_values(obs).flatten(), returns)
    reference = th.autograd.grad(expected, model._critic_params)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    for got, want in zip(fast, reference):
        th.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


class ScaledValues(MlpPolicy):
    def predict_values(self, obs):
        return 2 * super().predict_values(obs)


@pytest.mark.parametrize(
    ("policy", "policy_kwargs"), [(MlpPolicy, dict(activation_fn=nn.ELU)), (ScaledValues, None)], ids=["elu", "custom"]
)
def test_other_critics_keep_autograd(policy, policy_kwargs):
    model = TRPO(policy, "Pendulum-v1", policy_kwargs=policy_kwargs)
    assert PlainMlpCritic.from_policy(model.policy) is None


@pytest.mark.parametrize("dtype", [th.float32, th.float64])
def test_tanh_in_place_matches_torch(dtype):
    from sb3_trpo_ext.fast.mlp import tanh_

    x = th.linspace(-12, 12, 4001, dtype=dtype).reshape(1, -1) * th.ones(3, 1, dtype=dtype)
    expected = th.tanh(x)
    result = tanh_(x)
    assert result.data_ptr() == x.data_ptr()  # written over the input (NumPy's tanh on its view)
    tolerance = dict(rtol=2e-7, atol=1e-7) if dtype == th.float32 else dict(rtol=1e-15, atol=1e-15)
    th.testing.assert_close(result, expected, **tolerance)
    # a tensor autograd needs keeps torch's tanh (and its gradient); so does a non-contiguous one
    leaf = th.randn(4, 3, requires_grad=True)
    out = tanh_(leaf)
    assert out.data_ptr() != leaf.data_ptr()
    out.sum().backward()
    th.testing.assert_close(leaf.grad, 1 - th.tanh(leaf.detach()) ** 2)
    strided = th.randn(6, 4).t()
    before = strided.clone()
    th.testing.assert_close(tanh_(strided), th.tanh(before))


def _two_optimizers(optimizer_class, **kwargs):
    th.manual_seed(0)
    params = [nn.Parameter(th.randn(5, 3)), nn.Parameter(th.randn(5))]
    twins = [nn.Parameter(p.detach().clone()) for p in params]
    return (params, optimizer_class(params, **kwargs)), (twins, optimizer_class(twins, **kwargs))


@pytest.mark.parametrize(
    "optimizer_class, kwargs",
    [
        (th.optim.Adam, dict(lr=0.1, fused=True)),
        (th.optim.Adam, dict(lr=0.1)),
        (th.optim.SGD, dict(lr=0.1, momentum=0.9)),
    ],
)
def test_optimizer_step_is_the_optimizers_step(optimizer_class, kwargs):
    (params, optimizer), (twins, reference) = _two_optimizers(optimizer_class, **kwargs)
    for _ in range(4):
        grads = [th.randn_like(p) for p in params]
        for p, q, g in zip(params, twins, grads):
            p.grad, q.grad = g.clone(), g.clone()
        optimizer_step(optimizer)
        reference.step()
    for p, q in zip(params, twins):
        assert th.equal(p, q)
    assert str(optimizer.state_dict()) == str(reference.state_dict())


def test_optimizer_step_runs_hooks_instance_steps_and_keeps_the_profiler_label():
    (params, optimizer), _ = _two_optimizers(th.optim.Adam, lr=0.1)
    for p in params:
        p.grad = th.ones_like(p)
    calls = []
    handle = optimizer.register_step_post_hook(lambda *args: calls.append("local"))
    optimizer_step(optimizer)
    handle.remove()
    handle = register_optimizer_step_pre_hook(lambda *args: calls.append("global"))
    try:
        optimizer_step(optimizer)
    finally:
        handle.remove()
    optimizer_step(optimizer)  # no hook left: nothing more recorded
    step = optimizer.step
    optimizer.step = lambda: (calls.append("instance"), step())
    optimizer_step(optimizer)
    del optimizer.step
    assert calls == ["local", "global", "instance"]
    assert optimizer.state[params[0]]["step"].item() == 4
    with th.profiler.profile() as profile:
        optimizer_step(optimizer)
    assert any(event.name == "Optimizer.step#Adam.step" for event in profile.events())
