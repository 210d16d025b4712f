"""Fisher-vector products and KL against known answers.

Exact checks run in float64 on a small hand-built network feeding SB3's own distribution objects:
analytic product == autograd (Hessian of KL) product == explicit ``mean_s J_s^T M_s J_s``.
"""

import numpy as np
import pytest
import torch as th
from gymnasium import spaces as gym_spaces
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from stable_baselines3.common.distributions import (
    BernoulliDistribution,
    CategoricalDistribution,
    DiagGaussianDistribution,
    MultiCategoricalDistribution,
    StateDependentNoiseDistribution,
)

from sb3_trpo_ext.common.fisher import (
    GaussianFamily,
    action_family,
    analytic_fisher_product,
    autograd_fisher_product,
    flatten,
    unflatten,
)

N_STATES, OBS_DIM, HIDDEN = 7, 3, 5
DTYPE = th.float64


def _explicit_fisher_blocks(name, dist_params):
    """Closed-form Fisher of one state's distribution in its own parameters, as dense matrices."""
    if name == "gaussian":
        _, log_std = dist_params
        return lambda s: th.diag(th.cat([th.exp(-2 * log_std[s]), 2 * th.ones_like(log_std[s])]))
    if name == "bernoulli":
        p = th.sigmoid(dist_params[0])
        return lambda s: th.diag(p[s] * (1 - p[s]))

    def categorical_block(p):
        return th.diag(p) - th.outer(p, p)

    probs = dist_params[0].exp()
    if name == "categorical":
        return lambda s: categorical_block(probs[s])
    return lambda s: th.block_diag(*[categorical_block(b) for b in th.split(probs[s], SPLIT)])


SPLIT = [3, 2, 4]


def _make_case(kind):
    """A tiny tanh network feeding an SB3 distribution; returns (params_to_dist, params, family).

    ``params_to_dist`` maps parameter tensors to the distribution's parameters at a fixed batch of states.
    """
    gen = th.Generator().manual_seed(0)
    obs = th.randn(N_STATES, OBS_DIM, generator=gen, dtype=DTYPE)
    out_dim = {"gaussian": 2, "gsde": 2, "categorical": 4, "multicategorical": sum(SPLIT), "bernoulli": 3}[kind]
    w1 = th.randn(HIDDEN, OBS_DIM, generator=gen, dtype=DTYPE)
    w2 = th.randn(out_dim, HIDDEN, generator=gen, dtype=DTYPE) * 0.5
    b2 = th.randn(out_dim, generator=gen, dtype=DTYPE) * 0.1
    params = [w1, w2, b2]
    if kind == "gaussian":
        params.append(th.tensor([-0.3, 0.4], dtype=DTYPE))
        dist = DiagGaussianDistribution(2)
    elif kind == "gsde":
        params.append(th.randn(HIDDEN, 2, generator=gen, dtype=DTYPE) * 0.3)
        dist = StateDependentNoiseDistribution(2, learn_features=True)
        dist.latent_sde_dim = HIDDEN
    else:
        dist = {
            "categorical": CategoricalDistribution(out_dim),
            "multicategorical": MultiCategoricalDistribution(SPLIT),
            "bernoulli": BernoulliDistribution(out_dim),
        }[kind]

    def params_to_dist(tensors):
        hidden = th.tanh(obs @ tensors[0].T)
        out = hidden @ tensors[1].T + tensors[2]
        if kind == "gaussian":
            sb3_dist = dist.proba_distribution(out, tensors[3])
        elif kind == "gsde":
            sb3_dist = dist.proba_distribution(out, tensors[3], hidden)
        else:
            sb3_dist = dist.proba_distribution(action_logits=out)
        return family.params(sb3_dist)

    family = action_family(dist)
    return params_to_dist, params, family


def _product(make_product, params_to_dist, params, family, damping=0.0):
    leaves = [p.clone().requires_grad_(True) for p in params]
    return make_product(params_to_dist(tuple(leaves)), leaves, family, damping)


KINDS = ["gaussian", "gsde", "categorical", "multicategorical", "bernoulli"]


@pytest.mark.parametrize("kind", KINDS)
def test_products_match_explicit_fisher(kind):
    params_to_dist, params, family = _make_case(kind)
    dist_params = params_to_dist(tuple(params))
    # Explicit Jacobian of every state's flattened distribution parameters w.r.t. the flat parameters
    flat0 = flatten(params)

    def flat_dist(flat):
        return th.cat([t.reshape(N_STATES, -1) for t in params_to_dist(unflatten(flat, params))], dim=1)

    jac = th.autograd.functional.jacobian(flat_dist, flat0)  # (states, dist dims, params)
    block = _explicit_fisher_blocks(family.name, dist_params)
    fisher = sum(jac[s].T @ block(s) @ jac[s] for s in range(N_STATES)) / N_STATES

    damping = 0.05
    analytic = _product(analytic_fisher_product, params_to_dist, params, family, damping)
    reference = _product(autograd_fisher_product, params_to_dist, params, family, damping)
    gen = th.Generator().manual_seed(1)
    for _ in range(3):
        v = th.randn(flat0.numel(), generator=gen, dtype=DTYPE)
        expected = fisher @ v + damping * v
        th.testing.assert_close(analytic(v), expected, rtol=1e-10, atol=1e-12)
        th.testing.assert_close(reference(v), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_fisher_is_symmetric_positive_semidefinite(kind):
    params_to_dist, params, family = _make_case(kind)
    product = _product(analytic_fisher_product, params_to_dist, params, family)
    n = flatten(params).numel()
    fisher = th.stack([product(e) for e in th.eye(n, dtype=DTYPE)], dim=1)
    th.testing.assert_close(fisher, fisher.T, rtol=1e-10, atol=1e-12)
    assert th.linalg.eigvalsh(fisher).min() > -1e-10


def _torch_dists(kind, dist_params, split=SPLIT):
    d = th.distributions
    if kind in ("gaussian", "gsde"):
        mean, log_std = dist_params
        return [d.Normal(mean, log_std.exp())]
    if kind == "bernoulli":
        return [d.Bernoulli(logits=dist_params[0])]
    if kind == "categorical":
        return [d.Categorical(logits=dist_params[0])]
    return [d.Categorical(logits=b) for b in th.split(dist_params[0], split, dim=-1)]


@pytest.mark.parametrize("kind", KINDS)
def test_kl_is_closed_form_summed_over_dimensions(kind):
    params_to_dist, params, family = _make_case(kind)
    old = params_to_dist(tuple(params))
    gen = th.Generator().manual_seed(2)
    new = params_to_dist(tuple(p + 0.3 * th.randn(p.shape, generator=gen, dtype=DTYPE) for p in params))
    expected = 0
    for p, q in zip(_torch_dists(kind, old), _torch_dists(kind, new), strict=True):
        kl = th.distributions.kl_divergence(p, q)
        expected = expected + (kl.sum(dim=-1) if kl.dim() == 2 else kl)
    ours = family.kl(old, new)
    assert ours.shape == (N_STATES,)
    th.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-12)
    assert th.all(ours > 0)
    th.testing.assert_close(family.kl(old, old), th.zeros(N_STATES, dtype=DTYPE), rtol=0, atol=1e-12)


def test_gaussian_kl_is_action_dim_times_per_dimension_mean():
    """The true KL sums over dimensions: sb3-contrib's per-dimension mean is action_dim times smaller."""
    params_to_dist, params, family = _make_case("gaussian")
    old = params_to_dist(tuple(params))
    new = (old[0] + 0.1, old[1] - 0.2)
    per_dim = th.distributions.kl_divergence(
        th.distributions.Normal(old[0], old[1].exp()), th.distributions.Normal(new[0], new[1].exp())
    )
    np.testing.assert_allclose(family.kl(old, new).numpy(), (per_dim.mean(dim=-1) * 2).numpy(), rtol=1e-12)


def test_unsupported_distribution_names_the_class():
    class Strange:
        pass

    with pytest.raises(TypeError, match="Strange"):
        action_family(Strange())


# ------------------------------------------------------------------------------- property-based checks
FAMILIES = ["gaussian", "categorical", "multicategorical", "bernoulli"]


def _family(kind, dims):
    if kind == "gaussian":
        return action_family(DiagGaussianDistribution(dims[0]))
    if kind == "multicategorical":
        return action_family(MultiCategoricalDistribution(dims))
    if kind == "categorical":
        return action_family(CategoricalDistribution(dims[0]))
    return action_family(BernoulliDistribution(dims[0]))


def _normalise(kind, dims, params):
    """The family's parameters from unconstrained ones: logits become log-probabilities per categorical."""
    if kind in ("categorical", "multicategorical"):
        return (th.cat([th.log_softmax(block, dim=-1) for block in th.split(params[0], dims, dim=-1)], dim=-1),)
    return params


@st.composite
def family_cases(draw):
    """(kind, action dims, two parameter tuples at the same batch of states) in float64."""
    kind = draw(st.sampled_from(FAMILIES), label="kind")
    batch = draw(st.integers(1, 4), label="batch")
    if kind == "multicategorical":
        dims = draw(st.lists(st.integers(2, 4), min_size=1, max_size=3), label="dims")
    else:
        dims = [draw(st.integers(1 if kind != "categorical" else 2, 4), label="dim")]
    width = sum(dims)

    def values(low, high):
        elements = st.floats(low, high, allow_nan=False, allow_infinity=False)
        return th.from_numpy(draw(arrays(np.float64, (batch, width), elements=elements)))

    def params():
        if kind == "gaussian":
            return values(-10, 10), values(-4, 2)  # mean, log_std
        return (values(-15, 15),)  # logits

    return kind, dims, _normalise(kind, dims, params()), _normalise(kind, dims, params())


@settings(max_examples=150, deadline=None)
@given(family_cases())
def test_closed_form_kl_equals_torch_kl_on_random_parameters(case):
    kind, dims, old, new = case
    family = _family(kind, dims)
    expected = 0
    for p, q in zip(_torch_dists(kind, old, dims), _torch_dists(kind, new, dims), strict=True):
        kl = th.distributions.kl_divergence(p, q)
        expected = expected + (kl.sum(dim=-1) if kl.dim() == 2 else kl)
    ours = family.kl(old, new)
    assert ours.shape == expected.shape == (old[0].shape[0],)
    th.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-9)
    assert th.all(ours >= -1e-12)
    th.testing.assert_close(family.kl(old, old), th.zeros_like(ours), rtol=0, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(family_cases(), st.integers(0, 2**32 - 1))
def test_fisher_times_is_the_hessian_of_the_kl(case, seed):
    """``M`` of every family is the Hessian of ``new -> KL(at || new)`` at ``new = at`` (in the family's
    unconstrained parameters: logits before normalisation), checked by double backprop through the KL."""
    kind, dims, at, _ = case
    family = _family(kind, dims)
    gen = th.Generator().manual_seed(seed)
    tangent = tuple(th.randn(t.shape, generator=gen, dtype=DTYPE) for t in at)
    free = tuple(t.clone().requires_grad_(True) for t in at)  # log_softmax(at) == at: the same point
    kl = family.kl(at, _normalise(kind, dims, free)).sum()  # states are independent: per-state Hessians
    grads = th.autograd.grad(kl, free, create_graph=True)
    hessian_times = th.autograd.grad(sum((g * t).sum() for g, t in zip(grads, tangent)), free)
    for ours, expected in zip(family.fisher_times(at, tangent), hessian_times, strict=True):
        th.testing.assert_close(ours, expected, rtol=1e-7, atol=1e-9)


# ------------------------------------------------------------------- hand-derived product of plain MLP actors
def _mlp_case(action_space, policy_kwargs):
    import gymnasium as gym

    from sb3_trpo_ext import TRPO

    class _Env(gym.Env):
        observation_space = gym.spaces.Box(-1, 1, (5,), np.float32)

        def __init__(self):
            self.action_space = action_space

        def reset(self, *, seed=None, options=None):
            return self.observation_space.sample(), {}

        def step(self, action):
            return self.observation_space.sample(), 0.0, False, False, {}

    model = TRPO("MlpPolicy", _Env(), n_steps=8, batch_size=8, policy_kwargs=policy_kwargs, seed=0)
    generator = th.Generator().manual_seed(1)
    with th.no_grad():
        for param in model.policy.parameters():
            param.copy_(th.randn(param.shape, generator=generator) * 0.5)
    return model


@pytest.mark.parametrize(
    "action_space",
    [
        gym_spaces.Box(-1, 1, (3,), np.float32),
        gym_spaces.Discrete(4),
        gym_spaces.MultiDiscrete([3, 2]),
        gym_spaces.MultiBinary(3),
    ],
    ids=["gaussian", "categorical", "multicategorical", "bernoulli"],
)
@pytest.mark.parametrize(
    "policy_kwargs", [dict(net_arch=[16]), dict(net_arch=[7, 5], activation_fn=th.nn.ReLU), dict(net_arch=[])]
)
def test_mlp_fisher_product_equals_the_autograd_jacobian_product(action_space, policy_kwargs):
    from sb3_trpo_ext.fast.fisher import mlp_fisher_product
    from sb3_trpo_ext.fast.mlp import MlpSpec

    model = _mlp_case(action_space, policy_kwargs)
    obs = th.randn(50, 5, generator=th.Generator().manual_seed(2))
    distribution = model.policy.get_distribution(obs)
    family = action_family(distribution)
    params = model._actor_params
    reference = analytic_fisher_product(family.params(distribution), params, family, damping=0.1)
    spec = MlpSpec.actor(model.policy)
    linears, tanh = spec.linears, spec.tanh
    log_std = model.policy.log_std if isinstance(family, GaussianFamily) else None
    fast = mlp_fisher_product(linears, tanh, log_std, obs, params, family, damping=0.1)
    for seed in range(3):
        vector = th.randn(sum(p.numel() for p in params), generator=th.Generator().manual_seed(seed))
        th.testing.assert_close(fast(vector), reference(vector), rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------ layers that refuse a second derivative
class _FirstOrderTanh(th.autograd.Function):
    """tanh whose backward is computed on plain tensors: it gives first derivatives but its gradient has no graph
    (the way a fused kernel without a double-backward formula, or a numpy-backed layer, behaves)."""

    @staticmethod
    def forward(ctx, x):
        y = th.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        with th.no_grad():
            return grad * (1 - y.detach() ** 2)


class _OnceDifferentiableTanh(_FirstOrderTanh):
    """tanh marked ``once_differentiable`` (its gradient's graph ends in an error node off the path to the
    probes, which autograd skips: the same silent zero)."""

    @staticmethod
    @th.autograd.function.once_differentiable
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * (1 - y**2)


def _first_order_case(whole_network, layer=_FirstOrderTanh):
    """The gaussian case of :func:`_make_case` with its hidden tanh replaced by :class:`_FirstOrderTanh`; with
    ``whole_network`` the distribution parameters themselves pass through it (every parameter refuses)."""
    params_to_dist, params, family = _make_case("gaussian")
    gen = th.Generator().manual_seed(0)
    obs = th.randn(N_STATES, OBS_DIM, generator=gen, dtype=DTYPE)

    def first_order_params_to_dist(tensors):
        hidden = layer.apply(obs @ tensors[0].T)
        mean = hidden @ tensors[1].T + tensors[2]
        if whole_network:
            mean = layer.apply(mean)
        return mean, tensors[3].expand_as(mean)

    return first_order_params_to_dist, params, family


@pytest.mark.parametrize("layer", [_FirstOrderTanh, _OnceDifferentiableTanh], ids=["no-graph", "once-differentiable"])
@pytest.mark.parametrize("whole_network", [False, True], ids=["hidden-layer", "every-parameter"])
@pytest.mark.parametrize(
    "make_product", [analytic_fisher_product, autograd_fisher_product], ids=["analytic", "hessian"]
)
def test_a_layer_without_second_derivative_raises_instead_of_a_zero_fisher(make_product, whole_network, layer):
    """The generic routes differentiate a backward pass; a layer that refuses the second derivative used to give
    ``J v = 0`` for the parameters behind it (``F v = 0`` when it covers the whole network) without a word."""
    params_to_dist, params, family = _first_order_case(whole_network, layer)
    with pytest.raises(RuntimeError, match="second derivative"):
        product = _product(make_product, params_to_dist, params, family)
        product(th.ones(flatten(params).numel(), dtype=DTYPE))
