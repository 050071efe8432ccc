"""A real S3-compatible server for tests: moto's server mode (PyPI ``moto[server]``) on loopback.

Stable API:

- ``run_s3()``: context manager yielding a ready :class:`S3Server` (its own process, its own port);
  always stopped on exit.
- ``S3Server.client(**credentials)``: a boto3 S3 client pointed at it; ``S3Server.iam()``, ``sts()``.
- ``S3Server.env(...)``: the standard AWS environment (``AWS_ENDPOINT_URL_S3``, keys, region) for a model
  server that should read from it, with every other credential source switched off (no shared files, no
  instance metadata: nothing leaves the machine).
- ``S3Server.enforce_auth()``: from now on every request must be signed with keys moto's IAM knows and is
  judged by their policies (moto's ``/moto-api/reset-auth``), so wrong keys and denied reads are real.
  (moto 5.2 then answers the unsigned ``AssumeRoleWithWebIdentity`` with a 500: test web identity on a
  server without enforced auth.)
- ``S3Server.user(name, policy)``: an IAM user with access keys and an inline policy (before enforcing).
"""

from __future__ import annotations

import contextlib
import json
import sys
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.procs import ManagedProcess, free_port, running

REGION = "us-east-1"
SETUP_KEYS = {"AWS_ACCESS_KEY_ID": "setup", "AWS_SECRET_ACCESS_KEY": "setup"}
NO_AMBIENT_CREDENTIALS = {
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",  # never ask 169.254.169.254
}


def read_all(*buckets: str) -> dict[str, Any]:
    """An IAM policy allowing reads of every object in ``buckets``."""
    resources = [f"arn:aws:s3:::{bucket}/*" for bucket in buckets]
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": resources}],
    }


@dataclass
class S3Server:
    process: ManagedProcess

    @property
    def url(self) -> str:
        return self.process.url

    def _session_client(self, service: str, keys: Mapping[str, str]) -> Any:
        import boto3

        return boto3.session.Session(
            aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=keys.get("AWS_SESSION_TOKEN"),
            region_name=REGION,
        ).client(service, endpoint_url=self.url)

    def client(self, keys: Mapping[str, str] = SETUP_KEYS) -> Any:
        return self._session_client("s3", keys)

    def iam(self) -> Any:
        return self._session_client("iam", SETUP_KEYS)

    def put(self, bucket: str, key: str, body: bytes | Path) -> str:
        """Upload (creating the bucket if needed); returns the ``s3://`` URI."""
        s3 = self.client()
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
            s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key=key, Body=body.read_bytes() if isinstance(body, Path) else body)
        return f"s3://{bucket}/{key}"

    def user(self, name: str, policy: Mapping[str, Any] | None) -> dict[str, str]:
        """A new IAM user with an access key (and ``policy`` inline); its keys as environment variables."""
        iam = self.iam()
        iam.create_user(UserName=name)
        if policy is not None:
            iam.put_user_policy(UserName=name, PolicyName="models", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}

    def role(self, name: str, policy: Mapping[str, Any]) -> str:
        """An IAM role that a web identity may assume, allowed ``policy``; returns its ARN."""
        iam = self.iam()
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"Federated": "oidc"}, "Action": "sts:AssumeRoleWithWebIdentity"}
            ],
        }
        arn: str = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        iam.put_role_policy(RoleName=name, PolicyName="models", PolicyDocument=json.dumps(policy))
        return arn

    def enforce_auth(self) -> None:
        # the body is the number of requests still let through unsigned
        request = urllib.request.Request(
            f"{self.url}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200

    def env(self, keys: Mapping[str, str] | None = SETUP_KEYS, **extra: str) -> dict[str, str]:
        """The environment of a process that reads models from this server through boto3's standard chain."""
        env = {**NO_AMBIENT_CREDENTIALS, "AWS_REGION": REGION, "AWS_ENDPOINT_URL_S3": self.url, **(keys or {})}
        if keys is None:
            env.update({"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""})
        return {**env, **extra}


@contextlib.contextmanager
def run_s3() -> Iterator[S3Server]:
    """moto's server on 127.0.0.1 (every service on one port: S3, IAM, STS), for the ``with`` block."""
    port = free_port()
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with running(cmd, port, "/moto-api/", prefix="mlrollout-moto-", timeout=60) as process:
        yield S3Server(process)
