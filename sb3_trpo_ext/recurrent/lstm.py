"""A functional LSTM over padded sequences, from an ``nn.LSTM``'s own weights.

Forward-mode AD does not go through torch's fused LSTM kernels (CPU: mkldnn's ``mkldnn_rnn_layer``; GPU:
cuDNN's ``_cudnn_rnn``: neither has a forward-mode formula), and cuDNN's has no double backward either. The
Fisher product of recurrent TRPO needs ``J v`` (:func:`sb3_trpo_ext.common.fisher.forward_mode_fisher_product`),
so it runs the actor's LSTM as the equations it computes: matmuls, sigmoid and tanh, which every device
differentiates in both modes. Rollouts and the surrogate keep the fused kernels; the two agree to float
precision (tested).
"""

from __future__ import annotations

import torch as th
from torch import nn

__all__ = ["check_functional_lstm", "lstm_sequence"]


def check_functional_lstm(lstm: nn.LSTM) -> None:
    """Raise ``ValueError`` if :func:`lstm_sequence` does not compute what ``lstm`` computes.

    :param lstm: the module
    :raises ValueError: naming the unsupported setting (projections, bidirectional, ``batch_first``, dropout)
    """
    unsupported = {
        "proj_size": lstm.proj_size != 0,
        "bidirectional": lstm.bidirectional,
        "batch_first": lstm.batch_first,  # sb3-contrib's sequences are time-major
        "dropout": lstm.dropout != 0,  # random between layers: the trust-region check must be deterministic
    }
    bad = [f"{name}={getattr(lstm, name)!r}" for name, is_bad in unsupported.items() if is_bad]
    if bad:
        raise ValueError(
            f"Unsupported LSTM setting {', '.join(bad)} in lstm_kwargs: RecurrentTRPO supports unidirectional "
            "LSTMs without projections or dropout (proj_size=0, bidirectional=False, batch_first=False, dropout=0)"
        )


def lstm_sequence(
    lstm: nn.LSTM,
    features: th.Tensor,
    lstm_states: tuple[th.Tensor, th.Tensor],
    episode_starts: th.Tensor,
) -> th.Tensor:
    """The LSTM output over padded sequences, as sb3-contrib's ``RecurrentActorCriticPolicy._process_sequence``
    computes it with the fused kernel: the states are reset to zero at every episode start, in every layer.

    Layer by layer: the input projection of a layer is one matmul over all time steps, then a loop over time
    (the recurrence).

    :param lstm: the module whose weights are read (``weight_ih_l{k}``, ``weight_hh_l{k}``, biases if any)
    :param features: ``(n_seq * max_length, input_size)``, sequence by sequence
    :param lstm_states: hidden and cell states at the sequence starts, each ``(num_layers, n_seq, hidden_size)``
    :param episode_starts: ``(n_seq * max_length,)``, 1.0 where an episode starts
    :return: ``(n_seq * max_length, hidden_size)``, the last layer's hidden state at every step
    """
    hidden_states, cell_states = lstm_states
    n_seq = hidden_states.shape[1]
    layer_input = features.reshape(n_seq, -1, lstm.input_size).transpose(0, 1)  # (time, n_seq, input)
    keep = (1.0 - episode_starts.reshape(n_seq, -1).transpose(0, 1)).unsqueeze(-1)  # (time, n_seq, 1)
    for layer in range(lstm.num_layers):
        weight_ih = getattr(lstm, f"weight_ih_l{layer}")
        weight_hh = getattr(lstm, f"weight_hh_l{layer}")
        projected = layer_input @ weight_ih.T
        if lstm.bias:
            projected = projected + (getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}"))
        hidden, cell = hidden_states[layer], cell_states[layer]
        outputs = []
        for step in range(projected.shape[0]):
            hidden, cell = hidden * keep[step], cell * keep[step]
            in_gate, forget_gate, cell_gate, out_gate = (projected[step] + hidden @ weight_hh.T).chunk(4, dim=-1)
            cell = th.sigmoid(forget_gate) * cell + th.sigmoid(in_gate) * th.tanh(cell_gate)
            hidden = th.sigmoid(out_gate) * th.tanh(cell)
            outputs.append(hidden)
        layer_input = th.stack(outputs)
    return layer_input.transpose(0, 1).reshape(-1, lstm.hidden_size)
