"""A functional LSTM over padded sequences, from an ``nn.LSTM``'s own weights.

Forward-mode AD does not go through torch's fused LSTM kernels (CPU: mkldnn's ``mkldnn_rnn_layer``; GPU:
cuDNN's ``_cudnn_rnn``: neither has a forward-mode formula), and cuDNN's has no double backward either. The
Fisher product of recurrent TRPO needs ``J v`` (:func:`sb3_trpo_ext.recurrent.policies.linearized_fisher_product`
pushes tangents through this LSTM's derivative), so it runs the actor's LSTM as the equations it computes: matmuls, sigmoid and tanh, which every device
differentiates in both modes. Rollouts and the surrogate keep the fused kernels; the two agree to float
precision (tested).
"""

from __future__ import annotations

import torch as th
from torch import nn

__all__ = ["LinearizedLSTM", "check_functional_lstm", "fused_sequence", "lstm_sequence"]


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
            "LSTMs without projections or dropout (proj_size=0, bidirectional=False, batch_first=False, dropout=0; "
            "dropout would make the surrogate and the trust region's KL check random)"
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


def fused_sequence(
    lstm: nn.LSTM,
    features: th.Tensor,
    lstm_states: tuple[th.Tensor, th.Tensor],
    episode_starts: th.Tensor,
) -> th.Tensor | None:
    """The LSTM output over padded sequences with one call of the fused kernel, when episodes start only at
    sequence starts (the layout of sb3-contrib's recurrent buffer, which cuts sequences at episode starts): the
    states of those sequences are zeroed before the call, which is what sb3-contrib's
    ``RecurrentActorCriticPolicy._process_sequence`` computes with one fused call per time step.

    :param lstm: the module (called as is, so its fused kernel runs)
    :param features: ``(n_seq * max_length, input_size)``, sequence by sequence
    :param lstm_states: hidden and cell states at the sequence starts, each ``(num_layers, n_seq, hidden_size)``
    :param episode_starts: ``(n_seq * max_length,)``, 1.0 where an episode starts
    :return: ``(n_seq * max_length, hidden_size)``, or None if an episode starts inside a sequence (the caller
        then takes the per-step route)
    """
    n_seq = lstm_states[0].shape[1]
    starts = episode_starts.reshape(n_seq, -1)
    if bool((starts[:, 1:] != 0).any()):
        return None
    keep = (1.0 - starts[:, 0]).view(1, n_seq, 1)
    sequence = features.reshape(n_seq, -1, lstm.input_size).transpose(0, 1)
    output, _ = lstm(sequence, (keep * lstm_states[0], keep * lstm_states[1]))
    return output.transpose(0, 1).reshape(-1, lstm.hidden_size)


class LinearizedLSTM:
    """The functional LSTM of :func:`lstm_sequence` linearized at the module's current weights: the forward pass
    runs once (at construction, without a graph) and keeps the gates; :meth:`jvp` then pushes tangents of the
    weights (and of the input features) through the recurrence written out by hand: per time step one matmul
    with ``weight_hh`` and elementwise products with the stored gate derivatives. It is the exact derivative of
    :func:`lstm_sequence` (tested against ``torch.func.jvp`` through it, 1e-12 in float64), with first
    derivatives only and no autograd, at about the cost of one forward pass per product; ``torch.func.jvp`` of
    the functional LSTM costs several times that (forward-mode AD of every small per-step operation).

    :param lstm: the module whose weights are read
    :param features: ``(n_seq * max_length, input_size)``, sequence by sequence
    :param lstm_states: hidden and cell states at the sequence starts, each ``(num_layers, n_seq, hidden_size)``
        (data: their tangents are zero)
    :param episode_starts: ``(n_seq * max_length,)``, 1.0 where an episode starts
    """

    def __init__(
        self,
        lstm: nn.LSTM,
        features: th.Tensor,
        lstm_states: tuple[th.Tensor, th.Tensor],
        episode_starts: th.Tensor,
    ):
        self.lstm = lstm
        self.n_seq = lstm_states[0].shape[1]
        self.hidden_size = lstm.hidden_size
        self.keep = (1.0 - episode_starts.reshape(self.n_seq, -1).transpose(0, 1)).unsqueeze(-1)  # (time, n_seq, 1)
        self._layers: list[dict[str, th.Tensor]] = []
        with th.no_grad():
            layer_input = features.detach().reshape(self.n_seq, -1, lstm.input_size).transpose(0, 1)
            for layer in range(lstm.num_layers):
                weight_ih = getattr(lstm, f"weight_ih_l{layer}").detach()
                weight_hh = getattr(lstm, f"weight_hh_l{layer}").detach()
                projected = layer_input @ weight_ih.T
                if lstm.bias:
                    projected = (
                        projected + (getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")).detach()
                    )
                hidden, cell = lstm_states[0][layer].detach(), lstm_states[1][layer].detach()
                previous_hidden, previous_cell, gates, cell_tanhs, outputs = [], [], [], [], []
                for step in range(projected.shape[0]):
                    hidden, cell = hidden * self.keep[step], cell * self.keep[step]
                    previous_hidden.append(hidden)
                    previous_cell.append(cell)
                    pre = projected[step] + hidden @ weight_hh.T
                    in_gate, forget_gate, cell_gate, out_gate = pre.chunk(4, dim=-1)
                    activated = th.cat(
                        [th.sigmoid(in_gate), th.sigmoid(forget_gate), th.tanh(cell_gate), th.sigmoid(out_gate)],
                        dim=-1,
                    )
                    gates.append(activated)
                    i, f, g, o = activated.chunk(4, dim=-1)
                    cell = f * cell + i * g
                    cell_tanh = th.tanh(cell)
                    hidden = o * cell_tanh
                    cell_tanhs.append(cell_tanh)
                    outputs.append(hidden)
                acts = th.stack(gates)  # (time, n_seq, 4 * hidden): i, f, g, o
                i, f, g, o = acts.chunk(4, dim=-1)
                tanh_c = th.stack(cell_tanhs)
                self._layers.append(
                    {
                        "input": layer_input,
                        "weight_ih": weight_ih,
                        "weight_hh": weight_hh,
                        "previous_hidden": th.stack(previous_hidden),
                        # d(activation)/d(pre-activation) of the four gates, side by side as in ``acts``
                        "slopes": th.cat([i * (1 - i), f * (1 - f), 1 - g * g, o * (1 - o)], dim=-1),
                        "previous_cell": th.stack(previous_cell),
                        "i": i,
                        "f": f,
                        "g": g,
                        "o_dtanh": o * (1 - tanh_c * tanh_c),
                        "tanh_c": tanh_c,
                    }
                )
                layer_input = th.stack(outputs)
        self.output = layer_input.transpose(0, 1).reshape(-1, lstm.hidden_size)

    def jvp(self, weight_tangents: dict[str, th.Tensor], features_tangent: th.Tensor | None = None) -> th.Tensor:
        """``d output`` for tangents of the weights and of the input features.

        :param weight_tangents: tangents by parameter name (``weight_ih_l0``, ...); a missing name has tangent zero
        :param features_tangent: tangent of the features, shaped like them, or None for zero
        :return: ``(n_seq * max_length, hidden_size)``, the tangent of the last layer's hidden states
        """
        lstm = self.lstm
        tangent_input = None
        if features_tangent is not None:
            tangent_input = features_tangent.reshape(self.n_seq, -1, lstm.input_size).transpose(0, 1)
        with th.no_grad():
            for layer, saved in enumerate(self._layers):
                d_ih = weight_tangents.get(f"weight_ih_l{layer}")
                d_hh = weight_tangents.get(f"weight_hh_l{layer}")
                # the parts of d(pre-activation) known for all steps at once
                drive = th.zeros(saved["slopes"].shape, dtype=saved["slopes"].dtype, device=saved["slopes"].device)
                if d_ih is not None:
                    drive = drive + saved["input"] @ d_ih.T
                if tangent_input is not None:
                    drive = drive + tangent_input @ saved["weight_ih"].T
                if d_hh is not None:
                    drive = drive + saved["previous_hidden"] @ d_hh.T
                for name in (f"bias_ih_l{layer}", f"bias_hh_l{layer}"):
                    if name in weight_tangents:
                        drive = drive + weight_tangents[name]
                weight_hh_t = saved["weight_hh"].T
                keep, slopes = self.keep, saved["slopes"]
                i, f, g, o_dtanh, tanh_c = saved["i"], saved["f"], saved["g"], saved["o_dtanh"], saved["tanh_c"]
                previous_cell = saved["previous_cell"]
                hidden = th.zeros_like(saved["previous_hidden"][0])
                cell = th.zeros_like(hidden)
                outputs = []
                for step in range(drive.shape[0]):
                    hidden, cell = hidden * keep[step], cell * keep[step]
                    d_gates = (drive[step] + hidden @ weight_hh_t) * slopes[step]
                    d_i, d_f, d_g, d_o = d_gates.chunk(4, dim=-1)
                    cell = d_f * previous_cell[step] + f[step] * cell + d_i * g[step] + i[step] * d_g
                    hidden = d_o * tanh_c[step] + o_dtanh[step] * cell
                    outputs.append(hidden)
                tangent_input = th.stack(outputs)
        assert tangent_input is not None
        return tangent_input.transpose(0, 1).reshape(-1, lstm.hidden_size)
