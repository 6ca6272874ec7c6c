"""site.yml under the faults a large account meets: the lab throttles a share of every AWS call (EC2, IAM, KMS, SSM,
CloudWatch Logs) and drops one node's agent for 20 s in the middle of the run, on a fleet over both connections
(the first node over amazon.aws.aws_ssm, the others over bastionless.ssm.session). Then a second run, with the same
faults, must change nothing.

    make chaos                                                    # 6 nodes, 30% throttled, an agent dropped for 20 s
    make chaos CHAOS_ARGS="--nodes 2 --throttle-rate 0.5"

It prints each run's recap, wall time and the calls the lab throttled, and exits 1 unless both runs end with no
failed or unreachable host and the second run changes nothing. tests/integration/test_site.py runs the same on 2 nodes
with throttling only (the suite's size). The retry settings it exercises: docs/reliability.md.

Needs root (the lab), ansible on PATH and bastionless.ssm on ANSIBLE_COLLECTIONS_PATH (make chaos sets both).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

from ansible_cli import CONNECTION_ENV, with_test_connection  # noqa: E402
from ssm_lab.common import LAB_IAM_USERS  # noqa: E402
from ssm_lab.harness.testing import running_lab  # noqa: E402

RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def site(lab, nodes: list, env: dict) -> tuple:
    """One site.yml run from the repository root: (recap by host, output, seconds)."""
    os.environ[CONNECTION_ENV] = "bastionless.ssm.session=" + ",".join(nodes[1:])
    argv, extra = with_test_connection(["ansible-playbook", "-i", "inventories/lab", "playbooks/site.yml"])
    start = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, env=lab.environ(ANSIBLE_NOCOLOR="1", **extra, **env), capture_output=True,
                          text=True, timeout=3600, check=False)
    recap = {m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3)), "unreachable": int(m.group(4)),
                          "failed": int(m.group(5))} for m in RECAP.finditer(done.stdout)}
    return recap, done.stdout + done.stderr, time.monotonic() - start


def online(lab, node: str) -> bool:
    status = json.loads(lab.cli("status", "--json", check=False).stdout or "{}")
    return any(n["id"] == node and n["ping_status"] == "Online" for n in status.get("nodes", []))


def drop_later(lab, node: str, after: float, seconds: float) -> threading.Thread:
    """Drop ``node``'s agent for ``seconds``, ``after`` seconds after the run made it Online (while it is being
    configured over Session Manager)."""
    def drop():
        while not online(lab, node):
            time.sleep(2)
        time.sleep(after)
        lab.cli("agent", "drop", node, "--seconds", str(int(seconds)), check=False)
        print(f"  dropped the agent of {node} for {seconds:g} s", flush=True)

    thread = threading.Thread(target=drop, daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--nodes", type=int, default=6, help="lab nodes (default 6)")
    parser.add_argument("--throttle-rate", type=float, default=0.3, help="share of AWS calls throttled (default 0.3)")
    parser.add_argument("--drop-after", type=float, default=15.0,
                        help="seconds after the last node comes Online in the first run that its agent drops "
                             "(default 15)")
    parser.add_argument("--drop-seconds", type=float, default=20.0, help="how long it stays away (default 20)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the lab runs as root; run this as root", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="bench-chaos-")
    print(f"{args.nodes} nodes, {args.throttle_rate:.0%} of AWS calls throttled, the last node's agent dropped for "
          f"{args.drop_seconds:g} s, {args.drop_after:g} s after it came Online", flush=True)
    # With the IAM users the lab inventory maps (ssm-lab up's default, which running_lab leaves out unless asked).
    with running_lab(os.path.join(work, "lab"), "--nodes", str(args.nodes), "--iam-users", ",".join(LAB_IAM_USERS)) as lab:
        nodes = sorted(lab.network["nodes"])
        lab.cli("faults", "--throttle-rate", str(args.throttle_rate))
        ok = True
        for run in ("first", "second"):
            lab.api_calls(reset=True)
            if run == "first":
                drop_later(lab, nodes[-1], args.drop_after, args.drop_seconds)
            recap, output, seconds = site(lab, nodes, {})
            throttled = lab.api_calls()["throttled"]
            print(f"{run} run: {seconds:.0f} s, {sum(throttled.values())} calls throttled "
                  f"({', '.join(f'{k} {v}' for k, v in sorted(throttled.items(), key=lambda kv: -kv[1])[:6])}, ...)")
            for host, counts in sorted(recap.items()):
                print(f"  {host}: {counts}")
            bad = [h for h, c in recap.items() if c["failed"] or c["unreachable"]]
            if run == "second":
                bad += [h for h, c in recap.items() if c["changed"]]
            if bad or len(recap) != len(nodes) + 1:
                ok = False
                print(f"  not converged: {bad or 'hosts missing from the recap'}\n{output[-4000:]}")
    print("converged, and the second run changed nothing" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
