"""Pooling and the per-encoder export graph: masked mean-pool, L2-normalise, frame -> step alignment.

``PooledEncoder`` is what gets exported per encoder (docs/contracts.md, "Pooling and the encoder graph").
Every reduction here averages valid frames only: the reference MMMOS code pools MuQ and M2D over
padding, we do not, so a window's score never depends on the zeros past its valid length.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

L2_EPS = 1e-12
"""Same epsilon as ``torch.nn.functional.normalize``."""


def _time_mask(mask: Tensor, x: Tensor) -> Tensor:
    """Reshape a ``[B, T]`` mask so it broadcasts against ``x [B, ..., T, D]`` (time is dim -2)."""
    view = [mask.shape[0]] + [1] * (x.dim() - 3) + [mask.shape[1], 1]
    return mask.to(x.dtype).reshape(view)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x [B, ..., T, D]`` over its time axis (dim -2), counting only frames where ``mask [B, T]`` holds.

    The count is clamped to >= 1 (as Audiobox does), so an all-padding row gives zeros, not NaN.
    Returns ``[B, ..., D]``.
    """
    if x.dim() < 3:
        raise ValueError(f"masked_mean expects x of shape [B, ..., T, D], got {tuple(x.shape)}; add a feature axis.")
    m = _time_mask(mask, x)
    total = (x * m).sum(dim=-2)
    count = m.sum(dim=-2).clamp(min=1.0)
    return total / count


def l2_normalize(x: Tensor, eps: float = L2_EPS) -> Tensor:
    """L2-normalise the last axis with ``F.normalize`` semantics: ``x / max(||x||, eps)``.

    Written as sqrt(sum(x^2)) so it exports as plain ReduceSum/Sqrt/Div (no ReduceL2 needed by TensorRT).
    The clamp sits under the sqrt (``sqrt(max(s, eps^2)) == max(sqrt(s), eps)``) so an all-zero vector, such as
    an empty ``blstm-t`` step, has a finite gradient instead of NaN.
    """
    norm = torch.sqrt((x * x).sum(dim=-1, keepdim=True).clamp(min=eps * eps))
    return x / norm


def step_assignment(n_frames: int, frame_seconds: float, window_seconds: float, steps: int) -> Tensor:
    """Fixed ``[T, S]`` 0/1 matrix that puts frame ``t`` in the step holding its centre time.

    Frame ``t`` is centred at ``(t + 0.5) * frame_seconds``; step ``s`` covers
    ``[s, s + 1) * window_seconds / steps``. Frames whose centre lies past the window go to the last step.
    """
    if n_frames < 1 or steps < 1 or frame_seconds <= 0 or window_seconds <= 0:
        raise ValueError(
            f"step_assignment needs n_frames, steps >= 1 and positive durations, got n_frames={n_frames}, "
            f"steps={steps}, frame_seconds={frame_seconds}, window_seconds={window_seconds}."
        )
    step_seconds = window_seconds / steps
    assign = torch.zeros(n_frames, steps, dtype=torch.float32)
    for t in range(n_frames):
        centre = (t + 0.5) * frame_seconds
        s = min(math.floor(centre / step_seconds), steps - 1)
        assign[t, s] = 1.0
    return assign


def align_to_steps(x: Tensor, mask: Tensor, assign: Tensor) -> tuple[Tensor, Tensor]:
    """Average frames onto a fixed grid of steps with a fixed assignment matrix (exports as MatMul).

    ``x [B, ..., T, D]``, ``mask [B, T]`` (True/1 = valid frame), ``assign [T, S]`` from ``step_assignment``.
    Returns ``(frames [B, ..., S, D], steps [B, S] float32)``: the masked mean of the valid frames in each
    step (0 where a step holds none) and 1.0 where a step holds at least one valid frame.
    """
    if not torch.jit.is_tracing() and assign.shape[0] != x.shape[-2]:
        raise ValueError(
            f"the assignment matrix is for {assign.shape[0]} frames but the features have {x.shape[-2]}; "
            "build it for this encoder's fixed window length."
        )
    m = mask.to(x.dtype)
    assign = assign.to(x.dtype)
    summed = torch.matmul(assign.transpose(0, 1), x * _time_mask(mask, x))  # [B, ..., S, D]
    count = torch.matmul(m, assign)  # [B, S]
    steps = (count > 0).to(torch.float32)
    view = [count.shape[0]] + [1] * (x.dim() - 3) + [count.shape[1], 1]
    frames = summed / count.clamp(min=1.0).reshape(view)
    return frames, steps


class PooledEncoder(nn.Module):
    """An encoder plus its in-graph pooling: the per-encoder graph that gets exported.

    ``forward(wav [B, N], lengths [B] int64)`` returns, in ``output_names`` order:
    ``<name>_pooled`` (WavLM ``[B, L, D]`` masked mean per hidden state, NOT normalised; MuQ/M2D ``[B, D]``
    masked mean, L2-normalised), and with ``frames=True`` also ``<name>_frames`` (WavLM ``[B, L, S, D]``,
    others ``[B, S, D]``, not normalised) and ``<name>_steps`` (``[B, S]`` float32).
    """

    def __init__(self, encoder: nn.Module, frames: bool = False, steps: int = 50) -> None:
        super().__init__()
        self.encoder = encoder
        self.name: str = encoder.name
        self.frames = frames
        self.steps = steps
        self.output_names: list[str] = [f"{self.name}_pooled"]
        if frames:
            self.output_names += [f"{self.name}_frames", f"{self.name}_steps"]
            # The frame count is fixed by the fixed window length; one dummy forward finds it so the
            # assignment is a constant buffer (no shape-dependent Python in the exported graph).
            n = int(encoder.window_samples)
            with torch.no_grad():
                feats, _ = encoder(torch.zeros(1, n), torch.tensor([n], dtype=torch.int64))
            window_seconds = n / float(encoder.sample_rate)
            assign = step_assignment(feats.shape[-2], float(encoder.frame_seconds), window_seconds, steps)
            self.register_buffer("assign", assign, persistent=False)

    def forward(self, wav: Tensor, lengths: Tensor) -> tuple[Tensor, ...]:
        """Run the encoder and pool its features; see the class docstring for the outputs."""
        feats, frame_mask = self.encoder(wav, lengths)
        pooled = masked_mean(feats, frame_mask)
        if self.name != "wavlm":
            pooled = l2_normalize(pooled)
        if not self.frames:
            return (pooled,)
        # The assignment is built for the full window's frames; an encoder fed fewer samples (a dynamic samples
        # axis) gives the first T of them, whose rows are the first T (a traced slice when exporting).
        frames, steps = align_to_steps(feats, frame_mask, self.assign[: feats.shape[-2]])
        return pooled, frames, steps
