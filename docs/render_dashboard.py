#!/usr/bin/env python3
"""Draw docs/dashboard.png: the panels of envoy/grafana/mcp-policy.json, laid out as in Grafana, with the data
its queries returned from a real Prometheus during a scripted run (a picture of the dashboard, not a Grafana
screenshot: Grafana is in neither Debian nor PyPI).

    MCP_POLICY_DASHBOARD_SNAPSHOT=/tmp/snapshot.json .venv/bin/python -m pytest tests/e2e/test_dashboard.py \
        -k every_panel -o faulthandler_timeout=0
    python3 docs/render_dashboard.py /tmp/snapshot.json docs/dashboard.png

The first command is the dashboard's e2e test in a longer run (about three minutes) that writes each panel's
results; this script needs matplotlib (`pip install matplotlib`, in any Python; it is not a dependency of the
project or its tests).
"""
from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import re
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "envoy" / "grafana" / "mcp-policy.json"

BACKGROUND, PANEL, GRID, TEXT, MUTED = "#111217", "#181b1f", "#2c3235", "#ccccdc", "#8e8e99"
PALETTE = ["#73bf69", "#f2495c", "#ff9830", "#5794f2", "#b877d9", "#fade2a", "#8ab8ff", "#ff7383", "#96d98d",
           "#ca95e5", "#ffb357", "#37872d"]
UNIT_LABELS = {"reqps": "req/s", "short": "", "percentunit": ""}


def legend(template: str, metric: dict) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), template).strip() or "value"


def draw_timeseries(ax, panel: dict, colors: dict) -> None:
    import matplotlib.dates as mdates

    series = sorted(panel["result"], key=lambda r: legend(panel["legend"], r["metric"]))
    for r in series:
        name = legend(panel["legend"], r["metric"])
        xs = [datetime.datetime.fromtimestamp(float(t)) for t, _ in r["values"]]
        ys = [float(v) for _, v in r["values"]]
        color = colors.setdefault(name, PALETTE[len(colors) % len(PALETTE)])
        ax.plot(xs, ys, color=color, linewidth=1.2, label=name)
        ax.fill_between(xs, ys, color=color, alpha=0.08)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=3, maxticks=7))
    ax.grid(color=GRID, linewidth=0.6)
    ax.set_ylim(bottom=0)
    unit = UNIT_LABELS.get(panel["unit"], panel["unit"])
    if unit:
        ax.set_ylabel(unit, color=MUTED, fontsize=7)
    if series:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=6.5 if len(series) <= 10 else 6,
                  frameon=False, labelcolor=TEXT,
                  ncol=1 if len(series) <= 10 else 2)


def draw_stat(ax, panel: dict) -> None:
    value = float(panel["result"][0]["value"][1]) if panel["result"] else float("nan")
    text = f"{value * 100:.1f}%" if panel["unit"] == "percentunit" else f"{value:g}"
    color = "#73bf69" if value < 0.1 else "#ff9830" if value < 0.3 else "#f2495c"
    ax.text(0.5, 0.45, text, ha="center", va="center", fontsize=34, color=color, fontweight="bold",
            transform=ax.transAxes)
    ax.set_axis_off()


def instant_values(panel: dict) -> list[tuple[str, float]]:
    got = [(legend(panel["legend"], r["metric"]), float(r["value"][1])) for r in panel["result"]]
    return sorted(got, key=lambda kv: -kv[1])


def draw_bargauge(ax, panel: dict) -> None:
    values = instant_values(panel)
    names = [k for k, _ in values][::-1]
    ax.barh(names, [v for _, v in values][::-1], color="#f2495c", height=0.6)
    for i, (_, v) in enumerate(values[::-1]):
        ax.text(v, i, f" {v:.0f}", va="center", color=TEXT, fontsize=8)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="x", color=GRID, linewidth=0.6)
    ax.set_xlim(right=max([v for _, v in values] or [1]) * 1.2)


def draw_piechart(ax, panel: dict, colors: dict) -> None:
    values = instant_values(panel)
    fixed = {"approval_granted": "#73bf69", "approval_remembered": "#37872d", "approval_denied": "#f2495c",
             "approval_unavailable": "#ff9830"}
    ax.pie([v for _, v in values], colors=[fixed.get(k, PALETTE[i]) for i, (k, _) in enumerate(values)],
           wedgeprops={"width": 0.38, "edgecolor": PANEL}, startangle=90)
    ax.legend([f"{k}  {v:.0f}" for k, v in values], loc="upper center", bbox_to_anchor=(0.5, 0.02), fontsize=7,
              frameon=False, labelcolor=TEXT)
    ax.set_aspect("equal")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("snapshot", help="the JSON a MCP_POLICY_DASHBOARD_SNAPSHOT run of tests/e2e/test_dashboard.py wrote")
    ap.add_argument("out", help="the PNG to write")
    args = ap.parse_args()
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("matplotlib is needed: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dash = json.loads(DASHBOARD.read_text())
    snap = json.loads(pathlib.Path(args.snapshot).read_text())
    data = {p["title"]: p for p in snap["panels"]}
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dash["panels"])
    unit_w, unit_h, title_h = 0.75, 0.42, 0.32
    fig = plt.figure(figsize=(24 * unit_w, rows * unit_h + title_h * 2), facecolor=BACKGROUND)
    fig.text(0.01, 1 - 0.4 * title_h / (rows * unit_h + title_h * 2), f"{dash['title']}  ·  {dash['description']}",
             color=TEXT, fontsize=11, va="top")
    top = 1 - (title_h * 2) / (rows * unit_h + title_h * 2)
    colors: dict = {}
    for p in dash["panels"]:
        g = p["gridPos"]
        x0, w = g["x"] / 24, g["w"] / 24
        y0, h = top * (1 - (g["y"] + g["h"]) / rows), top * g["h"] / rows
        frame = fig.add_axes((x0 + 0.002, y0 + 0.004, w - 0.004, h - 0.008))
        frame.set_facecolor(PANEL)
        frame.set_xticks([]), frame.set_yticks([])
        for s in frame.spines.values():
            s.set_color(GRID)
        frame.text(0.015, 0.96, p["title"], color=TEXT, fontsize=9, va="top", transform=frame.transAxes,
                   fontweight="bold")
        panel = data[p["title"]]
        legend_room = (0.42 if len(panel["result"]) > 10 else 0.30) if p["type"] == "timeseries" and w > 0.4 else 0.0
        left = 0.30 if p["type"] == "bargauge" else 0.06
        inner = (x0 + w * left, y0 + h * 0.14, w * (0.96 - left - legend_room) - 0.004, h * 0.68)
        if p["type"] == "timeseries" and w <= 0.4:
            inner = (x0 + w * 0.12, y0 + h * 0.36, w * 0.8, h * 0.46)
        ax = fig.add_axes(inner)
        ax.set_facecolor(PANEL)
        ax.tick_params(colors=MUTED, labelsize=7)
        for s in ax.spines.values():
            s.set_visible(False)
        if p["type"] == "timeseries":
            draw_timeseries(ax, panel, colors)
            if w <= 0.4 and ax.get_legend():
                ax.get_legend().set_bbox_to_anchor((0.0, -0.18))
                ax.get_legend()._loc = 2  # upper left, under the axes
        elif p["type"] == "stat":
            draw_stat(ax, panel)
        elif p["type"] == "bargauge":
            draw_bargauge(ax, panel)
        elif p["type"] == "piechart":
            draw_piechart(ax, panel, colors)
    fig.savefig(args.out, dpi=90, facecolor=BACKGROUND)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
