#!/usr/bin/env python3
"""Seed a local MLflow file store with demo experiments and runs.

    seed_mlflow.py --store DIR --out ids.json [--large-params N --large-metrics N --large-tags N]

Creates a few experiments, each with a handful of small runs, plus one "large" run with many
params, metrics and tags (its get_run answer is large: about 1.3 MB of JSON with the defaults). Writes
the experiment and run ids to --out as JSON:

    {"tracking_uri": ..., "experiments": {name: id}, "runs": {label: run_id}, "large_run": run_id,
     "large_run_size": {"params": n, "metrics": n, "tags": n}}
"""
import argparse
import json
import os
import pathlib
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True, help="MLflow file store directory (created)")
    ap.add_argument("--out", required=True, help="where to write the ids (JSON)")
    ap.add_argument("--large-params", type=int, default=600)
    ap.add_argument("--large-metrics", type=int, default=1000)
    ap.add_argument("--large-tags", type=int, default=600)
    ap.add_argument("--value-size", type=int, default=1000, help="characters per large-run param/tag value")
    args = ap.parse_args()

    store = pathlib.Path(args.store).resolve()
    store.mkdir(parents=True, exist_ok=True)
    uri = store.as_uri()
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")

    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    now = int(time.time() * 1000)
    out = {"tracking_uri": uri, "experiments": {}, "runs": {}}

    def experiment(name: str, **tags: str) -> str:
        got = client.get_experiment_by_name(name)
        exp_id = got.experiment_id if got else client.create_experiment(name, tags=tags)
        out["experiments"][name] = exp_id
        return exp_id

    demos = {
        "churn-model": [("baseline", 0.81, 0.05), ("xgboost", 0.87, 0.1), ("xgboost-tuned", 0.89, 0.03)],
        "price-forecast": [("arima", 0.72, 0.0), ("prophet", 0.76, 0.0), ("lstm", 0.79, 0.001)],
        "agent-evals": [("gpt-small", 0.64, 0.0), ("gpt-large", 0.71, 0.0)],
    }
    for exp_name, runs in demos.items():
        exp_id = experiment(exp_name, team="ml", purpose="mcp-policy demo")
        for label, acc, lr in runs:
            run = client.create_run(exp_id, run_name=label, tags={"model": label, "stage": "dev"})
            rid = run.info.run_id
            client.log_batch(
                rid,
                metrics=[Metric("accuracy", acc, now, 0), Metric("loss", round(1 - acc, 3), now, 0)],
                params=[Param("learning_rate", str(lr)), Param("model", label)],
            )
            client.set_terminated(rid)
            out["runs"][f"{exp_name}/{label}"] = rid

    # One large run: many params, metrics and tags, so get_run answers with a big body.
    exp_id = experiment("large-run", purpose="a run whose get_run answer is large")
    run = client.create_run(exp_id, run_name="large", tags={"model": "large"})
    rid = run.info.run_id
    filler = "x" * max(0, args.value_size - 12)
    params = [Param(f"param_{i:05d}", f"{i:05d}-{filler}") for i in range(args.large_params)]
    metrics = [Metric(f"metric_{i:05d}", i / 7.0, now, 0) for i in range(args.large_metrics)]
    tags = [RunTag(f"tag_{i:05d}", f"{i:05d}-{filler}") for i in range(args.large_tags)]
    # log_batch takes at most 100 params / 1000 metrics / 100 tags... per call: chunk.
    for i in range(0, len(params), 100):
        client.log_batch(rid, params=params[i:i + 100])
    for i in range(0, len(metrics), 1000):
        client.log_batch(rid, metrics=metrics[i:i + 1000])
    for i in range(0, len(tags), 100):
        client.log_batch(rid, tags=tags[i:i + 100])
    client.set_terminated(rid)
    out["runs"]["large-run/large"] = rid
    out["large_run"] = rid
    out["large_run_size"] = {"params": args.large_params, "metrics": args.large_metrics, "tags": args.large_tags}

    pathlib.Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"seeded {len(out['experiments'])} experiments, {len(out['runs'])} runs in {uri}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
