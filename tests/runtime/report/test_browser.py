"""The report as a browser shows it: headless Chromium (Debian's `chromium`; `.ci/run` installs it) opens the
page, and a probe script appended to a copy of it records what is laid out and visible (sizes of the
histogram bars, table rows, lists, players, timelines, the page's visible text) after the page's own script
ran. A screenshot checks that the page is not blank and that the bars are painted.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mmmos.runtime.report.cli import parse_args
from mmmos.runtime.report.command import run

from .corpus import AXES, MODEL, SYSTEMS, write_corpus

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]
TOP = 3

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).is_file(),
    reason="headless Chromium is not installed (Debian: apt-get install -y chromium; .ci/run installs it)")

PROBE = """<script>
(function () {
  function box(el) { var r = el.getBoundingClientRect(); return {w: r.width, h: r.height}; }
  function shown(el) {
    var r = el.getBoundingClientRect(), cs = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && cs.visibility !== 'hidden' && cs.display !== 'none';
  }
  function all(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }
  var out = {js: document.documentElement.getAttribute('data-js'), text: document.body.innerText};
  out.hists = all('svg.hist').map(function (s) {
    return {axis: s.getAttribute('data-axis'), shown: shown(s),
            bars: all('rect.bar', s).filter(function (b) { var r = box(b); return r.w > 0 && r.h > 0; }).length};
  });
  out.groups = all('table.groups tbody tr').map(function (tr) {
    return {shown: shown(tr), cells: Array.prototype.map.call(tr.cells, function (c) { return c.innerText; })};
  });
  out.lists = all('.extreme').map(function (d) {
    return {axis: d.getAttribute('data-axis'), kind: d.getAttribute('data-kind'), shown: shown(d),
            items: all('li.clip', d).filter(shown).length,
            players: all('li.clip audio', d).filter(function (a) { return shown(a) && !!a.src; }).length,
            scores: all('li.clip .score', d).map(function (s) { return parseFloat(s.innerText); })};
  });
  out.timelines = all('svg.timeline').map(function (s) {
    return {shown: shown(s), lines: all('polyline.tl-line', s).filter(function (p) { return box(p).w > 0; }).length,
            players: all('audio', s.parentNode).filter(function (a) { return shown(a) && !!a.src; }).length};
  });
  var th = all('table.groups th')[3];  // the PQ column: one click sorts ascending
  th.click();
  out.sorted = all('table.groups tbody tr').map(function (tr) { return tr.cells[0].innerText; });
  out.aria = th.getAttribute('aria-sort');
  var pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script></body>"""


def chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'chromium-profile'}", *args],
                          capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report of the test corpus with embedded audio (players of repeated clips are filled by the script)."""
    root = tmp_path_factory.mktemp("browser")
    scores = write_corpus(root)
    out = root / "report.html"
    cmd = parse_args([str(scores), "-o", str(out), "--top", str(TOP), "--embed-audio", "--filter", "PQ>=6",
                      "--audio-root", str(root), "-q"])
    assert run(cmd) == 0
    return out


@pytest.fixture(scope="module")
def shown(page: Path) -> dict[str, Any]:
    """What the probe saw in the page, after its script ran."""
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", PROBE, 1))
    done = chromium(["--virtual-time-budget=5000", "--dump-dom", probe.as_uri()], page.parent)
    m = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert m, f"no probe output; chromium said: {done.stderr[-2000:]}"
    return json.loads(html.unescape(m.group(1)))


def test_the_script_ran(shown: dict[str, Any]) -> None:
    assert shown["js"] == "on"


def test_four_histograms_with_painted_bars(shown: dict[str, Any]) -> None:
    assert [h["axis"] for h in shown["hists"]] == list(AXES)
    for h in shown["hists"]:
        assert h["shown"] and h["bars"] >= 3, h


def test_group_table_rows_and_sorting(shown: dict[str, Any]) -> None:
    rows = {r["cells"][0]: r for r in shown["groups"]}
    assert set(rows) == {"audio", *SYSTEMS} and all(r["shown"] for r in rows.values())
    assert rows["sys0v1wm"]["cells"][1:3] == ["4", "0"] and rows["audio"]["cells"][2] == "1"
    # the corpus gives each system a higher PQ than the one before, and the long file PQ 6.0
    assert shown["aria"] == "ascending" and shown["sorted"] == ["sys0v1wm", "sys25Voz", "audio", "sysKUd7C"]


def test_top_and_bottom_lists_each_with_a_player_per_clip(shown: dict[str, Any]) -> None:
    assert sorted((x["axis"], x["kind"]) for x in shown["lists"]) == sorted(
        (a, k) for a in AXES for k in ("top", "bottom"))
    for x in shown["lists"]:
        assert x["shown"] and x["items"] == TOP and x["players"] == TOP, x
        ordered = sorted(x["scores"], reverse=x["kind"] == "top")
        assert x["scores"] == ordered


def test_the_model_and_the_filter_are_shown(shown: dict[str, Any]) -> None:
    text = shown["text"]
    assert MODEL["name"] in text and MODEL["sha256"] in text
    assert "PQ>=6" in text and "accepted" in text


def test_a_timeline_for_the_long_file(shown: dict[str, Any]) -> None:
    assert len(shown["timelines"]) == 1
    tl = shown["timelines"][0]
    assert tl["shown"] and tl["lines"] == 4 and tl["players"] == 1
    assert "long_recording.wav" in shown["text"] and "7 windows" in shown["text"]


def test_the_screenshot_is_not_blank_and_shows_the_bars(page: Path) -> None:
    image_mod = pytest.importorskip("PIL.Image", reason="Pillow reads the screenshot")
    png = page.with_name("shot.png")
    done = chromium(["--window-size=1280,1400", f"--screenshot={png}", page.as_uri()], page.parent)
    assert png.is_file(), done.stderr[-2000:]
    with image_mod.open(png) as im:
        rgb = im.convert("RGB")
        colors = rgb.getcolors(maxcolors=1 << 20) or []
    total = sum(c for c, _ in colors)
    white = sum(c for c, px in colors if min(px) >= 250)
    pq_blue = sum(c for c, (r, g, b) in colors if abs(r - 0x4C) < 12 and abs(g - 0x78) < 12 and abs(b - 0xA8) < 12)
    assert white < 0.97 * total, "the page looks blank"
    assert pq_blue > 300, "the PQ histogram's bars are not painted"
