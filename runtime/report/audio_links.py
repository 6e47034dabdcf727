"""Audio players of the report: links relative to the page's folder, or (`--embed-audio`) the audio itself as
base64 data URIs, up to a size limit past which the remaining clips fall back to links.

A clip listed several times is embedded once: its later players name the first (`data-src-of`) and the
page's script copies the source over. Segment rows (`start_time`/`end_time`) link with a media fragment
(`#t=start,end`) or embed only the segment (re-encoded as FLAC).
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from urllib.parse import quote

from .rows import ScoreRow

MIME = {".wav": "audio/wav", ".wave": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".oga": "audio/ogg",
        ".opus": "audio/ogg", ".mp3": "audio/mpeg", ".aif": "audio/aiff", ".aiff": "audio/aiff", ".m4a": "audio/mp4"}
"""Containers a browser plays as they are; other files are re-encoded as FLAC to embed them."""
DEFAULT_EMBED_LIMIT_MB = 50.0


@dataclass
class AudioSources:
    """Makes the `<audio>` element of each listed clip.

    Args:
        out_dir: the folder of the HTML page (links are relative to it).
        embed: embed the audio (base64 data URIs) instead of linking it.
        limit_bytes: most audio bytes to embed, in all; clips past it are linked.
        audio_root: the folder relative row paths are relative to (None: the current folder, else the
            folder of the scores file the row came from).
    """

    out_dir: Path
    embed: bool = False
    limit_bytes: int = int(DEFAULT_EMBED_LIMIT_MB * 1e6)
    audio_root: Path | None = None
    embedded_bytes: int = 0
    over_limit: int = 0
    over_limit_bytes: int = 0
    missing: set[str] = field(default_factory=set)
    _ids: dict[tuple[str, float | None, float | None], str] = field(default_factory=dict)

    def locate(self, row: ScoreRow) -> Path:
        """The audio file of a row on this machine (where it is expected when it cannot be found)."""
        p = Path(os.path.expanduser(row.path))
        if p.is_absolute():
            return p
        bases = [self.audio_root] if self.audio_root is not None else [Path.cwd()]
        if self.audio_root is None and row.source != "-":
            bases.append(Path(row.source).resolve().parent)
        for base in bases:
            if (base / p).exists():
                return (base / p).resolve()
        return (bases[0] / p).resolve()

    def link(self, row: ScoreRow) -> str:
        """A URL for the row's audio: relative to the page when possible, with `#t=` for a segment."""
        target = self.locate(row)
        try:
            rel = os.path.relpath(target, self.out_dir.resolve())
            url = quote(rel.replace(os.sep, "/"))
        except ValueError:  # another drive (Windows): no relative path exists
            url = target.as_uri()
        return url + _fragment(row)

    def tag(self, row: ScoreRow) -> str:
        """The `<audio>` element (with a download/open link under it) for one listed clip."""
        start, end = _bounds(row)
        key = (row.path, start, end)
        target = self.locate(row)
        if not target.exists():
            self.missing.add(str(target))
        link = self.link(row)
        fallback = f'<a class="open" href="{escape(link)}">open</a>'
        if self.embed and key in self._ids:
            return (f'<audio controls preload="none" data-src-of="{self._ids[key]}"></audio>'
                    f'<noscript><span class="note">(the player above this clip\'s first one plays it)</span>'
                    "</noscript>")
        if self.embed and target.exists():
            data = self._data_uri(row, target)
            if data is not None:
                clip_id = f"clip{len(self._ids)}"
                self._ids[key] = clip_id
                return f'<audio controls preload="none" id="{clip_id}" src="{data}"></audio>'
        return f'<audio controls preload="none" src="{escape(link)}"></audio>{fallback}'

    def _data_uri(self, row: ScoreRow, target: Path) -> str | None:
        """The clip as a data URI, or None (after counting it) when it would pass the size limit."""
        start, end = _bounds(row)
        mime = MIME.get(target.suffix.lower())
        if mime is not None and start is None and end is None:
            size = target.stat().st_size
            if self._over(size):
                return None
            payload = target.read_bytes()
        else:
            try:
                payload, mime = _segment_flac(target, start, end), "audio/flac"
            except Exception:  # unreadable for soundfile: link it instead
                return None
            if self._over(len(payload)):
                return None
        self.embedded_bytes += len(payload)
        return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"

    def _over(self, size: int) -> bool:
        if self.embedded_bytes + size > self.limit_bytes:
            self.over_limit += 1
            self.over_limit_bytes += size
            return True
        return False


def _bounds(row: ScoreRow) -> tuple[float | None, float | None]:
    def num(k: str) -> float | None:
        v = row.data.get(k)
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

    return num("start_time"), num("end_time")


def _fragment(row: ScoreRow) -> str:
    """A media fragment for a segment row (`#t=12.5,20`), "" for a whole file."""
    start, end = _bounds(row)
    if start is None and end is None:
        return ""
    s = f"{start or 0:g}"
    return f"#t={s},{end:g}" if end is not None else f"#t={s}"


def _segment_flac(path: Path, start: float | None, end: float | None) -> bytes:
    """The [start, end) seconds of an audio file (the whole file when both are None) as FLAC bytes."""
    import soundfile as sf

    with sf.SoundFile(str(path)) as f:
        sr = f.samplerate
        first = round((start or 0.0) * sr)
        last = f.frames if end is None else min(round(end * sr), f.frames)
        f.seek(min(first, f.frames))
        data = f.read(max(last - first, 0), dtype="float32", always_2d=True)
    buf = io.BytesIO()
    sf.write(buf, data, sr, format="FLAC", subtype="PCM_24")
    return buf.getvalue()
