"""Fixtures for the end-to-end tests of the SSM lab: real labs (``ssm-lab up``), real HTTP, the real plugin shim.

Every lab started here is stopped with ``ssm-lab down`` in its fixture's teardown, whatever happened. Nothing
is written to this process's environment: each lab's settings live in ``Lab.env`` and the clients built from
it, so the in-process moto tests of test_reachability.py are not disturbed.

Waiting is always bounded (``wait_until``) and fails with what was last seen; no test asserts on elapsed time.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import signal
import subprocess
import threading
import urllib.request

import pytest
from labhelpers import wait_until
from ssm_lab.harness import testing

SSM_LAB_PLUGIN = testing.plugin_path()  # AWS's own plugin under make interop, else the lab's stand-in
REGION = "us-east-1"
DONE_STATES = ("Success", "Failed", "TimedOut", "Cancelled", "Cancelling")


class Lab(testing.Lab):
    """A running lab with the helpers these tests share: admin API, node status, Run Command."""

    @property
    def ssm(self):
        return self.client("ssm")

    @property
    def ec2(self):
        return self.client("ec2")

    # --- the admin API -----------------------------------------------------------------------------------
    def admin(self, path: str) -> dict:
        with urllib.request.urlopen(f"{self.endpoint}/_lab/{path}", timeout=10) as response:
            return json.load(response)

    def admin_post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(f"{self.endpoint}/_lab/{path}", data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def node_status(self, node_id: str) -> dict:
        for node in self.admin("nodes")["nodes"]:
            if node["id"] == node_id:
                return node
        raise AssertionError(f"the lab does not know node {node_id}")

    def problem_codes(self, node_id: str) -> set[str]:
        return {p["code"] for p in self.node_status(node_id)["problems"]}

    # --- nodes -------------------------------------------------------------------------------------------
    @property
    def node_ids(self) -> list[str]:
        return list(self.network["nodes"])

    @property
    def ec2_ids(self) -> list[str]:
        return [n for n in self.node_ids if n.startswith("i-")]

    @property
    def hybrid_ids(self) -> list[str]:
        return [n for n in self.node_ids if n.startswith("mi-")]

    def instance(self, instance_id: str) -> dict:
        return self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]

    def ping_status(self, node_id: str) -> str | None:
        """The node's PingStatus in DescribeInstanceInformation, None when it is not listed at all."""
        rows = self.ssm.describe_instance_information(
            Filters=[{"Key": "InstanceIds", "Values": [node_id]}])["InstanceInformationList"]
        return rows[0]["PingStatus"] if rows else None

    def wait_online(self, node_id: str, timeout: float = 15.0) -> None:
        wait_until(lambda: self.ping_status(node_id) == "Online", timeout,
                   what=f"{node_id} to be Online (problems: {sorted(self.problem_codes(node_id))})")

    def wait_not_online(self, node_id: str, timeout: float = 15.0) -> str | None:
        """Wait until the node is no longer Online; returns its ping status then (None: not listed)."""
        seen = {}

        def check():
            seen["status"] = self.ping_status(node_id)
            return seen["status"] != "Online"

        wait_until(check, timeout, what=f"{node_id} to leave Online")
        return seen["status"]

    def wait_all_online(self, timeout: float = 30.0) -> None:
        for node_id in self.node_ids:
            self.wait_online(node_id, timeout)

    # --- Run Command -------------------------------------------------------------------------------------
    def send(self, instance_ids: list[str] | None, commands: list[str], **kwargs) -> str:
        parameters = {"commands": commands, **kwargs.pop("extra_parameters", {})}
        if instance_ids is not None:
            kwargs["InstanceIds"] = instance_ids
        return self.ssm.send_command(DocumentName="AWS-RunShellScript", Parameters=parameters,
                                     **kwargs)["Command"]["CommandId"]

    def wait_invocation(self, command_id: str, instance_id: str, timeout: float = 30.0) -> dict:
        def done():
            try:
                invocation = self.ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
            except self.ssm.exceptions.InvocationDoesNotExist:
                return None
            return invocation if invocation["Status"] in DONE_STATES else None

        return wait_until(done, timeout, what=f"command {command_id} to finish on {instance_id}")

    def wait_command(self, command_id: str, timeout: float = 30.0) -> dict:
        def done():
            command = self.ssm.list_commands(CommandId=command_id)["Commands"][0]
            return command if command["Status"] in DONE_STATES else None

        return wait_until(done, timeout, what=f"command {command_id} to finish")

    def run(self, instance_id: str, *commands: str, timeout: float = 30.0) -> dict:
        """Run a shell script on one node and return its finished invocation."""
        return self.wait_invocation(self.send([instance_id], list(commands)), instance_id, timeout)

    def run_ok(self, instance_id: str, *commands: str) -> str:
        invocation = self.run(instance_id, *commands)
        assert invocation["Status"] == "Success", invocation
        return invocation["StandardOutputContent"]


@pytest.fixture(scope="session")
def start_lab(tmp_path_factory):
    """A context manager factory: ``with start_lab("name", "--nodes", "1") as lab: ...``."""

    def start(name: str, *args: str):
        return testing.running_lab(str(tmp_path_factory.mktemp(name)), *args, lab_class=Lab)

    return start


@pytest.fixture(scope="session")
def main_lab(start_lab):
    """The shared provisioned lab: 6 EC2 nodes and 2 hybrid nodes, all Online."""
    with start_lab("main-lab", "--nodes", "6", "--hybrid", "2", "--provisioned") as lab:
        yield lab


# --- session-manager-plugin ------------------------------------------------------------------------------


class PluginProcess:
    """``ssm-lab-plugin`` run as amazon.aws.aws_ssm runs session-manager-plugin: stdin a pipe, stdout a pty."""

    def __init__(self, lab: Lab, response: dict, target: dict) -> None:
        self.session_id = response["SessionId"]
        master, slave = pty.openpty()
        response = {k: response[k] for k in ("SessionId", "TokenValue", "StreamUrl")}
        argv = [SSM_LAB_PLUGIN, json.dumps(response), lab.region, "StartSession", "", json.dumps(target),
                lab.endpoint]
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=slave, stderr=slave,
                                        env=lab.environ(), start_new_session=True)
        os.close(slave)
        self._master = master
        self._output = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                ready, _, _ = select.select([self._master], [], [], 0.5)
                if not ready:
                    if self.process.poll() is not None and not select.select([self._master], [], [], 0.2)[0]:
                        break
                    continue
                data = os.read(self._master, 65536)
            except OSError:  # EIO: every holder of the slave side has gone
                break
            if not data:
                break
            with self._lock:
                self._output.extend(data)
        with contextlib.suppress(OSError):
            os.close(self._master)

    @property
    def output(self) -> str:
        with self._lock:
            return self._output.decode("utf-8", "replace")

    def wait_for(self, pattern: str, timeout: float = 15.0) -> re.Match:
        regex = re.compile(pattern)
        return wait_until(lambda: regex.search(self.output), timeout,
                          what=f"plugin output matching {pattern!r}; output so far: {self.output!r}")

    def write(self, text: str) -> None:
        self.process.stdin.write(text.encode())
        self.process.stdin.flush()

    def wait_exit(self, timeout: float = 15.0) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the plugin did not exit within {timeout:g} s; output: {self.output!r}")
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        self._reader.join(5)


@pytest.fixture
def plugin():
    """Start plugins: ``plugin(lab, start_session_response, target_dict)``; all are killed at teardown."""
    started: list[PluginProcess] = []

    def start(lab: Lab, response: dict, target: dict) -> PluginProcess:
        process = PluginProcess(lab, response, target)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


def shell_session(lab: Lab, plugin_factory, instance_id: str, ssm=None):
    """Start a shell session with boto3 (``ssm`` client: whose credentials) and its plugin; wait for it."""
    response = (ssm or lab.ssm).start_session(Target=instance_id)
    process = plugin_factory(lab, response, {"Target": instance_id})
    process.wait_for(r"Starting session with SessionId")
    return response, process


@pytest.fixture
def shell(plugin):
    """``shell(lab, instance_id, ssm=None)`` -> (StartSession response, PluginProcess), session started."""
    return lambda lab, instance_id, ssm=None: shell_session(lab, plugin, instance_id, ssm)
