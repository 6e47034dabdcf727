"""Triton Python-backend model `mmmos` of a model repository (`mmmos-export --triton-repo`), and its core maths.

`mmmos-export --triton-repo DIR` copies this file to `DIR/mmmos/1/model.py`. In the Triton container it
takes `pcm` FP32 [-1] + `sample_rate` INT32 [1] (the same request as `mmmos-serve`), resamples and cuts
the clip into windows with the runtime's own audio code and window rule (so `mmmos` must be pip-installed
in the container's Python), runs the windows through the `mmmos_windows` ensemble (encoders -> ensemble
graph, on the ONNX Runtime or TensorRT backends) by a BLS call, and folds the window scores per file with
the runtime's `fold_windows`, as `Scorer` does.

The BLS request asks for its outputs in CPU memory (`preferred_memory`, Triton >= 23.04): the TensorRT
models of the repository run on KIND_GPU, and `as_numpy()` of a tensor in GPU memory raises.

`triton_python_backend_utils` exists only inside Triton, so it is imported in `initialize`; `score_clip`
is plain numpy and is tested outside Triton (the BLS path with a stand-in `pb_utils`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from mmmos.runtime.audio import prepare, to_mono
from mmmos.runtime.errors import AudioError
from mmmos.runtime.manifest import EncoderSpec
from mmmos.runtime.results import NON_FINITE_SCORES
from mmmos.runtime.windows import fold_windows, iter_windows, stack_windows

RunWindows = Callable[[dict[str, np.ndarray]], np.ndarray]


def score_clip(pcm: np.ndarray, sample_rate: int, encoders: list[EncoderSpec], run_windows: RunWindows,
               batch: int = 8) -> tuple[np.ndarray, np.ndarray, float]:
    """Score one clip from its windows' member scores.

    Args:
        pcm: mono (or [N, C]) samples.
        sample_rate: their rate.
        encoders: the bundle's encoders, in bundle order.
        run_windows: feeds {"<enc>_wav": [b, W] float32, "<enc>_lengths": [b, 1] int64} -> member scores [b, M, 4].
        batch: windows per `run_windows` call.

    Returns:
        (mean [4], std [4], duration_s), axes in AXES order.

    Raises:
        AudioError: empty, non-finite, far outside [-1, 1] or bad sample rate, or non-finite scores.
    """
    prep = prepare(to_mono(pcm), int(sample_rate), [e.sample_rate for e in encoders])
    windows = list(iter_windows(prep, encoders))
    parts = []
    for i in range(0, len(windows), batch):
        chunk = windows[i : i + batch]
        feeds: dict[str, np.ndarray] = {}
        for e in encoders:
            feeds[f"{e.name}_wav"] = stack_windows([w.wavs[e.name] for w in chunk])
            feeds[f"{e.name}_lengths"] = np.asarray([[w.lengths[e.name]] for w in chunk], np.int64)
        parts.append(np.asarray(run_windows(feeds), np.float32))  # [b, M, 4]
    folded = fold_windows(np.concatenate(parts), np.asarray([w.weight for w in windows]))
    if not (np.isfinite(folded.mean).all() and np.isfinite(folded.std).all()):
        raise AudioError(NON_FINITE_SCORES)  # an error response for this request, never NaN scores
    return folded.mean, folded.std, prep.duration_s


class TritonPythonModel:
    """Triton Python-backend entry points (`initialize`, `execute`)."""

    def initialize(self, args: dict[str, Any]) -> None:
        """Read the encoder list and window rule from the model config's `mmmos_config` parameter."""
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        spec = json.loads(config["parameters"]["mmmos_config"]["string_value"])
        self.encoders = [EncoderSpec.from_dict(e) for e in spec["encoders"]]
        self.windows_model = str(spec["windows_model"])
        self.batch = int(spec.get("windows_per_call", 8))

    def _run_windows(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        pb = self.pb
        request = pb.InferenceRequest(
            model_name=self.windows_model, requested_output_names=["scores"],
            inputs=[pb.Tensor(k, np.ascontiguousarray(v)) for k, v in feeds.items()],
            preferred_memory=pb.PreferredMemory(pb.TRITONSERVER_MEMORY_CPU, 0))
        response = request.exec()
        if response.has_error():
            raise RuntimeError(f"{self.windows_model}: {response.error().message()}")
        scores = pb.get_output_tensor_by_name(response, "scores")
        if not scores.is_cpu():  # a Triton older than 23.04 ignores preferred_memory
            raise RuntimeError(f"{self.windows_model} answered in GPU memory; this model needs Triton >= 23.04")
        return scores.as_numpy()

    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request; a request that cannot be scored gets its own error response."""
        pb = self.pb
        responses = []
        for req in requests:
            try:
                pcm = pb.get_input_tensor_by_name(req, "pcm").as_numpy()
                rates = pb.get_input_tensor_by_name(req, "sample_rate").as_numpy().reshape(-1)
                outs = [score_clip(pcm[i], int(rates[i]), self.encoders, self._run_windows, self.batch)
                        for i in range(pcm.shape[0])]
                responses.append(pb.InferenceResponse(output_tensors=[
                    pb.Tensor("scores", np.stack([o[0] for o in outs]).astype(np.float32)),
                    pb.Tensor("std", np.stack([o[1] for o in outs]).astype(np.float32)),
                    pb.Tensor("duration_s", np.asarray([[o[2]] for o in outs], np.float32)),
                ]))
            except Exception as exc:  # a bad clip fails its request only
                responses.append(pb.InferenceResponse(output_tensors=[], error=pb.TritonError(
                    f"cannot score the audio: {' '.join(str(exc).split())}")))
        return responses
