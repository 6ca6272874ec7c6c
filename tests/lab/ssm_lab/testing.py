"""A running lab for tests: start it in a directory of its own, hand out its environment, always stop it."""

from __future__ import annotations

import os
import subprocess
import sys


def _tool(name: str) -> str:
    local = os.path.join(os.path.dirname(sys.executable), name)
    return local if os.path.exists(local) else name


class Lab:
    def __init__(self, state_dir: str, *up_args: str) -> None:
        self.state_dir = str(state_dir)
        self.up_args = list(up_args)
        self.env: dict[str, str] = {}

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([_tool("ssm-lab"), "--state-dir", self.state_dir, *args],
                              capture_output=True, text=True, check=check, timeout=120)

    def up(self) -> "Lab":
        result = self.cli("up", *self.up_args, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"ssm-lab up failed ({result.returncode}):\n{result.stderr}")
        for line in result.stdout.splitlines():
            if line.startswith("export ") and "=" in line:
                key, value = line[len("export "):].split("=", 1)
                self.env[key] = value
        return self

    def down(self) -> None:
        self.cli("down", check=False)

    def environ(self, **extra: str) -> dict[str, str]:
        """The process environment a client of this lab runs with."""
        return {**os.environ, **self.env, **extra}

    def client(self, service: str, **kwargs):
        import boto3

        return boto3.client(service, endpoint_url=self.env["AWS_ENDPOINT_URL"],
                            region_name=self.env["AWS_DEFAULT_REGION"],
                            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"], **kwargs)
