"""CPU time by component of a lab benchmark run, measured with the kernel's cgroup CPU accounting.

The lab's nodes, its control plane and the controller share the machine's cores, so a playbook over many nodes can be
bound by CPU rather than by the latency model. This says where the CPU went:

    with CpuAccount() as cpu:
        run_the_playbook()
    print(cpu.seconds)   # {"controller": 10.9, "session master": 0.6, ..., "nodes": 45.7}

A thread looks at /proc every 10 ms and moves each process it has not seen (and each one that is less than a second
old, which may have exec'd since) into the cgroup of its component; processes forked later inherit it. Needs root,
and cgroup v1's cpuacct or cgroup v2. Processes that no rule names stay where they are and are not counted.
"""

from __future__ import annotations

import os
import threading
import time

COMPONENTS = ("controller", "session master", "session-manager-plugin", "ssh client and proxy", "lab control plane",
              "lab agents", "nodes")
V1 = "/sys/fs/cgroup/cpuacct"
V2 = "/sys/fs/cgroup"


def _component(pid: str) -> str | None:
    """Which component a process belongs to, from its root directory (the nodes are chroots) and command line."""
    try:
        if os.readlink(f"/proc/{pid}/root") != "/":
            return "nodes"
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmd = handle.read().replace(b"\0", b" ")
    except OSError:
        return None
    rules = ((b"_session_master", "session master"), (b"ssm-lab-plugin", "session-manager-plugin"),
             (b"session-manager-plugin", "session-manager-plugin"), (b"proxy.py", "ssh client and proxy"),
             (b"ssm_lab.aws.controlplane", "lab control plane"), (b"ssm_lab.nodes.agents", "lab agents"),
             (b"ansible", "controller"))
    if cmd.startswith(b"ssh "):
        return "ssh client and proxy"
    return next((name for needle, name in rules if needle in cmd), None)


class CpuAccount:
    """Context manager: CPU seconds by component while it is open (``seconds``), or None when unavailable."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] | None = None
        self.why_not = ""
        self._v1 = os.path.isdir(V1)
        self._root = os.path.join(V1 if self._v1 else V2, f"bench-cpu-{os.getpid()}")
        self._seen: dict[str, tuple[str | None, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _dir(self, component: str) -> str:
        return os.path.join(self._root, component.replace(" ", "_"))

    def _usage(self, component: str) -> float:
        if self._v1:
            with open(os.path.join(self._dir(component), "cpuacct.usage"), encoding="ascii") as handle:
                return int(handle.read()) / 1e9
        with open(os.path.join(self._dir(component), "cpu.stat"), encoding="ascii") as handle:
            return int(dict(line.split() for line in handle)["usage_usec"]) / 1e6

    @staticmethod
    def _move(pid: str, directory: str) -> None:
        """Put the process in the cgroup of that directory."""
        try:
            with open(os.path.join(directory, "cgroup.procs"), "w", encoding="ascii") as handle:
                handle.write(pid)
        except OSError:
            pass  # gone already, or a kernel thread

    def _watch(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                known = self._seen.get(pid)
                if known and now - known[1] > 1.0:
                    continue
                component = _component(pid)
                if component and (not known or known[0] != component):
                    self._move(pid, self._dir(component))
                self._seen[pid] = (component or (known[0] if known else None), known[1] if known else now)
            self._stop.wait(0.01)

    def __enter__(self) -> "CpuAccount":
        if os.geteuid() != 0 or not (self._v1 or os.path.exists(os.path.join(V2, "cgroup.controllers"))):
            self.why_not = "needs root and cgroup v1 cpuacct or cgroup v2"
            return self
        try:
            for component in COMPONENTS:
                os.makedirs(self._dir(component), exist_ok=True)
        except OSError as e:
            self.why_not = f"cannot make cgroups under {self._root}: {e}"
            return self
        self._start = {c: self._usage(c) for c in COMPONENTS}
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.why_not:
            return
        self._stop.set()
        self._thread.join()
        self.seconds = {c: round(self._usage(c) - self._start[c], 2) for c in COMPONENTS}
        parent = os.path.dirname(self._root)
        for component in COMPONENTS:  # processes that live on (the lab) go back, then the cgroups go
            try:
                with open(os.path.join(self._dir(component), "cgroup.procs"), encoding="ascii") as handle:
                    pids = handle.read().split()
                for pid in pids:
                    self._move(pid, parent)
                os.rmdir(self._dir(component))
            except OSError:
                pass
        try:
            os.rmdir(self._root)
        except OSError:
            pass
