"""The page's inline CSS and its small script (no CDN, no fonts, nothing fetched).

The script only adds comfort: sortable tables, the players of clips embedded once and listed again, and a
click on a timeline seeks its player. Charts, tables and lists are plain HTML and SVG and show without it.
"""

CSS = """
:root { --fg:#1d2733; --muted:#5f6b7a; --line:#d9dee5; --bg:#fff; --panel:#f6f8fa; --warn:#8a5a00; --warnbg:#fff4d6; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); margin: 0 auto; padding: 16px 24px 48px; max-width: 1280px; }
h1 { font-size: 22px; margin: 8px 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px;
     border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 15px; margin: 14px 0 6px; }
.muted, .note { color: var(--muted); } .note { font-size: 12px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 12px 0; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px;
        min-width: 120px; }
.card b { display: block; font-size: 20px; }
.banner { background: var(--warnbg); color: var(--warn); border: 1px solid #f0d48a; border-radius: 6px;
          padding: 8px 12px; margin: 10px 0; }
.hists { display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); gap: 16px; }
.hists svg { width: 100%; max-width: 420px; height: auto; } svg.timeline { max-width: 960px; }
table.axis-stats { width: auto; min-width: 50%; }
.hists figure { margin: 0; } figcaption { font-weight: 600; margin-bottom: 2px; }
svg text { font-size: 11px; fill: var(--muted); }
svg .axis, svg .tick { stroke: #8893a0; stroke-width: 1; } svg .grid { stroke: var(--line); stroke-dasharray: 2 3; }
svg .mean { stroke: var(--fg); stroke-width: 1.5; stroke-dasharray: 4 3; }
svg .worst { stroke-width: 1.5; stroke-dasharray: 3 2; } svg .tl-win { fill: transparent; cursor: pointer; }
svg .tl-win:hover { fill: rgba(0,0,0,.06); }
table { border-collapse: collapse; width: 100%; margin: 6px 0; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
th[data-sort] { cursor: pointer; user-select: none; } th[aria-sort=ascending]::after { content: " \\25B2"; }
th[aria-sort=descending]::after { content: " \\25BC"; }
.extremes { display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 8px 24px; }
ol.clips { padding-left: 22px; margin: 4px 0; } ol.clips li { margin: 0 0 8px; }
.clip-head { display: flex; gap: 8px; align-items: baseline; flex-wrap: wrap; }
.score { font-weight: 700; font-variant-numeric: tabular-nums; }
.path { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; word-break: break-all; }
.badge { font-size: 11px; border-radius: 3px; padding: 0 4px; background: var(--panel); border: 1px solid var(--line); }
.badge.ood { background: var(--warnbg); color: var(--warn); border-color: #f0d48a; }
audio { height: 30px; width: 300px; max-width: 100%; vertical-align: middle; }
a.open { font-size: 12px; margin-left: 6px; }
.legend { display: flex; gap: 14px; flex-wrap: wrap; font-size: 12px; margin: 4px 0; }
.legend i { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 4px;
            vertical-align: -1px; }
.timeline-block { margin: 10px 0 18px; }
code { background: var(--panel); padding: 0 3px; border-radius: 3px; }
footer { margin-top: 36px; color: var(--muted); font-size: 12px; }
@media print { audio, a.open { display: none; } }
"""

JS = """
(function () {
  document.documentElement.setAttribute('data-js', 'on');
  // Players of a clip embedded once: copy the first player's source.
  document.querySelectorAll('audio[data-src-of]').forEach(function (a) {
    var src = document.getElementById(a.getAttribute('data-src-of'));
    if (src) { a.src = src.getAttribute('src'); }
  });
  // Sortable tables: click a header; numbers sort by their data-value.
  document.querySelectorAll('table.sortable').forEach(function (table) {
    var heads = table.querySelectorAll('th[data-sort]');
    heads.forEach(function (th, col) {
      th.setAttribute('tabindex', '0');
      var sort = function () {
        var asc = th.getAttribute('aria-sort') !== 'ascending';
        heads.forEach(function (h) { h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        var num = th.getAttribute('data-sort') === 'num';
        rows.sort(function (r1, r2) {
          var a = r1.cells[col].getAttribute('data-value') || r1.cells[col].textContent;
          var b = r2.cells[col].getAttribute('data-value') || r2.cells[col].textContent;
          if (num) { a = parseFloat(a); b = parseFloat(b); a = isNaN(a) ? -Infinity : a; b = isNaN(b) ? -Infinity : b; }
          var c = num ? a - b : String(a).localeCompare(String(b), undefined, {numeric: true});
          return asc ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      };
      th.addEventListener('click', sort);
      th.addEventListener('keydown', function (e) { if (e.key === 'Enter') { sort(); } });
    });
  });
  // A click on a timeline window plays its file from there.
  document.querySelectorAll('.timeline-block').forEach(function (block) {
    var audio = block.querySelector('audio');
    block.querySelectorAll('rect.tl-win').forEach(function (r) {
      r.addEventListener('click', function () {
        if (!audio) { return; }
        audio.currentTime = parseFloat(r.getAttribute('data-start')) || 0;
        audio.play();
      });
    });
  });
})();
"""
