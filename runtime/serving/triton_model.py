"""Triton Python-backend model `mmmos` of a model repository (`mmmos-export --triton-repo`), and its core maths.

`mmmos-export --triton-repo DIR` copies this file to `DIR/mmmos/1/model.py`. In the Triton container it
takes `pcm` FP32 [-1] + `sample_rate` INT32 [1] (the same request as `mmmos-serve`), resamples and cuts
the clip into 10 s windows with the runtime's own audio code (so `mmmos` must be pip-installed in the
container's Python), runs the windows through the `mmmos_windows` ensemble (encoders -> ensemble graph,
on the ONNX Runtime or TensorRT backends) by a BLS call, and averages the window scores per file exactly
like `Scorer` (per member weighted by valid seconds, then mean and population std over members).

`triton_python_backend_utils` exists only inside Triton, so it is imported in `initialize`; `score_clip`
is plain numpy and is tested outside Triton.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from mmmos.runtime.audio import iter_windows, prepare, to_mono

RunWindows = Callable[[dict[str, np.ndarray]], np.ndarray]


def score_clip(pcm: np.ndarray, sample_rate: int, encoders: list[tuple[str, int, int]], window_seconds: float,
               run_windows: RunWindows, batch: int = 8) -> tuple[np.ndarray, np.ndarray, float]:
    """Score one clip from its windows' member scores.

    Args:
        pcm: mono (or [N, C]) samples.
        sample_rate: their rate.
        encoders: (name, sample_rate, window_samples) per encoder, in bundle order.
        window_seconds: the bundle's window length.
        run_windows: feeds {"<enc>_wav": [b, W] float32, "<enc>_lengths": [b, 1] int64} -> member scores [b, M, 4].
        batch: windows per `run_windows` call.

    Returns:
        (mean [4], std [4], duration_s), axes in AXES order.

    Raises:
        AudioError: empty, non-finite or bad sample rate.
    """
    prep = prepare(to_mono(pcm), int(sample_rate), [e[1] for e in encoders], window_seconds)
    windows = list(iter_windows(prep, encoders, window_seconds))
    member_sum: np.ndarray | None = None
    for i in range(0, len(windows), batch):
        chunk = windows[i : i + batch]
        feeds: dict[str, np.ndarray] = {}
        for name, _, _ in encoders:
            feeds[f"{name}_wav"] = np.stack([w.wavs[name] for w in chunk])
            feeds[f"{name}_lengths"] = np.asarray([[w.lengths[name]] for w in chunk], np.int64)
        scores = np.asarray(run_windows(feeds), np.float64)  # [b, M, 4]
        part = sum(w.weight * scores[k] for k, w in enumerate(chunk))
        member_sum = part if member_sum is None else member_sum + part
    assert member_sum is not None  # prepare() guarantees at least one window
    members = member_sum / float(sum(w.weight for w in windows))
    return members.mean(axis=0), members.std(axis=0), prep.duration_s


class TritonPythonModel:
    """Triton Python-backend entry points (`initialize`, `execute`)."""

    def initialize(self, args: dict[str, Any]) -> None:
        """Read the encoder list and window rule from the model config's `mmmos_config` parameter."""
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        spec = json.loads(config["parameters"]["mmmos_config"]["string_value"])
        self.encoders = [(e["name"], int(e["sample_rate"]), int(e["window_samples"])) for e in spec["encoders"]]
        self.window_seconds = float(spec["window_seconds"])
        self.windows_model = str(spec["windows_model"])
        self.batch = int(spec.get("windows_per_call", 8))

    def _run_windows(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        pb = self.pb
        request = pb.InferenceRequest(model_name=self.windows_model, requested_output_names=["scores"],
                                      inputs=[pb.Tensor(k, np.ascontiguousarray(v)) for k, v in feeds.items()])
        response = request.exec()
        if response.has_error():
            raise RuntimeError(f"{self.windows_model}: {response.error().message()}")
        return pb.get_output_tensor_by_name(response, "scores").as_numpy()

    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request; a request that cannot be scored gets its own error response."""
        pb = self.pb
        responses = []
        for req in requests:
            try:
                pcm = pb.get_input_tensor_by_name(req, "pcm").as_numpy()
                rates = pb.get_input_tensor_by_name(req, "sample_rate").as_numpy().reshape(-1)
                outs = [score_clip(pcm[i], int(rates[i]), self.encoders, self.window_seconds, self._run_windows,
                                   self.batch) for i in range(pcm.shape[0])]
                responses.append(pb.InferenceResponse(output_tensors=[
                    pb.Tensor("scores", np.stack([o[0] for o in outs]).astype(np.float32)),
                    pb.Tensor("std", np.stack([o[1] for o in outs]).astype(np.float32)),
                    pb.Tensor("duration_s", np.asarray([[o[2]] for o in outs], np.float32)),
                ]))
            except Exception as exc:  # a bad clip fails its request only
                responses.append(pb.InferenceResponse(output_tensors=[], error=pb.TritonError(
                    f"cannot score the audio: {' '.join(str(exc).split())}")))
        return responses
