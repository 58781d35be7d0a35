#!/usr/bin/env python3
"""The chart of `make bench`: per workload, each configuration's requests/s relative to A (Envoy alone) and its
proxy CPU per request, side by side; drawn as SVG by hand (no plotting library in the venv) and turned into a PNG
by the headless Chromium the browser tests already use (Debian's /usr/bin/chromium through Playwright). Without
Chromium or Playwright only the SVG is written, and the caller is told.

bench/report.py calls `draw` with its medians (`report.py --chart bench/results.png`, as bench/run.sh does);
tests/e2e/test_bench_chart.py draws from a fixture.
"""
from __future__ import annotations

import html
import pathlib

# A, B, then the filter's configurations, then the floor; one colour each.
COLOURS = {"A": "#8e8e99", "B": "#5794f2", "C": "#f2495c", "F": "#73bf69", "L": "#ff9830", "G": "#b877d9",
           "J": "#37872d", "P": "#fade2a"}
ORDER = list(COLOURS)
NAMES = {"A": "A Envoy alone", "B": "B native MCP filter + RBAC", "C": "C mcp-policy", "F": "F floor (any wasm filter)",
         "L": "L a local rate limit", "G": "G a fleet-wide rate limit", "J": "J jwt_authn + mcp-policy",
         "P": "P J + caller profiles"}
CHROMIUM = pathlib.Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]

WIDTH = 1200
LABEL_W = 300  # the workload names
PANEL_W = (WIDTH - LABEL_W - 60) // 2
BAR_H = 11
ROW_GAP = 14
TOP = 96


def _text(x, y, s, size=12, anchor="start", weight="normal", fill="#222"):
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" font-weight="{weight}" '
            f'fill="{fill}">{html.escape(s)}</text>')


def svg(rows: list[dict], title: str, subtitle: str = "") -> str:
    """rows: one per workload, in order: {"label": str, "configs": {config: {"ratio": RPS/A or None,
    "cpu": proxy µs per request or None}}}. Returns the SVG document."""
    present = [c for c in ORDER if any(c in r["configs"] for r in rows)]
    # The legend, wrapped to the width: (x, line) per configuration.
    legend, lx, line = [], 16, 0
    for c in present:
        w = 26 + 7 * len(NAMES[c])
        if lx + w > WIDTH - 16 and lx > 16:
            lx, line = 16, line + 1
        legend.append((c, lx, line))
        lx += w
    top = TOP + 20 * line
    heights = [len([c for c in present if c in r["configs"]]) * BAR_H + ROW_GAP for r in rows]
    height = top + sum(heights) + 40
    ratios = [v["ratio"] for r in rows for v in r["configs"].values() if v.get("ratio") is not None]
    rmax = max([1.2] + [x * 1.1 for x in ratios])
    x_ratio = LABEL_W
    x_cpu = LABEL_W + PANEL_W + 50
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Arial, sans-serif">',
           f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
           _text(16, 26, title, 17, weight="bold")]
    if subtitle:
        out.append(_text(16, 46, subtitle, 12, fill="#555"))
    for c, x, n in legend:
        y = 58 + 20 * n
        out.append(f'<rect x="{x}" y="{y}" width="12" height="12" fill="{COLOURS[c]}"/>')
        out.append(_text(x + 16, y + 11, NAMES[c], 12))
    out.append(_text(x_ratio, top - 8, "requests/s relative to A (A = 1, longer is faster)", 12, weight="bold"))
    out.append(_text(x_cpu, top - 8, "proxy CPU µs per request (shorter is cheaper; scale per row)", 12,
                     weight="bold"))
    # The A = 1 line.
    one = x_ratio + PANEL_W * 1 / rmax
    out.append(f'<line x1="{one:.1f}" y1="{top}" x2="{one:.1f}" y2="{height - 36}" stroke="#999" '
               'stroke-dasharray="4 3"/>')
    out.append(_text(one, height - 22, "A = 1", 11, "middle", fill="#666"))
    y = top
    for r, h in zip(rows, heights):
        configs = [c for c in present if c in r["configs"]]
        out.append(f'<line x1="10" y1="{y - 4:.1f}" x2="{WIDTH - 10}" y2="{y - 4:.1f}" stroke="#eee"/>')
        out.append(_text(LABEL_W - 10, y + len(configs) * BAR_H / 2 + 4, r["label"], 12, "end"))
        cpus = [r["configs"][c].get("cpu") for c in configs if r["configs"][c].get("cpu") is not None]
        cmax = max(cpus) * 1.15 if cpus else 1
        for i, c in enumerate(configs):
            v = r["configs"][c]
            by = y + i * BAR_H
            ratio, cpu = v.get("ratio"), v.get("cpu")
            if ratio is not None:
                w = PANEL_W * ratio / rmax
                out.append(f'<rect x="{x_ratio}" y="{by:.1f}" width="{w:.1f}" height="{BAR_H - 2}" '
                           f'fill="{COLOURS[c]}"><title>{c} {ratio:.2f}</title></rect>')
                out.append(_text(x_ratio + w + 4, by + BAR_H - 3, f"{c} {ratio:.2f}", 10, fill="#333"))
            if cpu is not None:
                w = PANEL_W * cpu / cmax
                out.append(f'<rect x="{x_cpu}" y="{by:.1f}" width="{w:.1f}" height="{BAR_H - 2}" '
                           f'fill="{COLOURS[c]}"><title>{c} {cpu:.1f} µs</title></rect>')
                out.append(_text(x_cpu + w + 4, by + BAR_H - 3, f"{c} {cpu:,.0f}", 10, fill="#333"))
        y += h
    out.append("</svg>")
    return "\n".join(out) + "\n"


def to_png(svg_text: str, png: pathlib.Path) -> str | None:
    """Renders the SVG to `png` with headless Chromium; returns why not when it cannot."""
    if not CHROMIUM.exists():
        return "no /usr/bin/chromium (make browser)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return "no playwright in this Python (make venv)"
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
            try:
                page = b.new_page()
                page.set_content(f'<html><body style="margin:0">{svg_text}</body></html>')
                page.locator("svg").screenshot(path=str(png))
            finally:
                b.close()
    except Exception as e:  # noqa: BLE001 - a chart is a convenience: say why and go on
        return f"Chromium failed: {e}"
    return None


def draw(rows: list[dict], title: str, subtitle: str, png: pathlib.Path) -> str:
    """Writes `png` (and the SVG next to it, same name); returns a line saying what was written."""
    text = svg(rows, title, subtitle)
    svg_path = png.with_suffix(".svg")
    svg_path.write_text(text)
    why = to_png(text, png)
    if why:
        return f"chart: {svg_path} only ({why})"
    return f"chart: {png} (and {svg_path.name})"

