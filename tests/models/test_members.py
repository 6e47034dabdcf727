"""Members, aggregators and the ensemble graph (mmmos.models.members / aggregators / ensemble)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmmos import AXES
from mmmos.models.aggregators import MaskedBLSTM, make_head
from mmmos.models.ensemble import Ensemble, FlatEnsemble, random_members
from mmmos.models.members import Member, MemberConfig

DIMS = {"wavlm": (4, 16), "muq": 12, "m2d": 20}
STEPS = 10


def _inputs(batch: int = 3, seed: int = 0) -> dict[str, Tensor]:
    """Encoder outputs as the encoder graphs give them, with ragged step masks."""
    g = torch.Generator().manual_seed(seed)
    out = {
        "wavlm_pooled": torch.randn(batch, 4, 16, generator=g),
        "muq_pooled": F.normalize(torch.randn(batch, 12, generator=g), dim=-1),
        "m2d_pooled": F.normalize(torch.randn(batch, 20, generator=g), dim=-1),
        "wavlm_frames": torch.randn(batch, 4, STEPS, 16, generator=g),
        "muq_frames": torch.randn(batch, STEPS, 12, generator=g),
        "m2d_frames": torch.randn(batch, STEPS, 20, generator=g),
    }
    valid = [STEPS, 4, 1, 7, 2][:batch]
    for e, shift in (("wavlm", 0), ("muq", 1), ("m2d", 0)):
        n = torch.tensor([max(1, v - shift) for v in valid]).unsqueeze(1)
        out[f"{e}_steps"] = (torch.arange(STEPS).unsqueeze(0) < n).float()
        out[f"{e}_frames"] = out[f"{e}_frames"] * out[f"{e}_steps"].reshape(batch, *([1] * (e == "wavlm")), STEPS, 1)
    return out


def test_member_config_json_round_trip() -> None:
    cfg = MemberConfig(
        aggregator="blstm-t",
        loss="ccc",
        encoders=("wavlm", "m2d"),
        head_layers=2,
        head_hidden=32,
        head_ln=True,
        hidden=48,
        target_mean=(5, 4, 6, 7),
        target_std=(1, 2, 1.5, 1),
        name="x",
    )
    again = MemberConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert again.encoders == ("wavlm", "m2d")
    with pytest.raises(ValueError, match="unknown MemberConfig keys"):
        MemberConfig.from_dict({**cfg.to_dict(), "hiden": 3})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"aggregator": "gru"},
        {"encoders": ("hubert",)},
        {"layer_mix": "per-axis", "aggregator": "blstm-e"},
        {"target_std": (1, 1, 0, 1)},
        {"target_mean": (1, 2)},
    ],
)
def test_member_config_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        MemberConfig(**kwargs)


@pytest.mark.parametrize("layers,ln", [(1, False), (2, True), (3, False)])
def test_head_equals_audiobox_create_mlp_block(layers: int, ln: bool) -> None:
    utils = pytest.importorskip("audiobox_aesthetics.model.utils", reason="audiobox_aesthetics not installed")
    torch.manual_seed(0)
    ref = nn.Sequential(*utils.create_mlp_block(24, 1, layers, "gelu", ln))
    head = make_head(24, layers, None, ln)
    head.load_state_dict(ref.state_dict())  # same key names and shapes, so Audiobox checkpoints map 1:1
    x = torch.randn(5, 24)
    torch.testing.assert_close(head(x), ref(x), rtol=0, atol=0)
    assert make_head(24, 2, 8, True)(x).shape == (5, 1)


def test_per_axis_mlp_member_is_audiobox_math() -> None:
    """wavlm-only per-axis member == Audiobox: softmax mix, pool (linear), normalise, head, de-normalise."""
    torch.manual_seed(1)
    cfg = MemberConfig(
        encoders=("wavlm",),
        layer_mix="per-axis",
        head_layers=2,
        head_ln=True,
        target_mean=(5, 6, 7, 8),
        target_std=(1, 2, 3, 4),
    )
    member = Member(cfg, DIMS).eval()
    with torch.no_grad():
        member.layer_mix.weight.normal_()
    x = _inputs()
    with torch.no_grad():
        got = member(x)
        for i, axis in enumerate(AXES):
            w = torch.softmax(member.layer_mix.weight[i], -1)
            emb = F.normalize((x["wavlm_pooled"] * w[None, :, None]).sum(1), dim=-1)
            want = member.heads[axis](emb).squeeze(-1) * cfg.target_std[i] + cfg.target_mean[i]
            torch.testing.assert_close(got[:, i], want)
    assert member.input_names == ["wavlm_pooled"]


def test_masked_blstm_is_exact_bidirectional_lstm_on_valid_prefix() -> None:
    torch.manual_seed(2)
    blstm = MaskedBLSTM(6, 10).eval()
    ref = nn.LSTM(6, 5, batch_first=True, bidirectional=True).eval()
    sd = {f"{k}": v for k, v in blstm.fwd.state_dict().items()}
    sd.update({f"{k}_reverse": v for k, v in blstm.bwd.state_dict().items()})
    ref.load_state_dict(sd)
    x = torch.randn(3, 9, 6)
    lengths = [9, 5, 1]
    mask = (torch.arange(9).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)).float()
    noisy = torch.where(mask.bool().unsqueeze(-1), x, torch.randn(3, 9, 6) * 50)
    with torch.no_grad():
        clean_out = blstm(x * mask.unsqueeze(-1), mask)
        noisy_out = blstm(noisy, mask)
        for b, n in enumerate(lengths):
            want, _ = ref(x[b : b + 1, :n])
            torch.testing.assert_close(noisy_out[b, :n], want[0])
            assert torch.equal(noisy_out[b, :n], clean_out[b, :n])


@pytest.mark.parametrize("aggregator", ["mlp", "blstm-t", "blstm-e"])
def test_member_ignores_padded_steps(aggregator: str) -> None:
    torch.manual_seed(3)
    member = Member(MemberConfig(aggregator=aggregator, hidden=16), DIMS).eval()
    x = _inputs()
    noisy = dict(x)
    for e in ("wavlm", "muq", "m2d"):
        pad = (x[f"{e}_steps"] == 0).reshape(3, *([1] * (e == "wavlm")), STEPS, 1)
        noisy[f"{e}_frames"] = torch.where(pad, torch.randn_like(x[f"{e}_frames"]) * 10, x[f"{e}_frames"])
    with torch.no_grad():
        a, b = member(x), member(noisy)
    assert a.shape == (3, 4)
    assert torch.equal(a, b)


def test_member_input_names() -> None:
    assert Member(MemberConfig(aggregator="blstm-t", encoders=("muq", "m2d")), DIMS).input_names == [
        "muq_frames",
        "muq_steps",
        "m2d_frames",
        "m2d_steps",
    ]
    assert Member(MemberConfig(aggregator="blstm-e", encoders=("m2d",)), DIMS).input_names == ["m2d_pooled"]


def test_ensemble_mean_and_population_std() -> None:
    members = random_members(DIMS, 5, seed=4, hidden=16)
    ens = Ensemble(members).eval()
    x = _inputs()
    with torch.no_grad():
        scores, mean, std = ens(x)
        singles = [m(x).numpy() for m in members]
    assert scores.shape == (3, 5, 4)
    np.testing.assert_allclose(scores.numpy(), np.stack(singles, 1), rtol=0, atol=0)
    np.testing.assert_allclose(mean.numpy(), np.mean(singles, 0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(std.numpy(), np.std(singles, 0, ddof=0), rtol=1e-5, atol=1e-5)
    assert (std > 0).all()  # random members disagree
    with torch.no_grad():
        one = Ensemble(members[:1])(x)
    assert (one[2] == 0).all()
    assert ens.input_names == sorted(ens.input_names)
    with pytest.raises(KeyError, match="encoder outputs"):
        ens({"muq_pooled": x["muq_pooled"]})


def test_random_members_cover_aggregators_and_are_deterministic() -> None:
    a = random_members(DIMS, 6, seed=7, hidden=16)
    b = random_members(DIMS, 6, seed=7, hidden=16)
    assert {m.config.aggregator for m in a} == {"mlp", "blstm-t", "blstm-e"}
    assert len({m.config.loss for m in a}) == 4
    assert len({m.config.encoders for m in a}) > 1
    for m, n in zip(a, b, strict=True):
        assert m.config == n.config
        for (k, v), (_, w) in zip(m.state_dict().items(), n.state_dict().items(), strict=True):
            assert torch.equal(v, w), k
    only_muq = random_members({"muq": 12}, 3, seed=0, encoders=("muq",), hidden=16)
    assert all(m.config.encoders == ("muq",) for m in only_muq)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
@pytest.mark.filterwarnings("ignore:Converting a tensor to a Python boolean")
def test_ensemble_onnx_export_matches_eager(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    pytest.importorskip("onnx", reason="onnx not installed")
    ens = Ensemble(random_members(DIMS, 6, seed=5, hidden=16)).eval()
    x = _inputs(batch=3)
    path = tmp_path / "ensemble.onnx"
    names = ens.input_names
    dyn = {n: {0: "batch"} for n in [*names, *ens.output_names]}
    # TorchScript exporter: the dynamo one currently names an internal value "mean" and clashes with our output.
    torch.onnx.export(
        FlatEnsemble(ens),
        tuple(x[n] for n in names),
        str(path),
        input_names=names,
        output_names=ens.output_names,
        dynamic_axes=dyn,
        opset_version=17,
        dynamo=False,
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x5 = _inputs(batch=5, seed=9)  # another batch size than the one traced
    got = sess.run(None, {n: x5[n].numpy() for n in names})
    with torch.no_grad():
        want = ens(x5)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), rtol=0, atol=1e-5)


def test_per_axis_mix_broadcasts_other_encoders() -> None:
    torch.manual_seed(6)
    cfg = MemberConfig(encoders=("wavlm", "muq"), layer_mix="per-axis", head_layers=2, head_hidden=8)
    member = Member(cfg, DIMS).eval()
    with torch.no_grad():
        member.layer_mix.weight.normal_()
        x = _inputs()
        got = member(x)
        for i, axis in enumerate(AXES):
            w = torch.softmax(member.layer_mix.weight[i], -1)
            wav = F.normalize((x["wavlm_pooled"] * w[None, :, None]).sum(1), dim=-1)
            want = member.heads[axis](torch.cat([wav, x["muq_pooled"]], -1)).squeeze(-1)
            torch.testing.assert_close(got[:, i], want)
