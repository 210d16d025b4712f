"""RecurrentTRPO: the functional LSTM, the first-derivatives-only Fisher, sequences, validation, the Zoo's keys
(loading in a fresh process and the Zoo's train/enjoy: tests/integration/test_recurrent_end_to_end.py)."""

import pathlib

import numpy as np
import pytest
import torch as th
from fisher_reference import forward_mode_fisher_product
from gymnasium import spaces
from recurrent_helpers import TINY, RandomEnv
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.env_util import make_vec_env
from torch import nn

from sb3_trpo_ext import RecurrentTRPO
from sb3_trpo_ext.common.fisher import CategoricalFamily, GaussianFamily, analytic_fisher_product, flatten
from sb3_trpo_ext.recurrent.lstm import LinearizedLSTM, fused_sequence, lstm_sequence
from sb3_trpo_ext.recurrent.policies import actor_distribution, functional_actor
from sb3_trpo_ext.trpo.policies import split_actor_critic

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------------- functional LSTM
@pytest.mark.parametrize("dtype", [th.float32, th.float64])
@pytest.mark.parametrize("n_layers", [1, 2])
def test_functional_lstm_equals_nn_lstm_with_episode_resets(dtype, n_layers):
    """:func:`lstm_sequence` computes what sb3-contrib's ``_process_sequence`` computes with the fused kernel,
    resets at episode starts included (float32: to 1e-6, float64: to 1e-13)."""
    from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy

    generator = th.Generator().manual_seed(0)
    lstm = nn.LSTM(5, 7, num_layers=n_layers).to(dtype)
    n_seq, length = 3, 11
    features = th.randn(n_seq * length, 5, generator=generator, dtype=dtype)
    states = tuple(th.randn(n_layers, n_seq, 7, generator=generator, dtype=dtype) for _ in range(2))
    for starts in (
        th.zeros(n_seq * length, dtype=dtype),
        (th.rand(n_seq * length, generator=generator) < 0.2).to(dtype),
    ):
        expected, _ = RecurrentActorCriticPolicy._process_sequence(features, states, starts, lstm)
        with th.no_grad():
            ours = lstm_sequence(lstm, features, states, starts)
        error = (ours - expected.detach()).abs().max().item()
        assert error < (1e-6 if dtype == th.float32 else 1e-13), error


def test_functional_lstm_without_bias_and_refused_settings():
    lstm = nn.LSTM(3, 4, bias=False)
    features, states = th.randn(6, 3), (th.zeros(1, 2, 4), th.zeros(1, 2, 4))
    starts = th.tensor([1.0, 0, 0, 1, 0, 0])
    from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy

    expected, _ = RecurrentActorCriticPolicy._process_sequence(features, states, starts, lstm)
    th.testing.assert_close(lstm_sequence(lstm, features, states, starts), expected, rtol=1e-5, atol=1e-6)
    env = RandomEnv()
    for lstm_kwargs, name in [(dict(dropout=0.1), "dropout"), (dict(proj_size=2), "proj_size")]:
        with pytest.raises(ValueError, match=name):
            RecurrentTRPO(
                "MlpLstmPolicy",
                env,
                n_steps=8,
                batch_size=8,
                policy_kwargs=dict(TINY, n_lstm_layers=2, lstm_kwargs=lstm_kwargs),
            )


@pytest.mark.parametrize("n_layers", [1, 2])
def test_linearized_lstm_jvp_equals_forward_mode_ad_through_the_functional_lstm(n_layers):
    """:class:`LinearizedLSTM` (the recurrence's derivative written out, the forward pass once) gives what
    ``torch.func.jvp`` through :func:`lstm_sequence` gives, tangents of the weights and of the features together,
    episode resets inside the sequences included (float64: to 1e-12)."""
    generator = th.Generator().manual_seed(0)
    lstm = nn.LSTM(3, 5, num_layers=n_layers).double()
    n_seq, length = 4, 9
    features = th.randn(n_seq * length, 3, generator=generator, dtype=th.float64)
    states = tuple(th.randn(n_layers, n_seq, 5, generator=generator, dtype=th.float64) for _ in range(2))
    starts = (th.rand(n_seq * length, generator=generator) < 0.2).double()
    names = [name for name, _ in lstm.named_parameters()]
    primals = tuple(p.detach() for p in lstm.parameters())
    tangents = tuple(th.randn(p.shape, generator=generator, dtype=th.float64) for p in primals)
    features_tangent = th.randn(features.shape, generator=generator, dtype=th.float64)

    def run(inputs, *weights):
        substituted = {f"lstm.{name}": weight for name, weight in zip(names, weights, strict=True)}
        return th.func.functional_call(_Sequence(lstm), substituted, (inputs, states, starts))

    output, expected = th.func.jvp(run, (features, *primals), (features_tangent, *tangents))
    linearized = LinearizedLSTM(lstm, features, states, starts)
    th.testing.assert_close(linearized.output, output, rtol=0, atol=1e-12)
    ours = linearized.jvp(dict(zip(names, tangents)), features_tangent)
    th.testing.assert_close(ours, expected, rtol=0, atol=1e-12)
    without_features = th.func.jvp(lambda *w: run(features, *w), primals, tangents)[1]
    th.testing.assert_close(linearized.jvp(dict(zip(names, tangents))), without_features, rtol=0, atol=1e-12)


class _Sequence(nn.Module):
    """:func:`lstm_sequence` of ``lstm`` as a module (for ``functional_call`` with substituted weights)."""

    def __init__(self, lstm):
        super().__init__()
        self.lstm = lstm

    def forward(self, features, states, starts):
        return lstm_sequence(self.lstm, features, states, starts)


def test_fused_sequence_equals_process_sequence_when_episodes_start_at_sequence_starts():
    """One fused call with the states zeroed where a sequence starts an episode computes what sb3-contrib's
    per-step ``_process_sequence`` does (the buffer's layout); an episode start inside a sequence is left to it."""
    from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy

    generator = th.Generator().manual_seed(0)
    lstm = nn.LSTM(3, 5, num_layers=2)
    n_seq, length = 4, 7
    features = th.randn(n_seq * length, 3, generator=generator)
    states = tuple(th.randn(2, n_seq, 5, generator=generator) for _ in range(2))
    starts = th.zeros(n_seq, length)
    starts[[0, 2], 0] = 1.0
    expected, _ = RecurrentActorCriticPolicy._process_sequence(features, states, starts.flatten(), lstm)
    th.testing.assert_close(fused_sequence(lstm, features, states, starts.flatten()), expected, rtol=1e-6, atol=1e-6)
    starts[1, 3] = 1.0
    assert fused_sequence(lstm, features, states, starts.flatten()) is None


def test_linearized_fisher_product_equals_forward_mode_ad_through_the_functional_actor():
    """RecurrentTRPO's product (recurrence linearized once, J^T u through the fused kernel's graph) equals the
    first-derivatives-only product of ``torch.func.jvp`` through the whole functional actor (float32: SB3's
    preprocessing casts observations to it; to 1e-5 of the largest entry)."""
    env = make_vec_env(lambda: RandomEnv(spaces.Box(-1, 1, (2,), np.float32)), n_envs=2, seed=0)
    model = RecurrentTRPO(
        "MlpLstmPolicy", env, n_steps=16, batch_size=16, seed=0, policy_kwargs=dict(TINY, n_lstm_layers=2), device="cpu"
    )
    model.learn(16)
    sequences, _, _ = model._single_path_surrogate(next(model.rollout_buffer.get(batch_size=None)))
    distribution = model._policy_distribution(sequences)
    family = model._action_family(distribution)
    ours = model._fisher_product(sequences, family.params(distribution), family)
    forward = functional_actor(model.policy, model._actor_params, family, sequences)
    reference = forward_mode_fisher_product(forward, model._actor_params, family, model.cg_damping)
    for seed in range(3):
        vector = th.randn(sum(p.numel() for p in model._actor_params), generator=th.Generator().manual_seed(seed))
        expected = reference(vector)
        assert ((ours(vector) - expected).abs().max() / expected.abs().max()).item() < 1e-5


# --------------------------------------------------- a recurrent cell without second or forward derivatives
class _FusedOnly(th.autograd.Function):
    """An LSTM kernel the way cuDNN's behaves: forward and a first-order backward, no double backward
    (``once_differentiable``) and no forward-mode formula (no ``jvp``)."""

    @staticmethod
    def forward(ctx, lstm, x, h0, c0, *weights):
        ctx.lstm = lstm
        ctx.save_for_backward(x, h0, c0, *weights)
        with th.no_grad():
            return _run(lstm, x, h0, c0, weights)

    @staticmethod
    @th.autograd.function.once_differentiable
    def backward(ctx, grad_out, grad_h, grad_c):
        inputs = [t.detach().requires_grad_(True) for t in ctx.saved_tensors]
        with th.enable_grad():
            outputs = _run(ctx.lstm, inputs[0], inputs[1], inputs[2], inputs[3:])
            grads = th.autograd.grad(outputs, inputs, (grad_out, grad_h, grad_c), allow_unused=True)
        return (None, *grads)


def _run(lstm, x, h0, c0, weights):
    """nn.LSTM's own (fused) forward of ``lstm`` with ``weights`` in place of its parameters."""
    names = [f"inner.{name}" for name, _ in lstm.named_parameters()]
    output, (h, c) = th.func.functional_call(_Plain(lstm), dict(zip(names, weights, strict=True)), (x, (h0, c0)))
    return output, h, c


class _Plain(nn.Module):
    """The fused nn.LSTM forward of ``lstm``'s configuration (used inside :class:`_FusedOnly`)."""

    def __init__(self, lstm):
        super().__init__()
        self.inner = lstm

    def forward(self, x, states):
        return nn.LSTM.forward(self.inner, x, states)


class RefusingLSTM(nn.LSTM):
    """nn.LSTM whose forward goes through :class:`_FusedOnly`: first derivatives only, by reverse mode."""

    def forward(self, x, states):
        output, h, c = _FusedOnly.apply(self, x, states[0], states[1], *self.parameters())
        return output, (h, c)


def _refusing_model(action_space, n_envs=2):
    env = make_vec_env(lambda: RandomEnv(action_space), n_envs=n_envs, seed=0)
    model = RecurrentTRPO("MlpLstmPolicy", env, n_steps=16, batch_size=16, seed=0, policy_kwargs=TINY)
    refusing = RefusingLSTM(model.policy.lstm_actor.input_size, 8)
    refusing.load_state_dict(model.policy.lstm_actor.state_dict())
    model.policy.lstm_actor = refusing
    model._actor_params, model._critic_params = split_actor_critic(model.policy)
    return model


def test_the_refusing_cell_refuses():
    lstm = RefusingLSTM(3, 4)
    x, states = th.randn(5, 2, 3), (th.zeros(1, 2, 4), th.zeros(1, 2, 4))
    out, _ = lstm(x, states)
    grads = th.autograd.grad(out.sum(), list(lstm.parameters()), create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):
        th.autograd.grad(sum(g.sum() for g in grads), list(lstm.parameters()))
    names = [name for name, _ in lstm.named_parameters()]
    primals = tuple(p.detach() for p in lstm.parameters())
    with pytest.raises(RuntimeError, match="jvp"):
        th.func.jvp(
            lambda *w: th.func.functional_call(lstm, dict(zip(names, w)), (x, states))[0],
            primals,
            tuple(th.ones_like(p) for p in primals),
        )


def _explicit_fisher(model, batch, family):
    """``mean_s J_s^T M_s J_s`` with ``J`` row by row from first-order reverse mode through the policy's LSTM."""
    params = model._actor_params
    dist_params = family.params(actor_distribution(model.policy, batch))
    flat = th.cat([t.reshape(t.shape[0], -1) for t in dist_params], dim=1)
    n_states, width = flat.shape
    rows = [
        flatten(th.autograd.grad(flat[s, k], params, retain_graph=True)) for s in range(n_states) for k in range(width)
    ]
    jacobian = th.stack(rows).view(n_states, width, -1).double()
    at = tuple(t.detach().double() for t in dist_params)
    if isinstance(family, GaussianFamily):
        blocks = [th.diag(th.cat([th.exp(-2 * at[1][s]), 2 * th.ones_like(at[1][s])])) for s in range(n_states)]
    else:
        probs = at[0].exp()
        blocks = [th.diag(probs[s]) - th.outer(probs[s], probs[s]) for s in range(n_states)]
    return sum(jacobian[s].T @ blocks[s] @ jacobian[s] for s in range(n_states)) / n_states


@pytest.mark.parametrize(
    "action_space", [spaces.Discrete(3), spaces.Box(-1, 1, (2,), np.float32)], ids=["categorical", "gaussian"]
)
def test_fisher_product_with_a_cell_refusing_double_backward_and_forward_ad(action_space):
    """The generic route raises on that cell (it differentiates a backward pass); RecurrentTRPO's product takes
    first derivatives only and equals the explicit Fisher built from reverse-mode Jacobians through the cell."""
    model = _refusing_model(action_space)
    model.learn(32)  # a whole update runs through the refusing cell
    batch = next(model.rollout_buffer.get(batch_size=None))
    sequences, _, _ = model._single_path_surrogate(batch)
    distribution = model._policy_distribution(sequences)
    family = model._action_family(distribution)
    assert isinstance(family, GaussianFamily if isinstance(action_space, spaces.Box) else CategoricalFamily)
    with pytest.raises(RuntimeError, match="second derivative"):
        analytic_fisher_product(family.params(distribution), model._actor_params, family)(
            th.ones(sum(p.numel() for p in model._actor_params))
        )
    product = model._fisher_product(sequences, family.params(distribution), family)
    fisher = _explicit_fisher(model, sequences, family)
    generator = th.Generator().manual_seed(0)
    for _ in range(3):
        vector = th.randn(fisher.shape[0], generator=generator)
        expected = fisher @ vector.double() + model.cg_damping * vector.double()
        error = (product(vector).double() - expected).abs().max() / expected.abs().max()
        assert error < 1e-5, error.item()


def test_forward_mode_fisher_product_equals_the_reverse_mode_product_in_float64():
    """On plain operations both generic routes apply: the first-derivatives-only product equals the analytic one."""
    generator = th.Generator().manual_seed(0)
    lstm = nn.LSTM(3, 4).double()
    head = nn.Linear(4, 3).double()
    features = th.randn(12, 3, generator=generator, dtype=th.float64)
    states = (th.zeros(1, 2, 4, dtype=th.float64), th.zeros(1, 2, 4, dtype=th.float64))
    starts = th.tensor([1.0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 1], dtype=th.float64)
    params = [*lstm.parameters(), *head.parameters()]
    names = [f"0.{n}" for n, _ in lstm.named_parameters()] + [f"1.{n}" for n, _ in head.named_parameters()]
    container = nn.Sequential(lstm, head)
    family = CategoricalFamily()

    def forward(tensors):
        def run(*_):
            return (th.log_softmax(head(lstm_sequence(lstm, features, states, starts)), dim=-1),)

        container.forward = run  # type: ignore[method-assign]
        return th.func.functional_call(container, dict(zip(names, tensors)), ())

    reference = analytic_fisher_product(forward(params), params, family, damping=0.01)
    ours = forward_mode_fisher_product(forward, params, family, damping=0.01)
    for seed in range(3):
        vector = th.randn(sum(p.numel() for p in params), generator=th.Generator().manual_seed(seed), dtype=th.float64)
        th.testing.assert_close(ours(vector), reference(vector), rtol=1e-11, atol=1e-13)


# ------------------------------------------------------------------------------------- smoke tests
@pytest.mark.parametrize(
    "action_space",
    [spaces.Box(-1, 1, (2,), np.float32), spaces.Discrete(3), spaces.MultiDiscrete([3, 2]), spaces.MultiBinary(3)],
    ids=["box", "discrete", "multidiscrete", "multibinary"],
)
def test_smoke_mlp_lstm_policy(action_space):
    env = make_vec_env(lambda: RandomEnv(action_space), n_envs=2, seed=0)
    model = RecurrentTRPO("MlpLstmPolicy", env, n_steps=16, batch_size=8, seed=0, policy_kwargs=TINY)
    before = [p.detach().clone() for p in model._actor_params]
    model.learn(64)
    assert model._n_updates == 2
    assert any(not th.equal(a, b) for a, b in zip(before, model._actor_params))
    obs = env.reset()
    actions, state = model.predict(obs, deterministic=True)
    assert actions.shape == (2, *action_space.shape) and state[0].shape == (1, 2, 8)


def test_smoke_multi_input_and_cnn_lstm_policies():
    dict_space = spaces.Dict({"a": spaces.Box(-1, 1, (3,), np.float32), "b": spaces.Discrete(4)})
    env = make_vec_env(lambda: RandomEnv(spaces.Discrete(2), dict_space), n_envs=2, seed=0)
    RecurrentTRPO("MultiInputLstmPolicy", env, n_steps=16, batch_size=16, seed=0, policy_kwargs=TINY).learn(32)
    image = spaces.Box(0, 255, (36, 36, 1), np.uint8)
    env = make_vec_env(lambda: RandomEnv(spaces.Discrete(2), image), n_envs=1, seed=0)
    model = RecurrentTRPO(
        "CnnLstmPolicy",
        env,
        n_steps=8,
        batch_size=8,
        seed=0,
        policy_kwargs=dict(TINY, features_extractor_kwargs=dict(features_dim=8)),
    )
    model.learn(8)
    assert model._n_updates == 1


@pytest.mark.parametrize("fisher", ["analytic", "autograd"])
def test_cnn_policy_keeps_its_parameters_across_updates(fisher):
    """SB3 reaches the actor's feature extractor under two names (``features_extractor`` and
    ``pi_features_extractor``); substituting its weights in ``torch.func.functional_call`` by one name must leave
    the policy's own ``nn.Parameter`` objects in place (torch's tie handling restored a plain tensor under the
    second name, so the second update raised and the optimizer lost the weights)."""
    image = spaces.Box(0, 255, (36, 36, 1), np.uint8)
    env = make_vec_env(lambda: RandomEnv(spaces.Discrete(3), image), n_envs=1, seed=0)
    model = RecurrentTRPO("CnnLstmPolicy", env, n_steps=8, batch_size=8, seed=0, fisher=fisher,
                          policy_kwargs=dict(TINY, features_extractor_kwargs=dict(features_dim=8)))  # fmt: skip
    parameters = dict(model.policy.named_parameters(remove_duplicate=False))
    extractor_before = model.policy.pi_features_extractor.cnn[0].weight.detach().clone()
    model.learn(24)
    assert model._n_updates == 3
    after = dict(model.policy.named_parameters(remove_duplicate=False))
    assert after.keys() == parameters.keys() and all(after[name] is parameters[name] for name in parameters)
    assert all(isinstance(param, nn.Parameter) for param in model._actor_params)
    assert not th.equal(model.policy.pi_features_extractor.cnn[0].weight, extractor_before)  # the actor's CNN trains


def test_substitution_names_substitute_each_holder_once():
    from sb3_trpo_ext.recurrent.policies import substitution_names

    class Aliased(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(2, 2)
            self.b = self.a  # one module, two names (as SB3's features_extractor / pi_features_extractor)
            self.c = nn.Linear(2, 2)
            self.c.weight = self.a.weight  # one parameter held by two modules (weight tying)

        def forward(self, x):
            return self.b(x) + self.c(x)

    module = Aliased()
    params = [module.a.weight, module.a.bias, module.c.bias]
    assert substitution_names(module, params) == [["a.weight", "c.weight"], ["a.bias"], ["c.bias"]]
    zeros = [th.zeros_like(p) for p in params]
    substituted = {name: t for names, t in zip(substitution_names(module, params), zeros) for name in names}
    out = th.func.functional_call(module, substituted, (th.ones(1, 2),), tie_weights=False)
    assert th.equal(out, th.zeros(1, 2))  # every holder saw the substitution
    assert module.a.weight is params[0] and module.b.weight is params[0] and module.c.weight is params[0]


@pytest.mark.parametrize(
    "policy_kwargs",
    [
        dict(enable_critic_lstm=False),
        dict(shared_lstm=True, enable_critic_lstm=False, share_features_extractor=True),
        dict(shared_lstm=True, enable_critic_lstm=False),  # RecurrentPPO's kwargs: the extractor is shared
        dict(n_lstm_layers=2),
    ],
    ids=["critic-mlp", "shared-lstm", "shared-lstm-default-extractor", "two-layers"],
)
def test_lstm_layouts_split_and_train(policy_kwargs):
    model = RecurrentTRPO(
        "MlpLstmPolicy", RandomEnv(), n_steps=16, batch_size=8, seed=0, policy_kwargs={**TINY, **policy_kwargs}
    )
    assert model.policy.share_features_extractor == policy_kwargs.get("shared_lstm", False)
    actor_ids = {id(p) for p in model._actor_params}
    assert all(id(p) in actor_ids for p in model.policy.lstm_actor.parameters())
    assert not actor_ids & {id(p) for p in model._critic_params}
    model.learn(32)


# ------------------------------------------------------------------------------------ sequences
def test_sequences_reproduce_collection_across_episode_boundaries_and_envs():
    """The update recomputes, from the hidden states stored at the sequence starts, exactly what the policy computed
    step by step during collection: log-probabilities (ratio 1 at theta_old) and values, for sequences cut at
    episode ends (episodes of 3 to 9 steps in a 32-step rollout) and across 3 environments; and the actor's
    distribution equals sb3-contrib's ``evaluate_actions`` on the same batch."""
    env = make_vec_env(lambda: RandomEnv(spaces.Discrete(3)), n_envs=3, seed=1)
    with pytest.warns(UserWarning, match="mini-batch size of 20"):  # minibatches cut across sequences, on purpose
        model = RecurrentTRPO("MlpLstmPolicy", env, n_steps=32, batch_size=20, seed=1, policy_kwargs=TINY)
    model.learn(96)  # three updates: the stored states at rollout starts are not zero any more
    from stable_baselines3.common.callbacks import BaseCallback

    class Nothing(BaseCallback):
        def _on_step(self):
            return True

    callback = Nothing()
    callback.init_callback(model)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    episode_starts = model.rollout_buffer.episode_starts.copy()
    assert episode_starts[1:].sum() >= 6  # episode boundaries inside the rollout, in every environment
    batch = next(model.rollout_buffer.get(batch_size=None))
    sequences, surrogate, _ = model._single_path_surrogate(batch)
    assert len(sequences.states) == 32 * 3
    with th.no_grad():
        actions = batch.actions[sequences.states].long().flatten()
        ours = model._policy_distribution(sequences).log_prob(actions)  # SB3's distribution objects are reused
        np.testing.assert_allclose(ours.numpy(), batch.old_log_prob[sequences.states].numpy(), rtol=0, atol=2e-6)
        values, log_prob, _ = model.policy.evaluate_actions(
            batch.observations, batch.actions.long().flatten(), batch.lstm_states, batch.episode_starts
        )
        th.testing.assert_close(log_prob[sequences.states], ours)
        th.testing.assert_close(
            values.flatten()[sequences.states], batch.old_values[sequences.states], rtol=0, atol=2e-6
        )
        for minibatch in model.rollout_buffer.get(batch_size=20):  # the critic's minibatches: sequences cut anywhere
            real = minibatch.mask > 0.5
            predicted = model.policy.predict_values(
                minibatch.observations, minibatch.lstm_states.vf, minibatch.episode_starts
            )
            th.testing.assert_close(predicted.flatten()[real], minibatch.old_values[real], rtol=0, atol=2e-6)


def test_collection_fills_the_buffer_as_recurrent_ppo_does():
    """Same weights, same seed: our rollout buffer holds exactly what sb3-contrib's RecurrentPPO collects."""
    make = lambda: make_vec_env(lambda: RandomEnv(spaces.Discrete(3)), n_envs=2, seed=3)  # noqa: E731
    ours = RecurrentTRPO("MlpLstmPolicy", make(), n_steps=24, batch_size=24, seed=3, policy_kwargs=TINY)
    theirs = RecurrentPPO(ours.policy_class, make(), n_steps=24, seed=3, policy_kwargs=TINY)
    theirs.policy.load_state_dict(ours.policy.state_dict())
    for model in (ours, theirs):
        model.set_random_seed(3)
        model._setup_learn(48)
        from stable_baselines3.common.callbacks import BaseCallback

        class Nothing(BaseCallback):
            def _on_step(self):
                return True

        callback = Nothing()
        callback.init_callback(model)
        model.collect_rollouts(model.env, callback, model.rollout_buffer, 24)
    for name in (
        "observations",
        "actions",
        "rewards",
        "episode_starts",
        "values",
        "log_probs",
        "advantages",
        "returns",
        "hidden_states_pi",
        "cell_states_vf",
    ):
        np.testing.assert_array_equal(
            getattr(ours.rollout_buffer, name), getattr(theirs.rollout_buffer, name), err_msg=name
        )


# ----------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(policy_kwargs=dict(lstm_hidden_size=0)), "lstm_hidden_size=0"),
        (dict(policy_kwargs=dict(n_lstm_layers=1.5)), "n_lstm_layers=1.5"),
        (dict(policy_kwargs=dict(shared_lstm="yes")), "shared_lstm='yes'"),
        (dict(policy_kwargs=dict(enable_critic_lstm=None)), "enable_critic_lstm=None"),
        (dict(policy_kwargs=dict(shared_lstm=True)), "enable_critic_lstm=False"),
        (
            dict(policy_kwargs=dict(shared_lstm=True, enable_critic_lstm=False, share_features_extractor=False)),
            "shared_lstm=True with share_features_extractor=False",
        ),
        (dict(policy_kwargs=dict(lstm_kwargs=dict(bidirectional=True))), "bidirectional"),
        (dict(target_kl=0.0), "target_kl=0.0"),
        (dict(cg_max_steps=0), "cg_max_steps=0"),
        (dict(line_search_shrinking_factor=1.0), "line_search_shrinking_factor"),
        (dict(fisher="hessian"), "fisher='hessian'"),
        (dict(n_steps=0), "n_steps=0"),
        (dict(sampling="vine"), "sampling='vine'.*single_path"),
        (dict(rollout_buffer_class=RecurrentPPO), "rollout_buffer_class"),
    ],
)
def test_invalid_settings_raise_value_error_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RecurrentTRPO("MlpLstmPolicy", RandomEnv(), **kwargs)


def test_sb3_contrib_policy_class_keeps_its_own_extractor_default():
    """sb3-contrib's classes share the extractor by default, so shared_lstm=True alone is valid with them too."""
    from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy

    kwargs = dict(shared_lstm=True, enable_critic_lstm=False, **TINY)
    model = RecurrentTRPO(RecurrentActorCriticPolicy, RandomEnv(), n_steps=16, batch_size=8, policy_kwargs=kwargs)
    assert model.policy.share_features_extractor
    model.learn(16)


def test_feed_forward_policy_is_refused():
    from stable_baselines3.common.policies import ActorCriticPolicy

    with pytest.raises(ValueError, match="RecurrentActorCriticPolicy"):
        RecurrentTRPO(ActorCriticPolicy, RandomEnv())


def test_fisher_autograd_reference_equals_analytic_on_a_batch():
    env = make_vec_env(lambda: RandomEnv(spaces.Box(-1, 1, (2,), np.float32)), n_envs=2, seed=0)
    model = RecurrentTRPO("MlpLstmPolicy", env, n_steps=16, batch_size=16, seed=0, policy_kwargs=TINY)
    model.learn(16)
    sequences, _, _ = model._single_path_surrogate(next(model.rollout_buffer.get(batch_size=None)))
    distribution = model._policy_distribution(sequences)
    family = model._action_family(distribution)
    analytic = model._fisher_product(sequences, family.params(distribution), family)
    model.fisher = "autograd"
    reference = model._fisher_product(sequences, family.params(distribution), family)
    vector = th.randn(sum(p.numel() for p in model._actor_params), generator=th.Generator().manual_seed(0))
    th.testing.assert_close(analytic(vector), reference(vector), rtol=1e-4, atol=1e-6)
    sub = sequences.every_kth_state(3)
    assert th.equal(sub.states, sequences.states[::3])


def test_non_finite_critic_regression_restores_the_critic():
    env = make_vec_env(lambda: RandomEnv(spaces.Box(-1, 1, (2,), np.float32)), n_envs=2, seed=0)
    model = RecurrentTRPO("MlpLstmPolicy", env, n_steps=16, batch_size=8, seed=0, policy_kwargs=TINY)
    model.learn(32)
    critic_before = [p.detach().clone() for p in model._critic_params]
    model.rollout_buffer.returns[:] = 3e38  # the squared error overflows to inf
    with pytest.warns(UserWarning, match="RecurrentTRPO: the critic's regression produced a non-finite loss"):
        model._update_critic(None)
    for param, before in zip(model._critic_params, critic_before, strict=True):
        assert th.equal(param, before)
    assert all(p.isfinite().all() for p in model.policy.parameters())
    assert not model.policy.optimizer.state  # Adam's moments that saw the non-finite gradients are dropped


# ------------------------------------------------------------------------------------------- Zoo
def test_zoo_key_and_blocks():
    import yaml

    from sb3_trpo_ext.zoo.registry import ZOO_ALGORITHMS

    entry = ZOO_ALGORITHMS["trpo_lstm"]
    assert entry.algo_class is RecurrentTRPO
    blocks = yaml.safe_load((REPO_ROOT / "hyperparams" / entry.hyperparams_file).read_text())
    for env_id in ("CartPoleNoVel-v1", "PendulumNoVel-v1"):
        block = blocks[env_id]
        assert block["policy"] == "MlpLstmPolicy"
        assert "lstm_hidden_size=64" in block["policy_kwargs"].replace(" ", "")


# ----------------------------------------------------------------------------------- learning
@pytest.mark.slow
@pytest.mark.timeout(3600)  # ~100 updates of a 64-unit LSTM: minutes on an idle 2-core machine, far more when shared
def test_cartpole_no_velocity_is_solved():
    """The tuned trpo_lstm block on CartPoleNoVel-v1 at its budget (velocities hidden: a memoryless policy cannot
    solve it). The block was tuned on seeds 10 and 11; through the Zoo command it scored 500 on seeds 0, 1 and 2
    (bench/tuning/target-check-CartPoleNoVel-v1.json); this test trains seed 0 outside the Zoo."""
    import rl_zoo3.import_envs  # noqa: F401  (registers CartPoleNoVel-v1)
    import yaml
    from stable_baselines3.common.vec_env import VecNormalize

    block = yaml.safe_load((REPO_ROOT / "hyperparams" / "trpo_lstm.yml").read_text())["CartPoleNoVel-v1"]
    settings = {
        key: block[key]
        for key in ("n_steps", "batch_size", "cg_damping", "target_kl", "gae_lambda", "gamma", "learning_rate")
    }
    env = VecNormalize(make_vec_env("CartPoleNoVel-v1", n_envs=block["n_envs"], seed=0), gamma=block["gamma"])
    model = RecurrentTRPO(
        "MlpLstmPolicy",
        env,
        n_critic_updates=block["n_critic_updates"],
        seed=0,
        policy_kwargs=dict(
            ortho_init=False,
            activation_fn=nn.ReLU,
            lstm_hidden_size=64,
            enable_critic_lstm=True,
            net_arch=dict(pi=[64], vf=[64]),
        ),
        **settings,
    )
    model.learn(int(block["n_timesteps"]))
    eval_env = VecNormalize(make_vec_env("CartPoleNoVel-v1", n_envs=1, seed=1000), training=False, norm_reward=False)
    eval_env.obs_rms = env.obs_rms
    scores = []
    for _ in range(10):
        obs, state, start, total, done = eval_env.reset(), None, np.ones(1, bool), 0.0, False
        while not done:
            action, state = model.predict(obs, state=state, episode_start=start, deterministic=True)
            obs, reward, start, _ = eval_env.step(action)
            total, done = total + float(reward[0]), bool(start[0])
        scores.append(total)
    assert np.mean(scores) >= 450, scores
