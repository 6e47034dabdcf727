"""What the encoders' length rules move: a bundle's fp32 scores with every window fed what its encoder's rule says
(the runtime) vs fed the whole zero-padded window (the computation before length rules), same graphs, ORT CPU.

    python scripts/length_rule_effect.py BUNDLE CLIP_OR_FOLDER...

Prints the max and mean absolute score difference per axis and the fp32 scores' spread over the files (JSON).
"""

from __future__ import annotations

import json
import sys

import numpy as np

from mmmos import AXES
from mmmos.runtime import Scorer
from mmmos.runtime.inputs import expand
from mmmos.runtime.manifest import EncoderSpec


def scores(bundle: str, paths: list[str]) -> np.ndarray:
    """[files, 4] fp32 scores with the encoders' current `fed_samples`."""
    with Scorer(bundle, backend="ort-cpu", precision="fp32", warn=lambda _m: None) as scorer:
        return np.array([[r.scores[a] for a in AXES] if r.scores else [np.nan] * 4 for r in scorer.score(paths)])


def main() -> None:
    """Score the inputs both ways and print the differences."""
    bundle, specs = sys.argv[1], sys.argv[2:]
    paths = [it.path for it in expand(specs) if it.path]
    by_rule = scores(bundle, paths)
    rule = EncoderSpec.fed_samples
    EncoderSpec.fed_samples = lambda self, valid: self.max_samples  # type: ignore[method-assign]
    try:
        whole = scores(bundle, paths)
    finally:
        EncoderSpec.fed_samples = rule  # type: ignore[method-assign]
    diff = np.abs(by_rule - whole)
    print(json.dumps({"bundle": bundle, "files": len(paths),
                      "max_abs": dict(zip(AXES, np.nanmax(diff, axis=0).round(7).tolist(), strict=True)),
                      "mean_abs": dict(zip(AXES, np.nanmean(diff, axis=0).round(8).tolist(), strict=True)),
                      "fp32_spread_std": dict(zip(AXES, np.nanstd(whole, axis=0).round(5).tolist(), strict=True))},
                     indent=1))


if __name__ == "__main__":
    main()
