"""Benchmark: one playbook over three transports to the same lab nodes, in the same run.

    python tests/benchmarks/transport.py                      # 20 tasks, 10 nodes, 10 forks, AWS-like latency
    python tests/benchmarks/transport.py --nodes 3 --repeat 1 # a quick run
    python tests/benchmarks/transport.py --cpu                # and where the CPU went, by component (cpu_account.py)
    make bench-transport BENCH_ARGS="--repeat 3"

The transports:

(a) ``amazon.aws.aws_ssm``: a new session for every task, module files through the S3 transfer bucket;
(b) Ansible's ssh connection over Session Manager: ``ssh`` with the ``AWS-StartSSHSession`` document as its
    ProxyCommand (bastionless.ssm's proxy command, a key pushed with EC2 Instance Connect), ControlPersist and
    pipelining; the lab's nodes run ``sshd -i`` for that document only, no port is open;
(c) ``bastionless.ssm.session``: one session per host kept by a background process, files through the session,
    pipelining, modules run in a fork of the node's resident Python (``resident_python``); no bucket configured.
    With its default ``transport: native`` the collection speaks the data channel itself;
(c'') ``session_plugin``: (c) with ``transport: plugin``, the session-manager-plugin binary on a pty;
(d) ``mitogen``: mitogen's ``mitogen_linear`` strategy over (b)'s ssh path, the anchor users compare against: a
    persistent interpreter per host, modules imported once and run in-process. mitogen is not a dependency of the
    collection; ``make bench-transport`` installs the version pinned in tests/benchmarks/requirements-bench.txt, and
    the transport is skipped with a note when it cannot be imported. mitogen takes over the ssh connection by its
    short name, so its inventory sets the connection ``ssh``;
(c') on request (``--transports ...,session_sh``): (c) with ``resident_python`` off, a plain sh reading commands.

The lab's latency model is set to the figures of its ``aws`` profile, printed at the start: 100 ms per AWS API call,
700 ms per session start, 30 ms per round trip on a session's stream, 60 ms per S3 request (presigned requests from
the nodes included). The playbook has 20 tasks (file, copy, template, command, lineinfile, stat and a 1 MiB copy),
``gather_facts: false``, run on every node with as many forks as nodes. Each run starts cold: no ControlMaster or
session process is left from an earlier run. The order of the transports rotates from one repetition to the next,
and the best run of each is reported, with the ratios (a)/(c) (how much faster the session connection is than
aws_ssm) and (c)/(b) (how far it is from ssh over SSM). It asserts nothing: the figures are for people to read.

Needs root (the lab), ansible with amazon.aws on PATH, bastionless.ssm on ANSIBLE_COLLECTIONS_PATH and ssh
(``make bench-transport`` does it all).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))

from cpu_account import CpuAccount  # noqa: E402
from ssm_lab.aws.registry import FaultModel  # noqa: E402
from ssm_lab.harness.testing import running_lab  # noqa: E402

BUCKET = "bench-transfer"
CALLBACKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "callback_plugins")  # bench_times
TRANSPORTS = ("aws_ssm", "ssh_over_ssm", "session", "session_plugin", "mitogen")
OPTIONAL = ("session_sh",  # (c) with resident_python off: what the node's resident Python is worth
            "session_base")  # (c) from another installed copy of the collection (--baseline): before and after
LABELS = {"aws_ssm": "(a) amazon.aws.aws_ssm", "ssh_over_ssm": "(b) ssh over SSM",
          "session": "(c) bastionless.ssm.session", "session_plugin": "(c'') session, transport plugin",
          "mitogen": "(d) mitogen over ssh over SSM", "session_sh": "(c') session, resident_python off",
          "session_base": "(c0) session, --baseline copy"}
SESSIONS = ("session", "session_plugin", "session_sh", "session_base")
SSH_PATHS = ("ssh_over_ssm", "mitogen")


def mitogen_strategy_dir() -> str | None:
    """The directory of mitogen's strategy plugins, or None when mitogen cannot be imported here."""
    try:
        import ansible_mitogen  # noqa: F401 pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    return os.path.join(os.path.dirname(ansible_mitogen.__file__), "plugins", "strategy")


D = "{{ bench_dir }}"  # a directory per transport: each connects as another user (ssm-user, ec2-user)
TASKS = [
    ("1 file: a directory", "ansible.builtin.file", {"path": D, "state": "directory", "mode": "0755"}),
    ("2 copy: a small file", "ansible.builtin.copy", {"dest": D + "/a.txt", "content": "alpha\n", "mode": "0644"}),
    ("3 template", "ansible.builtin.template", {"src": "bench.conf.j2", "dest": D + "/b.conf", "mode": "0644"}),
    ("4 command", "ansible.builtin.command", {"cmd": "uname -a"}),
    ("5 lineinfile", "ansible.builtin.lineinfile", {"path": D + "/a.txt", "line": "beta"}),
    ("6 stat", "ansible.builtin.stat", {"path": D + "/a.txt"}),
    ("7 copy: 1 MiB", "ansible.builtin.copy", {"src": "blob.bin", "dest": D + "/blob.bin", "mode": "0644"}),
    ("8 file: touch", "ansible.builtin.file", {"path": D + "/c", "state": "touch", "mode": "0644",
                                               "access_time": "preserve", "modification_time": "preserve"}),
    ("9 command", "ansible.builtin.command", {"cmd": "cat " + D + "/a.txt"}),
    ("10 lineinfile", "ansible.builtin.lineinfile", {"path": D + "/b.conf", "line": "gamma = 3"}),
    ("11 stat: checksum of 1 MiB", "ansible.builtin.stat", {"path": D + "/blob.bin", "checksum_algorithm": "sha256"}),
    ("12 copy: a small file", "ansible.builtin.copy", {"dest": D + "/d.txt", "content": "delta\n", "mode": "0644"}),
    ("13 template", "ansible.builtin.template", {"src": "bench.conf.j2", "dest": D + "/e.conf", "mode": "0600"}),
    ("14 file: mode", "ansible.builtin.file", {"path": D + "/d.txt", "mode": "0640"}),
    ("15 command", "ansible.builtin.command", {"cmd": "sha256sum " + D + "/blob.bin"}),
    ("16 lineinfile", "ansible.builtin.lineinfile", {"path": D + "/d.txt", "line": "epsilon"}),
    ("17 stat", "ansible.builtin.stat", {"path": D + "/d.txt"}),
    ("18 copy: a small file", "ansible.builtin.copy", {"dest": D + "/f.txt", "content": "zeta\n", "mode": "0644"}),
    ("19 file: absent", "ansible.builtin.file", {"path": D + "/f.txt", "state": "absent"}),
    ("20 command", "ansible.builtin.command", {"cmd": "ls -l " + D}),
]
PLAYBOOK = [{"name": "Twenty tasks of everyday configuration", "hosts": "bench", "gather_facts": False,
             "tasks": [{"name": name, module: args, **({"changed_when": False} if module.endswith("command") else {})}
                       for name, module, args in TASKS]}]

TEMPLATE = "# {{ inventory_hostname }}\nname = {{ inventory_hostname }}\nalpha = 1\nbeta = 2\n"


def _inventory(work: str, transport: str, nodes: list[str], key: str, ssh_vars: dict) -> str:
    """An inventory for one transport: the nodes by instance id, the connection and its variables."""
    common = {"ansible_python_interpreter": "/usr/bin/python3",
              "ansible_aws_ssm_region": "us-east-1",
              "ansible_aws_ssm_plugin": os.environ.get("AWS_SESSION_MANAGER_PLUGIN", "")}
    if transport == "aws_ssm":
        group = {**common, "ansible_connection": "amazon.aws.aws_ssm", "ansible_aws_ssm_bucket_name": BUCKET}
    elif transport in SESSIONS:
        group = {**common, "ansible_connection": "bastionless.ssm.session",
                 "ansible_aws_ssm_control_path_dir": os.path.join(work, f"cp-{transport}"),
                 "ansible_aws_ssm_resident_python": transport != "session_sh",
                 "ansible_aws_ssm_transport": "plugin" if transport == "session_plugin" else "native"}
    else:
        group = {**ssh_vars, "ansible_python_interpreter": "/usr/bin/python3",
                 "ansible_ssh_private_key_file": key, "ansible_host_key_checking": False}
        if transport == "mitogen":  # mitogen recognises the ssh connection by its short name only
            group["ansible_connection"] = "ssh"
    # Every transport's hosts come from bastionless.ssm.managed_nodes, as users reach the nodes (its connection option
    # sets ansible_connection; the variables above go in group_vars beside it): the inventory's AWS calls and its
    # botocore clients cost every transport the same. For the session connection it also loads the connection once in
    # ansible-playbook's process for every task's worker.
    connection = group.pop("ansible_connection", "ansible.builtin.ssh")
    directory = os.path.join(work, f"inventory-{transport}")
    os.makedirs(os.path.join(directory, "group_vars"), exist_ok=True)
    with open(os.path.join(directory, "group_vars", "bench.yml"), "w", encoding="utf-8") as handle:
        yaml.safe_dump(group, handle)
    path = os.path.join(directory, "bench.managed_nodes.yml")
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump({"plugin": "bastionless.ssm.managed_nodes", "regions": ["us-east-1"], "connection": connection,
                        "node_group": "bench", "default_groups": False, "filters": {"instance-id": nodes}}, handle)
    return path


def _cold(work: str, transport: str) -> None:
    """No control socket or session process left from an earlier run of this transport."""
    if transport in SSH_PATHS:  # mitogen's own connections end with ansible-playbook; ssh masters it may have met
        control = os.path.join(work, "cp-ssh")
        for name in os.listdir(control) if os.path.isdir(control) else ():
            subprocess.run(["ssh", "-F", "none", "-o", f"ControlPath={os.path.join(control, name)}", "-O", "exit", "x"],
                           capture_output=True, check=False, timeout=30)
        shutil.rmtree(control, ignore_errors=True)
        os.makedirs(control, mode=0o700)
    elif transport in SESSIONS:
        control = os.path.join(work, f"cp-{transport}")
        for name in os.listdir(control) if os.path.isdir(control) else ():
            subprocess.run([sys.executable, "-c", "import socket,sys; s=socket.socket(socket.AF_UNIX); "
                            "s.settimeout(5); s.connect(sys.argv[1]); s.sendall(b'{\"op\": \"exit\"}\\n')",
                            os.path.join(control, name)], capture_output=True, check=False, timeout=30)
        shutil.rmtree(control, ignore_errors=True)


def lab_counts(lab, method: str = "GET") -> dict:
    """The lab's count of API calls and of data channel traffic since the last reset (DELETE resets it)."""
    request = urllib.request.Request(f"{lab.endpoint}/_lab/calls", method=method)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def _times(path: str) -> dict:
    """First-task latency and per-task time, from the bench_times callback's file: each host's first result after
    the run started (session or connection set-up included), and the time between its first and last result
    divided by the tasks in between (what each further task costs once connected); medians and worst over hosts."""
    with open(path, encoding="utf-8") as handle:
        times = json.load(handle)
    tasks, start = times["tasks"], times["start"]
    hosts = sorted(tasks[0]["results"])
    first = [tasks[0]["results"][host] - start for host in hosts]
    per_task = [(tasks[-1]["results"][host] - tasks[0]["results"][host]) / (len(tasks) - 1) for host in hosts]
    return {"first_task_s": round(statistics.median(first), 3), "first_task_max_s": round(max(first), 3),
            "per_task_s": round(statistics.median(per_task), 3)}


def _environ(lab, work: str, transport: str, baseline: str, extra: dict) -> dict:
    """ansible-playbook's environment for one transport, with the bench_times callback writing to work/times.json."""
    callbacks = ["bench_times"] + [c for c in extra.pop("ANSIBLE_CALLBACKS_ENABLED", "").split(",") if c]
    extra.update(ANSIBLE_CALLBACK_PLUGINS=CALLBACKS, ANSIBLE_CALLBACKS_ENABLED=",".join(callbacks),
                 BENCH_TIMES_FILE=os.path.join(work, "times.json"))
    if transport == "session_base":
        extra["ANSIBLE_COLLECTIONS_PATH"] = baseline
    if transport == "mitogen":
        extra.update(ANSIBLE_STRATEGY_PLUGINS=mitogen_strategy_dir(), ANSIBLE_STRATEGY="mitogen_linear")
    return lab.environ(ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1", ANSIBLE_HOST_KEY_CHECKING="0", **extra)


def copy_throughput(lab, work: str, inventory: str, transport: str, mib: int, baseline: str = "",
                    cpu: bool = False) -> dict:
    """A copy of a file of ``mib`` MiB to the first node over an open connection: the copy task's time (from its
    start to the node's result, the checksums and stat around the transfer included) and its throughput in MB/s
    (10^6 bytes of the file per second). The file is removed from the node afterwards."""
    dest = f"/tmp/bench-{transport}/big.bin"
    play = [{"name": "One large copy", "hosts": "bench[0]", "gather_facts": False, "tasks": [
        {"name": "Connect", "ansible.builtin.command": {"cmd": "true"}, "changed_when": False},
        {"name": "Copy", "ansible.builtin.copy": {"src": "big.bin", "dest": dest, "mode": "0644"}},
        {"name": "Remove", "ansible.builtin.file": {"path": dest, "state": "absent"}}]}]
    with open(os.path.join(work, "copy.yml"), "w", encoding="utf-8") as handle:
        yaml.safe_dump(play, handle, sort_keys=False)
    account = CpuAccount() if cpu else contextlib.nullcontext()
    with account:
        result = subprocess.run(["ansible-playbook", "-i", inventory, "copy.yml", "-e",
                                 f"bench_dir=/tmp/bench-{transport}"], cwd=work,
                                env=_environ(lab, work, transport, baseline, {}), capture_output=True, text=True,
                                timeout=3600, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"the copy of {mib} MiB over {transport} failed:\n{(result.stdout + result.stderr)[-4000:]}")
    with open(os.path.join(work, "times.json"), encoding="utf-8") as handle:
        copy = json.load(handle)["tasks"][1]
    seconds = next(iter(copy["results"].values())) - copy["start"]
    figures = {"copy_s": round(seconds, 2), "copy_mb_s": round(mib * 1024 * 1024 / 1e6 / seconds, 2)}
    if cpu and account.seconds is not None:
        figures["copy_cpu_s"] = account.seconds  # the whole copy play: connection, copy and removal
    return figures


def run_playbook(lab, work: str, inventory: str, forks: int, transport: str, per_task: bool = False,
                 cpu: bool = False, baseline: str = "") -> dict:
    extra = {"ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks", "PROFILE_TASKS_SORT_ORDER": "none",
             "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "all"} if per_task else {}
    account = CpuAccount() if cpu else contextlib.nullcontext()
    lab_counts(lab, "DELETE")
    with account:
        started, before = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
        result = subprocess.run(["ansible-playbook", "-i", inventory, "-f", str(forks), "playbook.yml",
                                 "-e", f"bench_dir=/tmp/bench-{transport}"], cwd=work,
                                env=_environ(lab, work, transport, baseline, extra),
                                capture_output=True, text=True, timeout=3600, check=False)
        wall, after = time.monotonic() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"ansible-playbook -i {inventory} failed:\n{(result.stdout + result.stderr)[-4000:]}")
    counts = lab_counts(lab)
    host_tasks = len(TASKS) * forks  # every task on every node (the playbook runs with as many forks as nodes)
    traffic = {"api_calls": counts["total"], "sessions": counts["stream"]["sessions"],
               "round_trips_per_task": round(counts["stream"]["round_trips"] / host_tasks, 1),
               "messages_per_task": round((counts["stream"]["input_messages"] + counts["stream"]["output_messages"])
                                          / host_tasks, 1),
               # ansible-playbook and its workers only (not the masters they leave running, nor anything else on
               # the machine): the kernel's count for the child process tree, exact even on a shared machine
               "controller_cpu_s": round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 2),
               **_times(os.path.join(work, "times.json"))}
    if per_task:
        print(result.stdout[result.stdout.rfind("==============================================================="):])
    if not cpu:
        return {"wall_s": round(wall, 2), **traffic}
    if account.seconds is None:
        return {"wall_s": round(wall, 2), **traffic, "cpu": account.why_not}
    return {"wall_s": round(wall, 2), **traffic, "cpu_s": account.seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--nodes", type=int, default=10, help="lab nodes, and forks (default 10)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each transport; the best is reported")
    parser.add_argument("--transports", default=",".join(TRANSPORTS), help="a subset of " + ",".join(TRANSPORTS + OPTIONAL))
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--per-task", action="store_true", help="print each task's time (ansible.posix.profile_tasks)")
    parser.add_argument("--baseline", default="",
                        help="a collections path with another copy of bastionless.ssm (ansible-galaxy collection install "
                             "-p PATH), run as the transport session_base: before and after a change, in one run")
    parser.add_argument("--cpu", action="store_true",
                        help="also print the CPU seconds of each component (controller, masters, lab, nodes) per run")
    parser.add_argument("--copy-mib", type=int, default=100,
                        help="after each playbook, copy a file of this many MiB to one node and report MB/s (0: no copy)")
    parser.add_argument("--stream-rtt", type=float, default=None, metavar="MS",
                        help="the stream round trip of the latency model in ms (the aws profile's is 30; AWS's "
                             "service is often nearer 100)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the lab runs as root; run this as root", file=sys.stderr)
        return 2
    transports = [t for t in args.transports.split(",") if t]
    unknown = sorted(set(transports) - set(TRANSPORTS + OPTIONAL))
    if unknown:
        parser.error(f"--transports: unknown {', '.join(unknown)}; choose from {', '.join(TRANSPORTS + OPTIONAL)}")
    baseline = os.path.join(args.baseline, "ansible_collections", "bastionless", "ssm")
    if "session_base" in transports and not os.path.isdir(baseline):
        parser.error("--transports session_base needs --baseline PATH, a collections path holding bastionless.ssm")
    if "mitogen" in transports and mitogen_strategy_dir() is None:
        print("mitogen cannot be imported here: (d) is left out (make bench-transport installs it)", flush=True)
        transports.remove("mitogen")
    work = tempfile.mkdtemp(prefix="bench-transport-")
    profile = dict(FaultModel.PROFILES["aws"])
    if args.stream_rtt is not None:
        profile["stream_rtt"] = args.stream_rtt / 1000
    print("latency model (the lab's aws profile): " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in profile.items()))
    print(f"{args.nodes} nodes, {args.nodes} forks, 20 tasks, gather_facts false; best of {args.repeat}"
          + (f"; then a copy of {args.copy_mib} MiB to one node" if args.copy_mib else ""), flush=True)
    with open(os.path.join(work, "playbook.yml"), "w", encoding="utf-8") as handle:
        yaml.safe_dump(PLAYBOOK, handle, sort_keys=False)
    with open(os.path.join(work, "bench.conf.j2"), "w", encoding="utf-8") as handle:
        handle.write(TEMPLATE)
    with open(os.path.join(work, "blob.bin"), "wb") as handle:
        handle.write(os.urandom(1024 * 1024))
    if args.copy_mib:
        with open(os.path.join(work, "big.bin"), "wb") as handle:
            for _mib in range(args.copy_mib):
                handle.write(os.urandom(1024 * 1024))
    runs: dict[str, list[dict]] = {t: [] for t in transports}
    with running_lab(os.path.join(work, "lab"), "--nodes", str(args.nodes), "--provisioned",
                     "--sshd", str(args.nodes)) as lab:
        os.environ["AWS_SESSION_MANAGER_PLUGIN"] = lab.environ()["AWS_SESSION_MANAGER_PLUGIN"]
        lab.client("s3").create_bucket(Bucket=BUCKET)
        nodes = [n["id"] for n in json.loads(lab.cli("status", "--json").stdout)["nodes"]]
        key, ssh_vars = _ssh_over_ssm(lab, work) if set(SSH_PATHS) & set(transports) else ("", {})
        print(f"session-manager-plugin: {lab.environ()['AWS_SESSION_MANAGER_PLUGIN']}", flush=True)
        lab.cli("faults", "--profile", "aws", *(["--stream-rtt", str(profile["stream_rtt"])]
                                                if args.stream_rtt is not None else []))
        inventories = {t: _inventory(work, t, nodes, key, ssh_vars) for t in transports}
        for attempt in range(args.repeat):
            order = transports[attempt % len(transports):] + transports[:attempt % len(transports)]
            for transport in order:
                _cold(work, transport)
                result = run_playbook(lab, work, inventories[transport], args.nodes, transport, args.per_task, args.cpu,
                                      args.baseline)
                if args.copy_mib:
                    result.update(copy_throughput(lab, work, inventories[transport], transport, args.copy_mib,
                                                  args.baseline, args.cpu))
                runs[transport].append(result)
                print(f"  run {attempt + 1}: {LABELS[transport]:<30} {result['wall_s']:>8.2f} s; "
                      f"{result['api_calls']} API calls, {result['sessions']} sessions, per task on a node: "
                      f"{result['round_trips_per_task']} stream round trips, {result['messages_per_task']} messages; "
                      f"controller CPU {result['controller_cpu_s']:.1f} s", flush=True)
                print(f"    first task {result['first_task_s']:.2f} s (median of the hosts; the last "
                      f"{result['first_task_max_s']:.2f} s), then {result['per_task_s'] * 1000:.0f} ms per task"
                      + (f"; {args.copy_mib} MiB copy {result['copy_s']:.1f} s, {result['copy_mb_s']:.2f} MB/s"
                         if args.copy_mib else ""), flush=True)
                if "cpu_s" in result:
                    used = result["cpu_s"]
                    print(f"    CPU {sum(used.values()):.1f} s: " + ", ".join(f"{k} {v:.1f}" for k, v in used.items() if v),
                          flush=True)
                elif "cpu" in result:
                    print(f"    CPU not measured: {result['cpu']}", flush=True)
                if "copy_cpu_s" in result:
                    used = result["copy_cpu_s"]
                    print(f"    CPU of the copy's play {sum(used.values()):.1f} s: "
                          + ", ".join(f"{k} {v:.1f}" for k, v in used.items() if v), flush=True)
            for transport in transports:
                _cold(work, transport)
    best = {t: min(r["wall_s"] for r in results) for t, results in runs.items()}
    print("\nbest of the runs: wall time of the playbook; first-task latency and per-task time (medians of the "
          "hosts)" + (f"; {args.copy_mib} MiB copy" if args.copy_mib else ""))
    for transport in transports:
        results = runs[transport]
        print(f"  {LABELS[transport]:<30} {best[transport]:>8.2f} s; first task "
              f"{min(r['first_task_s'] for r in results):.2f} s; "
              f"{min(r['per_task_s'] for r in results) * 1000:.0f} ms per task"
              + (f"; {max(r['copy_mb_s'] for r in results):.2f} MB/s (the anchor users meet on AWS: 0.6 to 0.8)"
                 if args.copy_mib else ""))
    if "aws_ssm" in best and "session" in best:
        print(f"  (a)/(c) = {best['aws_ssm'] / best['session']:.2f}  (goal: at least 3)")
    if "ssh_over_ssm" in best and "session" in best:
        print(f"  (c)/(b) = {best['session'] / best['ssh_over_ssm']:.2f}  (goal: at most 1.25)")
    if "session_plugin" in best and "session" in best:
        print(f"  (c'')/(c) = {best['session_plugin'] / best['session']:.2f}  (native against the plugin binary)")
        per_task = {t: min(r["per_task_s"] for r in runs[t]) for t in ("session", "session_plugin")}
        print(f"  (c'')/(c) per task = {per_task['session_plugin'] / per_task['session']:.2f}  (goal: at least 1.5)")
    if "session_base" in best and "session" in best:
        print(f"  (c0)/(c) = {best['session_base'] / best['session']:.2f}  (the --baseline copy against this one)")
    if "mitogen" in best and "session" in best:
        print(f"  (d)/(c) = {best['mitogen'] / best['session']:.2f}  (goal: at least 1.2, the session connection ahead)")
    _print_cpu_medians(runs, transports)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"profile": profile, "nodes": args.nodes, "runs": runs, "best": best}, handle, indent=2)
    shutil.rmtree(work, ignore_errors=True)
    return 0


# What runs on the controller's machine for a transport besides Ansible's own process and workers.
BESIDE_ANSIBLE = ("session master", "session-manager-plugin", "ssh client and proxy")


def _print_cpu_medians(runs: dict, transports: list) -> None:
    """With --cpu: each transport's CPU seconds, the median of its runs (one run's figures vary by 10% or more on a
    shared 2-core machine): Ansible's process and workers, the controller's machine in all (with the session
    masters, session-manager-plugin, ssh and its proxy), and the nodes."""
    measured = {t: [r["cpu_s"] for r in runs[t] if isinstance(r.get("cpu_s"), dict)] for t in transports}
    if not any(measured.values()):
        return
    print("CPU seconds, medians of the runs: Ansible's process and workers; the controller's machine in all; nodes")
    for transport in transports:
        if measured[transport]:
            figures = [statistics.median(pick(c) for c in measured[transport]) for pick in (
                lambda c: c.get("controller", 0.0),
                lambda c: c.get("controller", 0.0) + sum(c.get(k, 0.0) for k in BESIDE_ANSIBLE),
                lambda c: c.get("nodes", 0.0))]
            print(f"  {LABELS[transport]:<30} " + "; ".join(f"{f:.1f}" for f in figures))


def _ssh_over_ssm(lab, work: str) -> tuple[str, dict]:
    """(b)'s wiring as a user gets it: the operator's key pair, pushed through EC2 Instance Connect at every
    connection by the proxy command of bastionless.ssm.ssh_over_ssm, whose block goes into an ssh config of our own."""
    key = os.path.join(work, "id_ed25519")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    home = os.path.join(work, "ssh")
    role_vars = {"ssh_over_ssm_config_path": os.path.join(home, "config"),
                 "ssh_over_ssm_proxy_path": os.path.join(home, "proxy.py"),
                 "ssh_over_ssm_control_path": os.path.join(work, "cp-ssh", "cm-%C"),
                 "ssh_over_ssm_known_hosts_file": os.path.join(home, "known_hosts"),
                 "ssh_over_ssm_region": "us-east-1", "ssh_over_ssm_instance_connect_key": key}
    result_file = os.path.join(work, "ssh_over_ssm.json")
    play = [{"name": "ssh over SSM", "hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
             "roles": [{"role": "bastionless.ssm.ssh_over_ssm", **role_vars}],
             "post_tasks": [{"name": "Keep the result", "ansible.builtin.copy": {
                 "content": "{{ ssh_over_ssm_result | to_json }}", "dest": result_file, "mode": "0600"}}]}]
    with open(os.path.join(work, "ssh_over_ssm.yml"), "w", encoding="utf-8") as handle:
        json.dump(play, handle)
    done = subprocess.run(["ansible-playbook", "-i", "localhost,", "ssh_over_ssm.yml"], cwd=work, env=lab.environ(),
                          capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bastionless.ssm.ssh_over_ssm failed:\n{(done.stdout + done.stderr)[-4000:]}")
    with open(result_file, encoding="utf-8") as handle:
        return key, json.load(handle)["connection_vars"]


if __name__ == "__main__":
    sys.exit(main())
