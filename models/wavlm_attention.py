"""WavLM transformer layer with gated relative position bias, written for ONNX export.

Parameter names follow Microsoft unilm / Audiobox (`self_attn.{q,k,v,out}_proj`, `grep_linear`, `grep_a`,
`relative_attention_bias`, `self_attn_layer_norm`, `fc1`, `fc2`, `final_layer_norm`) so their state dicts load
with `strict=True`. The maths is the unilm eval-mode path; the implementation differs where export needs it:
batch-first tensors, attention as explicit matmul + softmax (no `F.multi_head_attention_forward`, no SDPA, both
break the dynamo exporter), the key-padding mask added inside the 4-D bias as a large finite negative, and the
relative-position buckets precomputed as an integer buffer so no `Log` enters the graph.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

# Additive key-padding bias: finite so that fp16 graphs do not turn it into -inf (a fully masked row would give NaN),
# and large enough that exp(logit - 1e4) underflows to exactly 0 in fp32 and fp16.
MASK_NEG = -1.0e4


def relative_position_buckets(num_frames: int, num_buckets: int, max_distance: int) -> Tensor:
    """Bucket index [T, T] (int64) of key offset (k - q), bidirectional, as unilm's `_relative_positions_bucket`.

    Computed once in fp32 on the CPU with the same ops as the original, so indices are bit-identical to it.
    """
    context = torch.arange(num_frames, dtype=torch.long)[:, None]
    memory = torch.arange(num_frames, dtype=torch.long)[None, :]
    rel = memory - context
    half = num_buckets // 2
    buckets = (rel > 0).to(torch.long) * half
    rel = torch.abs(rel)
    max_exact = half // 2
    is_small = rel < max_exact
    large = max_exact + (
        torch.log(rel.float() / max_exact) / math.log(max_distance / max_exact) * (half - max_exact)
    ).to(torch.long)
    large = torch.min(large, torch.full_like(large, half - 1))
    return buckets + torch.where(is_small, rel, large)


class WavLMSelfAttention(nn.Module):
    """Multi-head self-attention with WavLM's gated relative position bias (unilm `MultiheadAttention`, eval mode)."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        num_frames: int,
        has_relative_attention_bias: bool,
        num_buckets: int,
        max_distance: int,
        gru_rel_pos: bool,
    ) -> None:
        """Build the projections; layer 0 also owns the bucket embedding and the precomputed bucket table."""
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}; pick matching sizes.")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.gru_rel_pos = gru_rel_pos
        if gru_rel_pos:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, num_heads, 1, 1))
        self.has_relative_attention_bias = has_relative_attention_bias
        if has_relative_attention_bias:
            self.relative_attention_bias = nn.Embedding(num_buckets, num_heads)
            # Not persistent: unilm state dicts have no such key, and it is a pure function of T and the config.
            self.register_buffer(
                "rel_bucket", relative_position_buckets(num_frames, num_buckets, max_distance), persistent=False
            )

    def position_bias(self, num_frames: int | Tensor) -> Tensor:
        """Ungated relative position bias [1, H, T, T] for `num_frames` <= the window's frames (layer 0 only).

        The bucket table is precomputed for the full window and sliced: exact, as a bucket depends only on k - q.
        """
        buckets = self.rel_bucket[:num_frames, :num_frames]
        values = nn.functional.embedding(buckets, self.relative_attention_bias.weight)  # [T, T, H], Gather
        return values.permute(2, 0, 1).unsqueeze(0)

    def _heads(self, x: Tensor) -> Tensor:
        """[B, T, D] -> [B, H, T, hd]."""
        return x.reshape(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, pad_bias: Tensor | None, pos_bias: Tensor | None) -> Tensor:
        """Attend over frames.

        x: [B, T, D]; pad_bias: [B, 1, 1, T] additive (0 valid, MASK_NEG padded) or None;
        pos_bias: [1, H, T, T] ungated relative bias or None. Returns [B, T, D].
        """
        q = self._heads(self.q_proj(x) * self.scaling)
        k = self._heads(self.k_proj(x))
        v = self._heads(self.v_proj(x))
        logits = torch.matmul(q, k.transpose(-1, -2))  # [B, H, T, T]
        bias: Tensor | None = None
        if pos_bias is not None:
            bias = pos_bias
            if self.gru_rel_pos:
                # The gate uses the layer input split into heads (not q), as in unilm.
                g = self.grep_linear(self._heads(x))  # [B, H, T, 8]
                g = torch.sigmoid(g.reshape(g.shape[0], g.shape[1], g.shape[2], 2, 4).sum(-1))
                gate_a = g[..., 0:1]
                gate_b = g[..., 1:2]
                gate = gate_a * (gate_b * self.grep_a - 1.0) + 2.0  # [B, H, T, 1]
                bias = gate * pos_bias
        if pad_bias is not None:
            bias = pad_bias if bias is None else bias + pad_bias
        if bias is not None:
            logits = logits + bias
        attn = torch.softmax(logits, dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2)  # [B, T, H, hd]
        out = out.reshape(out.shape[0], out.shape[1], self.embed_dim)
        return self.out_proj(out)


class WavLMEncoderLayer(nn.Module):
    """unilm `TransformerSentenceEncoderLayer` (GELU FFN), post-LN or pre-LN, eval mode."""

    def __init__(
        self,
        embed_dim: int,
        ffn_dim: int,
        num_heads: int,
        num_frames: int,
        layer_norm_first: bool,
        has_relative_attention_bias: bool,
        num_buckets: int,
        max_distance: int,
        gru_rel_pos: bool,
        eps: float = 1e-5,
    ) -> None:
        """Build attention, the two LayerNorms and the FFN with unilm's names."""
        super().__init__()
        self.self_attn = WavLMSelfAttention(
            embed_dim, num_heads, num_frames, has_relative_attention_bias, num_buckets, max_distance, gru_rel_pos
        )
        self.layer_norm_first = layer_norm_first
        self.self_attn_layer_norm = nn.LayerNorm(embed_dim, eps=eps)
        self.fc1 = nn.Linear(embed_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, embed_dim)
        self.activation = nn.GELU()
        self.final_layer_norm = nn.LayerNorm(embed_dim, eps=eps)

    def forward(self, x: Tensor, pad_bias: Tensor | None, pos_bias: Tensor | None) -> Tensor:
        """x [B, T, D] -> [B, T, D]."""
        if self.layer_norm_first:
            x = x + self.self_attn(self.self_attn_layer_norm(x), pad_bias, pos_bias)
            return x + self.fc2(self.activation(self.fc1(self.final_layer_norm(x))))
        x = self.self_attn_layer_norm(x + self.self_attn(x, pad_bias, pos_bias))
        return self.final_layer_norm(x + self.fc2(self.activation(self.fc1(x))))
