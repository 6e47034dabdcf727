"""WavLM (Base+ and same-family configs) as an export-friendly, mask-aware encoder.

Same architecture and parameter names as Microsoft unilm `WavLM.py` (= Audiobox Aesthetics `model/wavlm.py`), eval
mode only. `forward` returns all hidden states (the transformer input after pos-conv + encoder LayerNorm, then every
layer's output), which is what Audiobox's `extract_features(..., output_layer=13, ret_layer_results=True)` gives.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mmmos.runtime.windows import LengthRule

from .wavlm_attention import MASK_NEG, WavLMEncoderLayer

ConvSpec = tuple[tuple[int, int, int], ...]
CHUNK = 256
"""Frames per chunk of the first GroupNorm's chunked sums (accuracy of long fp32 reductions in ORT)."""

BASE_PLUS_CONV: ConvSpec = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2


def parse_conv_layers(spec: str) -> ConvSpec:
    """Parse unilm's `conv_feature_layers` string (e.g. "[(512,10,5)] + [(512,3,2)] * 4") without `eval`."""

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.List | ast.Tuple):
            return [ev(e) for e in node.elts]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return ev(node.left) + ev(node.right)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            return ev(node.left) * ev(node.right)
        raise ValueError(f"unsupported syntax in conv_feature_layers {spec!r}; use lists of (dim, kernel, stride).")

    layers = ev(ast.parse(spec, mode="eval"))
    if not all(isinstance(t, list) and len(t) == 3 for t in layers):
        raise ValueError(f"conv_feature_layers {spec!r} must be a list of (dim, kernel, stride) triples.")
    return tuple((int(d), int(k), int(s)) for d, k, s in layers)


@dataclass
class WavLMConfig:
    """WavLM architecture hyper-parameters (unilm names in comments where they differ)."""

    conv_layers: ConvSpec = BASE_PLUS_CONV  # conv_feature_layers
    extractor_mode: str = "default"  # "default": GroupNorm in layer 0; "layer_norm": LayerNorm in every layer
    conv_bias: bool = False
    embed_dim: int = 768  # encoder_embed_dim
    ffn_dim: int = 3072  # encoder_ffn_embed_dim
    num_layers: int = 12  # encoder_layers
    num_heads: int = 12  # encoder_attention_heads
    layer_norm_first: bool = False
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = True
    num_buckets: int = 320
    max_distance: int = 800
    gru_rel_pos: bool = True
    normalize: bool = False
    layer_norm_eps: float = 1e-5

    @classmethod
    def full(cls) -> WavLMConfig:
        """WavLM Base+ (94.4 M parameters)."""
        return cls()

    @classmethod
    def tiny(cls) -> WavLMConfig:
        """Same code, small widths; strides kept so 160000 samples still give T=499 frames at 20 ms."""
        return cls(
            conv_layers=((32, 10, 5),) + ((32, 3, 2),) * 4 + ((32, 2, 2),) * 2,
            embed_dim=64,
            ffn_dim=128,
            num_layers=2,
            num_heads=4,
            conv_pos=16,
            conv_pos_groups=4,
        )

    @classmethod
    def from_unilm_cfg(cls, cfg: dict[str, Any]) -> WavLMConfig:
        """From the `cfg` dict of a unilm checkpoint (missing keys take unilm's `WavLMConfig` defaults)."""
        conv = cfg.get("conv_feature_layers", "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2")
        act = cfg.get("activation_fn", "gelu")
        if act != "gelu":
            raise NotImplementedError(f"WavLM activation_fn {act!r} is not implemented; only 'gelu' is.")
        return cls(
            conv_layers=parse_conv_layers(conv) if isinstance(conv, str) else tuple(tuple(c) for c in conv),
            extractor_mode=cfg.get("extractor_mode", "default"),
            conv_bias=bool(cfg.get("conv_bias", False)),
            embed_dim=int(cfg.get("encoder_embed_dim", 768)),
            ffn_dim=int(cfg.get("encoder_ffn_embed_dim", 3072)),
            num_layers=int(cfg.get("encoder_layers", 12)),
            num_heads=int(cfg.get("encoder_attention_heads", 12)),
            layer_norm_first=bool(cfg.get("layer_norm_first", False)),
            conv_pos=int(cfg.get("conv_pos", 128)),
            conv_pos_groups=int(cfg.get("conv_pos_groups", 16)),
            relative_position_embedding=bool(cfg.get("relative_position_embedding", False)),
            num_buckets=int(cfg.get("num_buckets", 320)),
            max_distance=int(cfg.get("max_distance", 1280)),
            gru_rel_pos=bool(cfg.get("gru_rel_pos", False)),
            normalize=bool(cfg.get("normalize", False)),
        )

    @classmethod
    def from_hf_config(cls, cfg: dict[str, Any]) -> WavLMConfig:
        """From a Hugging Face `WavLMConfig` dict (config.json of e.g. microsoft/wavlm-base-plus)."""
        act = cfg.get("hidden_act", "gelu")
        feat_act = cfg.get("feat_extract_activation", "gelu")
        if act != "gelu" or feat_act != "gelu":
            raise NotImplementedError(f"WavLM activations {act!r}/{feat_act!r} are not implemented; only 'gelu' is.")
        if cfg.get("add_adapter", False):
            raise NotImplementedError("HF WavLM with add_adapter=True is not implemented; use a model without adapter.")
        dims = cfg.get("conv_dim", [512] * 7)
        kernels = cfg.get("conv_kernel", [10, 3, 3, 3, 3, 2, 2])
        strides = cfg.get("conv_stride", [5, 2, 2, 2, 2, 2, 2])
        norm = cfg.get("feat_extract_norm", "group")
        modes = {"group": "default", "layer": "layer_norm"}
        if norm not in modes:
            raise ValueError(f"feat_extract_norm {norm!r} is unknown; expected 'group' or 'layer'.")
        return cls(
            conv_layers=tuple((int(d), int(k), int(s)) for d, k, s in zip(dims, kernels, strides, strict=True)),
            extractor_mode=modes[norm],
            conv_bias=bool(cfg.get("conv_bias", False)),
            embed_dim=int(cfg.get("hidden_size", 768)),
            ffn_dim=int(cfg.get("intermediate_size", 3072)),
            num_layers=int(cfg.get("num_hidden_layers", 12)),
            num_heads=int(cfg.get("num_attention_heads", 12)),
            layer_norm_first=bool(cfg.get("do_stable_layer_norm", False)),
            conv_pos=int(cfg.get("num_conv_pos_embeddings", 128)),
            conv_pos_groups=int(cfg.get("num_conv_pos_embedding_groups", 16)),
            relative_position_embedding=True,
            num_buckets=int(cfg.get("num_buckets", 320)),
            max_distance=int(cfg.get("max_bucket_distance", 800)),
            gru_rel_pos=True,
            normalize=False,
            layer_norm_eps=float(cfg.get("layer_norm_eps", 1e-5)),
        )

    def num_frames(self, num_samples: int) -> int:
        """Frames the conv extractor makes from `num_samples` (499 for 160000 at Base+ strides)."""
        n = num_samples
        for _, k, s in self.conv_layers:
            n = (n - k) // s + 1
        if n < 1:
            raise ValueError(f"{num_samples} samples are too few for the WavLM conv extractor; use a longer window.")
        return n


class _TransposeLast(nn.Module):
    """Swap the last two axes (unilm `TransposeLast`, no parameters)."""

    def forward(self, x: Tensor) -> Tensor:
        """[..., A, B] -> [..., B, A]."""
        return x.transpose(-2, -1)


def _chunked_time_mean(x: Tensor, chunk: int = CHUNK) -> Tensor:
    """Mean over the last axis as a sum of chunk sums: [B, C, T] -> [B, C, 1].

    ONNX Runtime's ReduceMean / InstanceNormalization accumulate the ~32k steps of WavLM's first conv layer in one
    fp32 pass and drift by up to ~2e-4 from eager; summing chunks of 256 first keeps the exported graph within ~1e-5.
    T is static (fixed window), so the zero padding is a constant-size Pad that does not change the sum.
    """
    t = x.shape[-1]
    pad = (-t) % chunk
    if pad:
        x = nn.functional.pad(x, (0, pad))
    parts = x.reshape(x.shape[0], x.shape[1], (t + pad) // chunk, chunk).sum(-1)
    return parts.sum(-1, keepdim=True) / t


def _chunked_time_sum(x: Tensor, chunk: int = CHUNK) -> Tensor:
    """Sum over the last axis as a sum of chunk sums: [B, C, T] -> [B, C, 1] (see `_chunked_time_mean`).

    The runtime feeds lengths whose layer-0 frame count is a multiple of the chunk (`WavLM.length_rule`), so the
    exported graph reshapes without a Pad; other lengths (eager use) pad with zeros, which leaves the sum exact.
    """
    t = x.shape[-1]
    pad = (-t) % chunk
    if pad:
        x = nn.functional.pad(x, (0, pad))
    return x.reshape(x.shape[0], x.shape[1], -1, chunk).sum(-1).sum(-1, keepdim=True)


def _frames_not_computed(x: Tensor, nominal: int) -> Tensor | float:
    """`max(nominal - T, 0)` for x [..., T]: a traced shape computation under the TorchScript exporter (so the
    exported graph works for every fed length, not only the example's), a plain number otherwise."""
    if torch.jit.is_tracing():
        return torch.clamp(nominal - torch._shape_as_tensor(x)[-1].to(torch.float32), min=0.0)
    return float(max(nominal - x.shape[-1], 0))


class ChannelGroupNorm(nn.GroupNorm):
    """GroupNorm with one group per channel (unilm `Fp32GroupNorm(dim, dim)`), as explicit two-pass chunked sums.

    Same parameters (`weight`, `bias`) and maths as `nn.GroupNorm(C, C)`; written out so that the exported graph's
    long time reductions stay accurate in ONNX Runtime (see `_chunked_time_mean`). Always computed in fp32.

    With `nominal_frames` set (WavLM's first conv layer), the statistics are those of the full padded window:
    WavLM normalises each channel over all frames of the 10 s window, padding included, so a window computed on
    only its first `T` frames adds the `nominal_frames - T` frames it did not compute, each equal to `v0` (the
    conv's output on zeros: its bias, or 0), and ignores computed frames past the nominal count. Then a short
    window costs its own length and gives the padded window's result.
    """

    nominal_frames: int | None = None

    def forward(self, x: Tensor, v0: Tensor | None = None) -> Tensor:
        """[B, C, T] -> [B, C, T], normalised over T (or over the nominal window) per channel, then affine."""
        dtype = x.dtype
        x = x.float()
        if self.nominal_frames is None:
            xc = x - _chunked_time_mean(x)
            var = _chunked_time_mean(xc * xc)
        else:
            tf = int(self.nominal_frames)
            fill = torch.zeros_like(self.bias.float()) if v0 is None else v0.float()
            fill = fill[None, :, None]
            missing = _frames_not_computed(x, tf)
            mean = (_chunked_time_sum(x) - x[..., tf:].sum(-1, keepdim=True) + missing * fill) / tf
            xc = x - mean
            sq = xc * xc
            var = (_chunked_time_sum(sq) - sq[..., tf:].sum(-1, keepdim=True) + missing * (fill - mean) ** 2) / tf
        y = xc / torch.sqrt(var + self.eps) * self.weight.float()[:, None] + self.bias.float()[:, None]
        return y.to(dtype)


class _GroupNormConvBlock(nn.Sequential):
    """Conv layer 0 of the "default" extractor: conv, (dropout), GroupNorm told the conv's output on zeros, GELU."""

    def forward(self, x: Tensor) -> Tensor:
        """[B, C_in, N] -> [B, C, T]."""
        conv, _, norm, act = self
        return act(norm(conv(x), v0=conv.bias))


def _conv_block(n_in: int, n_out: int, k: int, s: int, norm: str, bias: bool) -> nn.Sequential:
    """One unilm conv block; index 1 is the (eval no-op) dropout so that parameter indices match unilm."""
    conv = nn.Conv1d(n_in, n_out, k, stride=s, bias=bias)
    if norm == "group":
        return _GroupNormConvBlock(conv, nn.Identity(), ChannelGroupNorm(n_out, n_out, affine=True), nn.GELU())
    if norm == "layer":
        ln = nn.Sequential(_TransposeLast(), nn.LayerNorm(n_out, elementwise_affine=True), _TransposeLast())
        return nn.Sequential(conv, nn.Identity(), ln, nn.GELU())
    return nn.Sequential(conv, nn.Identity(), nn.GELU())


class ConvFeatureExtractor(nn.Module):
    """unilm `ConvFeatureExtractionModel` ("default" conv type): [B, N] -> [B, C, T]."""

    def __init__(self, conv_layers: ConvSpec, mode: str, conv_bias: bool) -> None:
        """Stack the conv blocks with unilm's names (`conv_layers.i.0` conv, `conv_layers.0.2` GroupNorm)."""
        super().__init__()
        if mode not in ("default", "layer_norm"):
            raise ValueError(f"extractor_mode {mode!r} is unknown; expected 'default' or 'layer_norm'.")
        blocks = []
        in_d = 1
        for i, (dim, k, s) in enumerate(conv_layers):
            norm = "layer" if mode == "layer_norm" else ("group" if i == 0 else "none")
            blocks.append(_conv_block(in_d, dim, k, s, norm, conv_bias))
            in_d = dim
        self.conv_layers = nn.ModuleList(blocks)

    def forward(self, wav: Tensor) -> Tensor:
        """[B, N] -> [B, C, T]."""
        x = wav.unsqueeze(1)
        for block in self.conv_layers:
            x = block(x)
        return x


class WeightNormConv1d(nn.Module):
    """Conv1d whose weight is weight-normalised over dim 2 (`weight_g` [1, 1, K], `weight_v`), as unilm's pos-conv.

    The effective weight `g * v / ||v||` (norm over output and input channels per kernel tap) is computed with plain
    ops so it exports; `bake()` replaces g/v by a fixed `weight` before export (no ReduceL2 in the graph).
    """

    def __init__(self, channels: int, kernel: int, groups: int) -> None:
        """Allocate g, v and bias for a `channels -> channels` grouped conv with `padding = kernel // 2`."""
        super().__init__()
        self.padding = kernel // 2
        self.groups = groups
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel))
        self.weight_v = nn.Parameter(torch.randn(channels, channels // groups, kernel) * 0.02)
        self.bias = nn.Parameter(torch.zeros(channels))
        self.baked = False

    def effective_weight(self) -> Tensor:
        """The conv weight the model uses: baked, or `g * v / ||v||_(0,1)`."""
        if self.baked:
            return self.weight
        v = self.weight_v
        norm = torch.sqrt((v * v).sum(dim=(0, 1), keepdim=True))
        return v * (self.weight_g / norm)

    @torch.no_grad()
    def bake(self) -> None:
        """Freeze the weight-norm into a plain `weight` parameter (state dict key becomes `...weight`)."""
        if self.baked:
            return
        w = self.effective_weight().detach().clone()
        del self.weight_g
        del self.weight_v
        self.weight = nn.Parameter(w)
        self.baked = True

    def forward(self, x: Tensor) -> Tensor:
        """[B, C, T] -> [B, C, T + 1 - K % 2] (SamePad trims afterwards)."""
        return nn.functional.conv1d(x, self.effective_weight(), self.bias, padding=self.padding, groups=self.groups)


class _SamePad(nn.Module):
    """Drop the extra last frame an even-kernel, `K // 2`-padded conv produces (unilm `SamePad`)."""

    def __init__(self, kernel: int) -> None:
        """Remember whether the kernel is even."""
        super().__init__()
        self.remove = 1 if kernel % 2 == 0 else 0

    def forward(self, x: Tensor) -> Tensor:
        """[B, C, T'] -> [B, C, T' - remove]."""
        return x[:, :, : x.shape[2] - self.remove] if self.remove else x


class TransformerEncoder(nn.Module):
    """unilm `TransformerEncoder`: conv positional embedding, LayerNorm, layers; returns every hidden state."""

    def __init__(self, cfg: WavLMConfig, num_frames: int) -> None:
        """Build `pos_conv` (`pos_conv.0` weight-normed conv), `layers`, `layer_norm`."""
        super().__init__()
        self.pos_conv = nn.Sequential(
            WeightNormConv1d(cfg.embed_dim, cfg.conv_pos, cfg.conv_pos_groups), _SamePad(cfg.conv_pos), nn.GELU()
        )
        self.layers = nn.ModuleList(
            WavLMEncoderLayer(
                cfg.embed_dim,
                cfg.ffn_dim,
                cfg.num_heads,
                num_frames,
                cfg.layer_norm_first,
                has_relative_attention_bias=cfg.relative_position_embedding and i == 0,
                num_buckets=cfg.num_buckets,
                max_distance=cfg.max_distance,
                gru_rel_pos=cfg.gru_rel_pos,
                eps=cfg.layer_norm_eps,
            )
            for i in range(cfg.num_layers)
        )
        self.layer_norm_first = cfg.layer_norm_first
        self.layer_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)

    def forward(self, x: Tensor, frame_mask: Tensor) -> list[Tensor]:
        """x [B, T, D] (padded frames already zero), frame_mask [B, T] -> L tensors [B, T, D]."""
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        pad_bias = (~frame_mask).to(x.dtype)[:, None, None, :] * MASK_NEG  # [B, 1, 1, T]
        first = self.layers[0].self_attn
        pos_bias = first.position_bias(x.shape[1]) if first.has_relative_attention_bias else None
        states = [x]
        for layer in self.layers:
            x = layer(x, pad_bias, pos_bias)
            states.append(x)
        # unilm (pre-LN models) applies the final LayerNorm only to `x`, never to layer_results: nothing to do here.
        return states


class WavLM(nn.Module):
    """WavLM encoder with the mmmos encoder contract.

    forward(wav [B, N] float32, lengths [B] int64) -> (hidden [B, L, T, D], frame_mask [B, T] bool, True = valid).
    """

    name = "wavlm"
    sample_rate = 16000
    frame_seconds = 0.02

    def __init__(self, cfg: WavLMConfig | None = None, window_samples: int = 160000) -> None:
        """Build the modules with unilm names; position tables are precomputed for `window_samples`."""
        super().__init__()
        cfg = cfg or WavLMConfig.full()
        if cfg.normalize:
            raise NotImplementedError(
                "WavLM with normalize=True (waveform LayerNorm, e.g. WavLM Large) is not implemented; use Base+."
            )
        self.cfg = cfg
        self.window_samples = int(window_samples)
        self.num_frames = cfg.num_frames(self.window_samples)
        # Audiobox's frame rule: samples per frame = (N - N % T) // T; frame t is valid iff t * spf < length.
        self.samples_per_frame = (self.window_samples - self.window_samples % self.num_frames) // self.num_frames
        self.out_dim = cfg.embed_dim
        self.num_layers_out = cfg.num_layers + 1
        embed = cfg.conv_layers[-1][0]
        self.feature_extractor = ConvFeatureExtractor(cfg.conv_layers, cfg.extractor_mode, cfg.conv_bias)
        self.layer_norm = nn.LayerNorm(embed, eps=cfg.layer_norm_eps)
        self.post_extract_proj = nn.Linear(embed, cfg.embed_dim) if embed != cfg.embed_dim else None
        self.mask_emb = nn.Parameter(torch.zeros(cfg.embed_dim))  # pretraining only; kept so state dicts match
        self.encoder = TransformerEncoder(cfg, self.num_frames)
        first_norm = self.feature_extractor.conv_layers[0][2]
        if isinstance(first_norm, ChannelGroupNorm):
            # layer 0 normalises over the whole window: fed fewer samples, it still uses the window's statistics
            first_norm.nominal_frames = self.conv_frames(self.window_samples)
        self.reset_parameters()
        self.eval()

    def conv_frames(self, num_samples: int) -> int:
        """Frames conv layer 0 makes from `num_samples` samples."""
        _, k, s = self.cfg.conv_layers[0]
        return (num_samples - k) // s + 1

    @property
    def length_rule(self) -> LengthRule:
        """How many samples a window is fed (valid + receptive field, on layer 0's chunk grid; runtime contract).

        Fed `offset + k * step` samples, layer 0 makes `256 k` frames, so its GroupNorm's chunked sums need no
        Pad; the margin covers the conv stack's receptive field, so every valid frame sees all its samples. The
        full window is fed `max_samples` (>= `window_samples`; the few samples past it are masked to zero and
        the output frames are the window's own). A window fed this gives the padded window's result.
        """
        _, k0, s0 = self.cfg.conv_layers[0]
        receptive, hop = 1, 1
        for _, k, s in self.cfg.conv_layers:
            receptive += (k - 1) * hop
            hop *= s
        step, offset = s0 * CHUNK, k0 - s0
        full = offset + step * math.ceil((self.window_samples - offset) / step)
        return LengthRule(margin=receptive, step=step, offset=offset, max_samples=full)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random init in unilm's spirit (tests and random bundles; real use loads a checkpoint)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0.0, 0.02)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.Embedding):
                m.weight.normal_(0.0, 0.02)
            elif isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight)
        pos = self.encoder.pos_conv[0]
        if not pos.baked:
            std = math.sqrt(4.0 / (self.cfg.conv_pos * self.cfg.embed_dim))
            pos.weight_v.normal_(0.0, std)
            pos.weight_g.copy_(torch.sqrt((pos.weight_v**2).sum(dim=(0, 1), keepdim=True)))
        self.mask_emb.uniform_()

    def bake_weight_norm(self) -> None:
        """Bake the pos-conv weight norm into a plain weight (call before ONNX export)."""
        self.encoder.pos_conv[0].bake()

    def frame_mask(self, lengths: Tensor, num_frames: int | Tensor) -> Tensor:
        """[B] int64 valid samples -> [B, T] bool, True = frame holds at least one valid sample (Audiobox rule)."""
        starts = torch.arange(num_frames, device=lengths.device) * self.samples_per_frame
        return starts[None, :] < lengths[:, None]

    def forward(self, wav: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """wav [B, N] float32, lengths [B] int64 -> (hidden states [B, L, T, D], frame_mask [B, T] bool).

        N is the full window (`window_samples`) or, for the exported graph, what `length_rule` says a window of
        `lengths` is fed: either gives the same result for the valid frames.
        """
        valid = torch.arange(wav.shape[1], device=wav.device)[None, :] < lengths[:, None]
        wav = wav.masked_fill(~valid, 0.0)
        feats = self.feature_extractor(wav).transpose(1, 2)  # [B, T, C]
        feats = feats[:, : self.num_frames]  # fed past the window (max_samples), the extra frames are dropped
        feats = self.layer_norm(feats)
        if self.post_extract_proj is not None:
            feats = self.post_extract_proj(feats)
        frame_mask = self.frame_mask(lengths, feats.shape[1])
        # Padded frames enter the pos-conv as zeros (unilm `x[padding_mask] = 0`, but as masked_fill for export).
        x = feats.masked_fill(~frame_mask[:, :, None], 0.0)
        states = self.encoder(x, frame_mask)
        return torch.stack(states, dim=1), frame_mask
