#!/usr/bin/env python3
"""Run `envoy --mode validate` on every Envoy bootstrap YAML under the given folders.

    validate_envoy.py [--envoy PATH] DIR...

Run it from the repository root: the bootstraps name the wasm by a path relative to it.
YAML files that are not Envoy bootstraps (no top-level static_resources / dynamic_resources /
admin / ... key, e.g. Kubernetes or Istio manifests) are listed as skipped.
Exits non-zero if any bootstrap fails validation or if none was found.
"""
import argparse
import pathlib
import subprocess
import sys

import yaml

BOOTSTRAP_KEYS = {
    "static_resources", "dynamic_resources", "admin", "node", "layered_runtime",
    "cluster_manager", "overload_manager", "bootstrap_extensions",
}


def is_bootstrap(path: pathlib.Path) -> bool:
    try:
        docs = list(yaml.safe_load_all(path.read_text()))
    except yaml.YAMLError:
        return True  # let Envoy report the syntax error
    return len(docs) == 1 and isinstance(docs[0], dict) and bool(BOOTSTRAP_KEYS & docs[0].keys())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envoy", default="envoy")
    ap.add_argument("dirs", nargs="+")
    args = ap.parse_args()

    files = sorted(p for d in args.dirs for p in pathlib.Path(d).rglob("*") if p.suffix in (".yaml", ".yml"))
    failed, checked = [], 0
    for f in files:
        if not is_bootstrap(f):
            print(f"skip  {f} (not an Envoy bootstrap)")
            continue
        checked += 1
        r = subprocess.run([args.envoy, "--mode", "validate", "-c", str(f), "-l", "warning"],
                           capture_output=True, text=True)
        if r.returncode == 0:
            print(f"ok    {f}")
        else:
            failed.append(f)
            print(f"FAIL  {f}\n{r.stdout}{r.stderr}")
    if not checked:
        print("no Envoy bootstrap found", file=sys.stderr)
        return 1
    print(f"validate: {checked - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
