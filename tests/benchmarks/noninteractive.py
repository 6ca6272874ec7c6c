"""Benchmark: a command that needs no shell, as its own AWS-StartNonInteractiveCommand session, against the same
command sent through a session that is already open (what bastionless.ssm.session does for every task).

    python tests/benchmarks/noninteractive.py               # 20 commands each way, the lab's aws latency profile
    python tests/benchmarks/noninteractive.py --count 50 --profile none

(a) AWS-StartNonInteractiveCommand: per command, StartSession with the command as the document's parameter, the data
    channel opened (the collection's own client, as the native transport does), its output read until the session
    ends (the agent closes it when the command exits);
(b) one Standard_Stream session opened once; per command, the command and a line that marks its end written to it,
    its output read up to that line: one round trip on the stream.

It prints the mean and median per command and the ratio (a)/(b); it asserts nothing (docs/performance.md,
"Non-interactive commands"). Needs root (the lab).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))
sys.path.insert(0, os.path.join(ROOT, "plugins", "plugin_utils"))

import _session_master  # noqa: E402  (loads _data_channel_client from beside it, as the master does)
from ssm_lab.aws.registry import FaultModel  # noqa: E402
from ssm_lab.harness.testing import running_lab  # noqa: E402

COMMAND = "uname -a"


class Output:
    """What a data channel delivered, and a wait for a piece of it."""

    def __init__(self) -> None:
        self.data, self.changed = bytearray(), threading.Condition()

    def __call__(self, payload: bytes) -> None:
        with self.changed:
            self.data += payload
            self.changed.notify_all()

    def wait_for(self, needle: bytes, timeout: float = 60) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: needle in self.data, timeout):
                raise RuntimeError(f"no {needle!r} in {bytes(self.data[-300:])!r}")


def non_interactive(ssm, channel, node: str) -> float:
    started = time.monotonic()
    response = ssm.start_session(Target=node, DocumentName="AWS-StartNonInteractiveCommand",
                                 Parameters={"command": [COMMAND]})
    output = Output()
    client = channel.DataChannelClient(response["SessionId"], response["TokenValue"], response["StreamUrl"],
                                       on_data=output)
    client.open(timeout=60)
    if not client.closed.wait(60):
        raise RuntimeError("the non-interactive session did not end")
    client.close()
    if b"Linux" not in output.data:
        raise RuntimeError(f"no output: {bytes(output.data)!r}")
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--count", type=int, default=20, help="commands each way (default 20)")
    parser.add_argument("--profile", default="aws", help="the lab's latency profile (default aws)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the lab runs as root; run this as root", file=sys.stderr)
        return 2
    channel = _session_master.load_channel_client()
    work = tempfile.mkdtemp(prefix="bench-noninteractive-")
    with running_lab(os.path.join(work, "lab"), "--nodes", "1", "--provisioned") as lab:
        node = json.loads(lab.cli("status", "--json").stdout)["nodes"][0]["id"]
        lab.cli("faults", "--profile", args.profile)
        print(f"latency profile {args.profile}: " + ", ".join(
            f"{k} {v * 1000:.0f} ms" for k, v in FaultModel.PROFILES.get(args.profile, {}).items()), flush=True)
        ssm = lab.client("ssm")
        response = ssm.start_session(Target=node)
        output = Output()
        shell = channel.DataChannelClient(response["SessionId"], response["TokenValue"], response["StreamUrl"],
                                          on_data=output)
        shell.open(timeout=60)
        shell.send(b"stty -echo\n")
        times = {"open": [], "new": []}
        for index in range(args.count):  # alternated, so that both see the same load
            times["new"].append(non_interactive(ssm, channel, node))
            started = time.monotonic()
            shell.send(f"{COMMAND}; printf 'E%s\\n' {index}\n".encode())
            output.wait_for(f"E{index}\n".encode().replace(b"\n", b"\r\n"))
            times["open"].append(time.monotonic() - started)
        shell.close()
    for key, label in (("new", "(a) AWS-StartNonInteractiveCommand, a session per command"),
                       ("open", "(b) the command through an open session")):
        print(f"{label:<58} mean {statistics.mean(times[key]) * 1000:7.1f} ms, "
              f"median {statistics.median(times[key]) * 1000:7.1f} ms")
    print(f"(a)/(b), medians: {statistics.median(times['new']) / statistics.median(times['open']):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
