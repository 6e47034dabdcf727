"""Member building blocks: WavLM layer mix, prediction heads, and the three aggregators.

The paper names three aggregation strategies but its section defining them (III-B) could not be read,
and the released code implements only the first. ``mlp`` is the released one (mean-pool -> L2 -> concat
-> heads); ``blstm-t`` (a BLSTM over time on frame features aligned to one step grid) and ``blstm-e``
(a BLSTM across the per-encoder embeddings) are OUR RECONSTRUCTION from the figure caption, not the
paper's verified definitions.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmmos.models.fusion import l2_normalize, masked_mean


def make_head(in_dim: int, n_layers: int, hidden: int | None, layer_norm: bool) -> nn.Sequential:
    """One axis head; with ``hidden=None`` it is Audiobox's ``create_mlp_block(in_dim, 1, n_layers, "gelu", ln)``.

    Layout (and so state-dict indices) matches Audiobox: ``n_layers - 1`` times Linear [LayerNorm] GELU,
    then Linear(width, 1). ``hidden`` sets the inner width instead of ``in_dim``.
    """
    if n_layers < 1:
        raise ValueError(f"head_layers must be >= 1, got {n_layers}.")
    width = in_dim if hidden is None else hidden
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(n_layers - 1):
        layers.append(nn.Linear(d, width))
        if layer_norm:
            layers.append(nn.LayerNorm(width))
        layers.append(nn.GELU())
        d = width
    layers.append(nn.Linear(d, 1))
    return nn.Sequential(*layers)


class LayerMix(nn.Module):
    """Softmax-weighted sum over WavLM's hidden states: one weight vector (``shared``) or one per axis.

    ``weight`` is ``[L]`` (shared, MMMOS) or ``[4, L]`` (per-axis, Audiobox). Initialised uniform.
    """

    def __init__(self, n_layers: int, per_axis: bool) -> None:
        super().__init__()
        self.per_axis = per_axis
        shape = (4, n_layers) if per_axis else (n_layers,)
        self.weight = nn.Parameter(torch.zeros(shape))

    def forward(self, x: Tensor) -> Tensor:
        """Mix ``x [B, L, ...]``: shared -> ``[B, ...]``; per-axis -> ``[B, 4, ...]``."""
        w = torch.softmax(self.weight, dim=-1)
        tail = [1] * (x.dim() - 2)
        # Broadcast-multiply-sum rather than einsum with an ellipsis: plain Mul/ReduceSum in ONNX.
        if self.per_axis:
            return (x.unsqueeze(1) * w.reshape([1, 4, w.shape[-1], *tail])).sum(dim=2)
        return (x * w.reshape([1, w.shape[-1], *tail])).sum(dim=1)


class MaskedBLSTM(nn.Module):
    """Bidirectional LSTM over ``[B, T, in_dim]`` that honours a prefix step mask exactly, and exports to ONNX.

    Forward direction: a plain LSTM over the zero-masked sequence (causal, so valid outputs never see the
    padding). Backward direction: each row is reversed within its valid prefix by a gather, run through a
    second forward LSTM, and gathered back (the permutation is its own inverse). No PackedSequence, so the
    graph is two ONNX LSTM nodes plus Gathers. Outputs ``[B, T, 2 * half]``; values at padded steps are
    meaningless and must be masked by the caller.
    """

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        if hidden % 2:
            raise ValueError(f"the BLSTM width must be even (hidden/2 per direction), got {hidden}.")
        self.fwd = nn.LSTM(in_dim, hidden // 2, batch_first=True)
        self.bwd = nn.LSTM(in_dim, hidden // 2, batch_first=True)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """``x [B, T, in_dim]``, ``mask [B, T]`` (1 = valid, a prefix per row) -> ``[B, T, hidden]``."""
        m = mask.to(x.dtype)
        x = x * m.unsqueeze(-1)
        out_f, _ = self.fwd(x)
        n_valid = m.sum(dim=1, keepdim=True).to(torch.int64)  # [B, 1]
        t = torch.arange(x.shape[1], device=x.device, dtype=torch.int64).unsqueeze(0)  # [1, T]
        # Within the valid prefix t -> n-1-t; padded steps stay where they are.
        idx = torch.where(t < n_valid, n_valid - 1 - t, t)  # [B, T]
        gather_idx = idx.unsqueeze(-1).expand(-1, -1, x.shape[2])
        out_b, _ = self.bwd(torch.gather(x, 1, gather_idx))
        out_b = torch.gather(out_b, 1, idx.unsqueeze(-1).expand(-1, -1, out_b.shape[2]))
        return torch.cat([out_f, out_b], dim=-1)


class MLPAggregator(nn.Module):
    """``mlp`` (the released MMMOS code): concat of the used encoders' normalised pooled vectors.

    Input: one tensor per used encoder, ``[B, D_e]`` or ``[B, 4, D_e]`` (per-axis WavLM mix); output
    ``[B, sum D_e]`` or ``[B, 4, sum D_e]`` (the other encoders are broadcast over the axis dim).
    """

    def __init__(self, in_dims: list[int]) -> None:
        super().__init__()
        self.out_dim = sum(in_dims)

    def forward(self, vectors: list[Tensor]) -> Tensor:
        """Concatenate, broadcasting ``[B, D]`` against ``[B, 4, D]`` when a per-axis vector is present."""
        if any(v.dim() == 3 for v in vectors):
            vectors = [v if v.dim() == 3 else v.unsqueeze(1).expand(-1, 4, -1) for v in vectors]
        return torch.cat(vectors, dim=-1)


class BLSTMTimeAggregator(nn.Module):
    """``blstm-t`` (our reconstruction): per step concat of normalised frame vectors -> Linear -> BLSTM -> mean.

    Input: per used encoder ``[B, S, D_e]`` (already layer-mixed, not normalised) and a step mask
    ``[B, S]``; each step vector is L2-normalised per encoder, concatenated, projected to ``hidden``,
    run through ``MaskedBLSTM`` and mean-pooled over valid steps -> ``[B, hidden]``.
    """

    def __init__(self, in_dims: list[int], hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(sum(in_dims), hidden)
        self.blstm = MaskedBLSTM(hidden, hidden)
        self.out_dim = hidden

    def forward(self, frames: list[Tensor], step_mask: Tensor) -> Tensor:
        """See the class docstring."""
        x = torch.cat([l2_normalize(f) for f in frames], dim=-1)
        y = self.blstm(self.proj(x), step_mask)
        return masked_mean(y, step_mask)


class BLSTMEncoderAggregator(nn.Module):
    """``blstm-e`` (our reconstruction): a BLSTM across the per-encoder embeddings as a sequence.

    Each used encoder's normalised pooled vector ``[B, D_e]`` is projected by its own Linear to ``hidden``;
    the ``E`` projections form a sequence ``[B, E, hidden]`` -> BLSTM (hidden/2 per direction) -> mean over
    the ``E`` steps -> ``[B, hidden]``.
    """

    def __init__(self, in_dims: list[int], hidden: int) -> None:
        super().__init__()
        if hidden % 2:
            raise ValueError(f"the BLSTM width must be even (hidden/2 per direction), got {hidden}.")
        self.projs = nn.ModuleList([nn.Linear(d, hidden) for d in in_dims])
        self.blstm = nn.LSTM(hidden, hidden // 2, batch_first=True, bidirectional=True)
        self.out_dim = hidden

    def forward(self, vectors: list[Tensor]) -> Tensor:
        """See the class docstring."""
        seq = torch.stack([p(v) for p, v in zip(self.projs, vectors, strict=True)], dim=1)
        y, _ = self.blstm(seq)
        return y.mean(dim=1)
