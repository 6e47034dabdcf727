"""The four MMMOS losses, applied per axis on z-scored targets and averaged over the axes.

Formulas follow the reference code (research/paper.md section 3): each loss is defined on 1-D
predictions ``y`` and targets ``t`` of one axis; the trainer's loss is the mean over the four axes.
Here every function takes ``[B, A]`` tensors and computes all axes at once (the axes are independent
columns), so ``loss(pred, target) == mean_a loss_1d(pred[:, a], target[:, a])``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

LOSSES: tuple[str, ...] = ("utmos", "contrastive", "dcq", "ccc")
"""Loss names accepted by :func:`get_loss` and the ``--loss`` option."""


def _check(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Bring 1-D inputs to ``[B, 1]`` and check that shapes agree."""
    if pred.dim() == 1:
        pred = pred.unsqueeze(-1)
    if target.dim() == 1:
        target = target.unsqueeze(-1)
    if pred.shape != target.shape or pred.dim() != 2:
        raise ValueError(
            f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must both be [B, A]; pass matching shapes."
        )
    return pred, target


def clipped_mse(pred: Tensor, target: Tensor, tau: float = 0.5) -> Tensor:
    """Mean over all elements of ``1[|y - t| > tau] * (y - t)^2`` (zeroed elements count in the mean)."""
    pred, target = _check(pred, target)
    err = pred - target
    return torch.where(err.abs() > tau, err.square(), torch.zeros_like(err)).mean()


def pairwise_contrastive(pred: Tensor, target: Tensor, margin: float = 0.1) -> Tensor:
    """``sum_{i != j} ReLU(|(t_i - t_j) - (y_i - y_j)| - m) / (B (B - 1))`` per axis, averaged; 0 for B = 1."""
    pred, target = _check(pred, target)
    b = pred.shape[0]
    if b < 2:
        # The reference returns 0 for a single sample; keep the graph so backward() still works.
        return pred.sum() * 0.0
    dy = pred.unsqueeze(1) - pred.unsqueeze(0)  # [B, B, A]: y_i - y_j
    dt = target.unsqueeze(1) - target.unsqueeze(0)
    # The diagonal is 0 - 0 -> ReLU(-m) = 0, so summing over all pairs equals summing over i != j.
    per_axis = torch.relu((dt - dy).abs() - margin).sum(dim=(0, 1)) / (b * (b - 1))
    return per_axis.mean()


def utmos_loss(pred: Tensor, target: Tensor, tau: float = 0.5, margin: float = 0.1, w_con: float = 0.5) -> Tensor:
    """UTMOS loss as MMMOS uses it: clipped MSE (tau 0.5) + 0.5 x pairwise contrastive (margin 0.1)."""
    return clipped_mse(pred, target, tau) + w_con * pairwise_contrastive(pred, target, margin)


def contrastive_loss(pred: Tensor, target: Tensor, margin: float = 0.1) -> Tensor:
    """Contrastive-only loss (shift-invariant: the absolute level of predictions is unconstrained)."""
    return pairwise_contrastive(pred, target, margin)


def dcq_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Dual-criterion quality loss as the reference code computes it: ``QDC + QAC`` over all pairs (diagonal included).

    ``QDC = mean_ij (dy_ij - dt_ij)^2`` and ``QAC = -mean_ij dy_ij * sign(dt_ij)`` with ``dy_ij = y_j - y_i``.
    The reference code omits the MSE term its docstring names (research/paper.md 9.1.8); we reproduce the code.
    """
    pred, target = _check(pred, target)
    dy = pred.unsqueeze(0) - pred.unsqueeze(1)  # [i, j] = y_j - y_i
    dt = target.unsqueeze(0) - target.unsqueeze(1)
    qdc = (dy - dt).square().mean(dim=(0, 1))
    qac = -(dy * torch.sign(dt)).mean(dim=(0, 1))
    return (qdc + qac).mean()


def ccc_loss(pred: Tensor, target: Tensor, eps: float = 1e-6) -> Tensor:
    """``1 - CCC`` with the reference code's estimators: unbiased variances, biased covariance, + eps."""
    pred, target = _check(pred, target)
    if pred.shape[0] < 2:
        raise ValueError("the CCC loss needs a batch of at least 2 samples; use a larger batch size.")
    my, mt = pred.mean(dim=0), target.mean(dim=0)
    cov = ((pred - my) * (target - mt)).mean(dim=0)
    vy, vt = pred.var(dim=0, unbiased=True), target.var(dim=0, unbiased=True)
    ccc = 2.0 * cov / (vy + vt + (my - mt).square() + eps)
    return (1.0 - ccc).mean()


_REGISTRY: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "utmos": utmos_loss,
    "contrastive": contrastive_loss,
    "dcq": dcq_loss,
    "ccc": ccc_loss,
}


def get_loss(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """Return the loss function called ``name`` (one of :data:`LOSSES`)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}.") from None

