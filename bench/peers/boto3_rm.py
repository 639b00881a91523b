"""Peer for bench/run.sh: what an operator's script does with boto3. List the prefix (all
versions and delete markers on a versioned bucket) and delete in 1,000-key delete_objects
batches, reading the per-key errors. Exits 1 if any key failed."""
import os
import sys

import boto3
from botocore.config import Config

bucket, prefix = sys.argv[1], sys.argv[2]
s3 = boto3.client(
    "s3",
    endpoint_url=os.environ["AWS_ENDPOINT_URL"],
    config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5}),
)
versioned = s3.get_bucket_versioning(Bucket=bucket).get("Status") in ("Enabled", "Suspended")
batch, errors = [], 0


def flush():
    global batch, errors
    if batch:
        out = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        errors += len(out.get("Errors", []))
        batch = []


if versioned:
    pages = s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
            batch.append({"Key": v["Key"], "VersionId": v["VersionId"]})
            if len(batch) == 1000:
                flush()
else:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            batch.append({"Key": o["Key"]})
            if len(batch) == 1000:
                flush()
flush()
sys.exit(1 if errors else 0)
