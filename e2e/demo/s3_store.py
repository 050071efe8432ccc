"""The e2e tier's S3 store: moto's S3-compatible server in a pod, holding the demo's models, auth enforced.

Runs in the s3store image (e2e/s3/image: the base image plus ``moto[s3]`` and Flask under /opt/moto), mounted
from a ConfigMap like the Prometheus sidecar. Steps, all through moto's public APIs:

1. moto's server on 127.0.0.1 only (clients cannot reach it yet): bucket BUCKET with every file of
   MODELS_DIR (the model store's ConfigMap), an IAM user ``model-reader`` allowed ``s3:GetObject`` on that
   bucket only, with an access key (moto generates it: its keys cannot be chosen).
2. Auth enforced (``/moto-api/reset-auth``): every request must now be signed with keys moto's IAM knows and
   is judged by their policies, as a real store does.
3. A self-check against that: the reader's keys read an object; unknown keys are refused
   (InvalidAccessKeyId), the reader may not write (AccessDenied).
4. One JSON line on stdout with the reader's keys, the objects' sha256 and the self-check, which the installer
   (stack.install_s3_store) reads from the pod's log to write the credentials Secrets; then the same server
   (the same in-process state) listens on 0.0.0.0:PORT, so the pod is ready once the store is.

The keys are throwaway keys of an in-cluster test store; they are in the pod's log on purpose. State is in
memory: a restarted pod has new keys (the installer reads the current pod's log again).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

REGION = "us-east-1"
SETUP_PORT = 5001
SETUP_KEYS = {"aws_access_key_id": "setup", "aws_secret_access_key": "setup"}  # before auth is enforced


def _client(service: str, endpoint: str, keys: dict[str, str]) -> Any:
    import boto3

    session = boto3.session.Session(region_name=REGION, **keys)
    return session.client(service, endpoint_url=endpoint)


def _error_code(call: Any) -> str:
    """The S3 error code of CALL, or "ok" when it succeeds."""
    from botocore.exceptions import ClientError

    try:
        call()
    except ClientError as exc:
        return str(exc.response.get("Error", {}).get("Code", "?"))
    return "ok"


def seed(endpoint: str, bucket: str, models: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The bucket with every file of MODELS, and a read-only user; (its keys, each object's sha256)."""
    s3 = _client("s3", endpoint, SETUP_KEYS)
    s3.create_bucket(Bucket=bucket)
    objects: dict[str, str] = {}
    for path in sorted(p for p in models.iterdir() if p.is_file() and not p.name.startswith(".")):
        data = path.read_bytes()
        s3.put_object(Bucket=bucket, Key=path.name, Body=data)
        objects[path.name] = hashlib.sha256(data).hexdigest()
    iam = _client("iam", endpoint, SETUP_KEYS)
    iam.create_user(UserName="model-reader")
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [f"arn:aws:s3:::{bucket}/*"]}],
    }
    iam.put_user_policy(UserName="model-reader", PolicyName="read-models", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="model-reader")["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}, objects


def enforce_auth(endpoint: str) -> None:
    import urllib.request

    # the body is the number of requests still let through unsigned
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        if resp.status != 200:
            raise RuntimeError(f"moto refused reset-auth: {resp.status}")


def self_check(endpoint: str, bucket: str, key: str, reader: dict[str, str]) -> dict[str, str]:
    """What the enforced store answers: the reader's read, unknown keys, and the reader's write."""
    keys = {"aws_access_key_id": reader["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": reader["AWS_SECRET_ACCESS_KEY"]}
    as_reader = _client("s3", endpoint, keys)
    unknown = _client("s3", endpoint, {"aws_access_key_id": "AKIAUNKNOWNUNKNOWN00", "aws_secret_access_key": "x" * 40})
    return {
        "reader_get": _error_code(lambda: as_reader.get_object(Bucket=bucket, Key=key)["Body"].read()),
        "unknown_keys_get": _error_code(lambda: unknown.get_object(Bucket=bucket, Key=key)),
        "reader_put": _error_code(lambda: as_reader.put_object(Bucket=bucket, Key="written-by-reader", Body=b"x")),
    }


def main() -> int:
    from moto.server import ThreadedMotoServer

    bucket = os.environ["BUCKET"]
    models = Path(os.environ.get("MODELS_DIR", "/models"))
    port = int(os.environ.get("PORT", "5000"))
    setup = ThreadedMotoServer(ip_address="127.0.0.1", port=SETUP_PORT, verbose=False)
    setup.start()
    endpoint = f"http://127.0.0.1:{SETUP_PORT}"
    reader, objects = seed(endpoint, bucket, models)
    enforce_auth(endpoint)
    checks = self_check(endpoint, bucket, next(iter(objects)), reader)
    setup.stop()
    line = {"s3_store": "ready", "bucket": bucket, "region": REGION, "reader": reader, "objects": objects}
    print(json.dumps({**line, "checks": checks}), flush=True)
    if checks != {"reader_get": "ok", "unknown_keys_get": "InvalidAccessKeyId", "reader_put": "AccessDenied"}:
        print(json.dumps({"error": f"the store does not enforce credentials as expected: {checks}"}), flush=True)
        return 1
    # PID 1 of its container: without a handler SIGTERM would be ignored until the grace period ends
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ThreadedMotoServer(ip_address="0.0.0.0", port=port, verbose=False).start()
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
