"""Peer for bench/requests.sh: what an operator would script for a data-subject request on one
account of the reference platform (jobs/reference/training-platform.sql), with boto3 and psql.

    account.py export BUCKET DBURL ACCOUNT OUT   # the account's rows and objects into OUT
    account.py erase  BUCKET DBURL ACCOUNT       # delete the account's objects, then its rows

export: the account's run ids from psql; every object under runs/{id}/ and accounts/{account}/
listed and downloaded to OUT/objects/BUCKET/KEY (64 threads); the account's rows of accounts,
api_keys, runs, metrics, params, snapshots, snapshot_files and links written as JSON Lines to
OUT/rows/TABLE.jsonl with psql \\copy. No manifest, no ownership check.

erase: every object under runs/{id}/ and accounts/{account}/ listed (64 threads) and deleted
with 1,000-key delete_objects (64 threads), per-key errors read; then one psql transaction
deleting the account's rows, children first. Exits 1 if any key failed.
"""
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config

THREADS = 64


def psql(dburl, sql):
    """Runs SQL (several statements allowed) in one psql session, stops at the first error."""
    out = subprocess.run(
        ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", dburl],
        input=sql,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        sys.exit(f"psql failed ({out.returncode})")
    return out.stdout


def client():
    return boto3.client(
        "s3",
        endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 5},
            max_pool_connections=THREADS,
        ),
    )


def prefixes(dburl, account):
    ids = psql(dburl, f"SELECT id FROM runs WHERE account_id = {account} ORDER BY id;").split()
    return [f"runs/{i}/" for i in ids] + [f"accounts/{account}/"]


def list_prefix(s3, bucket, prefix):
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return keys


# The account's rows, table by table: (file, query). The account is substituted in.
RUNS = "SELECT id FROM runs WHERE account_id = {a}"
SNAPS = f"SELECT id FROM snapshots WHERE run_id IN ({RUNS})"
ROWS = [
    ("accounts", "SELECT * FROM accounts WHERE id = {a}"),
    ("api_keys", "SELECT id, account_id, created_at FROM api_keys WHERE account_id = {a}"),
    ("runs", "SELECT * FROM runs WHERE account_id = {a}"),
    ("metrics", f"SELECT * FROM metrics WHERE run_id IN ({RUNS})"),
    ("params", f"SELECT * FROM params WHERE run_id IN ({RUNS})"),
    ("snapshots", f"SELECT * FROM snapshots WHERE run_id IN ({RUNS})"),
    ("snapshot_files", f"SELECT * FROM snapshot_files WHERE snapshot_id IN ({SNAPS})"),
    (
        "links",
        "SELECT * FROM links WHERE (destination_type = 'RUN' AND destination_id IN "
        f"(SELECT id::text FROM runs WHERE account_id = {{a}})) OR (destination_type = 'SNAPSHOT' "
        f"AND destination_id IN (SELECT id::text FROM snapshots WHERE run_id IN ({RUNS})))",
    ),
]


def export(bucket, dburl, account, out):
    s3 = client()
    rows_dir = os.path.join(out, "rows")
    os.makedirs(rows_dir, exist_ok=True)
    copies = "".join(
        f"\\copy (SELECT row_to_json(t) FROM ({q.format(a=account)}) t) TO "
        f"'{os.path.join(rows_dir, name)}.jsonl'\n"
        for name, q in ROWS
    )
    psql(dburl, copies)

    def one(prefix):
        n = 0
        for key in list_prefix(s3, bucket, prefix):
            path = os.path.join(out, "objects", bucket, key)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            s3.download_file(bucket, key, path)
            n += 1
        return n

    with ThreadPoolExecutor(THREADS) as pool:
        n = sum(pool.map(one, prefixes(dburl, account)))
    print(f"exported {n} objects", file=sys.stderr)


def erase(bucket, dburl, account):
    s3 = client()
    with ThreadPoolExecutor(THREADS) as pool:
        keys = [k for ks in pool.map(lambda p: list_prefix(s3, bucket, p), prefixes(dburl, account)) for k in ks]
        batches = [keys[i : i + 1000] for i in range(0, len(keys), 1000)]

        def delete(batch):
            out = s3.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
            )
            return len(out.get("Errors", []))

        errors = sum(pool.map(delete, batches))
    print(f"deleted {len(keys) - errors} objects, {errors} failed", file=sys.stderr)
    if errors:
        sys.exit(1)
    a = account
    psql(
        dburl,
        f"""BEGIN;
DELETE FROM links WHERE (destination_type = 'RUN' AND destination_id IN
    (SELECT id::text FROM runs WHERE account_id = {a})) OR (destination_type = 'SNAPSHOT'
    AND destination_id IN (SELECT id::text FROM snapshots WHERE run_id IN ({RUNS.format(a=a)})));
DELETE FROM metrics WHERE run_id IN ({RUNS.format(a=a)});
DELETE FROM params WHERE run_id IN ({RUNS.format(a=a)});
DELETE FROM snapshot_files WHERE snapshot_id IN ({SNAPS.format(a=a)});
DELETE FROM snapshots WHERE run_id IN ({RUNS.format(a=a)});
DELETE FROM runs WHERE account_id = {a};
DELETE FROM api_keys WHERE account_id = {a};
DELETE FROM accounts WHERE id = {a};
COMMIT;
""",
    )


def main():
    if len(sys.argv) < 5 or sys.argv[1] not in ("export", "erase"):
        sys.exit(__doc__)
    mode, bucket, dburl, account = sys.argv[1:5]
    account = int(account)  # also keeps the SQL above free of injection
    if mode == "export":
        if len(sys.argv) < 6:
            sys.exit("export needs OUT")
        export(bucket, dburl, account, sys.argv[5])
    else:
        erase(bucket, dburl, account)


if __name__ == "__main__":
    main()
