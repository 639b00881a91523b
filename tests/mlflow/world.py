"""An MLflow world for the MLflow pack's end-to-end test, built and checked through MLflow's own
client (and boto3 and psycopg for what MLflow does not do: direct uploads, backdating, reading
every table and every object version).

    world.py build STATE   # experiments, runs, models; delete some through MLflow; backdate
    world.py check STATE   # after lethe: what was deleted is gone, everything else untouched

Environment: MLFLOW_TRACKING_URI (a running `mlflow server`), MLFLOW_DB (its database, as a
postgresql:// URL), BUCKET (its artifact root's bucket, versioned), MLFLOW_S3_ENDPOINT_URL and
AWS credentials. STATE is a JSON file: what `build` made, and the snapshot `check` compares with.

The world, on a versioned bucket:
- experiments 1 to 11; experiment 1 deleted 40 days ago (everything under it goes), so `1/` sits
  beside kept `10/` and `11/`;
- in experiment 10: runs kept, a run deleted 40 days ago (goes), a run deleted a day ago (in its
  grace window: stays); a logged model deleted 40 days ago (goes) beside kept ones;
- every run has metrics over steps, params, tags, a dataset input with a tag, artifacts logged
  through MLflow (one overwritten, so two versions), a file uploaded directly beside MLflow's
  `artifacts/` directory, and an unfinished multipart upload;
- models have params, metrics, artifacts, and the run that made them links to them;
- the deleted experiment holds a trace with spans.
"""

import json
import os
import sys
import tempfile
import time

import boto3
import mlflow
import pandas as pd
import psycopg
from mlflow import MlflowClient
from mlflow.entities import (
    DatasetInput,
    InputTag,
    LoggedModelOutput,
    LoggedModelStatus,
    Metric,
    Param,
    RunTag,
)

DAY_MS = 86_400_000
BUCKET = os.environ.get("BUCKET", "")


def s3():
    return boto3.client("s3", endpoint_url=os.environ["MLFLOW_S3_ENDPOINT_URL"])


def every_version(bucket):
    """(key, version id, kind) of every version, delete marker and unfinished upload."""
    out = set()
    paginator = s3().get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            out.add((v["Key"], v["VersionId"], "version"))
        for m in page.get("DeleteMarkers", []):
            out.add((m["Key"], m["VersionId"], "marker"))
    for page in s3().get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for u in page.get("Uploads", []):
            out.add((u["Key"], u["UploadId"], "upload"))
    return out


def every_row(db):
    """Every row of every MLflow table, as text, per table."""
    with psycopg.connect(db) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            )
        ]
        out = {}
        for t in tables:
            cols = [
                r[0]
                for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position",
                    (t,),
                )
            ]
            rows = conn.execute(f'SELECT * FROM "{t}"').fetchall()
            out[t] = [dict(zip(cols, [None if v is None else str(v) for v in r])) for r in rows]
        return out


def run_with_everything(client, exp, name):
    run = client.create_run(exp, run_name=name)
    rid = run.info.run_id
    now = int(time.time() * 1000)
    client.log_batch(
        rid,
        metrics=[Metric("loss", 1.0 / (s + 1), now + s, s) for s in range(5)],
        params=[Param("lr", "0.01"), Param("seed", "7")],
        tags=[RunTag("team", "vision")],
    )
    ds = mlflow.data.from_pandas(pd.DataFrame({"x": [1, 2, 3]}), name=f"train-{name}")
    client.log_inputs(
        rid,
        datasets=[
            DatasetInput(ds._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", "train")])
        ],
    )
    client.log_text(rid, "first", "notes/readme.txt")
    client.log_text(rid, "second", "notes/readme.txt")  # a second version of the same key
    client.log_dict(rid, {"name": name}, "config/params.json")
    # Written beside MLflow's artifacts/ directory, and an upload never finished.
    base = run.info.artifact_uri.removeprefix(f"s3://{BUCKET}/").removesuffix("artifacts")
    s3().put_object(Bucket=BUCKET, Key=f"{base}direct/blob.bin", Body=b"direct")
    s3().create_multipart_upload(Bucket=BUCKET, Key=f"{base}artifacts/upload.bin")
    return rid


def model_with_everything(client, exp, rid, name, tmp):
    m = client.create_logged_model(exp, name=name, source_run_id=rid)
    client.log_model_params(m.model_id, {"depth": "3"})
    client.log_metric(rid, "accuracy", 0.9, model_id=m.model_id)
    client.log_outputs(rid, [LoggedModelOutput(m.model_id, 0)])
    d = os.path.join(tmp, m.model_id)
    os.makedirs(d)
    with open(os.path.join(d, "MLmodel"), "w") as f:
        f.write(f"name: {name}\n")
    client.log_model_artifacts(m.model_id, d)
    client.finalize_logged_model(m.model_id, LoggedModelStatus.READY)
    return m.model_id


def build(state_path):
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    tmp = tempfile.mkdtemp()
    exps = [client.create_experiment(f"exp-{n}") for n in range(1, 12)]
    assert exps[0] == "1" and exps[9] == "10", exps
    world = {"runs": {}, "models": {}, "experiments": {}}

    def add(kind, ident, fate, exp):
        world[kind][ident] = {"fate": fate, "experiment": exp}

    for exp in exps:
        add("experiments", exp, "purge" if exp == "1" else "keep", exp)
    # Experiment 1: everything under it goes, whatever the state of its runs.
    for n in range(3):
        rid = run_with_everything(client, "1", f"e1-run{n}")
        add("runs", rid, "purge", "1")
        add("models", model_with_everything(client, "1", rid, f"e1-m{n}", tmp), "purge", "1")
    mlflow.set_experiment(experiment_id="1")
    with mlflow.start_span("predict") as span:
        span.set_inputs({"q": "hi"})
        with mlflow.start_span("retrieve"):
            pass
    mlflow.flush_trace_async_logging()
    # Experiments 10 and 11: runs kept, deleted long ago, deleted yesterday.
    for exp in ["10", "11"]:
        for n in range(3):
            rid = run_with_everything(client, exp, f"e{exp}-keep{n}")
            add("runs", rid, "keep", exp)
            add("models", model_with_everything(client, exp, rid, f"e{exp}-m{n}", tmp), "keep", exp)
        for n in range(2):
            rid = run_with_everything(client, exp, f"e{exp}-old{n}")
            add("runs", rid, "purge", exp)
            client.delete_run(rid)
        rid = run_with_everything(client, exp, f"e{exp}-recent")
        add("runs", rid, "keep", exp)
        mid = model_with_everything(client, exp, rid, f"e{exp}-old-model", tmp)
        add("models", mid, "purge", exp)
        client.delete_logged_model(mid)
        client.delete_run(rid)
    client.delete_experiment("1")
    old = int(time.time() * 1000) - 40 * DAY_MS
    purge_runs = [r for r, v in world["runs"].items() if v["fate"] == "purge" and v["experiment"] != "1"]
    purge_models = [m for m, v in world["models"].items() if v["fate"] == "purge" and v["experiment"] != "1"]
    with psycopg.connect(os.environ["MLFLOW_DB"]) as conn:
        conn.execute("UPDATE runs SET deleted_time = %s WHERE run_uuid = ANY(%s)", (old, purge_runs))
        conn.execute(
            "UPDATE logged_models SET last_updated_timestamp_ms = %s WHERE model_id = ANY(%s)",
            (old, purge_models),
        )
        conn.execute("UPDATE experiments SET last_update_time = %s WHERE experiment_id = 1", (old,))
        # The deleted experiment's runs were marked deleted with it, now: time them with it.
        conn.execute(
            "UPDATE runs SET deleted_time = %s WHERE experiment_id = 1", (old,)
        )
        traces = [r[0] for r in conn.execute("SELECT request_id FROM trace_info WHERE experiment_id = 1")]
    assert traces, "the deleted experiment has a trace"
    world["traces"] = traces
    world["rows"] = every_row(os.environ["MLFLOW_DB"])
    world["objects"] = sorted(every_version(BUCKET))
    with open(state_path, "w") as f:
        json.dump(world, f)
    counts = {k: sum(1 for v in world[k].values() if v["fate"] == "purge") for k in ["runs", "models", "experiments"]}
    print(f"built: {counts} to purge, {len(traces)} trace(s), {len(world['objects'])} object versions")


def check(state_path):
    with open(state_path) as f:
        world = json.load(f)
    failures = []
    # HELD_RUN: a run under a legal hold. It stays, and so does its experiment with everything
    # lethe's experiment job would have taken with it (its models, its trace); the experiment's
    # other deleted runs still go, each on its own.
    held = os.environ.get("HELD_RUN")
    if held:
        exp = world["runs"][held]["experiment"]
        world["runs"][held]["fate"] = "keep"
        world["experiments"][exp]["fate"] = "keep"
        for m in world["models"].values():
            if m["experiment"] == exp:
                m["fate"] = "keep"
        world["traces"] = []
    gone_ids = {i for k in ["runs", "models"] for i, v in world[k].items() if v["fate"] == "purge"}
    gone_ids |= set(world["traces"])
    gone_exps = {e for e, v in world["experiments"].items() if v["fate"] == "purge"}

    def belongs(row):
        """Whether a row is part of something purged: names a purged run, model or trace in any
        column, or a purged experiment in its experiment_id. A model's `source_run_id` only says
        where it came from: the model outlives that run."""
        if row.get("experiment_id") in gone_exps:
            return True
        return any(v in gone_ids for c, v in row.items() if c != "source_run_id")

    # An input's tags name only the input: they belong to what its input row belongs to.
    gone_ids |= {r["input_uuid"] for r in world["rows"]["inputs"] if belongs(r)}
    after = every_row(os.environ["MLFLOW_DB"])
    for table, rows in world["rows"].items():
        want = sorted(json.dumps(r, sort_keys=True) for r in rows if not belongs(r))
        got = sorted(json.dumps(r, sort_keys=True) for r in after.get(table, []))
        if want != got:
            missing = set(want) - set(got)
            extra = set(got) - set(want)
            failures.append(
                f"table {table}: {len(missing)} kept row(s) missing, {len(extra)} row(s) that "
                f"should be gone or changed: missing {sorted(missing)[:3]}, left {sorted(extra)[:3]}"
            )
    purged_dirs = [f"{e}/" for e in gone_exps]
    for kind, fmt in [("runs", "{e}/{i}/"), ("models", "{e}/models/{i}/")]:
        for i, v in world[kind].items():
            if v["fate"] == "purge":
                purged_dirs.append(fmt.format(e=v["experiment"], i=i))
    before = {tuple(o) for o in world["objects"]}
    want = {o for o in before if not any(o[0].startswith(d) for d in purged_dirs)}
    got = every_version(BUCKET)
    if want != got:
        failures.append(
            f"objects: kept missing {sorted(want - got)[:5]}, left behind {sorted(got - want)[:5]}"
        )
    if len(want) == len(before):
        failures.append("objects: the world had nothing to purge")
    # MLflow's own client still reads every kept run and model, and no longer finds the rest.
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    for rid, v in world["runs"].items():
        try:
            run = client.get_run(rid)
            found = True
        except mlflow.exceptions.MlflowException:
            found = False
        if v["fate"] == "purge":
            if found:
                failures.append(f"run {rid} still readable through MLflow")
            continue
        if not found:
            failures.append(f"kept run {rid} not readable through MLflow")
            continue
        history = client.get_metric_history(rid, "loss")
        if len(history) != 5 or run.data.params.get("lr") != "0.01" or not run.inputs.dataset_inputs:
            failures.append(f"kept run {rid}: metrics, params or inputs incomplete")
        arts = {a.path for a in client.list_artifacts(rid)}
        if not {"notes", "config"} <= arts:
            failures.append(f"kept run {rid}: artifacts {arts}")
        else:
            path = client.download_artifacts(rid, "notes/readme.txt", tempfile.mkdtemp())
            if open(path).read() != "second":
                failures.append(f"kept run {rid}: notes/readme.txt is not its latest version")
    for mid, v in world["models"].items():
        try:
            client.get_logged_model(mid)
            found = True
        except mlflow.exceptions.MlflowException:
            found = False
        if found != (v["fate"] == "keep"):
            failures.append(f"logged model {mid} ({v['fate']}): readable = {found}")
    if failures:
        print("\n".join(failures))
        sys.exit(1)
    print(f"checked: {sum(len(r) for r in after.values())} rows and {len(got)} object versions kept, "
          f"{len(before) - len(got)} object versions and everything of {len(gone_ids)} ids gone")


if __name__ == "__main__":
    {"build": build, "check": check}[sys.argv[1]](sys.argv[2])
