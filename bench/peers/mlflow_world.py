"""Seeds an MLflow 3.x world for bench/mlflow.sh, fast: the tables MLflow's own migrations made
(`mlflow db upgrade`), filled with SQL, and the artifacts uploaded with boto3, in MLflow's
layout. `mlflow gc` and lethe then meet the same rows and objects.

    mlflow_world.py DB_URL BUCKET RUNS PURGE [--versioned]

DB_URL is postgresql://...; RUNS runs over 20 experiments, PURGE of them deleted 40 days ago
(eligible for `mlflow gc --older-than 30d` and for lethe's pack), 30 more deleted 5 days ago
(neither touches them), the rest active. Each run has 20 metric points, its latest metric, 5
params, 3 tags, a dataset input with a tag, and 5 artifacts of 1 KiB under
<experiment>/<run>/artifacts/; with --versioned each artifact is written twice.

Then, through MLflow's own client (as the issue's world was built): experiment 21 with 25 runs
(metrics, params, a logged artifact each), 3 logged models and 2 traces, deleted 40 days ago;
and 2 logged models in each of experiments 1-20, one of them deleted 40 days ago. Each model
has params, a metric, its run's output link and an artifact, made as tests/mlflow/world.py
makes them. So all three jobs of the pack have work. Prints counts.
"""

import concurrent.futures
import os
import sys
import time
import uuid

import boto3
import psycopg

DAY_MS = 86_400_000
EXPERIMENTS = 20
ARTIFACTS = ["model/MLmodel", "model/model.pkl", "metrics.json", "notes.txt", "plots/loss.png"]


def main():
    db, bucket, runs, purge = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    versioned = "--versioned" in sys.argv
    now = int(time.time() * 1000)
    ids = [uuid.uuid4().hex for _ in range(runs)]
    state = {}
    for n, rid in enumerate(ids):
        if n < purge:
            state[rid] = ("deleted", now - 40 * DAY_MS)
        elif n < purge + 30:
            state[rid] = ("deleted", now - 5 * DAY_MS)
        else:
            state[rid] = ("active", None)
    exp_of = {rid: 1 + n % EXPERIMENTS for n, rid in enumerate(ids)}
    with psycopg.connect(db) as conn:
        with conn.cursor() as cur:
            for e in range(1, EXPERIMENTS + 1):
                cur.execute(
                    "INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage, "
                    "creation_time, last_update_time) VALUES (%s, %s, %s, 'active', %s, %s)",
                    (e, f"bench-{e}", f"s3://{bucket}/{e}", now - 90 * DAY_MS, now - 90 * DAY_MS),
                )
                cur.execute(
                    "INSERT INTO datasets (dataset_uuid, experiment_id, name, digest, dataset_source_type, "
                    "dataset_source) VALUES (%s, %s, 'train', %s, 'code', '{}')",
                    (f"ds{e}", e, f"d{e}"),
                )
            cur.execute("SELECT setval(pg_get_serial_sequence('experiments', 'experiment_id'), %s)", (EXPERIMENTS,))
            with cur.copy(
                "COPY runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, "
                "start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id, "
                "deleted_time) FROM STDIN"
            ) as cp:
                for rid in ids:
                    stage, deleted = state[rid]
                    e = exp_of[rid]
                    cp.write_row((rid, "r", "LOCAL", "train.py", "", "bench", "FINISHED", now - 60 * DAY_MS,
                                  now - 60 * DAY_MS, "", stage, f"s3://{bucket}/{e}/{rid}/artifacts", e, deleted))
            with cur.copy("COPY metrics (key, value, timestamp, run_uuid, step, is_nan) FROM STDIN") as cp:
                for rid in ids:
                    for s in range(20):
                        cp.write_row(("loss", 1.0 / (s + 1), now - 60 * DAY_MS + s, rid, s, False))
            with cur.copy("COPY latest_metrics (key, value, timestamp, step, is_nan, run_uuid) FROM STDIN") as cp:
                for rid in ids:
                    cp.write_row(("loss", 0.05, now - 60 * DAY_MS + 19, 19, False, rid))
            with cur.copy("COPY params (key, value, run_uuid) FROM STDIN") as cp:
                for rid in ids:
                    for p in range(5):
                        cp.write_row((f"p{p}", "v", rid))
            with cur.copy("COPY tags (key, value, run_uuid) FROM STDIN") as cp:
                for rid in ids:
                    for t in ["mlflow.runName", "mlflow.user", "team"]:
                        cp.write_row((t, "x", rid))
            with cur.copy(
                "COPY inputs (input_uuid, source_type, source_id, destination_type, destination_id, step) FROM STDIN"
            ) as cp:
                for rid in ids:
                    cp.write_row((f"in{rid}", "DATASET", f"ds{exp_of[rid]}", "RUN", rid, 0))
            with cur.copy("COPY input_tags (input_uuid, name, value) FROM STDIN") as cp:
                for rid in ids:
                    cp.write_row((f"in{rid}", "mlflow.data.context", "train"))
        conn.execute("ANALYZE")
    s3 = boto3.client("s3", endpoint_url=os.environ["MLFLOW_S3_ENDPOINT_URL"])
    body = b"x" * 1024
    keys = [f"{exp_of[rid]}/{rid}/artifacts/{a}" for rid in ids for a in ARTIFACTS]

    def put(key):
        for _ in range(2 if versioned else 1):
            s3.put_object(Bucket=bucket, Key=key, Body=body)

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        list(pool.map(put, keys))
    print(f"seeded {runs} runs ({purge} to purge), {len(keys) * (2 if versioned else 1)} object versions")
    through_client(db, bucket, [rid for rid in ids if state[rid][0] == "active"], exp_of)


def through_client(db, bucket, active, exp_of):
    """The deleted experiment, its traces and the logged models, made by MLflow's client."""
    import tempfile

    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    uri = db.replace("postgresql://", "postgresql+psycopg://", 1)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    tmp = tempfile.mkdtemp()
    now = int(time.time() * 1000)

    # The pack's end-to-end test makes its models so: params, a metric, the run's output link,
    # an artifact.
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "mlflow"))
    from world import model_with_everything

    def model(exp, rid, name):
        return model_with_everything(client, exp, rid, name, tmp)

    gone = client.create_experiment("bench-deleted", artifact_location=f"s3://{bucket}/{EXPERIMENTS + 1}")
    exp_runs = []
    for n in range(25):
        rid = client.create_run(gone, run_name=f"gone-{n}").info.run_id
        client.log_batch(rid, metrics=[Metric("loss", 1.0 / (s + 1), now + s, s) for s in range(20)],
                         params=[Param("lr", "0.01")])
        client.log_text(rid, "notes", "notes.txt")
        exp_runs.append(rid)
    for n in range(3):
        model(gone, exp_runs[n], f"gone-model-{n}")
    mlflow.set_experiment(experiment_id=gone)
    for n in range(2):
        with mlflow.start_span(f"predict-{n}") as span:
            span.set_inputs({"q": n})
            with mlflow.start_span("retrieve"):
                pass
    mlflow.flush_trace_async_logging()
    client.delete_experiment(gone)
    deleted_models = []
    for e in range(1, EXPERIMENTS + 1):
        mine = [rid for rid in active if exp_of[rid] == e][:2]
        for n, rid in enumerate(mine):
            mid = model(str(e), rid, f"model-{e}-{n}")
            if n == 0:
                client.delete_logged_model(mid)
                deleted_models.append(mid)
    old = now - 40 * DAY_MS
    with psycopg.connect(db) as conn:
        conn.execute("UPDATE experiments SET last_update_time = %s WHERE experiment_id = %s", (old, int(gone)))
        conn.execute("UPDATE runs SET deleted_time = %s WHERE experiment_id = %s", (old, int(gone)))
        conn.execute("UPDATE logged_models SET last_updated_timestamp_ms = %s WHERE model_id = ANY(%s)",
                     (old, deleted_models))
        conn.execute("ANALYZE")
    print(f"through MLflow's client: experiment {gone} deleted with 25 runs, 3 models and 2 traces; "
          f"{len(deleted_models)} of {2 * EXPERIMENTS} logged models deleted")


if __name__ == "__main__":
    main()
