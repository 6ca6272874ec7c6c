"""Benchmark: fetching a large file over bastionless.ssm.session, the old way against the new, in the same run.

    python tests/benchmarks/transfers.py                    # 100 MiB, native transport, best of 2
    python tests/benchmarks/transfers.py --mib 20 --repeat 1 --transports native,plugin
    python tests/benchmarks/transfers.py --profile aws      # with the lab's AWS-like latency

The old way is the connection as it was before transfers went in chunks (one command for the whole file, held in
memory): its files are taken from git (``--old REF``, by default the parent of the commit that added
``transfer_chunk_size``) into a copy of this tree's collection; the new way is this tree's. Both fetch the same file
made on one lab node, each over a session of its own (cold control directory, a first task starts the session), with
``command_timeout`` raised so that the old way can finish at all.

For each run it prints the fetch task's time (ansible.posix.profile_tasks), its throughput in MB/s (10^6 bytes of
the file per second), and the controller's peak RSS while the fetch ran: the sum over ansible-playbook, its workers
and the session's master (with its session-manager-plugin for ``transport: plugin``), sampled every 50 ms, and the
largest single process. The best run of each is reported with the ratios old/new. It asserts nothing: the figures
are for people to read.

Needs root (the lab), ansible with ansible.posix on PATH, and git (for the old files).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))

from ssm_lab.harness.testing import running_lab  # noqa: E402

SESSION_FILES = ("plugins/connection/session.py", "plugins/plugin_utils/_session_master.py",
                 "plugins/plugin_utils/_session_protocol.py", "plugins/plugin_utils/_session_helper.py",
                 "plugins/plugin_utils/_session_support.py")
PAGE = os.sysconf("SC_PAGE_SIZE")
PLAY = """- hosts: all
  gather_facts: false
  tasks:
    - name: Start the session
      ansible.builtin.raw: "true"
      changed_when: false
    - name: Fetch the file
      ansible.builtin.fetch: {{src: /tmp/bench-transfer.bin, dest: "{dest}", flat: true}}
"""


def old_ref() -> str:
    """The parent of the commit that added transfer_chunk_size to the connection (the last one without chunks)."""
    found = subprocess.run(["git", "log", "--format=%H", "-S", "transfer_chunk_size", "--", SESSION_FILES[0]],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    if not found:
        raise SystemExit("git knows no commit that added transfer_chunk_size: give --old REF")
    return found[-1] + "^"


def collection(work: str, name: str, ref: str | None) -> str:
    """A collections directory with this tree's collection, its session files from git ref when given."""
    base = os.path.join(work, name)
    target = os.path.join(base, "ansible_collections", "bastionless", "ssm")
    os.makedirs(target)
    for part in ("plugins", "meta"):
        shutil.copytree(os.path.join(ROOT, part), os.path.join(target, part),
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(ROOT, "galaxy.yml"), target)
    for path in SESSION_FILES if ref else ():
        text = subprocess.run(["git", "show", f"{ref}:{path}"], cwd=ROOT, capture_output=True, check=True).stdout
        with open(os.path.join(target, path), "wb") as handle:
            handle.write(text)
    return base


class Peak:
    """The peak RSS of a process tree and of the session masters started from a collections directory."""

    def __init__(self, root_pid: int, marker: str) -> None:
        self.root, self.marker = root_pid, marker.encode()
        self.total = self.single = 0
        self.sampling = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.sampling = False
        self.thread.join()

    def _run(self) -> None:
        while self.sampling:
            self.sample()
            time.sleep(0.05)

    def sample(self) -> None:
        parents, rss, roots = {}, {}, {self.root}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat", "rb") as handle:
                    fields = handle.read().rsplit(b")", 1)[1].split()
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    cmdline = handle.read()
            except OSError:
                continue
            parents[int(pid)] = int(fields[1])
            rss[int(pid)] = int(fields[21]) * PAGE
            if self.marker in cmdline and b"_session_master.py" in cmdline:
                roots.add(int(pid))
        members = set()
        for pid in parents:
            walk = pid
            while walk > 1 and walk not in roots and walk not in members:
                walk = parents.get(walk, 0)
            if walk in roots or walk in members:
                members.add(pid)
        sizes = [rss[pid] for pid in members if pid in rss]
        self.total = max(self.total, sum(sizes))
        self.single = max(self.single, *sizes) if sizes else self.single


def fetch(lab, work: str, node: str, collections: str, variant: str, transport: str, size: int) -> dict:
    control = os.path.join(work, f"cp-{variant}-{transport}")
    shutil.rmtree(control, ignore_errors=True)
    dest = os.path.join(work, f"fetched-{variant}-{transport}.bin")
    play = os.path.join(work, f"fetch-{variant}.yml")
    with open(play, "w", encoding="utf-8") as handle:
        handle.write(PLAY.format(dest=dest))
    env = lab.environ(ANSIBLE_COLLECTIONS_PATH=collections, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
                      ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks", PROFILE_TASKS_SORT_ORDER="none")
    proc = subprocess.Popen(["ansible-playbook", "-i", f"{node},", "-c", "bastionless.ssm.session", play,
                             "-e", "ansible_python_interpreter=/usr/bin/python3",
                             "-e", f"ansible_aws_ssm_transport={transport}",
                             "-e", f"ansible_aws_ssm_plugin={lab.environ()['AWS_SESSION_MANAGER_PLUGIN']}",
                             "-e", "ansible_aws_ssm_command_timeout=1800",
                             "-e", f"ansible_aws_ssm_control_path_dir={control}"],
                            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = Peak(proc.pid, collections)
    output = proc.communicate(timeout=3600)[0]
    peak.stop()
    if proc.returncode != 0 or os.path.getsize(dest) != size:
        raise RuntimeError(f"the {variant} fetch failed:\n{output[-4000:]}")
    os.unlink(dest)
    _end_masters(control)
    found = re.search(r"^Fetch the file -+ (\d+\.\d+)s", output, re.M)
    seconds = float(found.group(1))
    return {"seconds": seconds, "mb_s": size / seconds / 1e6, "peak_total": peak.total, "peak_single": peak.single}


def _end_masters(control: str) -> None:
    for name in os.listdir(control) if os.path.isdir(control) else ():
        if name.endswith(".sock"):
            subprocess.run([sys.executable, "-c", "import socket,sys; s=socket.socket(socket.AF_UNIX); "
                            "s.settimeout(5); s.connect(sys.argv[1]); s.sendall(b'{\"op\": \"exit\"}\\n'); s.recv(100)",
                            os.path.join(control, name)], capture_output=True, check=False, timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--mib", type=int, default=100, help="size of the fetched file in MiB (default 100)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each; the best is reported")
    parser.add_argument("--transports", default="native", help="native, plugin or both (native,plugin)")
    parser.add_argument("--old", help="the git ref of the old way's session files (default: before chunks)")
    parser.add_argument("--profile", default="off", help="the lab's fault profile: off (default) or aws")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the lab runs as root; run this as root", file=sys.stderr)
        return 2
    transports = [t for t in args.transports.split(",") if t]
    ref = args.old or old_ref()
    work = tempfile.mkdtemp(prefix="bench-transfers-")
    size = args.mib * 1024 * 1024
    variants = {"old": collection(work, "old", ref), "new": collection(work, "new", None)}
    print(f"fetch of {args.mib} MiB over bastionless.ssm.session; old: the session files of {ref}; new: this tree; "
          f"lab profile {args.profile}; best of {args.repeat}", flush=True)
    runs: dict = {(v, t): [] for v in variants for t in transports}
    with running_lab(os.path.join(work, "lab"), "--nodes", "1", "--provisioned") as lab:
        lab.cli("faults", "--profile", args.profile)
        node = sorted(n for n in lab.network["nodes"] if n.startswith("i-"))[0]
        made = subprocess.run(["ansible", "all", "-i", f"{node},", "-c", "bastionless.ssm.session", "-m", "ansible.builtin.shell",
                               "-a", f"head -c {size} /dev/urandom > /tmp/bench-transfer.bin",
                               "-e", "ansible_python_interpreter=/usr/bin/python3",
                               "-e", f"ansible_aws_ssm_control_path_dir={os.path.join(work, 'cp-make')}"],
                              cwd=work, env=lab.environ(ANSIBLE_COLLECTIONS_PATH=variants["new"]), capture_output=True,
                              text=True, timeout=600, check=False)
        if made.returncode != 0:
            raise RuntimeError(f"could not make the file on {node}:\n{made.stdout[-2000:]}{made.stderr[-2000:]}")
        _end_masters(os.path.join(work, "cp-make"))
        for attempt in range(args.repeat):
            order = list(variants) if attempt % 2 == 0 else list(reversed(variants))
            for transport in transports:
                for variant in order:
                    result = fetch(lab, work, node, variants[variant], variant, transport, size)
                    runs[(variant, transport)].append(result)
                    print(f"  run {attempt + 1}: {variant} {transport:<7} {result['seconds']:>7.2f} s "
                          f"{result['mb_s']:>6.2f} MB/s, controller peak RSS {result['peak_total'] / 2 ** 20:>6.0f} MiB "
                          f"(largest process {result['peak_single'] / 2 ** 20:.0f} MiB)", flush=True)
    print(f"\nbest of the runs, {args.mib} MiB:")
    for transport in transports:
        best = {v: min(runs[(v, transport)], key=lambda r: r["seconds"]) for v in variants}
        least = {v: min(r["peak_total"] for r in runs[(v, transport)]) for v in variants}
        for variant in variants:
            print(f"  {variant} {transport:<7} {best[variant]['mb_s']:>6.2f} MB/s, controller peak RSS "
                  f"{least[variant] / 2 ** 20:>6.0f} MiB")
        print(f"  {transport}: throughput new/old = {best['new']['mb_s'] / best['old']['mb_s']:.2f}, "
              f"peak RSS old/new = {least['old'] / least['new']:.2f}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
