"""Where a bundle's weights come from: random init, Audiobox, the public encoder checkpoints, or a bundle.

Each function returns an ``ExportSpec`` for ``mmmos.export.pipeline.export_bundle``.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from mmmos.export.audiobox import load_audiobox
from mmmos.export.members_dir import check_identity, load_members
from mmmos.export.pipeline import ExportSpec, ReusedEncoders
from mmmos.models.ensemble import random_members
from mmmos.models.presets import ENCODER_ORDER, build_encoders, encoder_dims, get_preset
from mmmos.runtime.manifest import provenance, read_manifest


def from_random_init(preset: str, seed: int = 0, num_members: int = 8) -> ExportSpec:
    """The real architectures of ``preset`` with random weights and ``num_members`` random members.

    Members cycle the three aggregators (so ``num_members >= 3`` covers them all); ``num_members=0``
    gives an encoders-only bundle.
    """
    get_preset(preset)  # a clear KeyError for an unknown name before any work
    encoders = build_encoders(preset, seed=seed)
    members = random_members(encoder_dims(encoders), num_members, seed=seed) if num_members > 0 else []
    return ExportSpec(
        encoders=encoders, members=members, untrained=True,
        provenance=provenance("random-init", name=f"random-{preset}", preset=preset, seed=seed),
    )


def from_audiobox(path: Path | None, trust_pickle: bool = False) -> ExportSpec:
    """Meta Audiobox Aesthetics: one WavLM encoder (per-axis layer mix) and one member."""
    model = load_audiobox(path, trust_pickle=trust_pickle)
    return ExportSpec(
        encoders={"wavlm": model.wavlm}, members=[model.member], untrained=False,
        provenance=provenance("audiobox", model.checkpoint_files, name="audiobox-aesthetics", model_cfg=model.model_cfg,
                              notes=model.notes),
    )


def from_checkpoints(
    wavlm: Path | None,
    muq: Path | None,
    m2d: Path | None,
    members_dir: Path | None = None,
    muq_sample_rate: int = 24000,
    trust_pickle: bool = False,
) -> ExportSpec:
    """The public encoder checkpoints (any subset, bundle order), with trained members or none.

    Without members the bundle holds encoder graphs only (for the training feature cache).
    """
    from mmmos.models.m2d_checkpoints import load_m2d
    from mmmos.models.muq_checkpoints import load_muq
    from mmmos.models.wavlm_checkpoints import load_wavlm

    paths = {"wavlm": wavlm, "muq": muq, "m2d": m2d}
    if not any(paths.values()):
        raise ValueError("give at least one of --wavlm, --muq, --m2d (checkpoint paths).")
    loaders = {
        "wavlm": lambda p: load_wavlm(p, trust_pickle=trust_pickle),
        "muq": lambda p: load_muq(p, sample_rate=muq_sample_rate),
        "m2d": lambda p: load_m2d(p, trust_pickle=trust_pickle),
    }
    encoders: dict[str, nn.Module] = {n: loaders[n](paths[n]) for n in ENCODER_ORDER if paths[n]}
    loaded = load_members(members_dir) if members_dir else []
    for lm in loaded:
        lacking = [e for e in lm.member.config.encoders if e not in encoders]
        if lacking:
            raise ValueError(f"member {lm.meta.get('name')!r} reads encoders {lacking}; pass their checkpoints.")
    ckpts = [Path(p) for p in paths.values() if p and Path(p).is_file()]
    return ExportSpec(
        encoders=encoders, members=[lm.member for lm in loaded], member_meta=[lm.meta for lm in loaded],
        untrained=False, provenance=provenance(
            "checkpoints", ckpts, name="mmmos" if loaded else "mmmos-encoders",
            encoders={n: str(p) for n, p in paths.items() if p},
            members_dir=str(members_dir) if members_dir else None,
        ),
    )


def from_bundle(bundle_dir: Path, members_dir: Path) -> ExportSpec:
    """Reuse ``bundle_dir``'s encoder graphs (sha256-checked) with the members in ``members_dir``."""
    manifest = read_manifest(bundle_dir)
    loaded = load_members(members_dir)
    check_identity(loaded, manifest)
    return ExportSpec(
        encoders={}, members=[lm.member for lm in loaded], member_meta=[lm.meta for lm in loaded],
        untrained=bool(manifest.get("untrained", False)),
        reuse=ReusedEncoders(Path(bundle_dir), manifest),
        provenance=provenance(
            "encoders-from", name="mmmos", encoders_bundle=str(bundle_dir), members_dir=str(members_dir),
            encoders_provenance=manifest.get("provenance", {}),
        ),
    )
