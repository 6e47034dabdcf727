"""``mmmos-export OUT_DIR``: write a bundle (ONNX graphs fp32 + mixed fp16, report, engines, manifest).

Exactly one source: ``--random-init``, ``--audiobox [PATH]``, ``--wavlm/--muq/--m2d PATH`` (optionally
``--members DIR``), or ``--encoders-from BUNDLE --members DIR``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

AUDIOBOX_FROM_HUB = "hub"
"""``--audiobox`` given without a path: fetch facebook/audiobox-aesthetics through huggingface_hub."""

app = typer.Typer(add_completion=False, help=__doc__)


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"mmmos-export: {message}", err=True)
    return typer.Exit(code)


@app.command()
def export(
    out_dir: Path = typer.Argument(..., help="Bundle folder to write (must be empty unless --force)."),
    random_init: bool = typer.Option(False, "--random-init", help="Real architectures, random weights."),
    preset: str = typer.Option("full", help="Encoder sizes for --random-init: tiny | full."),
    seed: int = typer.Option(0, help="Seed for --random-init."),
    num_members: int = typer.Option(8, help="Random members for --random-init (cycling the 3 aggregators)."),
    audiobox: str | None = typer.Option(
        None, help="Audiobox Aesthetics checkpoint.pt or HF folder; with no PATH, fetch it from the Hub."
    ),
    wavlm: Path | None = typer.Option(None, help="WavLM checkpoint (unilm .pt, HF folder or Audiobox .pt)."),
    muq: Path | None = typer.Option(None, help="MuQ checkpoint folder (config.json + weights)."),
    m2d: Path | None = typer.Option(None, help="M2D weights_*.pth (in its release folder)."),
    muq_sample_rate: int = typer.Option(24000, help="Rate MuQ is fed (16000 reproduces MMMOS's feed)."),
    members: Path | None = typer.Option(None, help="Members folder written by mmmos-train select."),
    encoders_from: Path | None = typer.Option(None, help="Reuse this bundle's encoder graphs (needs --members)."),
    ood_reference: Path | None = typer.Option(
        None, "--ood-reference", help="A training feature cache (mmmos-train cache) whose clips become the "
        "out-of-domain reference rows are scored against (with --members)."),
    fp16: bool = typer.Option(True, "--fp16/--no-fp16", help="Also write mixed fp16 graphs and check them."),
    frames: bool = typer.Option(
        False, "--frames", help="Export frame features for every encoder (to cache features for blstm-t training)."
    ),
    trt: bool | None = typer.Option(None, "--trt/--no-trt", help="Build TensorRT engines (default: if available)."),
    trt_min: int = typer.Option(1, help="TensorRT profile: min windows per batch."),
    trt_opt: int = typer.Option(8, help="TensorRT profile: opt windows per batch."),
    trt_max: int = typer.Option(32, help="TensorRT profile: max windows per batch."),
    triton_repo: Path | None = typer.Option(
        None, "--triton-repo", help="Also write a Triton model repository for the bundle into this folder "
        "(ONNX Runtime models, TensorRT plans where engines exist, the windows ensemble and the python "
        "preprocessing model; needs tritonclient[grpc] to validate the configs)."),
    triton_precision: str = typer.Option("fp32", help="Encoder graphs for --triton-repo: fp32 | fp16."),
    force: bool = typer.Option(False, "--force", help="Replace the bundle files in a non-empty OUT_DIR."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow pickled objects in checkpoints."),
) -> None:
    """Write a bundle folder: encoder graphs + ensemble graph (fp32 and mixed fp16), report.json, engines/,
    manifest.json. Sources, exactly one: --random-init [--preset tiny|full]; --audiobox [PATH];
    --wavlm/--muq/--m2d PATH [--members DIR]; --encoders-from BUNDLE --members DIR.
    """
    from mmmos.export import sources
    from mmmos.export.pipeline import ExportCheckError, export_bundle
    from mmmos.export.tensorrt_build import BatchProfile
    from mmmos.runtime.errors import BackendUnavailableError

    kinds = [
        k for k, on in (
            ("--random-init", random_init), ("--audiobox", audiobox is not None),
            ("--wavlm/--muq/--m2d", any((wavlm, muq, m2d))), ("--encoders-from", encoders_from is not None),
        ) if on
    ]
    if len(kinds) != 1:
        raise _fail(f"give exactly one source (--random-init, --audiobox, --wavlm/--muq/--m2d or --encoders-from); "
                    f"got {kinds or 'none'}.")
    if members is not None and kinds[0] not in ("--wavlm/--muq/--m2d", "--encoders-from"):
        raise _fail("--members goes with --wavlm/--muq/--m2d or --encoders-from.")
    try:
        profile = BatchProfile(trt_min, trt_opt, trt_max)
        if random_init:
            spec = sources.from_random_init(preset, seed=seed, num_members=num_members)
        elif audiobox is not None:
            spec = sources.from_audiobox(None if audiobox == AUDIOBOX_FROM_HUB else Path(audiobox), trust_pickle)
        elif encoders_from is not None:
            if members is None:
                raise _fail("--encoders-from needs --members DIR (the members to put on those encoders).")
            spec = sources.from_bundle(encoders_from, members)
        else:
            spec = sources.from_checkpoints(wavlm, muq, m2d, members, muq_sample_rate, trust_pickle)
        spec.frames = frames
        spec.ood_cache = ood_reference
        if triton_repo is not None:
            from mmmos.runtime.serving.triton_repo import model_config_pb2

            model_config_pb2()  # no tritonclient: say so before the (long) export, not after
        export_bundle(out_dir, spec, force=force, fp16=fp16, trt=trt, profile=profile)
        if triton_repo is not None:
            from mmmos.runtime.serving.triton_repo import write_triton_repo

            write_triton_repo(out_dir, triton_repo, precision=triton_precision,
                              log=lambda m: typer.echo(m, err=True))
    except ExportCheckError as err:
        raise _fail(str(err), code=1) from err
    except (FileNotFoundError, FileExistsError, NotADirectoryError, KeyError, ValueError, NotImplementedError,
            BackendUnavailableError) as err:
        raise _fail(str(err).strip("'\"")) from err


def _fill_optional_audiobox(argv: list[str]) -> list[str]:
    """Let ``--audiobox`` stand alone (no PATH): typer options need a value, so insert the Hub sentinel."""
    out = []
    for i, arg in enumerate(argv):
        out.append(arg)
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if arg == "--audiobox" and (nxt is None or nxt.startswith("--")):
            out.append(AUDIOBOX_FROM_HUB)
    return out


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``mmmos-export``)."""
    args = _fill_optional_audiobox(list(sys.argv[1:] if argv is None else argv))
    app(args=args, prog_name="mmmos-export")


if __name__ == "__main__":
    main()
