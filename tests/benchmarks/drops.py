"""Sessions that survive drops, at the issue's full size: a playbook of 200 small tasks over bastionless.ssm.session
(native transport) against lab nodes whose data channels the lab breaks every 20 s (its ``drop_channel_every``
fault), as the service does about hourly.

    python tests/benchmarks/drops.py                              # 200 tasks, 3 nodes, a drop every 20 s
    python tests/benchmarks/drops.py --tasks 50 --every 3         # a quick run
    make collection && PATH=$PWD/.venv/bin:$PATH ANSIBLE_COLLECTIONS_PATH=$PWD/.venv/collections \
        .venv/bin/python tests/benchmarks/drops.py --nodes 10

Each task checks its own output (a command's stdout is exactly its marker, a stat finds its file), so a task whose
output was lost or delivered twice across a resume fails. It prints the recap of every host, the wall time and how
many ResumeSession calls the lab served, and exits 1 unless every task of every host is ok and at least one resume
happened. tests/integration/test_connection_session.py runs the same at a size for the suite (40 tasks, 3 s).

Needs root (the lab), ansible on PATH and bastionless.ssm on ANSIBLE_COLLECTIONS_PATH (the command above).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))

from ssm_lab.harness.testing import running_lab  # noqa: E402

RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def playbook(tasks: int) -> list:
    """``tasks`` small tasks, a command and a stat in turn, each failing unless it saw its own result."""
    body = []
    for n in range(1, tasks + 1):
        if n % 2:
            body.append({"name": f"Step {n}", "ansible.builtin.command": f"echo step-{n}", "register": "step",
                         "changed_when": False, "failed_when": f'step.stdout != "step-{n}"'})
        else:
            body.append({"name": f"Step {n}", "ansible.builtin.stat": {"path": "/etc/hostname"}, "register": "step",
                         "failed_when": "not step.stat.exists"})
    return [{"name": "Many small tasks across data channel drops", "hosts": "all", "gather_facts": False,
             "tasks": body}]


def resumes(lab) -> int:
    return sum(count for name, count in lab.api_calls()["calls"].items() if name.endswith("ResumeSession"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--nodes", type=int, default=3, help="lab nodes, and forks (default 3)")
    parser.add_argument("--tasks", type=int, default=200, help="tasks in the playbook (default 200)")
    parser.add_argument("--every", type=float, default=20.0, help="seconds between drops of each channel (default 20)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the lab runs as root; run this as root", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="bench-drops-")
    with open(os.path.join(work, "playbook.yml"), "w", encoding="utf-8") as handle:
        yaml.safe_dump(playbook(args.tasks), handle, sort_keys=False)
    print(f"{args.nodes} nodes, {args.nodes} forks, {args.tasks} tasks, each data channel dropped every "
          f"{args.every:g} s", flush=True)
    with running_lab(os.path.join(work, "lab"), "--nodes", str(args.nodes), "--provisioned",
                     "--faults", json.dumps({"drop_channel_every": args.every})) as lab:
        nodes = [n["id"] for n in json.loads(lab.cli("status", "--json").stdout)["nodes"]]
        inventory = os.path.join(work, "inventory.yml")
        with open(inventory, "w", encoding="utf-8") as handle:
            yaml.safe_dump({"drops": {"hosts": {node: {} for node in nodes}, "vars": {
                "ansible_connection": "bastionless.ssm.session", "ansible_aws_ssm_transport": "native",
                "ansible_python_interpreter": "/usr/bin/python3", "ansible_aws_ssm_region": "us-east-1",
                "ansible_aws_ssm_control_path_dir": os.path.join(work, "cp")}}}, handle)
        started = time.monotonic()
        result = subprocess.run(["ansible-playbook", "-i", inventory, "-f", str(args.nodes), "playbook.yml"],
                                cwd=work, env=lab.environ(ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1"),
                                capture_output=True, text=True, timeout=7200, check=False)
        wall = time.monotonic() - started
        resumed = resumes(lab)
    recap = {m.group(1): tuple(int(g) for g in m.groups()[1:]) for m in RECAP.finditer(result.stdout)}
    print(f"wall time {wall:.1f} s, {resumed} ResumeSession calls")
    good = True
    for node in nodes:
        ok, changed, unreachable, failed = recap.get(node, (0, 0, 0, 0))
        print(f"  {node}: ok={ok} changed={changed} unreachable={unreachable} failed={failed}")
        good = good and ok == args.tasks and not (unreachable or failed)
    if not good or not resumed:
        print((result.stdout + result.stderr)[-4000:])
        print("FAILED: " + ("not every task was ok" if not good else "no drop happened (a run shorter than --every?)"))
    shutil.rmtree(work, ignore_errors=True)
    return 0 if good and resumed else 1


if __name__ == "__main__":
    sys.exit(main())
