"""mmmos.runtime: score audio with an mmmos bundle on ONNX Runtime or TensorRT, without PyTorch.

    from mmmos.runtime import Scorer
    scorer = Scorer("bundle/")                 # or $MMMOS_BUNDLE / the default cache folder
    result = scorer.score("clip.wav")          # ScoreResult(scores={"PQ": ..}, std=.., duration_s=.., error=None)
    results = scorer.score(["a.wav", (array, 48000)])

Nothing here imports torch; onnxruntime and tensorrt are imported only when a backend starts.
"""

from .bundle import AXES, Bundle
from .errors import (
    AudioError,
    BackendUnavailableError,
    BundleError,
    BundleNotFoundError,
    MMMOSRuntimeError,
    PrecisionError,
)
from .inputs import InputItem
from .results import EncodedItem, ScoreResult
from .scorer import Scorer

__all__ = [
    "AXES",
    "AudioError",
    "BackendUnavailableError",
    "Bundle",
    "BundleError",
    "BundleNotFoundError",
    "EncodedItem",
    "InputItem",
    "MMMOSRuntimeError",
    "PrecisionError",
    "ScoreResult",
    "Scorer",
]
