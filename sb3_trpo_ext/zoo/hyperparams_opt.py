"""Optuna: the sampler and the converter of our keys (the Zoo's ``HYPERPARAMS_SAMPLER`` / ``HYPERPARAMS_CONVERTER``)."""

from __future__ import annotations

from typing import Any

__all__ = [
    "convert_ppo_mask_params",
    "convert_trpo_ext_params",
    "convert_trpo_lstm_params",
    "convert_trpo_vine_params",
    "sample_ppo_mask_params",
    "sample_trpo_ext_params",
    "sample_trpo_lstm_params",
    "sample_trpo_vine_params",
]

#: Vine's own arguments: sampled as they are, passed as they are.
_VINE_CHOICES = {"vine_n_states": [16, 32, 64, 128], "vine_n_actions": [2, 4, 8], "vine_horizon": [10, 20, 50, 100]}


def sample_trpo_ext_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
    """Optuna sampler for our TRPO (the Zoo's ``HYPERPARAMS_SAMPLER`` signature).

    Only valid combinations are sampled, whatever ``n_envs``: the critic's minibatch is
    ``batch_size = n_steps / 2**critic_minibatches_pow`` (at least 32), so ``batch_size <= n_steps <=
    n_steps * n_envs`` always holds. ``target_kl`` is sampled on our true-KL scale (the KL of the whole
    action distribution, summed over action dimensions), log-uniform in [1e-3, 0.2].

    :param trial: the Optuna trial
    :param n_actions: action dimension for ``Box`` action spaces (0 otherwise); unused
    :param n_envs: number of training environments; unused, the sampled combination is valid for any
    :param additional_args: the Zoo's extra arguments (HER settings); unused
    :return: hyperparameters for :class:`sb3_trpo_ext.TRPO`
    """
    params = {
        "n_steps_pow": trial.suggest_int("n_steps_pow", 5, 12),
        "critic_minibatches_pow": trial.suggest_int("critic_minibatches_pow", 0, 6),
        "one_minus_gamma": trial.suggest_float("one_minus_gamma", 1e-4, 0.03, log=True),
        "one_minus_gae_lambda": trial.suggest_float("one_minus_gae_lambda", 1e-4, 0.1, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 3e-3, log=True),
        "n_critic_updates": trial.suggest_int("n_critic_updates", 5, 30),
        "cg_max_steps": trial.suggest_int("cg_max_steps", 5, 30),
        "cg_damping": trial.suggest_float("cg_damping", 1e-3, 0.3, log=True),
        "target_kl": trial.suggest_float("target_kl", 1e-3, 0.2, log=True),
        "net_arch": trial.suggest_categorical("net_arch", ["small", "medium"]),
        "activation_fn": trial.suggest_categorical("activation_fn", ["tanh", "relu"]),
    }
    hyperparams = convert_trpo_ext_params(params)
    # Display the true values in the study (as the Zoo's own samplers do)
    for key in ("gamma", "gae_lambda", "n_steps", "batch_size"):
        trial.set_user_attr(key, hyperparams[key])
    return hyperparams


def convert_trpo_ext_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """Turn the raw parameters of a trial (as stored by Optuna) into our TRPO's hyperparameters.

    Registered in the Zoo's ``HYPERPARAMS_CONVERTER`` (``train --storage ... --study-name ... --trial-id N``).

    :param sampled_params: ``trial.params`` of a trial sampled by :func:`sample_trpo_ext_params`
    :return: hyperparameters for :class:`sb3_trpo_ext.TRPO`
    """
    from rl_zoo3.hyperparams_opt import convert_onpolicy_params

    params = dict(sampled_params)
    minibatches_pow = params.pop("critic_minibatches_pow")
    hyperparams = convert_onpolicy_params(params)  # gamma, gae_lambda, n_steps, net_arch, activation_fn
    hyperparams["batch_size"] = 2 ** max(params["n_steps_pow"] - minibatches_pow, 5)
    return hyperparams


def sample_trpo_vine_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
    """Optuna sampler for the ``trpo_vine`` key: :func:`sample_trpo_ext_params` plus vine's rollout-set size,
    actions per state and branch horizon (``sampling="vine"`` comes from the key's class).

    :return: hyperparameters for :class:`sb3_trpo_ext.TRPO` with vine sampling
    """
    hyperparams = sample_trpo_ext_params(trial, n_actions, n_envs, additional_args)
    for key, choices in _VINE_CHOICES.items():
        hyperparams[key] = trial.suggest_categorical(key, choices)
    return hyperparams


def convert_trpo_vine_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """The ``trpo_vine`` counterpart of :func:`convert_trpo_ext_params` (the vine values pass as they are)."""
    vine = {key: sampled_params[key] for key in _VINE_CHOICES}
    common = {key: value for key, value in sampled_params.items() if key not in _VINE_CHOICES}
    return {**convert_trpo_ext_params(common), **vine}


#: ``trpo_lstm``'s sampled values with a fixed list of choices (each list includes the derived blocks' values).
_LSTM_CHOICES: dict[str, list[Any]] = {
    "lstm_hidden_size": [16, 32, 64, 128],
    "gae_lambda": [0.8, 0.9, 0.92, 0.95, 0.98, 0.99, 1.0],
}


def sample_trpo_lstm_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
    """Optuna sampler for ``trpo_lstm`` (:class:`sb3_trpo_ext.RecurrentTRPO`).

    Samples what the recurrent update is sensitive to and keeps the rest of the block: the LSTM's size (merged
    into the block's ``policy_kwargs`` by our Zoo command, so ``net_arch``, ``activation_fn``, ``ortho_init``
    and the critic's LSTM stay), ``target_kl`` (true-KL scale, log-uniform in [1e-3, 0.1]), ``cg_damping``,
    ``gae_lambda``, ``n_steps`` (32-1024 per environment), the critic's epochs and minibatch size, and its
    learning rate. Every range includes the values of the derived blocks (``hyperparams/trpo_lstm.yml``).
    ``gamma`` and ``n_envs`` are the block's. As for :func:`sample_trpo_ext_params`, ``batch_size`` divides
    ``n_steps`` (at least 32), so every combination is valid for any ``n_envs``.

    :param trial: the Optuna trial
    :param n_actions: unused (the Zoo's signature)
    :param n_envs: unused, the sampled combination is valid for any
    :param additional_args: unused (the Zoo's signature)
    :return: hyperparameters for :class:`sb3_trpo_ext.RecurrentTRPO`
    """
    params = {
        "n_steps_pow": trial.suggest_int("n_steps_pow", 5, 10),
        "critic_minibatches_pow": trial.suggest_int("critic_minibatches_pow", 0, 3),
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 3e-3, log=True),
        "n_critic_updates": trial.suggest_int("n_critic_updates", 5, 30),
        "cg_damping": trial.suggest_float("cg_damping", 1e-3, 0.3, log=True),
        "target_kl": trial.suggest_float("target_kl", 1e-3, 0.1, log=True),
        **{key: trial.suggest_categorical(key, choices) for key, choices in _LSTM_CHOICES.items()},
    }
    hyperparams = convert_trpo_lstm_params(params)
    for key in ("n_steps", "batch_size"):
        trial.set_user_attr(key, hyperparams[key])
    return hyperparams


def convert_trpo_lstm_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """Turn the raw parameters of a :func:`sample_trpo_lstm_params` trial into RecurrentTRPO's hyperparameters
    (the Zoo's ``HYPERPARAMS_CONVERTER`` for ``--trial-id``). ``policy_kwargs`` holds only the LSTM's size: our
    Zoo command merges it into the block's.
    """
    params = dict(sampled_params)
    n_steps_pow = params.pop("n_steps_pow")
    minibatches_pow = params.pop("critic_minibatches_pow")
    lstm_hidden_size = params.pop("lstm_hidden_size")
    return {
        **params,
        "n_steps": 2**n_steps_pow,
        "batch_size": 2 ** max(n_steps_pow - minibatches_pow, 5),
        "policy_kwargs": {"lstm_hidden_size": lstm_hidden_size},
    }


def sample_ppo_mask_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
    """Optuna sampler of the ``ppo_mask`` key: the Zoo's PPO sampler (MaskablePPO takes PPO's arguments).

    :param trial: the Optuna trial
    :param n_actions: action dimension (``Box`` only; 0 otherwise)
    :param n_envs: number of training environments
    :param additional_args: the Zoo's extra arguments
    :return: hyperparameters for sb3-contrib's ``MaskablePPO``
    """
    from rl_zoo3.hyperparams_opt import sample_ppo_params

    return sample_ppo_params(trial, n_actions, n_envs, additional_args)


def convert_ppo_mask_params(sampled_params: dict[str, Any]) -> dict[str, Any]:
    """The ``ppo_mask`` converter: the Zoo's on-policy converter (as for ``ppo``).

    :param sampled_params: ``trial.params`` of a trial sampled by :func:`sample_ppo_mask_params`
    :return: hyperparameters for sb3-contrib's ``MaskablePPO``
    """
    from rl_zoo3.hyperparams_opt import convert_onpolicy_params

    return convert_onpolicy_params(sampled_params)
