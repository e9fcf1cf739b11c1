"""Real servers the tests start themselves on 127.0.0.1: an S3-compatible object store (moto)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

__all__ = ["S3Server", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class S3Server:
    """moto's S3 server in its own process; ``bucket()`` makes a fresh bucket per test.

    Credentials are moto's test ones; ``env`` holds what a pipetrail process needs to reach it
    (the standard AWS variables, ``AWS_ENDPOINT_URL`` for the endpoint).
    """

    endpoint: str
    process: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, folder: Path) -> S3Server:
        port = free_port()
        log = folder / "moto.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("moto_server")),
                    "-H",
                    "127.0.0.1",
                    "-p",
                    str(port),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = cls(f"http://127.0.0.1:{port}", process, log)
        deadline = time.monotonic() + 30
        while True:
            try:
                server.client().list_buckets()
                return server
            except Exception:
                if process.poll() is not None or time.monotonic() > deadline:
                    server.stop()
                    raise RuntimeError(f"moto_server did not start: {log.read_text()}") from None
                time.sleep(0.1)

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint, **_credentials(self.env))

    def bucket(self) -> str:
        """A new, empty bucket's name."""
        name = f"pt-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key in ``bucket`` under ``prefix``."""
        paginator = self.client().get_paginator("list_objects_v2")
        return [
            item["Key"]
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for item in page.get("Contents", [])
        ]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _credentials(env: dict[str, str]) -> dict[str, str]:
    return {
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_DEFAULT_REGION"],
    }


def apply_env(env: dict[str, str]) -> dict[str, str | None]:
    """Set ``env`` in os.environ; the previous values, for :func:`restore_env`."""
    previous = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    return previous


def restore_env(previous: dict[str, str | None]) -> None:
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
