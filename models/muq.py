"""MuQ (``OpenMuQ/MuQ-large-msd-iter``) as an export-friendly frozen encoder: waveform -> last hidden state.

The reference is the ``muq`` package (``tencent-ailab/MuQ``: ``muq/muq.py``, ``models/muq_model.py``,
``modules/features.py``, ``modules/conv.py``): torchaudio mel (24 kHz, n_fft 2048, hop 240, 128 htk mels, no
norm, f_max 12 kHz) -> ``AmplitudeToDB`` -> last frame dropped -> ``(x - mean) / std`` -> Conv2d subsampling
(/4 in time and frequency, 25 Hz tokens) -> 12-layer HF Wav2Vec2-Conformer with rotary positions -> final
LayerNorm. Training-only parts (the logits head ``linear``, the random-projection quantizer, ``cls_token``,
the unused ``pos_conv_embed``) are not built; ``mmmos.models.muq_checkpoints`` ignores their keys explicitly.

``sample_rate`` is the rate of the waveform this module is *fed*. The mel filterbank is always built for
``mel_sample_rate`` (24 kHz), as in the package, so ``sample_rate=16000`` reproduces MMMOS, which feeds MuQ its
16 kHz audio unchanged (``window_samples`` 160000, 167 tokens, each covering 60 ms of real time).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from mmmos.models.frontends import LogMelConfig, LogMelFrontend
from mmmos.models.muq_conformer import Conformer, Conv2dSubsampling

MUQ_MEL_MEAN = 6.768444971712967
"""``stat["melspec_2048_mean"]`` of the MuQ/MusicFM family (MSD); a checkpoint's config.json overrides it."""
MUQ_MEL_STD = 18.417922652295623
"""``stat["melspec_2048_std"]``; a checkpoint's config.json overrides it."""
WINDOW_SECONDS = 10


@dataclass(frozen=True)
class MuQConfig:
    """Sizes and front-end settings of a MuQ encoder (``full()`` is MuQ-large-msd-iter, ``tiny()`` is for tests)."""

    sample_rate: int = 24000
    mel_sample_rate: int = 24000
    n_fft: int = 2048
    hop_length: int = 240
    n_mels: int = 128
    f_min: float = 0.0
    f_max: float = 12000.0
    floor: float = 1e-10
    mel_mean: float = MUQ_MEL_MEAN
    mel_std: float = MUQ_MEL_STD
    conv_dim: int = 512
    time_strides: tuple[int, int] = (2, 2)
    encoder_dim: int = 1024
    encoder_depth: int = 12
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    hidden_act: str = "swish"
    rotary_embedding_base: float = 10000.0
    conv_depthwise_kernel_size: int = 31
    layer_norm_eps: float = 1e-5

    @classmethod
    def full(cls, **overrides: object) -> MuQConfig:
        """MuQ-large-msd-iter: 512-channel stem, 12 conformer layers of width 1024 (316.3 M feature-path params)."""
        return replace(cls(), **overrides)

    @classmethod
    def tiny(cls, **overrides: object) -> MuQConfig:
        """Same code at test size: 16 stem channels, width 64, 2 layers, 4 heads; hop 240 and /4 kept (25 Hz)."""
        small = cls(
            n_fft=512, n_mels=32, conv_dim=16, encoder_dim=64, encoder_depth=2, num_attention_heads=4,
            intermediate_size=128, conv_depthwise_kernel_size=7,
        )
        return replace(small, **overrides)

    @property
    def window_samples(self) -> int:
        """Samples in one 10 s window at the feed rate."""
        return WINDOW_SECONDS * self.sample_rate

    @property
    def token_hop(self) -> int:
        """Input samples between two output tokens (hop x time strides: 960 at the real settings)."""
        return self.hop_length * self.time_strides[0] * self.time_strides[1]

    def num_tokens(self, num_samples: int) -> int:
        """Tokens for ``num_samples`` samples: floor(N / hop) mel frames (last dropped), then ceil-halved per stride."""
        t = num_samples // self.hop_length
        for s in self.time_strides:
            t = (t + s - 1) // s  # 3x3 conv, padding 1, stride s
        return t

    def validate(self) -> None:
        """Raise ValueError for settings the architecture cannot take."""
        if self.n_mels % 4 != 0:
            raise ValueError(f"n_mels must be divisible by 4 (two /2 frequency strides), got {self.n_mels}")
        if self.encoder_dim % self.num_attention_heads != 0:
            raise ValueError(f"encoder_dim {self.encoder_dim} must be divisible by {self.num_attention_heads} heads")
        if self.window_samples <= self.n_fft // 2:
            raise ValueError(f"a window of {self.window_samples} samples is too short for n_fft {self.n_fft}")


def muq_frontend(config: MuQConfig) -> LogMelFrontend:
    """The package's torchaudio mel + ``AmplitudeToDB`` + drop-last + normalise, as an export-friendly module."""
    return LogMelFrontend(
        LogMelConfig(
            sample_rate=config.mel_sample_rate, n_fft=config.n_fft, hop_length=config.hop_length,
            n_mels=config.n_mels, f_min=config.f_min, f_max=config.f_max, htk=True, mel_norm=None,
            log="db", floor=config.floor, mean=config.mel_mean, std=config.mel_std, drop_last_frame=True,
        )
    )


class MuQ(nn.Module):
    """MuQ encoder: ``forward(wav [B, N], lengths [B]) -> (last hidden state [B, T, D], frame_mask [B, T])``.

    ``N`` must be ``window_samples``: the rotary tables are built for that window's token count.
    """

    name = "muq"

    def __init__(self, config: MuQConfig | None = None) -> None:
        super().__init__()
        config = config or MuQConfig.full()
        config.validate()
        self.config = config
        self.sample_rate = config.sample_rate
        self.window_samples = config.window_samples
        # Hop between tokens in seconds of the *fed* audio (0.04 at 24 kHz, 0.06 when 16 kHz is fed as MMMOS does).
        self.frame_seconds = config.token_hop / config.sample_rate
        self.out_dim = config.encoder_dim
        self.num_tokens = config.num_tokens(config.window_samples)
        self.frontend = muq_frontend(config)
        self.conv = Conv2dSubsampling(config.conv_dim, config.encoder_dim, config.n_mels, config.time_strides)
        self.conformer = Conformer(
            dim=config.encoder_dim, depth=config.encoder_depth, heads=config.num_attention_heads,
            ffn=config.intermediate_size, kernel_size=config.conv_depthwise_kernel_size, act=config.hidden_act,
            rotary_base=config.rotary_embedding_base, layer_norm_eps=config.layer_norm_eps,
            num_tokens=self.num_tokens,
        )
        self.register_buffer("token_starts", torch.arange(self.num_tokens) * config.token_hop, persistent=False)

    def frame_mask(self, lengths: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` bool: token t is valid iff its first sample ``t * token_hop`` is < length (at least one)."""
        mask = self.token_starts[None, :] < lengths[:, None]
        # The first token is always valid, so pooling never divides by zero (lengths are >= 1 by contract).
        return mask | (self.token_starts[None, :] == 0)

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode ``wav`` ``[B, window_samples]`` with valid ``lengths`` ``[B]``; see the class docstring."""
        if not torch.jit.is_tracing() and wav.shape[-1] != self.window_samples:
            raise ValueError(
                f"MuQ expects windows of {self.window_samples} samples at {self.sample_rate} Hz, got {wav.shape[-1]}"
            )
        positions = torch.arange(wav.shape[-1], device=wav.device)
        # Zero everything past the valid length first, so nothing there can change a score.
        wav = wav.float().masked_fill(positions[None, :] >= lengths[:, None], 0.0)
        mel = self.frontend(wav)  # fp32 always: power overflows fp16
        tokens = self.conv(mel)
        mask = self.frame_mask(lengths)
        return self.conformer(tokens, mask), mask
