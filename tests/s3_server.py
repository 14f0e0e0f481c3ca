"""A real S3 API on loopback for tests: moto's server in its own process group, with IAM.

moto accepts any credentials until told otherwise; the server here is switched to checking
signatures and IAM policies (moto's `/moto-api/reset-auth`, the server side of
`set_initial_no_auth_action_count(0)`) once its users exist, so a wrong secret is refused.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
BUCKET = "lake"


@dataclass(frozen=True)
class Credentials:
    key: str
    secret: str


@dataclass
class S3Server:
    endpoint: str
    pid: int
    owner: Credentials  # s3:* on everything
    outsider: Credentials  # a valid user without any S3 permission

    def options(self, who: Credentials | None = None) -> dict[str, str]:
        """s3fs options for `who` (key and secret), or the endpoint alone."""
        extra = {"key": who.key, "secret": who.secret} if who else {}
        return {"endpoint_url": self.endpoint, **extra}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=1):
            return True
    except OSError:
        return False


def _user(iam: Any, name: str, actions: list[str]) -> Credentials:
    iam.create_user(UserName=name)
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
    }
    iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return Credentials(key["AccessKeyId"], key["SecretAccessKey"])


def start_s3_server(log: Path, timeout: float = 60.0) -> S3Server:
    """`moto_server` on 127.0.0.1 (a free port) with an owner and an outsider, auth enforced."""
    import boto3

    endpoint = f"http://127.0.0.1:{_free_port()}"
    port = endpoint.rsplit(":", 1)[1]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", port],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while not _answers(endpoint):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not answer at {endpoint}: {log.read_text()}")
            time.sleep(0.1)
        # auth is still off: any credentials may create the users
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        owner = _user(iam, "owner", ["s3:*"])
        outsider = _user(iam, "outsider", ["iam:GetUser"])
        # from now on every request has its signature checked and is authorised against IAM
        enforce = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth",
            data=b"0",
            headers={"Content-Type": "text/plain"},
            method="POST",
        )
        with urllib.request.urlopen(enforce, timeout=10) as answer:
            assert json.load(answer)["status"] == "ok"
    except BaseException:
        _stop(proc.pid)
        raise
    return S3Server(endpoint, proc.pid, owner, outsider)


def _stop(pid: int) -> None:
    from tasks.processes import stop_process_group

    stop_process_group(pid, timeout=10)


def stop_s3_server(server: S3Server) -> None:
    _stop(server.pid)


def upload(server: S3Server, local: Path, uri: str) -> None:
    """Copy a local folder to `uri` (s3://bucket/prefix) as the owner, creating the bucket."""
    import s3fs

    fs = s3fs.S3FileSystem(**server.options(server.owner), skip_instance_cache=True)
    bucket = uri.removeprefix("s3://").split("/", 1)[0]
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    fs.put(str(local), uri.removeprefix("s3://"), recursive=True)
