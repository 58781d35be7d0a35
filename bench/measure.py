#!/usr/bin/env python3
"""Run one benchmark cell: wait for the proxy to be idle, a warm-up wrk run (discarded), then a measured wrk run, and append one JSON
line to --out with wrk's figures plus the CPU the proxy under test used (from /proc/PID/stat) and how
busy each core was (from /proc/stat) during the measured run.

  measure.py --config A --workload small --round 1 --pid PID --url URL --body FILE
             --conns 16 --duration 5 --warmup 1 [--load-cpu 1] --out results.jsonl
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_ticks(pid):
    """utime + stime of the whole process (all threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)


def foreign_ticks(exclude):
    """{pid: utime+stime} of every user-space process but `exclude` (kernel threads are left out:
    ksoftirqd & co. do the loopback traffic's work, which belongs to the benchmark)."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in exclude:
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[6]) & 0x00200000:  # PF_KTHREAD
            continue
        out[int(name)] = int(fields[11]) + int(fields[12])
    return out


def foreign_delta(before, after):
    return sum(t - before[p] for p, t in after.items() if p in before)


def core_times():
    """{cpuN: (busy, total, task)} in clock ticks; task = user + nice + system, i.e. time spent in
    processes, without interrupts (loopback traffic is processed in softirq) and VM steal."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                parts = line.split()
                vals = [int(v) for v in parts[1:]]
                idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
                out[parts[0]] = (sum(vals[:8]) - idle, sum(vals[:8]), vals[0] + vals[1] + vals[2])
    return out


def run_wrk(args, duration, env):
    cmd = []
    if args.load_cpu:
        cmd += ["taskset", "-c", args.load_cpu]
    cmd += ["wrk", "-t1", f"-c{args.conns}", f"-d{duration}s", "--timeout", "5s",
            "-s", os.path.join(HERE, "wrk", "post.lua"), args.url]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 30)
    for line in p.stdout.splitlines():
        if line.startswith("BENCH "):
            return json.loads(line[len("BENCH "):]), p.stdout
    raise RuntimeError(f"wrk gave no result (rc={p.returncode}):\n{p.stdout}\n{p.stderr}")


def settle(pid, limit_s=30.0):
    """Wait until the proxy is idle (< 5% CPU over 200 ms), so that work queued by the previous cell
    (e.g. slow requests still being processed after wrk closed its connections) does not land in
    this one. Returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        c0 = proc_cpu_ticks(pid)
        time.sleep(0.2)
        if (proc_cpu_ticks(pid) - c0) / CLK_TCK < 0.01:
            break
    return time.monotonic() - t0


def wait_quiet(limit_s):
    """Wait (at most limit_s) until the whole machine is < 10 % busy over 0.5 s: on a shared machine
    this lets a burst of someone else's work pass before measuring. Returns True if it got quiet."""
    t0 = time.monotonic()
    while True:
        k0 = core_times()
        time.sleep(0.5)
        k1 = core_times()
        busy = sum(k1[k][0] - k0[k][0] for k in k1)
        total = sum(k1[k][1] - k0[k][1] for k in k1)
        if total and busy / total < 0.10:
            return True
        if time.monotonic() - t0 >= limit_s:
            return False


def main():
    ap = argparse.ArgumentParser()
    for a in ("config", "workload", "round", "pid", "url", "body", "out"):
        ap.add_argument("--" + a, required=True)
    ap.add_argument("--conns", default="16")
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--load-cpu", default="")
    ap.add_argument("--proxy-cpu", default="")
    ap.add_argument("--quiet-wait", type=float, default=2.0)
    ap.add_argument("--ours", default="", help="comma-separated pids of the benchmark's own processes")
    args = ap.parse_args()
    env = dict(os.environ, BENCH_BODY=args.body)
    waited = settle(args.pid)
    if waited > 1.0:
        print(f"  ({args.config} was still busy: waited {waited:.1f} s for it to go idle)", flush=True)
    quiet = wait_quiet(args.quiet_wait) if args.quiet_wait > 0 else None
    if args.warmup > 0:
        run_wrk(args, args.warmup, env)
        settle(args.pid)  # requests of the warm-up still queued in the proxy must not count here
    ours = {os.getpid(), os.getppid(), int(args.pid)} | {int(p) for p in args.ours.split(",") if p.strip()}
    f0 = foreign_ticks(ours)
    t0, c0, k0 = time.monotonic(), proc_cpu_ticks(args.pid), core_times()
    res, raw = run_wrk(args, args.duration, env)
    t1, c1, k1 = time.monotonic(), proc_cpu_ticks(args.pid), core_times()
    f1 = foreign_ticks(ours)
    fallback = False
    if res["requests"] == 0 and args.conns != "1":
        # Not one answer within the window: every request is slower than duration/conns. Measure
        # with one connection instead (no queueing), so the cell says how slow rather than just 0.
        print(f"  {args.config} {args.workload}: no answer within {args.duration} s at {args.conns} connections; "
              f"measuring with 1 connection", flush=True)
        settle(args.pid)
        args.conns = "1"
        f0 = foreign_ticks(ours)
        t0, c0, k0 = time.monotonic(), proc_cpu_ticks(args.pid), core_times()
        res, raw = run_wrk(args, args.duration, env)
        t1, c1, k1 = time.monotonic(), proc_cpu_ticks(args.pid), core_times()
        f1 = foreign_ticks(ours)
        fallback = True
    wall = t1 - t0
    secs = res["duration_us"] / 1e6
    res.update({
        "config": args.config, "workload": args.workload, "round": int(args.round), "conns": int(args.conns),
        "fallback_1conn": fallback,
        "rps": res["requests"] / secs if secs else 0.0,
        "proxy_cpu_pct": 100.0 * (c1 - c0) / CLK_TCK / wall,
        "proxy_cpu_us_per_req": ((c1 - c0) / CLK_TCK * 1e6 / res["requests"]) if res["requests"] else None,
        "core_busy_pct": {k: round(100.0 * (k1[k][0] - k0[k][0]) / max(1, k1[k][1] - k0[k][1]), 1) for k in k1},
        "quiet_before": quiet,
    })
    # CPU used by other people's processes during the measured run, in % of one core (a shared machine)
    res["foreign_cpu_pct"] = round(100.0 * foreign_delta(f0, f1) / CLK_TCK / wall, 1)
    with open(args.out, "a") as f:
        f.write(json.dumps(res) + "\n")
    errs = sum(res[k] for k in ("err_connect", "err_read", "err_write", "err_timeout"))
    print(f"  {args.config} {args.workload:10s} r{args.round}: {res['rps']:9.0f} rps  p50 {res['p50_us']:>7} us  "
          f"p99 {res['p99_us']:>7} us  proxy cpu {res['proxy_cpu_pct']:5.1f}%  "
          f"non-2xx {res['err_status']}  socket errors {errs}"
          + f"  other processes {res['foreign_cpu_pct']:.0f}%",
          flush=True)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # one failed cell must not abort the whole run
        print(f"  measure failed: {e}", file=sys.stderr)
        sys.exit(1)
