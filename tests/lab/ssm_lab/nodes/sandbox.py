"""A lab node's own files, hostname and processes.

Each node is an overlay over ``/`` (so it has the machine's programs) with its own upper directory under the
lab's state directory (so what a task writes stays in the node), mounted in the agent host's private mount
namespace. Each node has an init of its own in new UTS, IPC, PID and mount namespaces (its hostname, its /proc,
its boot id); every shell or command enters them and runs chrooted into the overlay, so what a session leaves
running detached (setsid, ``async``) lives on after it, until the node reboots. Nothing listens on a port.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import uuid

from .. import common
from . import agent_package

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SSM_USER = "ssm-user"
BOOT_ID = "/proc/sys/kernel/random/boot_id"
SUDOERS_FILE = "/etc/sudoers.d/ssm-agent-users"


# PID 1 of a node: its /proc, its boot id and hostname, then reaping the orphans of the node's detached jobs until
# the node goes down (SIGKILL from the agent host at a reboot, which ends every process of the namespace).
NODE_INIT = """
import os, signal, subprocess, sys
root, hostname, boot_id, target = sys.argv[1:5]
subprocess.run(["mount", "-t", "proc", "proc", root + "/proc"], check=True)
subprocess.run(["mount", "--bind", boot_id, root + target], check=True)
subprocess.run(["hostname", hostname], check=True)
signal.signal(signal.SIGCHLD, lambda *_: None)
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
sys.stdout.write("ready\\n")
sys.stdout.flush()
os.close(1)
os.close(2)
while True:
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        signal.pause()
    except InterruptedError:
        pass
"""


class SandboxError(Exception):
    pass


class Sandbox:
    def __init__(self, state_dir: str, node_id: str, hostname: str, os_release: str, proxy: str = "",
                 platform: str = "al2023", endpoint: str = "") -> None:
        self.node_id = node_id
        self.platform = platform
        self.endpoint = endpoint  # the control plane, which node-side systemctl asks about the agent
        self.proxy = proxy  # the node's egress: its own HTTP fetches go through the lab's network rules
        self.hostname = hostname
        self.os_release = os_release
        self.base = os.path.join(state_dir, "nodes", node_id)
        self.upper = os.path.join(self.base, "upper")
        self.work = os.path.join(self.base, "work")
        self.root = os.path.join(self.base, "root")
        # The node's /proc/sys/kernel/random/boot_id (bind-mounted over the machine's): new at every boot.
        self.boot_id_file = os.path.join(self.base, "boot_id")
        self.init_file = os.path.join(self.base, "init.pid")  # the node's init and its launcher, as the machine sees them
        self._init_lock = threading.Lock()
        self._files_lock = threading.Lock()  # the disk and ssm-user: light nodes share one sandbox across threads
        self._launcher = None
        self._mounted = False

    # --- the node's file system ----------------------------------------------------------------------------
    def ensure(self) -> None:
        if self._mounted:
            return
        with self._files_lock:
            if not self._mounted:
                self._mount()

    def _mount(self) -> None:
        for path in (self.upper, self.work, self.root):
            os.makedirs(path, exist_ok=True)
        if not os.path.ismount(self.root):
            self._seed()
            self._run(["mount", "-t", "overlay", "overlay", "-o",
                       f"lowerdir=/,upperdir={self.upper},workdir={self.work}", self.root])
            self._run(["mount", "--rbind", "/dev", os.path.join(self.root, "dev")])
            self._run(["mount", "--make-rslave", os.path.join(self.root, "dev")])
            self._run(["mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", os.path.join(self.root, "run")])
            os.makedirs(os.path.join(self.root, "run", "lock"), exist_ok=True)
        self._mounted = True
        if not os.path.exists(self.boot_id_file):
            self.new_boot_id()
        self._install_agent_package()

    def new_boot_id(self) -> str:
        """A boot of the node: a new random boot id, as the kernel makes one at each boot."""
        boot_id = str(uuid.uuid4())
        with open(self.boot_id_file + ".new", "w", encoding="utf-8") as handle:
            handle.write(boot_id + "\n")
        os.chmod(self.boot_id_file + ".new", 0o444)
        os.replace(self.boot_id_file + ".new", self.boot_id_file)
        return boot_id

    def _seed(self) -> None:
        """Files that make the node itself: written into the upper layer before the first mount."""
        etc = os.path.join(self.upper, "etc")
        os.makedirs(etc, exist_ok=True)
        marker = os.path.join(self.upper, ".lab-seeded")
        if os.path.exists(marker):
            return
        files = {
            "etc/hostname": self.hostname + "\n",
            "etc/hosts": f"127.0.0.1 localhost\n127.0.1.1 {self.hostname}\n::1 localhost ip6-localhost\n",
            "etc/os-release": self.os_release,
            "etc/machine-id": self.node_id.replace("-", "").ljust(32, "0")[:32] + "\n",
            "var/lib/amazon/ssm/registration": f'{{"ManagedInstanceID":"{self.node_id}","Region":"lab"}}\n',
            "etc/ssm-lab/node.json": json.dumps({"id": self.node_id, "endpoint": self.endpoint}) + "\n",
        }
        modes = {"usr/bin/systemctl": 0o755}
        with open(os.path.join(os.path.dirname(__file__), "systemctl.py"), encoding="utf-8") as handle:
            files["usr/bin/systemctl"] = handle.read()
        if self.platform in common.DEB_AGENT_PLATFORMS:
            files["var/cache/ssm-lab/amazon-ssm-agent.deb"] = agent_package.deb(common.AGENT_VERSION)
        else:
            for inside, (content, mode) in agent_package.preinstalled_files().items():
                files[inside.lstrip("/")] = content
                modes[inside.lstrip("/")] = mode
        for rel, content in files.items():
            path = os.path.join(self.upper, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if os.path.islink(path):
                os.unlink(path)
            if isinstance(content, str) and content.startswith("->"):
                os.symlink(content[2:], path)
                continue
            with open(path, "wb" if isinstance(content, bytes) else "w") as handle:
                handle.write(content)
            if rel in modes:
                os.chmod(path, modes[rel])
        # /etc/os-release is a link to /usr/lib/os-release on many systems; shadow both.
        usr_lib = os.path.join(self.upper, "usr", "lib")
        os.makedirs(usr_lib, exist_ok=True)
        with open(os.path.join(usr_lib, "os-release"), "w", encoding="utf-8") as handle:
            handle.write(self.os_release)
        open(marker, "w").close()

    def _install_agent_package(self) -> None:
        """Debian-family nodes get the agent as user data would install it: dpkg -i of the package."""
        marker = os.path.join(self.upper, ".lab-agent-installed")
        package = "/var/cache/ssm-lab/amazon-ssm-agent.deb"
        if self.platform not in common.DEB_AGENT_PLATFORMS or os.path.exists(marker):
            return
        result = subprocess.run(
            ["chroot", self.root, "/usr/bin/env", "-i", f"PATH={SAFE_PATH}", "DEBIAN_FRONTEND=noninteractive",
             "dpkg", "-i", package], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SandboxError(f"dpkg -i {package} on {self.node_id}: {result.stderr.strip()}")
        open(marker, "w").close()

    def agent_version(self) -> str:
        """The version of the agent program installed on the node (what the real agent would report)."""
        try:
            with open(self.path(agent_package.AGENT_BINARY), encoding="utf-8") as handle:
                return agent_package.installed_version(handle.read()) or common.AGENT_VERSION
        except OSError:
            return common.AGENT_VERSION

    def agent_enabled(self) -> bool:
        """Would the node's init start the agent at boot (a multi-user.target.wants link)?"""
        return os.path.lexists(self.path(f"/etc/systemd/system/multi-user.target.wants/{agent_package.AGENT_UNIT}"))

    @staticmethod
    def _run(argv: list[str]) -> None:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SandboxError(f"{' '.join(argv)}: {result.stderr.strip()}")

    def path(self, inside: str) -> str:
        return os.path.join(self.root, inside.lstrip("/"))

    # --- users ---------------------------------------------------------------------------------------------
    def user(self, name: str) -> tuple[int, int, str] | None:
        try:
            with open(self.path("/etc/passwd"), encoding="utf-8") as handle:
                for line in handle:
                    fields = line.rstrip("\n").split(":")
                    if len(fields) >= 7 and fields[0] == name:
                        return int(fields[2]), int(fields[3]), fields[5]
        except OSError:
            return None
        return None

    def ensure_ssm_user(self) -> None:
        """The agent creates ssm-user with sudo rights on the first session, as the real one does."""
        with self._files_lock:
            self._ensure_ssm_user()

    def _ensure_ssm_user(self) -> None:
        if self.user(SSM_USER) is None:
            result = subprocess.run(["chroot", self.root, "useradd", "-m", "-s", "/bin/bash", SSM_USER],
                                    capture_output=True, text=True, check=False)
            if result.returncode != 0 and self.user(SSM_USER) is None:
                raise SandboxError(f"could not create {SSM_USER}: {result.stderr.strip()}")
        sudoers = self.path(SUDOERS_FILE)
        if not os.path.exists(sudoers):
            os.makedirs(os.path.dirname(sudoers), exist_ok=True)
            with open(sudoers, "w", encoding="utf-8") as handle:
                handle.write(f"# User rules for {SSM_USER}\n{SSM_USER} ALL=(ALL) NOPASSWD:ALL\n")
            os.chmod(sudoers, 0o440)

    # --- processes -----------------------------------------------------------------------------------------
    def init_pid(self) -> int:
        """The node's init (PID 1 of its PID namespace, as the machine sees it), started when the node has none:
        the node's processes live in its namespaces, not a session's, so a job detached with setsid outlives the
        session that started it, as on EC2. A reboot ends them all (``stop_init``)."""
        self.ensure()
        with self._init_lock:
            pid = self._running_init()
            if pid:
                return pid
            launcher = subprocess.Popen(
                ["unshare", "--uts", "--ipc", "--pid", "--fork", "--mount", "--propagation", "private", "--",
                 sys.executable, "-c", NODE_INIT, self.root, self.hostname, self.boot_id_file, BOOT_ID],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
            ready = launcher.stdout.readline()
            launcher.stdout.close()
            if ready.strip() != b"ready":
                launcher.kill()
                error = launcher.stderr.read().decode(errors="replace").strip()
                launcher.wait()
                raise SandboxError(f"the init of {self.node_id} did not start: {error or ready!r}")
            launcher.stderr.close()
            with open(f"/proc/{launcher.pid}/task/{launcher.pid}/children", encoding="utf-8") as handle:
                pid = int(handle.read().split()[0])
            with open(self.init_file, "w", encoding="utf-8") as handle:
                handle.write(f"{pid} {launcher.pid}\n")
            self._launcher = launcher
            return pid

    def _running_init(self) -> int:
        try:
            with open(self.init_file, encoding="utf-8") as handle:
                pid = int(handle.read().split()[0])
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if self.root.encode() in handle.read():
                    return pid
        except (OSError, ValueError, IndexError):
            pass
        return 0

    def stop_init(self) -> None:
        """The node goes down: its init ends, and with it every process of its PID namespace."""
        with self._init_lock:
            pid = self._running_init()
            if pid:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            if self._launcher is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._launcher.wait(5)
                self._launcher = None
            with contextlib.suppress(OSError):
                os.unlink(self.init_file)

    def argv(self, inner: list[str], user: str = "root", workdir: str = "", env: dict | None = None,
             hostname: str = "") -> list[str]:
        """The command line that runs ``inner`` inside the node as ``user``; with ``hostname``, in a UTS namespace of
        its own that has that host name (a light node's, in the sandbox it shares)."""
        init = self.init_pid()
        found = self.user(user)
        if found is None:
            raise SandboxError(f"user {user} does not exist on {self.node_id}")
        uid, gid, home = found
        variables = {"PATH": SAFE_PATH, "HOME": home, "USER": user, "LOGNAME": user, "SHELL": "/bin/bash",
                     "TERM": "xterm-256color", "LANG": "C.UTF-8"}
        if self.proxy:
            variables.update(http_proxy=self.proxy, https_proxy=self.proxy)
        variables.update(env or {})
        inside = ["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in variables.items())]
        if uid != 0:
            inside += ["/usr/bin/setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups"]
        inside += inner
        if hostname:
            inside = ["unshare", "--uts", "--", "/bin/sh", "-c", 'hostname "$0" && exec "$@"', hostname, *inside]
        start = f"cd {shlex.quote(workdir or home)} 2>/dev/null || cd /; exec " + shlex.join(inside)
        return ["nsenter", f"--target={init}", "--uts", "--ipc", "--pid", "--mount", "--",
                "chroot", self.root, "/bin/sh", "-c", start]


class LightNode:
    """A light node's view of the sandbox it shares with every other light node (``ssm-lab up --light-nodes``):
    one overlay, one init and one set of files for all of them, so that a thousand fit on a small machine. What the
    node runs sees its own host name (a UTS namespace per command) and its instance id and host name in
    ``SSM_LAB_INSTANCE_ID`` and ``SSM_LAB_HOSTNAME``; its Run Command folders are its own, as on any node
    (``/var/lib/amazon/ssm/<instance id>/``). Everything else is the shared sandbox's: the files a command writes,
    the users, the processes, the boot id, the agent's unit."""

    SHARED_ID = "light"  # the shared sandbox's directory under the lab's nodes/, and its own host name

    def __init__(self, shared: Sandbox, node_id: str, hostname: str, proxy: str = "") -> None:
        self.shared = shared
        self.node_id = node_id
        self.hostname = hostname
        self.proxy = proxy  # the node's own egress, which the lab judges as this node's

    def __getattr__(self, name: str):
        return getattr(self.shared, name)

    def argv(self, inner: list[str], user: str = "root", workdir: str = "", env: dict | None = None) -> list[str]:
        own = {"SSM_LAB_INSTANCE_ID": self.node_id, "SSM_LAB_HOSTNAME": self.hostname}
        if self.proxy:
            own.update(http_proxy=self.proxy, https_proxy=self.proxy)
        own.update(env or {})
        return self.shared.argv(inner, user=user, workdir=workdir, env=own, hostname=self.hostname)
