"""A numpy copy of an MLP actor for collection.

Collection calls the actor once per environment step, where a small network's cost in torch is call overhead
(tensor creation, module dispatch, SB3's distribution objects), not arithmetic. :class:`NumpyActor` is a
snapshot of the actor's weights taken at the start of a rollout that evaluates the same layers in numpy and
draws actions with a numpy generator. It is picklable (plain arrays), so it can
travel to worker processes. Values and log-probabilities are still computed by the policy, in torch, in one
batch after the rollout.

Where the numpy copy does not apply but the policy computes its actor with SB3's own methods (CNN policies, other
features extractors), :class:`TorchHeadActor` computes the head in torch and draws with the same numpy routine and
generator: the random draws do not depend on which class computed the same function (a ``MultiInputPolicy`` on a
Dict of vectors, an ``MlpPolicy`` on the same vector flattened, or one with a features extractor of its own).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.utils import obs_as_tensor

from sb3_trpo_ext.common.sampling import draw_actions
from sb3_trpo_ext.fast.mlp import (
    PLAIN_DISTRIBUTIONS,
    MlpSpec,
    masked_logits,
    numpy_forward,
    numpy_input,
    to_numpy,
    uses_sb3_methods,
)


@dataclass
class NumpyActor:
    """The actor ``obs -> action distribution parameters`` as numpy arrays, and sampling from it.

    :param weights: ``(W, b)`` of every Linear layer, the action head last (``W`` transposed: ``x @ W + b``)
    :param activations: ``"tanh"`` or ``"relu"`` after each Linear layer but the head
    :param family: ``"gaussian"``, ``"categorical"``, ``"multicategorical"`` or ``"bernoulli"``
    :param std: the Gaussian's standard deviations (``exp(log_std)``), else None
    :param action_dims: the sizes of a multi-categorical's blocks, else None
    :param keys: for a ``Dict`` observation, its entries in the order SB3's ``CombinedExtractor`` concatenates
        them (flattened), else None
    :param one_hot: for a ``Discrete`` / ``MultiDiscrete`` observation, its categories (one-hot encoded), else None
    """

    weights: list[tuple[np.ndarray, np.ndarray]]
    activations: list[str]
    family: str
    std: np.ndarray | None = None
    action_dims: list[int] | None = None
    keys: list[str] | None = None
    #: with ``std`` None: a view of the Gaussian's ``log_std`` (see :meth:`from_policy`'s ``share_memory``)
    log_std: np.ndarray | None = None
    one_hot: tuple[int, ...] | None = None

    @classmethod
    def from_policy(cls, policy: ActorCriticPolicy, share_memory: bool = False) -> NumpyActor | None:
        """A snapshot of ``policy``'s actor, or None where numpy would not compute exactly what the policy does
        (see :meth:`sb3_trpo_ext.fast.mlp.MlpSpec.read`; gSDE, squashed and other distributions).

        :param share_memory: views of the parameters instead of copies (CPU float32 parameters only, else None):
            in-place updates of the parameters (optimizer steps, ``load_state_dict``) show through, so the actor
            never goes stale while the parameter tensors stay the same; for ``predict``
        """
        spec = MlpSpec.actor(policy, dict_observations=True)
        if spec is None:
            return None
        family = spec.family
        assert family is not None
        activations = ["tanh" if is_tanh else "relu" for is_tanh in spec.tanh]
        if not share_memory:
            return cls(
                spec.numpy_weights(), activations, family, *_draw_params(policy, family), spec.keys, None, spec.one_hot
            )
        parameters = [t for layer in spec.linears for t in (layer.weight, layer.bias)]
        if family == "gaussian":
            parameters.append(policy.log_std)
        if not all(t.device.type == "cpu" and t.dtype == th.float32 for t in parameters):
            return None
        log_std = policy.log_std.detach().numpy() if family == "gaussian" else None
        action_dims = _draw_params(policy, family)[1]
        return cls(
            spec.numpy_weights(share_memory=True),
            activations,
            family,
            None,
            action_dims,
            spec.keys,
            log_std,
            spec.one_hot,
        )

    def distribution_params(self, obs: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        """The head's output for a batch of observations: the Gaussian's mean, or the logits."""
        return numpy_forward(self.weights, self.activations, numpy_input(obs, self.keys, self.one_hot))

    def sample(
        self, obs: np.ndarray | dict[str, np.ndarray], rng: np.random.Generator, action_masks: np.ndarray | None = None
    ) -> np.ndarray:
        """Actions for a batch of observations, drawn with ``rng`` (int64 for discrete families, else float32);
        with ``action_masks`` (True where valid; categorical families), invalid actions are never drawn."""
        std = self.std if self.std is not None or self.log_std is None else np.exp(self.log_std)
        params = masked_logits(self.distribution_params(obs), action_masks)
        return draw_actions(self.family, params, std, self.action_dims, rng)

    def mode(self, obs: np.ndarray | dict[str, np.ndarray], action_masks: np.ndarray | None = None) -> np.ndarray:
        """The deterministic actions SB3's distributions give (``mode()``): the Gaussian's mean, the most likely
        (valid) category of each block, a Bernoulli's 1 where its probability is above 1/2."""
        params = masked_logits(self.distribution_params(obs), action_masks)
        if self.family == "gaussian":
            return params
        if self.family == "bernoulli":  # torch.round(p) rounds 1/2 to 0: 1 exactly where the logit is > 0
            return (params > 0).astype(np.float32)
        if self.family == "categorical":
            return params.argmax(axis=1)
        assert self.action_dims is not None  # multicategorical
        blocks = np.split(params, np.cumsum(self.action_dims)[:-1], axis=1)
        return np.stack([block.argmax(axis=1) for block in blocks], axis=1)


@dataclass
class TorchHeadActor:
    """The actor's head computed by the policy's own (SB3) modules in torch, the actions drawn in numpy exactly as
    :class:`NumpyActor` draws them: for SB3's policies that the numpy copy does not cover (CNNs, image or
    discrete Dict entries, other features extractors), so that their draws come from the model's generator too.

    :param policy: a policy that uses SB3's own methods with a distribution of :data:`PLAIN_DISTRIBUTIONS`
    :param family: its distribution family
    :param std: the Gaussian's standard deviations (snapshot at the start of the rollout), else None
    :param action_dims: the sizes of a multi-categorical's blocks, else None
    """

    policy: ActorCriticPolicy
    family: str
    std: np.ndarray | None = None
    action_dims: list[int] | None = None

    @classmethod
    def from_policy(cls, policy: ActorCriticPolicy) -> TorchHeadActor | None:
        """The torch head of ``policy``, or None where the policy computes its actions otherwise (methods of its
        own, gSDE, other distributions, no ``action_net``)."""
        family = PLAIN_DISTRIBUTIONS.get(type(policy.action_dist))
        if family is None or not uses_sb3_methods(policy) or not hasattr(policy, "action_net"):
            return None
        return cls(policy, family, *_draw_params(policy, family))

    def distribution_params(self, obs: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        """The head's output, as SB3's ``get_distribution`` computes it before building the distribution."""
        policy = self.policy
        with th.no_grad():
            tensor = obs_as_tensor(obs, policy.device)
            features = BasePolicy.extract_features(policy, tensor, policy.pi_features_extractor)
            head = policy.action_net(policy.mlp_extractor.forward_actor(features))
        return head.cpu().numpy()

    def sample(
        self, obs: np.ndarray | dict[str, np.ndarray], rng: np.random.Generator, action_masks: np.ndarray | None = None
    ) -> np.ndarray:
        """Actions for a batch of observations, drawn with ``rng`` as :meth:`NumpyActor.sample` draws them."""
        params = masked_logits(self.distribution_params(obs), action_masks)
        return draw_actions(self.family, params, self.std, self.action_dims, rng)


def collection_actor(policy: ActorCriticPolicy) -> NumpyActor | TorchHeadActor | None:
    """What fast collection samples with: the numpy copy of the actor where it applies, else the policy's torch
    head with the same numpy draws, else None (the policy samples through its own ``forward``, or gSDE)."""
    numpy_actor = NumpyActor.from_policy(policy)
    return numpy_actor if numpy_actor is not None else TorchHeadActor.from_policy(policy)


class SharedActorCache:
    """The numpy actor of ``predict`` (a :class:`NumpyActor` sharing the parameters' memory) for one policy, and
    whether it still describes it: the same policy, the same action head module, the same parameter tensors on
    the same storage (in-place updates show through the shared memory and need no rebuild; a ``load``, a new
    head or a parameter given new storage rebuild it). A few attribute reads: it runs on every ``predict``."""

    def __init__(self, policy: ActorCriticPolicy):
        self.policy, self.head = policy, getattr(policy, "action_net", None)
        self.actor = NumpyActor.from_policy(policy, share_memory=True)
        self.tensors = [t for t in policy.parameters()]
        self.pointers = [t.data_ptr() for t in self.tensors]

    def valid_for(self, policy: ActorCriticPolicy) -> bool:
        """Whether the cached actor still computes ``policy``'s actor."""
        return (
            policy is self.policy
            and getattr(policy, "action_net", None) is self.head
            and all(t.data_ptr() == pointer for t, pointer in zip(self.tensors, self.pointers))
        )


def _draw_params(policy: ActorCriticPolicy, family: str) -> tuple[np.ndarray | None, list[int] | None]:
    std = to_numpy(policy.log_std.exp()) if family == "gaussian" else None
    action_dims = list(policy.action_dist.action_dims) if family == "multicategorical" else None  # type: ignore[attr-defined]  # on MultiCategoricalDistribution only
    return std, action_dims
