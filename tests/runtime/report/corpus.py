"""A small scored corpus for the report tests: audio files and the rows mmmos-score would write for them.

Three AudioMOS 2025 Track 2 systems (four clips each, named like the challenge's test set), one long file
with a per-window timeline, one failed input; every scored row names the model and carries the optional
fields (interval, ood).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

AXES = ("PQ", "PC", "CE", "CU")
SYSTEMS = ("sys0v1wm", "sys25Voz", "sysKUd7C")
MODEL = {"name": "aes-test-model", "sha256": "0123456789ab"}
LONG = "long_recording.wav"


def clip_name(system: str, k: int) -> str:
    """A challenge-style clip file name."""
    return f"audiomos2025-track2-{system}-utt{k:05d}.wav"


def scored_row(path: str, scores: tuple[float, float, float, float], **extra: Any) -> dict[str, Any]:
    """A scored row as mmmos-score writes it (plus `extra` fields)."""
    row: dict[str, Any] = {"path": path, **dict(zip(AXES, scores, strict=True)), "std": dict.fromkeys(AXES, 0.2),
                           "duration_s": 1.0, "windows": 1, "error": None, "model": MODEL}
    row.update(extra)
    return row


def error_row(path: str, error: str = "cannot decode: not an audio file") -> dict[str, Any]:
    """A failed input's row."""
    return {"path": path, **dict.fromkeys(AXES), "std": None, "duration_s": None, "windows": 0, "error": error,
            "model": MODEL}


def timeline(duration: float) -> list[dict[str, float]]:
    """Per-window scores of a file (10 s windows, the last one short)."""
    out, start, k = [], 0.0, 0
    while start < duration:
        end = min(start + 10.0, duration)
        out.append({"start_s": start, "end_s": end, **{a: round(5 + 3 * np.sin(k + i), 3)
                                                       for i, a in enumerate(AXES)}})
        start, k = end, k + 1
    return out


def write_corpus(folder: Path, seconds: float = 0.25) -> Path:
    """Write the audio (in `folder/audio/`) and `folder/scores.jsonl` (paths relative to `folder`); return it."""
    rng = np.random.default_rng(0)
    audio = folder / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    rows = []
    for s_idx, system in enumerate(SYSTEMS):
        for k in range(4):
            name = clip_name(system, k)
            sf.write(audio / name, (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32), 16000)
            base = 2.0 + 2.5 * s_idx + 0.4 * k  # systems differ, so the group means are ordered
            scores = (base, 9.0 - base, base + 0.5, base - 0.5)
            rows.append(scored_row(f"audio/{name}", scores,
                                   interval={a: [v - 0.4, v + 0.4] for a, v in zip(AXES, scores, strict=True)},
                                   ood={"score": 0.9 if k == 0 else 0.1, "flag": k == 0}))
    sf.write(audio / LONG, (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
    rows.append(scored_row(f"audio/{LONG}", (6.0, 4.0, 5.0, 6.5), duration_s=65.0, windows=7,
                           timeline=timeline(65.0), worst={"PQ": 20.0, "CE": 40.0}))
    rows.append(error_row("audio/broken.wav"))
    out = folder / "scores.jsonl"
    with open(out, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    return out
