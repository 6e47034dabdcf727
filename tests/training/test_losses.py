"""The four losses against values computed by hand (research/paper.md section 3)."""

from __future__ import annotations

import pytest
import torch

from mmmos.training.losses import ccc_loss, contrastive_loss, dcq_loss, get_loss, utmos_loss


def _t(*v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float64)


def test_utmos_by_hand() -> None:
    # errors 0, 1, 3 -> clipped MSE (1 + 9) / 3; pairs |y_i - y_j| - 0.1 summed over i != j = 11.4, / 6 = 1.9
    got = utmos_loss(_t(0, 1, 3), _t(0, 0, 0))
    assert got.item() == pytest.approx(10 / 3 + 0.5 * 1.9, abs=1e-12)


def test_utmos_clip_zeroes_small_errors() -> None:
    # every error <= tau and every pair difference <= margin: the loss is exactly 0
    assert utmos_loss(_t(0.3, 0.35), _t(0.0, 0.0)).item() == 0.0


def test_contrastive_by_hand_and_single_sample() -> None:
    assert contrastive_loss(_t(0, 1, 3), _t(0, 0, 0)).item() == pytest.approx(1.9, abs=1e-12)
    # shift invariance
    assert contrastive_loss(_t(5, 6, 8), _t(0, 0, 0)).item() == pytest.approx(1.9, abs=1e-12)
    one = torch.tensor([1.0], requires_grad=True)
    loss = contrastive_loss(one, torch.tensor([0.0]))
    loss.backward()
    assert loss.item() == 0.0


def test_dcq_by_hand() -> None:
    # QDC = 16/9, QAC = -8/9 (matrices written out in the test's derivation)
    assert dcq_loss(_t(0, 1, 3), _t(0, 1, 1)).item() == pytest.approx(8 / 9, abs=1e-12)


def test_ccc_by_hand() -> None:
    # cov (biased) = 1/3, unbiased variances 1 and 1, equal means
    want = 1 - (2 / 3) / (2 + 1e-6)
    assert ccc_loss(_t(1, 2, 3), _t(1, 3, 2)).item() == pytest.approx(want, abs=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        ccc_loss(_t(1), _t(1))


@pytest.mark.parametrize("name", ["utmos", "contrastive", "dcq", "ccc"])
def test_multi_axis_is_mean_of_axes(name: str) -> None:
    fn = get_loss(name)
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(7, 4, generator=g, dtype=torch.float64)
    target = torch.randn(7, 4, generator=g, dtype=torch.float64)
    per_axis = torch.stack([fn(pred[:, a], target[:, a]) for a in range(4)])
    assert fn(pred, target).item() == pytest.approx(per_axis.mean().item(), abs=1e-12)
    # the axes really differ, so averaging is tested on distinct values
    assert per_axis.std().item() > 1e-6


def test_unknown_loss() -> None:
    with pytest.raises(ValueError, match="unknown loss"):
        get_loss("mse")
