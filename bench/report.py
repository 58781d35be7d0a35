#!/usr/bin/env python3
"""Summarise bench/run.sh's measurements: medians over rounds per configuration and workload, the
ratios C/A and C/B, the floor (F: a minimal body-reading proxy-wasm filter, in its own table), a fleet-wide
limit against one counted in the proxy (G − L, in its own table), extras
(wasm size, RSS at start / after load / idle, rate-limit state, microbenchmark), machine info.
Prints the report and writes it as Markdown to --md.

  report.py --results results.jsonl --workloads workloads.tsv --extra extra.tsv --md bench/RESULTS.md

extra.tsv: one `key<TAB>value` per line (`check` and `idle_rss` ("CONFIG CONCURRENCY KB") may repeat;
`microbench_file` names a file).
"""
import argparse
import json
import os
import pathlib
import statistics
import sys
from collections import defaultdict

CONFIGS = [("A", "Envoy alone (router)"),
           ("B", "Envoy + native envoy.filters.http.mcp + RBAC"),
           ("C", "Envoy + mcp-policy (wasm, V8)"),
           ("F", "Envoy + bench/floor-filter (wasm, V8, same settings as C): holds the headers until the body is "
                 "complete, reads it once, continues — the floor under any body-inspecting proxy-wasm filter"),
           ("L", "C with get_run's rate limit as one limit counted by the proxy (shared data)"),
           ("G", "the same limit counted by a rate limit service on loopback (tests/e2e/ratelimit.py: gRPC in "
                 "Python over Redis, on the load core): every small call waits for its ShouldRateLimit answer"),
           ("J", "Envoy + jwt_authn + mcp-policy with bench/policy.json (no `callers`), every request with a valid "
                 "bearer token"),
           ("P", "J with `callers` (JWT subject and groups, client certificate) and three caller profiles in the "
                 "policy; the token's caller matches the third")]
MAIN = ("A", "B", "C")  # the main tables; F, L and G, J and P have their own (measured on a few workloads only)


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(v, spec):
    return "–" if v is None else format(v, spec)


def ratio(a, b):
    return None if (a is None or b in (None, 0)) else a / b


def chart_rows(workloads, cells, m):
    """The chart's data: per workload, per configuration measured on it, RPS relative to A and proxy CPU µs/req."""
    rows = []
    for wl, label in workloads:
        a = m("A", wl, "rps")
        configs = {}
        for c, _ in CONFIGS:
            if (c, wl) not in cells:
                continue
            rps = m(c, wl, "rps")
            configs[c] = {"ratio": ratio(rps, a), "cpu": m(c, wl, "proxy_cpu_us_per_req")}
        if configs:
            rows.append({"label": label, "configs": configs})
    return rows


def draw_chart(path, workloads, cells, m, extra, disturbed=0):
    """Draws the chart (bench/chart.py); returns what was written."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import chart

    rows = chart_rows(workloads, cells, m)
    title = "mcp-policy: make bench, medians"
    subtitle = (f"{extra.get('date', '?')}, {extra.get('cpu', '?')} x {extra.get('nproc', '?')}, Envoy "
                f"{str(extra.get('envoy', '?')).split('/')[1] if '/' in str(extra.get('envoy', '')) else '?'}, "
                "one worker")
    if disturbed:
        subtitle += f"; {disturbed} of {len(cells)} cells disturbed by other work (~ in RESULTS.md)"
    png = pathlib.Path(path)
    return chart.draw(rows, title, subtitle, png)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--workloads", required=True)
    ap.add_argument("--extra", required=True)
    ap.add_argument("--md", required=True)
    ap.add_argument("--chart", help="also draw the ratios as a PNG here (bench/chart.py; an SVG next to it)")
    args = ap.parse_args()

    rows = []
    with open(args.results) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    extra, checks, idle = {}, [], {}
    with open(args.extra) as f:
        for line in f:
            if "\t" in line:
                k, v = line.rstrip("\n").split("\t", 1)
                if k == "check":
                    checks.append(v)
                elif k == "idle_rss":
                    c, n, kb = v.split()
                    idle.setdefault((c, int(n)), []).append(int(kb) / 1024)
                else:
                    extra[k] = v
    extra["checks"] = checks
    if extra.get("microbench_file"):
        try:
            with open(extra["microbench_file"]) as f:
                extra["microbench"] = f.read()
        except OSError:
            pass
    workloads = []
    with open(args.workloads) as f:
        for line in f:
            if line.strip():
                name, _path, _body, conns, label = line.rstrip("\n").split("\t")
                workloads.append((name, label))

    cells = defaultdict(list)
    for r in rows:
        cells[(r["config"], r["workload"])].append(r)

    CLEAN = 10.0  # % of one core used by other processes during a cell, above which the cell is disturbed

    def clean_rows(cfg, wl):
        """The rounds of a cell that other processes did not disturb, or all rounds if none is clean."""
        rs = cells.get((cfg, wl), [])
        ok = [r for r in rs if r.get("foreign_cpu_pct", 0.0) < CLEAN]
        return (ok, False) if ok else (rs, bool(rs))

    def m(cfg, wl, key):
        rs, _ = clean_rows(cfg, wl)
        if key in ("p50_us", "p90_us", "p99_us", "proxy_cpu_us_per_req"):
            rs = [r for r in rs if r["requests"] > 0]  # no answers: no latency to speak of
        return med([r.get(key) for r in rs])

    present = [c for c in MAIN if any(k[0] == c for k in cells)]
    has_f = any(k[0] == "F" for k in cells)
    has_g = any(k[0] == "G" for k in cells)
    workloads = [(wl, label) for wl, label in workloads if any(k[1] == wl and k[0] in MAIN for k in cells)]
    f_workloads = [(wl, label) for wl, label in workloads if ("F", wl) in cells]
    g_workloads = [(wl, label) for wl, label in workloads if ("G", wl) in cells or ("L", wl) in cells]
    p_workloads = [(wl, label) for wl, label in workloads if ("J", wl) in cells or ("P", wl) in cells]

    def diff(x, y):
        return None if x is None or y is None else x - y

    def cpu_delta(x, y, wl):
        """Configuration x's proxy CPU per request minus y's, on workload wl (medians)."""
        return diff(m(x, wl, "proxy_cpu_us_per_req"), m(y, wl, "proxy_cpu_us_per_req"))
    out = []
    out.append(f"# mcp-policy benchmark results\n")
    out.append(f"Run {extra.get('date', '?')} by `make bench` (bench/run.sh); "
               f"{extra.get('rounds')} rounds x {extra.get('duration')} s per cell after a "
               f"{extra.get('warmup')} s warm-up, configurations interleaved "
               f"{' '.join(c for c, _ in CONFIGS if any(k[0] == c for k in cells))} per workload and round; "
               f"medians over undisturbed rounds. wrk: 1 thread, {extra.get('conns')} connections unless noted.\n")
    out.append("## Machine\n")
    for k in ("cpu", "nproc", "kernel", "envoy", "wrk", "pinning", "loadavg"):
        if k in extra:
            out.append(f"- {k}: {extra[k]}")
    out.append("")
    out.append("## Configurations\n")
    for c, d in CONFIGS:
        if c in ("F", "J", "P") and not any(k[0] == c for k in cells) and not extra.get(f"note_{c}"):
            continue
        if c in ("L", "G") and not has_g and not extra.get(f"note_{c}"):
            continue
        note = extra.get(f"note_{c}", "")
        out.append(f"- **{c}** = {d}{(' — ' + note) if note else ''}")
    out.append("")

    chart_line = None
    if args.chart:
        disturbed = sum(1 for c, wl in cells if clean_rows(c, wl)[1])
        chart_line = draw_chart(args.chart, workloads, cells, m, extra, disturbed)
        name = os.path.basename(args.chart)
        out.append(f"![RPS relative to A and proxy CPU per request, per workload and configuration]({name})\n")
        out.append(f"The chart ({name}, drawn by bench/chart.py from the medians below): for each workload, each "
                   "configuration's requests/s relative to A and its proxy CPU µs per request. Where C's time goes "
                   "on a small call (the floor, each kind of host call, the policy work): "
                   "[docs/benchmarks.md, Where the time goes](../docs/benchmarks.md#where-the-time-goes).\n")
    out.append("## Throughput and latency (medians)\n")
    hdr = "| workload | " + " | ".join(f"{c} RPS | {c} p50 µs | {c} p99 µs" for c in present)
    if "C" in present and "A" in present:
        hdr += " | C/A RPS"
    if "C" in present and "B" in present:
        hdr += " | C/B RPS"
    if "C" in present and "A" in present:
        hdr += " | C−A p50 µs"
    out.append(hdr + " |")
    out.append("|" + "---|" * (hdr.count("|")))
    for wl, label in workloads:
        line = f"| {label} |"
        for c in present:
            fb = "†" if any(r.get("fallback_1conn") for r in cells.get((c, wl), [])) else ""
            fb += "~" if clean_rows(c, wl)[1] else ""
            line += (f" {fmt(m(c, wl, 'rps'), ',.0f')}{fb} | {fmt(m(c, wl, 'p50_us'), ',.0f')}{fb} |"
                     f" {fmt(m(c, wl, 'p99_us'), ',.0f')}{fb} |")
        if "C" in present and "A" in present:
            line += f" {fmt(ratio(m('C', wl, 'rps'), m('A', wl, 'rps')), '.3f')} |"
        if "C" in present and "B" in present:
            line += f" {fmt(ratio(m('C', wl, 'rps'), m('B', wl, 'rps')), '.3f')} |"
        if "C" in present and "A" in present:
            pc, pa = m('C', wl, 'p50_us'), m('A', wl, 'p50_us')
            line += f" {fmt(None if pc is None or pa is None else pc - pa, '+,.0f')} |"
        out.append(line)
    out.append("")
    out.append(f"Medians over the rounds in which other processes on the machine used less than {CLEAN:.0f} % of a core "
               "(see Interference below); ~ marks a cell where every round was disturbed, so all rounds count.")
    if any(r.get("fallback_1conn") for r in rows):
        out.append("")
        out.append("† in at least one round not a single request was answered within the measuring window at "
                   f"{extra.get('conns')} connections (each took longer than the window / connections); that "
                   "round was measured again with 1 connection, so these figures are not comparable with "
                   "the other columns, only with each other.")
    out.append("")

    out.append("## Proxy CPU per request (medians; the proxy's own CPU time / requests)\n")
    out.append("Independent of which core is the bottleneck: C−A is what the filter costs per request.\n")
    hdr = "| workload | " + " | ".join(f"{c} CPU µs/req | {c} CPU %" for c in present)
    if "C" in present and "A" in present:
        hdr += " | C−A µs/req"
    if "C" in present and "B" in present:
        hdr += " | C−B µs/req"
    out.append(hdr + " |")
    out.append("|" + "---|" * (hdr.count("|")))
    for wl, label in workloads:
        line = f"| {label} |"
        for c in present:
            line += f" {fmt(m(c, wl, 'proxy_cpu_us_per_req'), ',.1f')} | {fmt(m(c, wl, 'proxy_cpu_pct'), '.0f')} |"
        for other in ("A", "B"):
            if "C" in present and other in present:
                a, b = m("C", wl, "proxy_cpu_us_per_req"), m(other, wl, "proxy_cpu_us_per_req")
                line += f" {fmt(None if a is None or b is None else a - b, '+,.1f')} |"
        out.append(line)
    out.append("")

    if has_f:
        out.append("## The floor: any proxy-wasm filter on V8\n")
        out.append("F = Envoy + `bench/floor-filter`, with the same filter settings as C: it holds the headers until the "
                   "body is complete, reads the body once and lets the request go on — the least a filter that looks "
                   "at an MCP call's body does. F−A is the price of that in proxy-wasm on V8 in this Envoy, whatever "
                   "the filter's code; C−F is what mcp-policy itself adds above the floor. Measured on "
                   f"{', '.join(wl for wl, _ in f_workloads) or 'no workload'} only, interleaved with the others.\n")
        out.append("| workload | F RPS | F p50 µs | F p99 µs | F CPU µs/req | F CPU % | F−A CPU µs/req | C−F CPU µs/req "
                   "| floor share of C−A | F RPS per round | other processes, % of a core per round |")
        out.append("|---|" + "---|" * 10)
        for wl, label in f_workloads:
            fa, cf, ca = cpu_delta("F", "A", wl), cpu_delta("C", "F", wl), cpu_delta("C", "A", wl)
            share = None if fa is None or not ca else 100 * fa / ca
            mark = "~" if clean_rows("F", wl)[1] else ""
            rs = sorted(cells.get(("F", wl), []), key=lambda r: r["round"])
            per_round_rps = " / ".join(f"{r['rps']:,.0f}" for r in rs)
            per_round_foreign = " / ".join(f"{r.get('foreign_cpu_pct', 0):.0f}" for r in rs)
            out.append(f"| {label} | {fmt(m('F', wl, 'rps'), ',.0f')}{mark} | {fmt(m('F', wl, 'p50_us'), ',.0f')}{mark} "
                       f"| {fmt(m('F', wl, 'p99_us'), ',.0f')}{mark} | {fmt(m('F', wl, 'proxy_cpu_us_per_req'), ',.1f')}{mark} "
                       f"| {fmt(m('F', wl, 'proxy_cpu_pct'), '.0f')} | {fmt(fa, '+,.1f')} | {fmt(cf, '+,.1f')} "
                       f"| {fmt(share, '.0f')}{'' if share is None else ' %'} | {per_round_rps} | {per_round_foreign} |")
        out.append("")
        out.append("Same medians and ~ as above. A and C for these rows are the figures of the tables above.")
        out.append("")

    if g_workloads:
        out.append("## A fleet-wide limit against one counted in the proxy\n")
        out.append("L and G run the same call (`get_run`, one rate limit far above the load): L counts it in the "
                   "proxy's shared data, G asks the rate limit service (one gRPC `ShouldRateLimit` per call, HTTP/2 "
                   "to 127.0.0.1). G−L is what counting fleet-wide adds: the proxy's own CPU per call (the gRPC call "
                   "from Envoy, the request encoded and the answer decoded in the filter) and the latency, which "
                   "includes the service's own time (here Python; envoyproxy/ratelimit or Limitador are faster). "
                   f"Measured on {', '.join(wl for wl, _ in g_workloads)} only, interleaved with the others.\n")
        out.append("| workload | L RPS | G RPS | L p50 µs | G p50 µs | G−L p50 µs | L p99 µs | G p99 µs "
                   "| L CPU µs/req | G CPU µs/req | G−L CPU µs/req | G RPS per round |")
        out.append("|---|" + "---|" * 11)
        for wl, label in g_workloads:
            mark = "~" if clean_rows("G", wl)[1] else ""
            rs = sorted(cells.get(("G", wl), []), key=lambda r: r["round"])
            g_rounds = " / ".join(f"{r['rps']:,.0f}" for r in rs)
            out.append(f"| {label} | {fmt(m('L', wl, 'rps'), ',.0f')} | {fmt(m('G', wl, 'rps'), ',.0f')}{mark} "
                       f"| {fmt(m('L', wl, 'p50_us'), ',.0f')} | {fmt(m('G', wl, 'p50_us'), ',.0f')}{mark} "
                       f"| {fmt(diff(m('G', wl, 'p50_us'), m('L', wl, 'p50_us')), '+,.0f')} "
                       f"| {fmt(m('L', wl, 'p99_us'), ',.0f')} | {fmt(m('G', wl, 'p99_us'), ',.0f')}{mark} "
                       f"| {fmt(m('L', wl, 'proxy_cpu_us_per_req'), ',.1f')} "
                       f"| {fmt(m('G', wl, 'proxy_cpu_us_per_req'), ',.1f')}{mark} "
                       f"| {fmt(diff(m('G', wl, 'proxy_cpu_us_per_req'), m('L', wl, 'proxy_cpu_us_per_req')), '+,.1f')} "
                       f"| {g_rounds} |")
        out.append("")
        out.append("Same medians and ~ as above. With 16 connections G's throughput is the Python service's, not "
                   "the proxy's; the 1-connection row is the latency of one call at a time.")
        out.append("")

    if p_workloads:
        out.append("## Callers: what caller-aware rules cost\n")
        out.append("J and P are the same Envoy (jwt_authn verifying a bearer token, then mcp-policy); P's policy adds "
                   "`callers` and three profiles, and the caller matches the third. P−J is what caller-aware rules "
                   "cost per request: reading the caller (the JWT subject, its groups, the certificate's URI SAN: "
                   "three property reads), trying the profiles, setting `x-mcp-profile`, and judging by the "
                   "profile's precompiled rules (issue 13's target: at most 5 µs). J−C is jwt_authn's own cost. "
                   f"Measured on {', '.join(wl for wl, _ in p_workloads)} only, interleaved with the others.\n")
        out.append("| workload | J RPS | J p50 µs | J CPU µs/req | P RPS | P p50 µs | P CPU µs/req | P−J CPU µs/req "
                   "| J−C CPU µs/req | P−J per round | other processes, % of a core per round (J / P) |")
        out.append("|---|" + "---|" * 10)
        for wl, label in p_workloads:
            pj, jc = cpu_delta("P", "J", wl), cpu_delta("J", "C", wl)
            mark = {c: "~" if clean_rows(c, wl)[1] else "" for c in ("J", "P")}
            js = {r["round"]: r for r in cells.get(("J", wl), [])}
            ps = {r["round"]: r for r in cells.get(("P", wl), [])}
            rounds = sorted(set(js) & set(ps))
            per_round_pj = " / ".join(f"{ps[n]['proxy_cpu_us_per_req'] - js[n]['proxy_cpu_us_per_req']:+.1f}"
                                      for n in rounds
                                      if ps[n].get("proxy_cpu_us_per_req") is not None
                                      and js[n].get("proxy_cpu_us_per_req") is not None)
            per_round_foreign = " / ".join(f"{js[n].get('foreign_cpu_pct', 0):.0f}-{ps[n].get('foreign_cpu_pct', 0):.0f}"
                                           for n in rounds)
            out.append(f"| {label} | {fmt(m('J', wl, 'rps'), ',.0f')}{mark['J']} | {fmt(m('J', wl, 'p50_us'), ',.0f')}{mark['J']} "
                       f"| {fmt(m('J', wl, 'proxy_cpu_us_per_req'), ',.1f')}{mark['J']} "
                       f"| {fmt(m('P', wl, 'rps'), ',.0f')}{mark['P']} | {fmt(m('P', wl, 'p50_us'), ',.0f')}{mark['P']} "
                       f"| {fmt(m('P', wl, 'proxy_cpu_us_per_req'), ',.1f')}{mark['P']} | {fmt(pj, '+,.1f')} "
                       f"| {fmt(jc, '+,.1f')} | {per_round_pj} | {per_round_foreign} |")
        out.append("")
        out.append("Same medians and ~ as above; C for J−C is the figure of the tables above.")
        out.append("")

    def per_round(show) -> list[str]:
        """A table of one figure per round (``show(result)``), rounds in order, per workload and configuration."""
        table = ["| workload | " + " | ".join(present) + " |", "|---|" + "---|" * len(present)]
        for wl, label in workloads:
            line = f"| {label} |"
            for c in present:
                rs = sorted(cells.get((c, wl), []), key=lambda r: r["round"])
                line += " " + " / ".join(show(r) for r in rs) + " |"
            table.append(line)
        return table + [""]

    if any("foreign_cpu_pct" in r for r in rows):
        out.append("## Interference: CPU used by other processes during each round (% of one core)\n")
        out.append("User-space processes other than the benchmark's own (kernel threads such as ksoftirqd, which "
                   f"carry the loopback traffic, are not counted). Rounds at {CLEAN:.0f} % or more are left out of "
                   "the medians when the cell has an undisturbed round.\n")
        out += per_round(lambda r: f"{r.get('foreign_cpu_pct', 0):.0f}")

    out.append("## Spread: RPS per round\n")
    out += per_round(lambda r: f"{r['rps']:,.0f}")

    # responses that were not 2xx (expected for B's denied call: RBAC answers 403)
    bad = []
    for (c, wl), rs in sorted(cells.items()):
        n = sum(r["err_status"] for r in rs)
        sock = sum(r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"] for r in rs)
        if n or sock:
            bad.append(f"- {c} / {wl}: {n} non-2xx responses, {sock} socket errors over {len(rs)} runs")
    if bad:
        out.append("## Non-2xx responses and socket errors\n")
        out.append("Expected: B's denied call is answered 403 by RBAC. Anything else is a problem.\n")
        out.extend(bad)
        out.append("")

    out.append("## Memory (VmRSS of the proxy under test)\n")
    for k, label in (("rss_start", "at start, the processes that carry the load"), ("rss", "after the load"),
                     ("rss_delta", "C − A after the load"),
                     ("rate_limit_state", "rate-limit state after the distinct sessions")):
        if k in extra:
            out.append(f"- {label}: {extra[k]}")
    if idle:
        reps = max(len(v) for v in idle.values())
        out.append("")
        out.append("Idle: fresh processes started after the timed cells (A, F and C side by side), VmRSS 2 s after "
                   f"Envoy reports ready, at `--concurrency` 1 and 2; median of {reps} start(s), each start in "
                   "parentheses (MB):\n")
        out.append("| configuration | --concurrency 1 | --concurrency 2 |")
        out.append("|---|---|---|")

        def cell(c, n):
            v = idle.get((c, n))
            return "–" if not v else f"{med(v):.1f} ({', '.join(f'{x:.1f}' for x in v)})"
        for c in ("A", "F", "C"):
            if (c, 1) in idle or (c, 2) in idle:
                out.append(f"| {c} | {cell(c, 1)} | {cell(c, 2)} |")
        out.append("")

        def g(key):
            return med(idle.get(key, []))
        if g(("C", 1)) is not None and g(("A", 1)) is not None:
            out.append(f"- **Fixed cost of mcp-policy, C − A at --concurrency 1: {g(('C', 1)) - g(('A', 1)):+.1f} MB.** "
                       "What an Envoy with the filter holds before any request beyond Envoy alone: V8, the compiled "
                       "module, the VMs and the filter's own state (parsed policy, tables).")
        if g(("F", 1)) is not None and g(("A", 1)) is not None:
            fc = ""
            if g(("C", 1)) is not None:
                fc = f" (so mcp-policy's own share of the fixed cost, C − F, is {g(('C', 1)) - g(('F', 1)):+.1f} MB)"
            out.append(f"- **The floor, F − A at --concurrency 1: {g(('F', 1)) - g(('A', 1)):+.1f} MB.** "
                       f"What any proxy-wasm filter on V8 costs in this Envoy, whatever its code{fc}.")
        if all(g((c, n)) is not None for c in ("A", "C") for n in (1, 2)):
            ff = ""
            if g(("F", 1)) is not None and g(("F", 2)) is not None:
                ff = f" (the floor filter: {(g(('F', 2)) - g(('F', 1))) - (g(('A', 2)) - g(('A', 1))):+.1f} MB)"
            out.append(f"- **Per extra worker, (C2 − C1) − (A2 − A1): "
                       f"{(g(('C', 2)) - g(('C', 1))) - (g(('A', 2)) - g(('A', 1))):+.1f} MB.** What each further "
                       f"worker thread (`--concurrency`) costs with mcp-policy beyond what it costs Envoy alone: the "
                       f"worker's own instance of the filter's VM{ff}.")
    out.append("")

    out.append("## Other figures\n")
    for k, label in (("wasm_size", "wasm size"), ("floor_wasm_size", "floor filter wasm size"),
                     ("policy_note", "policy"), ("budget_note", "rounds"), ("load_core", "load-generator core (includes anything else running there)")):
        if k in extra:
            out.append(f"- {label}: {extra[k]}")
    out.append("")
    if extra.get("checks"):
        out.append("## Pre-flight checks (one request per configuration and workload, before the load)\n")
        out.extend(f"- {c}" for c in extra["checks"])
        out.append("")
    out.append("## Microbenchmark of the pure core (parse + decide): native, then the wasm build in V8\n")
    out.append("```\n" + (extra.get("microbench") or "n/a").rstrip() + "\n```\n")

    text = "\n".join(out)
    print(text)
    if chart_line:
        print(chart_line)
    with open(args.md, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
