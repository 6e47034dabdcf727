"""MuQ's body: the Conv2d subsampling stem and the HF-style Wav2Vec2-Conformer, rebuilt export-friendly.

Module and parameter names mirror the ``muq`` package (``muq/modules/conv.py``) and transformers'
``Wav2Vec2ConformerEncoder`` so a checkpoint loads by stripping its ``model.`` prefix. What differs on purpose:

- rotary cos/sin tables are fp32 buffers precomputed for the full window's token count and sliced to the
  token count of the input (exact: a rotary angle depends on the token index only). HF caches them in Python,
  which tracing bakes in silently, and computes them in the activation dtype, which is lossy in fp16;
- the attention mask is additive with a large *finite* negative, and padded frames are zeroed with
  ``masked_fill`` (HF's boolean ``index_put`` exports to a broken graph);
- no ``pos_conv_embed`` (HF builds it but never calls it), no dropout, no layer drop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MASK_NEGATIVE = -30000.0
"""Added to attention scores of padded keys: exp() of it is exactly 0, and it stays finite in fp16 (max 65504)."""


class Res2dModule(nn.Module):
    """Residual block of two 3x3 convs with BatchNorm; a strided 3x3 conv + BN on the shortcut."""

    def __init__(self, idim: int, odim: int, stride: tuple[int, int] = (2, 2)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(idim, odim, 3, padding=1, stride=stride)
        self.bn1 = nn.BatchNorm2d(odim)
        self.conv2 = nn.Conv2d(odim, odim, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(odim)
        # MuQ always builds the shortcut conv (its first block changes channels, both stride): keep the same
        # condition so the parameter set matches the package for any config.
        self.diff = idim != odim or stride[0] > 1
        if self.diff:
            self.conv3 = nn.Conv2d(idim, odim, 3, padding=1, stride=stride)
            self.bn3 = nn.BatchNorm2d(odim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``x`` ``[B, C, F, T]``."""
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.diff:
            x = self.bn3(self.conv3(x))
        return F.relu(x + out)


class Conv2dSubsampling(nn.Module):
    """Normalised log-mel ``[B, n_mels, frames]`` -> tokens ``[B, T, out_dim]`` (frequency /4, time /prod(strides))."""

    def __init__(self, hidden: int, out_dim: int, n_bands: int, time_strides: tuple[int, int] = (2, 2)) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            Res2dModule(1, hidden, (2, time_strides[0])),
            Res2dModule(hidden, hidden, (2, time_strides[1])),
        )
        # The package sizes the projection as hidden * n_bands // 4 (floor), so n_bands must divide by 4.
        self.linear = nn.Linear(hidden * n_bands // 2 // 2, out_dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Subsample ``mel`` ``[B, F, T_mel]`` to ``[B, T, out_dim]``."""
        x = self.conv(mel.unsqueeze(1))  # [B, C, F', T]
        b, c, f, t = x.shape
        # "b c f t -> b t (c f)": channel-major, frequency-minor, exactly as einops does in the package.
        x = x.permute(0, 3, 1, 2).reshape(b, t, c * f)
        return self.linear(x)


def rotary_tables(num_tokens: int, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin ``[T, head_dim]`` in fp32, as HF builds them (``cat(freqs, freqs)``), computed in float64."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).double() / head_dim))
    # HF rounds inv_freq to fp32 first; do the same, then form the angles in float64 so the only error
    # left is the final fp32 rounding of cos/sin.
    inv_freq = inv_freq.float().double()
    freqs = torch.arange(num_tokens, dtype=torch.float64)[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().float(), emb.sin().float()


def activation(name: str) -> nn.Module:
    """The HF ``hidden_act`` names a MuQ config can use."""
    acts: dict[str, type[nn.Module]] = {"swish": nn.SiLU, "silu": nn.SiLU, "gelu": nn.GELU, "relu": nn.ReLU}
    if name not in acts:
        raise ValueError(f"unsupported hidden_act {name!r}; use one of {sorted(acts)}")
    return acts[name]()


class FeedForward(nn.Module):
    """Linear -> activation -> Linear (HF ``Wav2Vec2ConformerFeedForward`` without dropout)."""

    def __init__(self, dim: int, hidden: int, act: str) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(dim, hidden)
        self.intermediate_act_fn = activation(act)
        self.output_dense = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the feed-forward to ``x`` ``[B, T, D]``."""
        return self.output_dense(self.intermediate_act_fn(self.intermediate_dense(x)))


class ConvolutionModule(nn.Module):
    """LN -> pointwise (2D) -> GLU -> depthwise k -> BatchNorm -> act -> pointwise (HF conformer conv module)."""

    def __init__(self, dim: int, kernel_size: int, act: str) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"conv_depthwise_kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.layer_norm = nn.LayerNorm(dim)
        self.pointwise_conv1 = nn.Conv1d(dim, 2 * dim, 1, bias=False)
        self.depthwise_conv = nn.Conv1d(dim, dim, kernel_size, padding=(kernel_size - 1) // 2, groups=dim, bias=False)
        self.batch_norm = nn.BatchNorm1d(dim)
        self.activation = activation(act)
        self.pointwise_conv2 = nn.Conv1d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the conv module to ``x`` ``[B, T, D]``."""
        h = self.pointwise_conv1(self.layer_norm(x).transpose(1, 2))
        h = F.glu(h, dim=1)
        h = self.activation(self.batch_norm(self.depthwise_conv(h)))
        return self.pointwise_conv2(h).transpose(1, 2)


class RotarySelfAttention(nn.Module):
    """Multi-head self-attention with HF's rotary variant: the *layer input* is rotated before linear_q/linear_k."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"hidden size {dim} is not divisible by {heads} attention heads")
        self.heads = heads
        self.head_size = dim // heads
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim)
        self.linear_v = nn.Linear(dim, dim)
        self.linear_out = nn.Linear(dim, dim)

    def rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate each head's half-split of ``x`` ``[B, T, D]`` by the tables ``[T, head_size]``."""
        b, t, _ = x.shape
        h = x.view(b, t, self.heads, self.head_size)
        half = self.head_size // 2
        rotated = torch.cat((-h[..., half:], h[..., :half]), dim=-1)
        # Tables stay fp32 as buffers; cast at use so an fp16 graph rotates with fp32-accurate angles.
        out = h * cos[:, None, :].to(x.dtype) + rotated * sin[:, None, :].to(x.dtype)
        return out.reshape(b, t, self.heads * self.head_size)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        """Attend over ``x`` ``[B, T, D]``; ``bias`` ``[B, 1, 1, T]`` is 0 for valid keys, MASK_NEGATIVE else."""
        b, t, _ = x.shape
        qk_in = self.rotate(x, cos, sin)
        q = self.linear_q(qk_in).view(b, t, self.heads, self.head_size).transpose(1, 2)
        k = self.linear_k(qk_in).view(b, t, self.heads, self.head_size).transpose(1, 2)
        v = self.linear_v(x).view(b, t, self.heads, self.head_size).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(2, 3)) * (1.0 / math.sqrt(self.head_size))
        if bias is not None:
            scores = scores + bias.to(scores.dtype)
        attn = torch.softmax(scores, dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, t, self.heads * self.head_size)
        return self.linear_out(out)


class ConformerLayer(nn.Module):
    """½ FFN -> rotary self-attention -> conv module -> ½ FFN -> LayerNorm (HF ``Wav2Vec2ConformerEncoderLayer``)."""

    def __init__(self, dim: int, heads: int, ffn: int, kernel_size: int, act: str) -> None:
        super().__init__()
        self.ffn1_layer_norm = nn.LayerNorm(dim)
        self.ffn1 = FeedForward(dim, ffn, act)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.self_attn = RotarySelfAttention(dim, heads)
        self.conv_module = ConvolutionModule(dim, kernel_size, act)
        self.ffn2_layer_norm = nn.LayerNorm(dim)
        self.ffn2 = FeedForward(dim, ffn, act)
        self.final_layer_norm = nn.LayerNorm(dim)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        """Apply the layer to ``x`` ``[B, T, D]``."""
        x = x + 0.5 * self.ffn1(self.ffn1_layer_norm(x))
        x = x + self.self_attn(self.self_attn_layer_norm(x), cos, sin, bias)
        x = x + self.conv_module(x)
        x = x + 0.5 * self.ffn2(self.ffn2_layer_norm(x))
        return self.final_layer_norm(x)


class Conformer(nn.Module):
    """Stack of conformer layers + final LayerNorm, with rotary tables precomputed for up to ``num_tokens`` tokens.

    Any input of ``T <= num_tokens`` tokens uses the first ``T`` rows of the tables.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        ffn: int,
        kernel_size: int,
        act: str,
        rotary_base: float,
        layer_norm_eps: float,
        num_tokens: int,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(ConformerLayer(dim, heads, ffn, kernel_size, act) for _ in range(depth))
        self.layer_norm = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.rotary_base = rotary_base
        cos, sin = rotary_tables(num_tokens, dim // heads, rotary_base)
        # Non-persistent: derived from the config, never in a checkpoint; the exporter bakes them in.
        self.register_buffer("rotary_cos", cos, persistent=False)
        self.register_buffer("rotary_sin", sin, persistent=False)

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encode ``x`` ``[B, T, D]``; ``frame_mask`` ``[B, T]`` bool (True = valid) masks keys and zeroes padding."""
        t = x.shape[1]
        if not torch.jit.is_tracing() and t > self.rotary_cos.shape[0]:
            raise ValueError(
                f"conformer got {t} tokens but its rotary tables were built for at most {self.rotary_cos.shape[0]}; "
                "feed at most window_samples samples (or rebuild the model for the new window)"
            )
        # Under tracing ``t`` is a traced size, so the exported slice follows the input's token count.
        cos, sin = self.rotary_cos[:t], self.rotary_sin[:t]
        bias = None
        if frame_mask is not None:
            # HF zeroes padded frames once, before the first layer, then masks attention keys in every layer.
            x = x.masked_fill(~frame_mask[:, :, None], 0.0)
            zeros = torch.zeros_like(frame_mask, dtype=torch.float32)
            bias = zeros.masked_fill(~frame_mask, MASK_NEGATIVE)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, cos, sin, bias)
        return self.layer_norm(x)
