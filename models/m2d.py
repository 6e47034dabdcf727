"""M2D ViT encoder (``m2d_clap_vit_base-80x1001p16x16-240128_AS-FT_enconly``) for frame features.

A re-implementation of what ``nttcslab/m2d:examples/portable_m2d.py`` (``PortableM2D.encode``) computes, written
for export: nnAudio's log-mel becomes :class:`~mmmos.models.frontends.LogMelFrontend`, the per-chunk Python loop
is unrolled over chunk boundaries fixed at construction (the window length is fixed per encoder), and attention
is an explicit ``matmul -> softmax -> matmul`` so the ONNX graph has no fused-SDPA op.

Pipeline for one 10 s window at 16 kHz (research/encoders.md section 4):

``wav [B, 160000]`` -> log-mel ``[B, 80, 1001]`` (n_fft 400, hop 160, slaney mel 50-8000 Hz,
``log(x + eps)``, ``(x - mean) / std``) -> one 1001-frame chunk -> ``Conv2d(1, D, 16, stride 16)`` (the last 9
frames fall off the stride, as in the original) -> 5 x 62 patches + pos_embed, CLS prepended -> 12 pre-LN blocks
-> final LayerNorm -> CLS dropped -> ``'b (f t) d -> b t (f d)'`` -> ``[B, 62, 5 * D]``.

Parameter names are timm's (``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``blocks.N.*``, ``norm.*``)
under ``backbone.``, the attribute name ``PortableM2D`` uses, so release weights load after prefix stripping
(:mod:`mmmos.models.m2d_checkpoints`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from mmmos.models.frontends import FLOAT32_EPS, LogMelConfig, LogMelFrontend

DEFAULT_NORM_STATS = (-7.1, 4.2)
"""Log-mel mean/std that ``portable_m2d.py`` uses when a checkpoint carries no ``norm_stats`` (2022 models)."""


@dataclass(frozen=True)
class M2DConfig:
    """Sizes of an M2D encoder: front-end, patch grid and ViT body.

    ``input_frames`` is the ViT's time size (``input_size[1]`` in the release folder name, e.g. 1001 in
    ``80x1001``); ``n_mels`` is its frequency size. A window longer than ``input_frames`` mel frames is cut into
    chunks of that many frames, each encoded separately, as ``encode_lms`` does.
    """

    sample_rate: int = 16000
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 80
    f_min: float = 50.0
    f_max: float = 8000.0
    norm_stats: tuple[float, float] = DEFAULT_NORM_STATS
    input_frames: int = 1001
    patch_size: tuple[int, int] = (16, 16)
    dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    ln_eps: float = 1e-6
    window_seconds: float = 10.0

    @classmethod
    def full(cls) -> M2DConfig:
        """The released ViT-B/16 on 80x1001 log-mel at 16 kHz (85.49 M parameters)."""
        return cls()

    @classmethod
    def tiny(cls) -> M2DConfig:
        """Same front-end and 5 x 62 patch grid, a 2-block ViT of width 32 (output 5 * 32 = 160) for tests."""
        return cls(dim=32, depth=2, num_heads=2)

    @classmethod
    def for_sample_rate(cls, sr: str, **overrides: object) -> M2DConfig:
        """Front-end settings for the release's ``16k`` / ``32k`` variants (``get_to_melspec``), plus overrides."""
        if sr == "16k":
            base = cls()
        elif sr == "32k":
            base = cls(sample_rate=32000, n_fft=800, hop_length=320, f_max=16000.0)
        else:
            raise ValueError(f"Unknown M2D sample-rate tag {sr!r}; the releases use '16k' or '32k'.")
        return replace(base, **overrides)  # type: ignore[arg-type]

    @property
    def window_samples(self) -> int:
        """Samples in one fixed window (10 s at the encoder's rate)."""
        return round(self.window_seconds * self.sample_rate)

    @property
    def freq_patches(self) -> int:
        """Patch rows along frequency (5 for 80 mels / 16)."""
        return self.n_mels // self.patch_size[0]

    @property
    def time_patches(self) -> int:
        """Patch columns of one full chunk (62 for 1001 frames / 16)."""
        return self.input_frames // self.patch_size[1]

    @property
    def out_dim(self) -> int:
        """Feature width per output frame: frequency patches stacked, ``F * D``."""
        return self.freq_patches * self.dim

    def frontend_config(self) -> LogMelConfig:
        """The nnAudio ``MelSpectrogram`` + ``log(x + eps)`` + ``(x - mean) / std`` settings as a LogMelConfig."""
        return LogMelConfig(
            sample_rate=self.sample_rate,
            n_fft=self.n_fft,
            win_length=self.n_fft,
            hop_length=self.hop_length,
            n_mels=self.n_mels,
            f_min=self.f_min,
            f_max=self.f_max,
            htk=False,
            mel_norm="slaney",
            log="ln",
            floor=FLOAT32_EPS,
            mean=float(self.norm_stats[0]),
            std=float(self.norm_stats[1]),
        )


class PatchEmbed(nn.Module):
    """Non-overlapping ``Conv2d`` patches ``[B, 1, F, T] -> [B, F' * T', D]`` (frequency-major, as timm flattens)."""

    def __init__(self, patch_size: tuple[int, int], dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed patches; frames that do not fill a whole patch are dropped by the stride."""
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention as explicit matmuls (timm ``Attention`` maths, no mask, no fused SDPA)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"M2D width {dim} is not divisible by num_heads={num_heads}; pick a divisor of {dim}.")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend over all tokens of ``x`` ``[B, N, D]``."""
        _, n, d = x.shape
        qkv = self.qkv(x).reshape(-1, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.matmul(q * self.scale, k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj(torch.matmul(attn, v).transpose(1, 2).reshape(-1, n, d))


class Mlp(nn.Module):
    """``fc1 -> GELU (erf) -> fc2``, timm's ``Mlp`` without dropout."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the feed-forward network token-wise."""
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, config: M2DConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.dim, eps=config.ln_eps)
        self.attn = Attention(config.dim, config.num_heads, config.qkv_bias)
        self.norm2 = nn.LayerNorm(config.dim, eps=config.ln_eps)
        self.mlp = Mlp(config.dim, int(config.dim * config.mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run one block on ``x`` ``[B, N, D]``."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class M2DViT(nn.Module):
    """The ViT body of ``LocalViT`` with timm's parameter names; ``forward`` = ``forward_encoder`` minus CLS."""

    def __init__(self, config: M2DConfig) -> None:
        super().__init__()
        self.config = config
        num_patches = config.freq_patches * config.time_patches
        self.patch_embed = PatchEmbed(config.patch_size, config.dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + num_patches, config.dim))
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.dim, eps=config.ln_eps)
        self._init_weights()

    def _init_weights(self) -> None:
        # timm-like random init: only matters for tests (real use loads weights), but keeps activations sane.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor, time_patches: int) -> torch.Tensor:
        """Encode one chunk ``[B, 1, n_mels, frames]`` to patch tokens ``[B, F * time_patches, D]`` (no CLS).

        ``time_patches`` (static) is the chunk's patch columns; a short tail chunk uses the first
        ``time_patches`` columns of the position table, as ``forward_encoder`` slices it.
        """
        f, d = self.config.freq_patches, self.config.dim
        x = self.patch_embed(x)
        pos = self.pos_embed[:, 1:, :]
        if time_patches < self.config.time_patches:
            pos = pos.reshape(1, f, self.config.time_patches, d)[:, :, :time_patches, :].reshape(1, -1, d)
        x = x + pos
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 1:, :]


@dataclass(frozen=True)
class _Chunk:
    start: int  # first mel frame of the chunk
    stop: int  # one past the last mel frame (after the tail's zero padding)
    time_patches: int


def _chunks(config: M2DConfig, frames: int) -> list[_Chunk]:
    """Chunk boundaries of ``encode_lms`` for a log-mel of ``frames`` frames (padded to whole tail patches)."""
    unit, patch_t = config.input_frames, config.patch_size[1]
    pad = (patch_t - frames % unit % patch_t) % patch_t
    total = frames + pad
    chunks = []
    for start in range(0, frames, unit):
        stop = min(start + unit, total)
        chunks.append(_Chunk(start, stop, (stop - start) // patch_t))
    return chunks


class M2D(nn.Module):
    """M2D frame encoder: ``forward(wav [B, N], lengths [B]) -> (features [B, T', F * D], frame_mask [B, T'])``.

    Attributes follow docs/contracts.md "Encoders": ``name``, ``sample_rate``, ``window_samples``,
    ``frame_seconds`` (0.16 s: one patch column = 16 mel hops of 10 ms), ``out_dim``.
    """

    name = "m2d"

    def __init__(self, config: M2DConfig | None = None, *, empty: bool = False) -> None:
        """Build the encoder; ``empty=True`` leaves the ViT weights uninitialised (for loaders that set them all)."""
        super().__init__()
        config = config or M2DConfig.full()
        if config.n_mels % config.patch_size[0]:
            raise ValueError(
                f"n_mels={config.n_mels} is not a multiple of the patch height {config.patch_size[0]}; "
                "the M2D grid needs whole frequency patches."
            )
        self.config = config
        self.sample_rate = config.sample_rate
        self.window_samples = config.window_samples
        self.frame_seconds = config.patch_size[1] * config.hop_length / config.sample_rate
        self.out_dim = config.out_dim
        self.frontend = LogMelFrontend(config.frontend_config())
        if empty:
            # Random init of 85 M parameters takes seconds and is overwritten by the checkpoint anyway.
            with torch.device("meta"):
                backbone = M2DViT(config)
            self.backbone = backbone.to_empty(device="cpu")
        else:
            self.backbone = M2DViT(config)
        frames = self.frontend.config.num_frames(self.window_samples)
        self._chunk_plan = _chunks(config, frames)
        self._pad_frames = self._chunk_plan[-1].stop - frames
        # First sample of every output frame (contract: a frame is valid when its first sample is < length).
        starts = [
            (chunk.start + t * config.patch_size[1]) * config.hop_length
            for chunk in self._chunk_plan
            for t in range(chunk.time_patches)
        ]
        self.register_buffer("frame_starts", torch.tensor(starts, dtype=torch.int64), persistent=False)
        self.register_buffer("sample_index", torch.arange(self.window_samples, dtype=torch.int64), persistent=False)

    @property
    def num_frames(self) -> int:
        """Output frames per window (62 for 10 s at 16 kHz with 80x1001 / 16x16)."""
        return int(self.frame_starts.numel())

    def set_norm_stats(self, mean: float, std: float) -> None:
        """Use a checkpoint's log-mel ``norm_stats`` (updates the config and the front-end)."""
        self.config = replace(self.config, norm_stats=(float(mean), float(std)))
        self.frontend.set_stats(mean, std)

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode fixed windows ``wav`` ``[B, window_samples]`` with valid lengths ``lengths`` ``[B]`` (int64)."""
        if wav.shape[-1] != self.window_samples:
            raise ValueError(
                f"M2D expects windows of {self.window_samples} samples, got {wav.shape[-1]}; "
                "cut and zero-pad audio into fixed windows first."
            )
        # max(length, 1) as Max, not clamp: ONNX Clip on int64 is not in TensorRT's supported types.
        lengths = torch.maximum(lengths.to(torch.int64), torch.ones_like(lengths, dtype=torch.int64))
        # Zero everything past the valid length first, so nothing there can change a score.
        wav = wav.float() * (self.sample_index[None, :] < lengths[:, None]).to(torch.float32)
        x = self.frontend(wav).unsqueeze(1)  # [B, 1, n_mels, frames]
        if self._pad_frames:
            # encode_lms zero-pads the (already normalised) log-mel so the tail chunk holds whole patches.
            x = nn.functional.pad(x, (0, self._pad_frames))
        f, d = self.config.freq_patches, self.config.dim
        outputs = []
        for chunk in self._chunk_plan:
            tokens = self.backbone(x[..., chunk.start : chunk.stop], chunk.time_patches)
            # 'b (f t) d -> b t (f d)': tokens are frequency-major; stack the F bands of each time step.
            tokens = tokens.reshape(-1, f, chunk.time_patches, d).permute(0, 2, 1, 3)
            outputs.append(tokens.reshape(-1, chunk.time_patches, f * d))
        features = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)
        frame_mask = self.frame_starts[None, :] < lengths[:, None]
        return features, frame_mask


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of ``module`` (the front-end has none: its bases are buffers)."""
    return sum(p.numel() for p in module.parameters())


def expected_frames(config: M2DConfig, num_samples: int) -> int:
    """Output frames ``encode_lms`` gives for ``num_samples`` samples (``ceil`` over padded tail patches)."""
    frames = num_samples // config.hop_length + 1
    return sum(chunk.time_patches for chunk in _chunks(config, frames)) if frames else 0


__all__ = ["DEFAULT_NORM_STATS", "M2D", "M2DConfig", "M2DViT", "count_parameters", "expected_frames"]
