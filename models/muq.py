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
from mmmos.runtime.windows import LengthRule

MUQ_MEL_MEAN = 6.768444971712967
"""``stat["melspec_2048_mean"]`` of the MuQ/MusicFM family (MSD); a checkpoint's config.json overrides it."""
MUQ_MEL_STD = 18.417922652295623
"""``stat["melspec_2048_std"]``; a checkpoint's config.json overrides it."""
WINDOW_SECONDS = 10
MARGIN_TOKENS = 30
"""Tokens a shorter window is fed past its last valid token (``MuQ.length_rule``; 1.2 s at 24 kHz).

Padded tokens are zeroed before the first conformer layer and masked as attention keys, but every layer's
depthwise conv (kernel 31) reads them, and they are not zero after the first layer: what is missing past the
fed samples leaks back into the valid tokens, at most 15 tokens per layer, smaller with every layer it crosses.
30 tokens is the smallest margin that kept the L2-normalised pooled vector within 1e-4 of the padded window's
(full config, random weights, 9 models, valid lengths 1 sample to 9 s; worst 5.6e-5, for a one-token window).
Worst cases by margin: 12 tokens 9.1e-3, 16: 1.1e-3, 25: 3.9e-4, 29: 1.2e-4, 30: 5.6e-5, 38: 1.6e-5,
45: 1.4e-6, 50: 6.3e-7. The ``muq_frames`` output (per-step means, not normalised, values up to ~4) sees the
leak undiluted in the step of the last valid tokens: up to 1.2e-3 at 30 tokens, 3.9e-4 at 38, 3.7e-5 at 45.
Real weights may leak differently.
"""


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

    ``N`` is dynamic, from ``min_input_samples`` to ``window_samples``: the rotary tables and token starts are
    built for the full window and sliced to the ``T = config.num_tokens(N)`` tokens of the input. Feeding
    ``window_samples`` is the padded 10 s computation; ``length_rule`` says how few samples a shorter window
    can be fed for (almost) the same pooled result.
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
        # Token count of a full window: the rotary tables and token starts are built for it, and sliced for less.
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

    @property
    def min_input_samples(self) -> int:
        """The fewest samples ``forward`` takes: the front-end's reflect padding needs more than ``n_fft // 2``."""
        return max(self.config.n_fft // 2 + 1, self.config.hop_length)

    @property
    def length_rule(self) -> LengthRule:
        """How many samples a window with ``valid`` valid samples is fed (the runtime's dynamic samples axis).

        The valid samples plus ``MARGIN_TOKENS`` whole tokens (``margin``), on a grid of one token (``step`` =
        ``token_hop``) that contains the full window (``offset = window_samples % token_hop``), capped at
        ``window_samples``. On that grid every fed length has the full window's mel-frame count modulo the stem's
        /4, so the tokens are the full window's first tokens and the last one is cut where the full window's is;
        a window whose margin reaches the end is fed whole, exactly today's padded computation. The margin also
        covers what the front-end (n_fft / 2 of reflect padding) and the stem (9 mel frames) read past a valid
        token, so the valid tokens enter the conformer exactly as in the padded window.
        """
        hop = self.config.token_hop
        rule = LengthRule(margin=MARGIN_TOKENS * hop, step=hop, offset=self.window_samples % hop,
                          max_samples=self.window_samples)
        if rule.min_samples < self.min_input_samples:  # a config with a tiny margin and a huge n_fft
            raise ValueError(f"MuQ's length rule feeds {rule.min_samples} samples, fewer than the front-end needs")
        return rule

    def frame_mask(self, lengths: torch.Tensor, num_tokens: int | torch.Tensor | None = None) -> torch.Tensor:
        """``[B, T]`` bool: token t is valid iff its first sample ``t * token_hop`` is < length (at least one).

        ``T`` is ``num_tokens`` (a traced size when exporting), else the full window's token count.
        """
        starts = self.token_starts if num_tokens is None else self.token_starts[:num_tokens]
        mask = starts[None, :] < lengths[:, None]
        # The first token is always valid, so pooling never divides by zero (lengths are >= 1 by contract).
        return mask | (starts[None, :] == 0)

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode ``wav`` ``[B, N]`` (``min_input_samples <= N <= window_samples``) with valid ``lengths`` ``[B]``."""
        n = wav.shape[-1]
        if not torch.jit.is_tracing() and not self.min_input_samples <= n <= self.window_samples:
            raise ValueError(
                f"MuQ takes {self.min_input_samples} to {self.window_samples} samples at {self.sample_rate} Hz "
                f"(one 10 s window at most), got {n}"
            )
        positions = torch.arange(n, device=wav.device)
        # Zero everything past the valid length first, so nothing there can change a score.
        wav = wav.float().masked_fill(positions[None, :] >= lengths[:, None], 0.0)
        mel = self.frontend(wav)  # fp32 always: power overflows fp16
        tokens = self.conv(mel)
        mask = self.frame_mask(lengths, tokens.shape[1])
        return self.conformer(tokens, mask), mask
