"""`make bench`'s chart (bench/chart.py, drawn by bench/report.py): from a fixture of a real run's raw results
(tests/fixtures/bench/: a quick `BENCH_CONFIGS="A C F"` run on a busy machine), the report links the chart, the
SVG has one bar per configuration and workload, as long as the medians say, and the PNG is a picture of it when
Chromium is there (as for the browser tests). No Envoy, nothing timed."""
import json
import pathlib
import re
import statistics
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "bench"
sys.path.insert(0, str(REPO / "bench"))
import chart  # noqa: E402


def report(tmp_path):
    md, png = tmp_path / "RESULTS.md", tmp_path / "results.png"
    out = subprocess.run([sys.executable, str(REPO / "bench" / "report.py"), "--results", str(FIXTURE / "results.jsonl"),
                          "--workloads", str(FIXTURE / "workloads.tsv"), "--extra", str(FIXTURE / "extra.tsv"),
                          "--md", str(md), "--chart", str(png)], capture_output=True, text=True, check=True)
    return md.read_text(), png, out.stdout


def medians():
    """{(config, workload): (median RPS, median proxy CPU µs/req)} over every round (the fixture's rounds were all
    disturbed, so report.py counts them all)."""
    rows = [json.loads(line) for line in (FIXTURE / "results.jsonl").read_text().splitlines() if line.strip()]
    cells = {}
    for r in rows:
        cells.setdefault((r["config"], r["workload"]), []).append(r)
    return {k: (statistics.median(r["rps"] for r in v), statistics.median(r["proxy_cpu_us_per_req"] for r in v))
            for k, v in cells.items()}


def bars(svg_text):
    """(panel x, width, title) of every bar."""
    return [(float(x), float(w), t) for x, w, t in
            re.findall(r'<rect x="([\d.]+)" y="[\d.]+" width="([\d.]+)" height="\d+" fill="#\w+"><title>([^<]+)</title>',
                       svg_text)]


def test_the_report_links_the_chart_and_its_bars_are_the_medians(tmp_path):
    md, png, stdout = report(tmp_path)
    assert "![RPS relative to A and proxy CPU per request" in md
    assert "(results.png)" in md
    assert "chart:" in stdout
    svg_text = png.with_suffix(".svg").read_text()
    got = bars(svg_text)
    m = medians()
    workloads = ["small", "small_c1", "denied"]
    measured = [(c, wl) for wl in workloads for c in "ACF" if (c, wl) in m]
    # Two bars per configuration and workload: RPS relative to A, CPU per request.
    assert len(got) == 2 * len(measured)
    ratio_bars = [b for b in got if b[0] == chart.LABEL_W]
    cpu_bars = [b for b in got if b[0] != chart.LABEL_W]
    assert [t.split()[0] for _, _, t in ratio_bars] == [c for c, _ in measured]
    # The ratios, in order, as the medians give them; bar lengths proportional to them.
    ratios = [m[(c, wl)][0] / m[("A", wl)][0] for c, wl in measured]
    assert [float(t.split()[1]) for _, _, t in ratio_bars] == pytest.approx(ratios, abs=0.006)
    per_unit = [w / r for (_, w, _), r in zip(ratio_bars, ratios)]
    assert max(per_unit) - min(per_unit) < 0.5
    # CPU bars: the medians, the longest of each workload the same length (scaled per workload).
    cpus = [m[(c, wl)][1] for c, wl in measured]
    assert [float(t.split()[1]) for _, _, t in cpu_bars] == pytest.approx(cpus, abs=0.06)
    for wl in workloads:
        widths = [w for (_, w, _), (c, w_) in zip(cpu_bars, measured) if w_ == wl]
        longest = max(range(len(widths)), key=widths.__getitem__)
        top = max(m[(c, w_)][1] for c, w_ in measured if w_ == wl)
        assert [c for c, w_ in measured if w_ == wl][longest] in [c for c, w_ in measured
                                                                  if w_ == wl and m[(c, w_)][1] == top]
    for wl, label in [("small", "tools/call allowed, 150 B"), ("denied", "tools/call denied (delete_run)")]:
        assert f">{label}</text>" in svg_text
    if chart.to_png("<svg xmlns='http://www.w3.org/2000/svg' width='2' height='2'/>", tmp_path / "probe.png"):
        pytest.skip("no Chromium or Playwright here: the SVG is checked, the PNG is not drawn")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width == chart.WIDTH and height > 200


def test_a_chart_of_every_configuration(tmp_path):
    rows = [{"label": "tools/call allowed, 150 B",
             "configs": {c: {"ratio": r, "cpu": cpu} for c, r, cpu in
                         [("A", 1.0, 100.0), ("B", 0.62, 180.0), ("C", 0.6, 190.0), ("F", 0.75, 140.0),
                          ("L", 0.59, 195.0), ("G", 0.3, 260.0), ("J", 0.5, 230.0), ("P", 0.45, 255.0)]}},
            {"label": "tools/list, 25 KB response",
             "configs": {"A": {"ratio": 1.0, "cpu": 106.0}, "B": {"ratio": None, "cpu": None},
                         "C": {"ratio": 0.42, "cpu": 279.0}}}]
    text = chart.svg(rows, "t", "s")
    got = bars(text)
    assert len(got) == 2 * 8 + 2 * 2, "a configuration without figures draws no bar"
    for name in chart.NAMES.values():
        assert f">{name}</text>" in text, "every configuration in the legend"
    assert "A = 1" in text
