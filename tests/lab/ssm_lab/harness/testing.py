"""A running lab for test suites: start it in a directory of its own, hand out its settings and clients, and
always stop it. Suites subclass ``Lab`` to add their own helpers."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import socket
import socketserver
import subprocess
import sys
import threading
import time

BIN = os.path.dirname(sys.executable)
SSM_LAB = os.path.join(BIN, "ssm-lab")
UP_TIMEOUT = 120
EXPORTED = {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_REGION",
            "AWS_SESSION_MANAGER_PLUGIN", "SSM_LAB_STATE_DIR"}


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.2, what: str = "a condition"):
    """Call ``predicate`` until it returns something truthy (returned) or ``timeout`` seconds pass (fail)."""
    deadline = time.monotonic() + timeout
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up after {timeout:g} s waiting for {what}; last seen: {last!r}")
        time.sleep(interval)


INTEROP_PLUGIN = "SESSION_MANAGER_PLUGIN"  # make interop: the path of AWS's session-manager-plugin


def plugin_path() -> str:
    """The session-manager-plugin tests run: AWS's under make interop (SESSION_MANAGER_PLUGIN), else the lab's."""
    return os.environ.get(INTEROP_PLUGIN) or os.path.join(BIN, "ssm-lab-plugin")


def clean_environ() -> dict:
    """This process's environment without any AWS or lab settings (and without the in-process tests' strict
    switch, which would let a reachability surprise raise inside the control plane)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("AWS_", "SSM_LAB_")) and k != "MOTO_IAM_LOAD_MANAGED_POLICIES"}


WARM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "warm")
WARM_SWITCH = "BASTIONLESS_WARM"  # 0: every module run on the controller starts its own interpreter; 1: warm
_warm: dict = {}


def warm_environ() -> dict:
    """The variables that hand this process's ansible module runs, and its ``ansible``, ``ansible-playbook`` and
    ``ansible-inventory`` commands, to a warm interpreter (``warm/zygote.py``, started on first use, one per test
    process, gone when the process is): about a third less CPU for each module run on the controller, and each command
    starts without importing jinja2, yaml, boto3 or reading botocore's models again. Empty with BASTIONLESS_WARM=0,
    and by default outside pytest: a benchmark measures the commands as a user runs them, cold."""
    if os.environ.get(WARM_SWITCH, "1" if "pytest" in sys.modules else "0") == "0":
        return {}
    if _warm.get("pid") != os.getpid():
        import atexit
        import tempfile

        directory = tempfile.mkdtemp(prefix="bastionless-warm-")  # mode 0700: only we can connect
        path = os.path.join(directory, "zygote.sock")
        process = subprocess.Popen([sys.executable, os.path.join(WARM, "zygote.py"), path], env=clean_environ(),
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        wait_until(lambda: os.path.exists(path) or process.poll() is not None, timeout=30, what="the warm interpreter")
        if process.poll() is not None:
            raise RuntimeError(f"the warm interpreter ({WARM}/zygote.py) exited {process.returncode}")
        atexit.register(process.terminate)
        _warm.update(pid=os.getpid(), path=path, zygote=process.pid)
    python_path = os.pathsep.join(p for p in (WARM, os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": python_path, "BASTIONLESS_WARM_SOCKET": _warm["path"], "BASTIONLESS_WARM_CLI": "1",
            "BASTIONLESS_WARM_MNTNS": os.readlink("/proc/self/ns/mnt")}


def parse_exports(text: str) -> dict:
    env = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            key, value = words[1].split("=", 1)
            env[key] = value
    return env


class Lab:
    """One running lab: its state dir, exported settings, network ids and clients."""

    def __init__(self, state_dir: str, env: dict) -> None:
        self.state_dir = state_dir
        self.env = env
        self.endpoint = env["AWS_ENDPOINT_URL"]
        self.region = env["AWS_DEFAULT_REGION"]
        with open(os.path.join(state_dir, "network.json"), encoding="utf-8") as handle:
            self.network = json.load(handle)
        self._clients: dict = {}

    def environ(self, **extra: str) -> dict:
        """The process environment a client of this lab (ansible, the plugin) runs with. With SESSION_MANAGER_PLUGIN
        set (make interop), the clients run that session-manager-plugin (AWS's own) instead of the lab's. Modules run
        on the controller go to the warm interpreter (``warm_environ``)."""
        plugin = {"AWS_SESSION_MANAGER_PLUGIN": os.environ[INTEROP_PLUGIN]} if os.environ.get(INTEROP_PLUGIN) else {}
        return {**clean_environ(), **warm_environ(), **self.env, **plugin, **extra}

    def api_calls(self, reset: bool = False) -> dict:
        """The AWS API calls the lab has served (its admin API's /_lab/calls: ``calls`` by service:action, ``total``,
        and ``regions``, the calls by the region they were signed for); ``reset`` clears them (and returns them
        cleared)."""
        import urllib.request

        request = urllib.request.Request(f"{self.endpoint}/_lab/calls", method="DELETE" if reset else "GET")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def client(self, service: str, access_key: str | None = None, secret_key: str | None = None, config=None,
               region: str | None = None):
        import boto3

        key = (service, access_key, secret_key, id(config) if config else None, region)
        if key not in self._clients:
            self._clients[key] = boto3.client(
                service,
                endpoint_url=self.endpoint,
                region_name=region or self.region,
                aws_access_key_id=access_key or self.env["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=secret_key or self.env["AWS_SECRET_ACCESS_KEY"],
                config=config,
            )
        return self._clients[key]

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([SSM_LAB, "--state-dir", self.state_dir, *args], capture_output=True, text=True,
                                env=clean_environ(), timeout=60, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"ssm-lab {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result


@contextlib.contextmanager
def running_lab(state_dir: str, *args: str, lab_class: type = Lab, up_timeout: float = UP_TIMEOUT):
    """``ssm-lab up`` in ``state_dir``; always ``ssm-lab down`` afterwards, even when up failed.

    With no IAM user unless ``args`` ask for some (``--iam-users``): each test makes the users it needs, with the
    tags it needs; ``ssm-lab up`` alone makes those inventories/lab maps (the docs runner and make demo use that)."""
    state_dir = str(state_dir)
    if not any(a == "--no-iam-users" or a.startswith("--iam-users") for a in args):
        args = ("--no-iam-users", *args)
    try:
        result = subprocess.run([SSM_LAB, "--state-dir", state_dir, "up", *args], capture_output=True, text=True,
                                env=clean_environ(), timeout=up_timeout, check=False)
        if result.returncode != 0:
            logs = ""
            for name in ("controlplane.log", "agents.log"):
                with contextlib.suppress(OSError), open(os.path.join(state_dir, name), encoding="utf-8") as handle:
                    logs += f"\n--- {name} ---\n" + handle.read()[-3000:]
            raise RuntimeError(f"ssm-lab up {' '.join(args)} failed ({result.returncode}): {result.stderr}{logs}")
        env = parse_exports(result.stdout)
        if not EXPORTED <= set(env):
            raise RuntimeError(f"ssm-lab up printed {result.stdout!r}, not the export lines {sorted(EXPORTED)}")
        yield lab_class(state_dir, env)
    finally:
        subprocess.run([SSM_LAB, "--state-dir", state_dir, "down"], capture_output=True, env=clean_environ(),
                       timeout=60, check=False)


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        digest, size = hashlib.sha256(), 0
        while True:
            data = self.request.recv(65536)
            if not data:
                break
            digest.update(data)
            size += len(data)
            self.request.sendall(data)
        if size:
            self.server.received.append(digest.hexdigest())


class EchoServer(socketserver.ThreadingTCPServer):
    """A TCP echo service on 127.0.0.1 at a free port, served from a thread while open (``with EchoServer() as echo``).

    It stands for a service behind a node in port-forwarding tests (the lab's nodes share the machine's network).
    ``received`` holds the SHA-256 of what each connection sent, recorded before the echo's end reaches the client.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.received: list = []
        self.port = self.server_address[1]

    def saw(self, digest: str, timeout: float = 10.0) -> bool:
        """Whether a connection that sent bytes with this SHA-256 has ended (waiting up to ``timeout``: a forward
        closes the destination connection a moment after its client's)."""
        deadline = time.monotonic() + timeout
        while digest not in self.received and time.monotonic() < deadline:
            time.sleep(0.05)
        return digest in self.received

    def __enter__(self) -> "EchoServer":
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()


def run_plugin(argv: list, text: str, env: dict, timeout: float = 60) -> tuple:
    """Run a session-manager-plugin, type ``text`` into it and keep its stdin open until it exits (AWS's plugin
    ends at once when its stdin ends, before the session's output has come); return (exit code, output)."""
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env=env)
    output = bytearray()
    reader = threading.Thread(target=lambda: output.extend(process.stdout.read()), daemon=True)
    reader.start()
    try:
        process.stdin.write(text.encode())
        process.stdin.flush()
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    finally:
        with contextlib.suppress(OSError):
            process.stdin.close()
        reader.join(5)
    return process.returncode, output.decode(errors="replace")


def echo_through(port: int, payload: bytes, timeout: float = 15) -> bytes:
    """Send ``payload`` to 127.0.0.1:``port`` (from a thread) and return as many bytes as come back before the
    other side closes, then close. Not a half-close: a port forward's multiplexer (smux) has none, so a client that
    stops sending ends its stream both ways, with AWS's plugin as with the lab's."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        sender = threading.Thread(target=connection.sendall, args=(payload,), daemon=True)
        sender.start()
        received = bytearray()
        while len(received) < len(payload):
            chunk = connection.recv(65536)
            if not chunk:
                break
            received.extend(chunk)
        sender.join(timeout)
    return bytes(received)


def accepts(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
