"""Benchmark: one command on a whole fleet of lab nodes, three ways, in the same run.

    python tests/benchmarks/fleet.py                  # 1,000 light nodes
    python tests/benchmarks/fleet.py --nodes 50       # a quick run
    make bench-fleet BENCH_ARGS="--nodes 200"

The lab runs ``--nodes`` light nodes (``ssm-lab up --light-nodes``: EC2 instances registered in SSM, Online, each
with an agent of its own, all of them running what they are sent in one shared sandbox; docs/lab.md, "Light nodes"),
tagged ``ssm-lab-kind=light``. On all of them, one after the other:

(a) ``ssm_command``: a playbook on the controller with one ``bastionless.ssm.ssm_command`` task that runs
    ``uname -n`` on every node by tag (one SendCommand; ``--concurrency`` nodes at a time, default 100%) and waits
    for every node's result;
(b) ad-hoc: ``ansible all -f 50 -m ansible.builtin.command -a 'uname -n'`` over ``bastionless.ssm.session`` (a
    session per node, the module run by the node's Python), with the connection's defaults;
(c) association: a playbook on the controller with one ``bastionless.ssm.ssm_association`` task that applies a
    one-task playbook (``uname -n``) with ``AWS-ApplyAnsiblePlaybooks`` to every node by tag, from an encrypted private
    bucket, and waits for the first run (``--association-concurrency`` nodes at a time, default 50). Each node runs
    ``ansible-playbook`` against itself: in the lab, all of them on this machine's cores, about 2 CPU-seconds each,
    so ``--association-on sample`` applies it to the tenth of the nodes tagged ``fleet-bench=sample`` only.

(a) and (b) also run on a tenth of the nodes first (tagged ``fleet-bench=sample``; (b) with ``--limit``), so that
the controller's memory at two sizes shows how it grows. Each run reports its wall time, the AWS API calls the lab
served during it (by action), and the controller's peak memory: the largest sum of the resident sets of the
command's processes and of everything they left running (the session connection's masters), sampled every
``--sample`` seconds (this script is their child subreaper, so it sees the orphans), and the largest single process
(the kernel's ru_maxrss). The lab's own processes are not counted. It prints the ratio (b)/(a) of the wall times
(the issue's target: at least 20) and asserts nothing: the figures are for people to read.

Needs root (the lab), ansible with amazon.aws on PATH and bastionless.ssm on ANSIBLE_COLLECTIONS_PATH
(``make bench-fleet`` does it all). Module runs on the controller start an interpreter each, as for users.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))
os.environ["BASTIONLESS_WARM"] = "0"  # module runs start their own interpreter, as for users

from ssm_lab.harness.testing import running_lab  # noqa: E402

BUCKET = "fleet-bench-playbooks"
TAG = {"key": "tag:ssm-lab-kind", "values": ["light"]}
SAMPLE_TAG = {"key": "tag:fleet-bench", "values": ["sample"]}
COMMAND = "uname -n"
PR_SET_CHILD_SUBREAPER = 36
PAGE = os.sysconf("SC_PAGE_SIZE")
LABELS = {"ssm_command": "(a) ssm_command by tag, one task", "adhoc": "(b) ad-hoc command, session connection",
          "association": "(c) association, one-task playbook"}

NODE_PLAYBOOK = [{"name": "One task, applied by State Manager", "hosts": "localhost", "gather_facts": False,
                  "tasks": [{"name": "Say which node this is", "ansible.builtin.command": COMMAND,
                             "changed_when": False}]}]


def controller_playbook(task: dict, nodes: int) -> list:
    """The task on the controller, then a check that it ran on every node and succeeded there (ssm_command fails
    the task itself when a node did not succeed; ssm_association only warns)."""
    module = next(iter(task))
    summary = "__fleet.summary" if module.endswith("ssm_command") else "__fleet.execution.summary"
    check = [f"{summary}.total == {nodes}", f"{summary}.failed == 0"]
    return [{"name": "One task on the controller", "hosts": "localhost", "gather_facts": False,
             "tasks": [{"name": "Run on the fleet", **task, "register": "__fleet"},
                       {"name": "Check that every node ran it", "ansible.builtin.assert": {"that": check, "quiet": True}}]}]


def command_task(targets: dict, concurrency: str) -> dict:
    return {"bastionless.ssm.ssm_command": {"commands": [COMMAND], "targets": [targets],
                                            "max_concurrency": concurrency, "wait_timeout": 3600}}


def association_task(concurrency: str, region: str, targets: dict) -> dict:
    source = json.dumps({"path": f"https://s3.{region}.amazonaws.com/{BUCKET}/one-task.yml"})
    return {"bastionless.ssm.ssm_association": {
        "name": "fleet-bench", "document_name": "AWS-ApplyAnsiblePlaybooks", "targets": [targets],
        "parameters": {"SourceType": ["S3"], "SourceInfo": [source], "InstallDependencies": ["False"],
                       "PlaybookFile": ["one-task.yml"], "Verbose": ["-v"]},
        "max_concurrency": concurrency, "max_errors": "0", "wait": True, "wait_timeout": 7200}}


class Sampler:
    """The controller's memory while a command runs: every ``interval`` seconds, the resident sets of this process's
    descendants (not this process) summed; the largest sum and the largest number of processes are kept."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.peak_bytes = 0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = descendants(os.getpid())
            total = 0
            for pid in pids:
                try:
                    with open(f"/proc/{pid}/statm", encoding="ascii") as handle:
                        total += int(handle.read().split()[1]) * PAGE
                except (OSError, ValueError, IndexError):
                    pass
            self.peak_bytes = max(self.peak_bytes, total)
            self.peak_processes = max(self.peak_processes, len(pids))
            self._stop.wait(self.interval)


def descendants(root: int) -> list[int]:
    """The live processes under ``root`` (zombies, which this script reaps only at the end of a run, left out)."""
    children: dict[int, list[int]] = {}
    zombies = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                state, ppid = handle.read().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(int(ppid), []).append(int(entry))
        if state == "Z":
            zombies.add(int(entry))
    found, todo = [], list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        if pid not in zombies:
            found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def lab_calls(lab, method: str = "GET") -> dict:
    request = urllib.request.Request(f"{lab.endpoint}/_lab/calls", method=method)
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def end_leftovers() -> None:
    """What a run left running under this process (the session connection's masters): ended before the next."""
    for pid in descendants(os.getpid()):
        try:
            os.kill(pid, 15)
        except OSError:
            pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and descendants(os.getpid()):
        try:
            os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        time.sleep(0.1)


def measure(lab, work: str, argv: list[str], interval: float, env: dict) -> dict:
    lab_calls(lab, "DELETE")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with Sampler(interval) as sampler:
        started = time.monotonic()
        result = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=4 * 3600, check=False)
        wall = time.monotonic() - started
        time.sleep(interval)  # a last sample of what the command left running
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    end_leftovers()
    if result.returncode != 0:  # reported, and the next runs go on
        print(f"    {' '.join(argv)} exited {result.returncode}:\n{(result.stdout + result.stderr)[-1500:]}", flush=True)
    calls = lab_calls(lab)
    return {"wall_s": round(wall, 2), "rc": result.returncode, "api_calls": calls["total"],
            "calls": dict(sorted(calls["calls"].items(), key=lambda kv: -kv[1])),
            "peak_rss_mib": round(sampler.peak_bytes / 2**20, 1), "peak_processes": sampler.peak_processes,
            "max_process_rss_mib": round(max(after.ru_maxrss, before.ru_maxrss) / 1024, 1),
            "controller_cpu_s": round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 1),
            "output": result.stdout}


def adhoc_ok(output: str) -> int:
    """How many nodes answered with a name of their own (``host | CHANGED | rc=0 >>``, then the name on a line)."""
    lines = output.splitlines()
    return len({lines[i + 1] for i, line in enumerate(lines[:-1]) if line.endswith("| CHANGED | rc=0 >>")})


def adhoc_failures(output: str) -> dict:
    """The hosts that did not answer, by the first words of their error (``host | UNREACHABLE! => {...``): how many,
    and the first one's next lines (its message)."""
    kinds: dict = {}
    lines = output.splitlines()
    for number, line in enumerate(lines):
        head, sep, tail = line.partition(" | ")
        if sep and head.startswith(("i-", "mi-")) and not tail.startswith("CHANGED"):
            kind = kinds.setdefault(tail[:60], {"hosts": 0, "first": " ".join(lines[number:number + 4])[:400]})
            kind["hosts"] += 1
    return kinds


def report(name: str, size: int, result: dict) -> None:
    top = ", ".join(f"{action} {count}" for action, count in list(result["calls"].items())[:6])
    print(f"  {LABELS[name]:<42} {size:>5} nodes ({result['ok_nodes']} ok) {result['wall_s']:>9.2f} s  "
          f"{result['api_calls']:>6} API calls  "
          f"peak {result['peak_rss_mib']:>8.1f} MiB in {result['peak_processes']} processes "
          f"(largest {result['max_process_rss_mib']:.1f} MiB), controller CPU {result['controller_cpu_s']:.1f} s",
          flush=True)
    print(f"      calls: {top}", flush=True)
    if result.get("failures"):
        print(f"      failed: {result['failures']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--nodes", type=int, default=1000, help="light nodes (default 1000)")
    parser.add_argument("--forks", type=int, default=50, help="the ad-hoc command's forks (default 50)")
    parser.add_argument("--concurrency", default="100%", help="ssm_command's max_concurrency (default 100%%)")
    parser.add_argument("--association-concurrency", default="50",
                        help="the association's MaxConcurrency (default 50)")
    parser.add_argument("--association-on", default="all", choices=("all", "sample"),
                        help="the association's targets: every node (default) or the tenth tagged fleet-bench=sample "
                             "(every node's ansible-playbook runs on this machine: about 2 CPU-seconds each)")
    parser.add_argument("--profile", default="off", choices=("off", "aws"),
                        help="the lab's latency model (default off; aws: 100 ms per API call, 700 ms per session start)")
    parser.add_argument("--runs", default="ssm_command,adhoc,association", help="a subset of " + ",".join(LABELS))
    parser.add_argument("--no-sample", action="store_true", help="skip the runs on a tenth of the nodes")
    parser.add_argument("--sample", type=float, default=0.5, help="seconds between memory samples (default 0.5)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the lab runs as root; run this as root", file=sys.stderr)
        return 2
    runs = [r for r in args.runs.split(",") if r]
    if set(runs) - set(LABELS):
        parser.error(f"--runs: unknown {', '.join(sorted(set(runs) - set(LABELS)))}; choose from {', '.join(LABELS)}")
    work = tempfile.mkdtemp(prefix="bench-fleet-")
    figures: dict = {"nodes": args.nodes, "forks": args.forks, "profile": args.profile, "runs": {}}
    print(f"{args.nodes} light nodes, lab latency profile {args.profile}; ad-hoc with {args.forks} forks; "
          f"ssm_command max_concurrency {args.concurrency}; association MaxConcurrency {args.association_concurrency}; "
          f"{os.cpu_count()} CPUs", flush=True)
    started = time.monotonic()
    try:
        with running_lab(os.path.join(work, "lab"), "--nodes", "0", "--light-nodes", str(args.nodes), "--provisioned",
                         up_timeout=600 + args.nodes) as lab:
            print(f"lab up with {args.nodes} light nodes Online in {time.monotonic() - started:.1f} s", flush=True)
            figures["lab_up_s"] = round(time.monotonic() - started, 1)
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # orphans of the runs (the masters) stay ours to count
            lab.cli("faults", "--profile", args.profile)
            env = lab.environ(ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
            run_lab(lab, work, env, args, runs, figures)
    finally:
        end_leftovers()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def run_lab(lab, work: str, env: dict, args, runs: list[str], figures: dict) -> None:
    nodes = sorted(n["id"] for n in json.loads(lab.cli("status", "--json").stdout)["nodes"] if n.get("light"))
    sample = nodes[: max(1, len(nodes) // 10)]
    lab.client("ec2").create_tags(Resources=sample, Tags=[{"Key": "fleet-bench", "Value": "sample"}])
    inventory = os.path.join(work, "fleet.yml")
    with open(inventory, "w", encoding="utf-8") as handle:
        yaml.safe_dump({"fleet": {"hosts": {node: {} for node in nodes}, "vars": {
            "ansible_connection": "bastionless.ssm.session", "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_aws_ssm_region": lab.region,
            "ansible_aws_ssm_control_path_dir": os.path.join(work, "cp")}}}, handle)
    controller = os.path.join(work, "localhost.yml")
    with open(controller, "w", encoding="utf-8") as handle:
        handle.write(f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")

    def playbook(name: str, task: dict, size: int) -> list[str]:
        path = os.path.join(work, name + ".yml")
        with open(path, "w", encoding="utf-8") as handle:
            yaml.safe_dump(controller_playbook(task, size), handle, sort_keys=False)
        return ["ansible-playbook", "-i", controller, path]

    def adhoc(limit: list[str] | None) -> list[str]:
        argv = ["ansible", "fleet", "-i", inventory, "-f", str(args.forks), "-m", "ansible.builtin.command",
                "-a", COMMAND]
        if limit:
            with open(os.path.join(work, "limit.txt"), "w", encoding="utf-8") as handle:
                handle.write("\n".join(limit) + "\n")
            argv += ["--limit", "@" + os.path.join(work, "limit.txt")]
        return argv

    plan = []
    if "ssm_command" in runs:
        if not args.no_sample:
            task = command_task(SAMPLE_TAG, args.concurrency)
            plan.append(("ssm_command", len(sample), playbook("command-sample", task, len(sample))))
        plan.append(("ssm_command", len(nodes), playbook("command", command_task(TAG, args.concurrency), len(nodes))))
    if "adhoc" in runs:
        if not args.no_sample:
            plan.append(("adhoc", len(sample), adhoc(sample)))
        plan.append(("adhoc", len(nodes), adhoc(None)))
    if "association" in runs:
        s3 = lab.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_public_access_block(Bucket=BUCKET, PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
        s3.put_bucket_encryption(Bucket=BUCKET, ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
        s3.put_object(Bucket=BUCKET, Key="one-task.yml", Body=yaml.safe_dump(NODE_PLAYBOOK, sort_keys=False).encode())
        # The nodes download the playbook with their instance profile (the lab judges it): s3:GetObject on it, as
        # docs/state-manager.md says a fleet needs.
        lab.client("iam").put_role_policy(RoleName="ssm-lab-node", PolicyName="fleet-bench-playbooks", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/*"}]}))
        chosen = sample if args.association_on == "sample" else nodes
        targets = SAMPLE_TAG if args.association_on == "sample" else TAG
        plan.append(("association", len(chosen), playbook(
            "association", association_task(args.association_concurrency, lab.region, targets), len(chosen))))
    for name, size, argv in plan:
        result = measure(lab, work, argv, args.sample, env)
        output = result.pop("output")
        # ad-hoc: the nodes that answered with a name of their own; the playbooks assert every node's success
        result["ok_nodes"] = adhoc_ok(output) if name == "adhoc" else (size if result["rc"] == 0 else 0)
        if name == "adhoc" and result["ok_nodes"] != size:
            result["failures"] = adhoc_failures(output)
        figures["runs"].setdefault(name, {})[str(size)] = result
        report(name, size, result)
    whole = {name: sizes.get(str(len(nodes))) for name, sizes in figures["runs"].items()}
    if whole.get("ssm_command") and whole.get("adhoc"):
        ratio = whole["adhoc"]["wall_s"] / whole["ssm_command"]["wall_s"]
        figures["adhoc_over_ssm_command"] = round(ratio, 1)
        print(f"\n(b)/(a), wall time of the ad-hoc command over ssm_command's on {len(nodes)} nodes: {ratio:.1f} "
              "(target: at least 20)")
    for name, sizes in figures["runs"].items():
        if len(sizes) == 2:
            (small, low), (large, high) = sorted(((int(k), v) for k, v in sizes.items()))
            print(f"{LABELS[name]}: peak controller memory {low['peak_rss_mib']:.1f} MiB on {small} nodes, "
                  f"{high['peak_rss_mib']:.1f} MiB on {large} ({high['peak_rss_mib'] / low['peak_rss_mib']:.2f}x "
                  f"for {large / small:.1f}x the nodes)")


if __name__ == "__main__":
    sys.exit(main())
