"""A real S3 API server process for the object-storage path: moto's server mode (MinIO cannot be
installed here), on a free port, with a bucket made and the options delta-rs needs to reach it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from stack.processes import VENV_BIN, free_port, stop_group, wait_http

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


class S3Server:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> S3Server:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "moto.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_http(self.url + "/moto-api/", 30, self.proc)
        return self

    def bucket(self, name: str) -> str:
        import boto3

        boto3.client("s3", endpoint_url=self.url, aws_access_key_id="testing", aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket=name)
        return name

    def storage_options(self) -> dict[str, Any]:
        """delta-rs's object store options for this server (credentials included: a test server's)."""
        return {"AWS_ENDPOINT_URL": self.url, "AWS_ALLOW_HTTP": "true", **CREDENTIALS}

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)
            self.proc = None
