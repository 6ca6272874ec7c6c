# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Port forwarding tunnels for ssm_tunnel, held detached by a small supervisor.

The supervisor is a double-forked copy of the module process (so it keeps the module's boto3 client, and no
credentials go on any command line). It carries the tunnel by one of two transports: ``native``, the collection's
own port forwarder (plugin_utils/_port_forward.py, over the data channel client; loaded by path from the directory
the action plugin names, since a module cannot import plugin_utils) run in the supervisor itself, which calls
ResumeSession with the module's client when the data channel drops; or ``plugin``, the session-manager-plugin run as
its child. It records the tunnel in a JSON file, and ends the tunnel and the session when one of these happens: it is
told to (SIGTERM, from state=absent); the Ansible controller process it watches exits; the tunnel's maximum lifetime
passes; the plugin exits, or the native session ends, by itself.

Internal to bastionless.ssm: no compatibility promise. Linux and macOS; process checks read /proc on Linux and
fall back to signals elsewhere.
"""

import contextlib
import datetime
import fcntl
import importlib.util
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any
from typing import Callable
from typing import Dict
from typing import List
from typing import Optional

from ansible_collections.bastionless.ssm.plugins.module_utils import _plugin_path
from ansible_collections.bastionless.ssm.plugins.module_utils._aws_bounds import close_fds_except

DOCUMENT_TO_NODE = "AWS-StartPortForwardingSession"
DOCUMENT_TO_REMOTE_HOST = "AWS-StartPortForwardingSessionToRemoteHost"
LOCAL_ADDRESS = "127.0.0.1"
RECORD_PREFIX = "tunnel-"
POLL_SECONDS = 0.5
PLUGIN_STOP_SECONDS = 5.0
REPORT_SECONDS = 30.0
LOG_DAYS = 7
PR_SET_PDEATHSIG = 1
TRANSPORTS = ("native", "plugin")
# The files of the native transport, in plugin_utils, and the names they import each other by outside Ansible.
NATIVE_FILES = (("bastionless_data_channel", "_data_channel.py"),
                ("bastionless_data_channel_client", "_data_channel_client.py"),
                ("bastionless_port_forward", "_port_forward.py"))
# What identifies a tunnel's destination; two tunnels with the same values are the same tunnel.
IDENTITY = ("target", "document_name", "remote_host", "remote_port")


try:  # loaded before any fork: the supervisor must import nothing from the module's payload, which is deleted
    import ctypes

    _LIBC = ctypes.CDLL(None, use_errno=True)
except (ImportError, OSError):
    _LIBC = None


class TunnelError(Exception):
    pass


# --- pure helpers ----------------------------------------------------------------------------------------


def document_for(remote_host: Optional[str]) -> str:
    """Port forwarding to the node itself, or through it to a host behind it."""
    return DOCUMENT_TO_REMOTE_HOST if remote_host else DOCUMENT_TO_NODE


def session_parameters(remote_port: int, local_port: int, remote_host: Optional[str] = None) -> Dict[str, List[str]]:
    """StartSession ``Parameters`` of the port forwarding documents (every value a list of one string)."""
    parameters = {"portNumber": [str(remote_port)], "localPortNumber": [str(local_port)]}
    if remote_host:
        parameters["host"] = [remote_host]
    return parameters


def plugin_argv(plugin: str, response: Dict[str, Any], region: str, profile: Optional[str], target: str,
                document: str, parameters: Dict[str, List[str]], endpoint: str) -> List[str]:
    """The session-manager-plugin command line, as the AWS CLI and amazon.aws.aws_ssm build it.

    Only the session's own ID, stream URL and token go in (the token is valid for this session alone); never
    the caller's AWS credentials."""
    session = {k: response[k] for k in ("SessionId", "TokenValue", "StreamUrl")}
    request = {"Target": target, "DocumentName": document, "Parameters": parameters}
    return [plugin, json.dumps(session), region, "StartSession", profile or "", json.dumps(request), endpoint]


def wanted_tunnel(params: Dict[str, Any]) -> Dict[str, Any]:
    """The identity of the tunnel the parameters ask for."""
    return {
        "name": params.get("name") or "",
        "target": params["target"],
        "document_name": document_for(params.get("remote_host")),
        "remote_host": params.get("remote_host") or "",
        "remote_port": params["remote_port"],
        "local_port": params.get("local_port") or 0,
    }


def same_tunnel(record: Dict[str, Any], wanted: Dict[str, Any]) -> bool:
    """Whether a recorded tunnel is the one wanted: same destination, and the same local port and name when
    those are asked for."""
    if any(record.get(key) != wanted.get(key) for key in IDENTITY):
        return False
    if wanted.get("local_port") and record.get("local_port") != wanted["local_port"]:
        return False
    return not wanted.get("name") or record.get("name") == wanted["name"]


def selects(record: Dict[str, Any], selector: Dict[str, Any]) -> bool:
    """Whether ``state=absent``'s selector (any of name, local_port, session_id, target, remote_host,
    remote_port; all given must match) picks the record."""
    given = {k: v for k, v in selector.items() if v not in (None, "", 0)}
    return bool(given) and all(record.get(k) == v for k, v in given.items())


def iso_now(offset: float = 0.0) -> str:
    return datetime.datetime.fromtimestamp(time.time() + offset, datetime.timezone.utc).isoformat()


def public_record(record: Dict[str, Any]) -> Dict[str, Any]:
    """What the module returns of a record."""
    keys = ("name", "target", "document_name", "remote_host", "remote_port", "local_port", "local_address",
            "session_id", "pid", "plugin_pid", "controller_pid", "started", "expires", "keep_after_play",
            "log", "reason", "transport")
    return {k: record.get(k) for k in keys}


# --- ports and processes ---------------------------------------------------------------------------------


def free_port(host: str = LOCAL_ADDRESS) -> int:
    """A TCP port nothing listens on now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def port_accepts(port: int, host: str = LOCAL_ADDRESS, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections on the port (the connection is closed at once)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def process_start(pid: Optional[int]) -> Optional[int]:
    """The start time of a live process (clock ticks since boot, from /proc), so a reused PID is not taken
    for it; 0 where /proc is missing but the process exists; None when it does not exist or is a zombie."""
    if not pid or pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            stat = handle.read()
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def alive(pid: Optional[int], start: Optional[int]) -> bool:
    """Whether the process that had this PID and start time still runs."""
    now = process_start(pid)
    return now is not None and (not start or not now or now == start)


def find_plugin(configured: Optional[str]) -> str:
    """The session-manager-plugin to run (_plugin_path.find: the one configured, else /usr/local/bin's, else one on
    PATH); TunnelError naming the fix when there is none."""
    found, _looked = _plugin_path.find(configured)
    if found:
        return found
    if configured:
        raise TunnelError(
            f"plugin {configured!r} is not an executable file; install the session-manager-plugin or fix the "
            "plugin option (or AWS_SESSION_MANAGER_PLUGIN)."
        )
    raise TunnelError(
        f"SessionManagerPlugin is not found: install the session-manager-plugin on the controller "
        f"({_plugin_path.INSTALL_URL}) or set the plugin option (or AWS_SESSION_MANAGER_PLUGIN) to its path."
    )


def choose_transport(option: Optional[str], native_problem: str, plugin_found: Optional[str]) -> str:
    """The transport of a new tunnel: the transport option when set, else ``native`` where it can run (native_problem
    is "") and ``plugin`` where it cannot. TunnelError naming the fix when the chosen transport cannot run (the plugin
    missing is find_plugin's error, raised by the caller)."""
    if option not in (None, "") and option not in TRANSPORTS:
        raise TunnelError(f"transport must be one of {', '.join(TRANSPORTS)}, not {option!r}.")
    if option == "native":
        if native_problem:
            raise TunnelError(f"transport native cannot run: {native_problem}; or set transport: plugin to use the "
                              "session-manager-plugin.")
        return "native"
    if option == "plugin" or native_problem and plugin_found:
        return "plugin"
    if native_problem:
        raise TunnelError(f"ssm_tunnel cannot reach Session Manager: {native_problem}, and no session-manager-plugin "
                          f"was found. Install websockets (transport native, no binary needed), or the "
                          f"session-manager-plugin ({_plugin_path.INSTALL_URL}) and set transport: plugin.")
    return "native"


def plugin_if_found(configured: Optional[str]) -> Optional[str]:
    """The session-manager-plugin find_plugin would run, or None (no error: for choosing a transport)."""
    return _plugin_path.find(configured)[0]


def load_native(directory: Optional[str]):
    """The native port forwarder module (plugin_utils/_port_forward.py and the client it uses), loaded from the
    directory the action plugin passes; (module, "") or (None, why it cannot run)."""
    if not directory or not os.path.isfile(os.path.join(directory, "_port_forward.py")):
        return None, ("the native port forwarder was not found (ssm_tunnel runs it through its action plugin: run the "
                      "module as bastionless.ssm.ssm_tunnel, not by path)")
    if importlib.util.find_spec("websockets") is None:
        return None, (f"the Python package websockets is not installed for the module's Python ({sys.executable}): "
                      "pip install websockets (the collection's requirements.txt lists it)")
    module = None
    for name, filename in NATIVE_FILES:
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, os.path.join(directory, filename))
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as error:  # pylint: disable=broad-exception-caught
                del sys.modules[name]
                return None, f"the native port forwarder does not load ({filename}): {error}"
    return module, ""


# --- records ---------------------------------------------------------------------------------------------


class Records:
    """The tunnels of this user, one JSON file each in a private directory."""

    def __init__(self, directory: str) -> None:
        self.directory = os.path.abspath(os.path.expanduser(directory))

    def ensure(self) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)

    @contextlib.contextmanager
    def lock(self):
        """One ssm_tunnel at a time decides and starts (parallel tasks for many hosts would race)."""
        self.ensure()
        with open(os.path.join(self.directory, ".lock"), "a", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def path(self, local_port: int, suffix: str = ".json") -> str:
        return os.path.join(self.directory, f"{RECORD_PREFIX}{local_port}{suffix}")

    def save(self, record: Dict[str, Any]) -> None:
        path = self.path(record["local_port"])
        temporary = path + ".new"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle)
        os.replace(temporary, path)

    def remove(self, record: Dict[str, Any], only_if_pid: Optional[int] = None) -> None:
        path = self.path(record["local_port"])
        if only_if_pid is not None:
            current = self._read(path)
            if current is None or current.get("pid") != only_if_pid:
                return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    @staticmethod
    def _read(path: str) -> Optional[Dict[str, Any]]:
        try:
            with open(path, encoding="utf-8") as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return None

    def prune_logs(self, keep_ports, max_age: float = LOG_DAYS * 86400) -> None:
        """Delete the logs of closed tunnels older than ``max_age`` seconds (each log holds one tunnel's life)."""
        cutoff = time.time() - max_age
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return
        for name in names:
            if not (name.startswith(RECORD_PREFIX) and name.endswith(".log")):
                continue
            port = name[len(RECORD_PREFIX):-len(".log")]
            path = os.path.join(self.directory, name)
            with contextlib.suppress(OSError):
                if port.isdigit() and int(port) not in keep_ports and os.stat(path).st_mtime < cutoff:
                    os.unlink(path)

    def all(self) -> List[Dict[str, Any]]:
        """Every record, live or not (``live`` says), by local port."""
        found = []
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return found
        for name in names:
            if name.startswith(RECORD_PREFIX) and name.endswith(".json"):
                record = self._read(os.path.join(self.directory, name))
                if record and "local_port" in record:
                    record["live"] = alive(record.get("pid"), record.get("pid_start"))
                    found.append(record)
        return found


# --- the supervisor --------------------------------------------------------------------------------------


def _log(handle, message: str) -> None:
    handle.write(f"{iso_now()} ssm_tunnel: {message}\n")
    handle.flush()


def _set_parent_death_signal() -> None:
    """In the plugin's process: get SIGTERM if the supervisor dies without stopping it (Linux)."""
    if _LIBC is not None:
        with contextlib.suppress(AttributeError, OSError):
            _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop_plugin(plugin: subprocess.Popen) -> None:
    if plugin.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        plugin.terminate()
    try:
        plugin.wait(PLUGIN_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            plugin.kill()
        plugin.wait()


class PluginCarrier:
    """transport plugin: the session-manager-plugin as the supervisor's child, its output in the tunnel's log."""

    def __init__(self, argv: List[str], log) -> None:
        self.process = subprocess.Popen(  # pylint: disable=consider-using-with
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, close_fds=True,
            preexec_fn=_set_parent_death_signal,
        )
        self.pid = self.process.pid

    def ended(self) -> Optional[str]:
        code = self.process.poll()
        return None if code is None else f"the session-manager-plugin exited with code {code}"

    def stop(self) -> None:
        _stop_plugin(self.process)


class NativeCarrier:
    """transport native: the collection's port forwarder, in the supervisor's own process (threads)."""

    pid = None

    def __init__(self, forward, response: Dict[str, Any], local_port: int, resume, log) -> None:
        self.forwarder = forward.PortForwarder(response["SessionId"], response["TokenValue"], response["StreamUrl"],
                                               local_port, resume=resume, log=lambda message: _log(log, message))
        self.error = forward.PortForwardError
        self.failed = ""
        self.stopped = False

    def open(self) -> None:
        """Open the data channel in a thread of its own: the supervisor goes on watching, so that a stop (the module
        gave up waiting, or state=absent) ends a tunnel whose handshake the service never answers at once."""
        threading.Thread(target=self._open, name="tunnel-open", daemon=True).start()

    def _open(self) -> None:
        try:
            self.forwarder.start()
        except self.error as error:
            if not self.stopped:  # a stop during the handshake ends it: no failure of its own
                self.failed = str(error)

    def ended(self) -> Optional[str]:
        if self.failed:
            return f"the native session did not start: {self.failed}"
        return self.forwarder.why() if self.forwarder.closed.is_set() else None

    def stop(self) -> None:
        self.stopped = True
        self.forwarder.stop()


def plugin_launcher(argv: List[str]) -> Callable:
    """What starts a plugin tunnel in the supervisor (see start)."""
    return lambda log: PluginCarrier(argv, log)


def native_launcher(forward, response: Dict[str, Any], local_port: int, resume: Callable[[], str]) -> Callable:
    """What starts a native tunnel in the supervisor (see start). ``response`` is StartSession's (its token stays in
    memory, never in the record); ``resume`` returns ResumeSession's new token."""
    return lambda log: NativeCarrier(forward, response, local_port, resume, log)


def _supervise(record: Dict[str, Any], launch: Callable, records: Records, report: int,
               terminate: Callable[[str], None]) -> None:
    """The supervisor's life; runs in the detached grandchild and never returns."""
    stop = {"why": ""}

    def on_signal(signum, _frame) -> None:
        stop["why"] = stop["why"] or f"stopped by signal {signum} (state=absent or a user)"

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    log = open(record["log"], "w", encoding="utf-8")  # pylint: disable=consider-using-with
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    close_fds_except({report, log.fileno()})  # nothing of the module's (its result pipe above all) stays open
    os.chdir("/")
    _log(log, f"starting {record['document_name']} to {record['target']} "
              f"(session {record['session_id']}, transport {record.get('transport') or 'plugin'}) on "
              f"{LOCAL_ADDRESS}:{record['local_port']}")
    carrier = launch(log)
    record.update(pid=os.getpid(), pid_start=process_start(os.getpid()), plugin_pid=carrier.pid,
                  plugin_start=process_start(carrier.pid))
    records.save(record)
    os.write(report, (json.dumps({"pid": record["pid"], "plugin_pid": carrier.pid}) + "\n").encode())
    os.close(report)
    if hasattr(carrier, "open"):
        carrier.open()  # after the report: the module waits for the local port (wait_ready) and reads the log

    deadline = None
    if record.get("max_lifetime"):
        deadline = time.monotonic() + record["max_lifetime"]
    watched = record.get("controller_pid") if not record.get("keep_after_play") else None
    while not stop["why"]:
        ended = carrier.ended()
        if ended:
            stop["why"] = ended
        elif watched and not alive(watched, record.get("controller_start")):
            stop["why"] = f"the Ansible process that opened the tunnel (pid {watched}) has exited"
        elif deadline is not None and time.monotonic() >= deadline:
            stop["why"] = f"max_lifetime ({record['max_lifetime']} s) has passed"
        else:
            time.sleep(POLL_SECONDS)
    _log(log, f"closing: {stop['why']}")
    carrier.stop()
    try:
        terminate(record["session_id"])
        _log(log, f"session {record['session_id']} terminated")
    except Exception as error:  # pylint: disable=broad-exception-caught
        _log(log, f"could not terminate session {record['session_id']}: {error}")
    records.remove(record, only_if_pid=record["pid"])
    _log(log, "closed")
    log.close()


def start(record: Dict[str, Any], launch: Callable, records: Records, terminate: Callable[[str], None]) -> Dict[str, Any]:
    """Start the supervisor (and through it the tunnel: plugin_launcher or native_launcher) detached from this
    process; return the record with the supervisor's and the plugin's PIDs (None for native). ``terminate`` ends
    the session; it runs in the supervisor."""
    records.ensure()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the first child: detach, fork the supervisor, leave
        code = 1
        try:
            os.close(read_end)
            os.setsid()
            if os.fork() == 0:
                code = 0
                try:
                    _supervise(record, launch, records, write_end, terminate)
                except BaseException as error:  # pylint: disable=broad-exception-caught
                    code = 1
                    with contextlib.suppress(OSError):
                        os.write(write_end, (json.dumps({"error": f"{type(error).__name__}: {error}"}) + "\n").encode())
            else:
                code = 0
        finally:
            os._exit(code)  # never back into the module (no atexit, no buffers flushed twice)
    os.close(write_end)
    os.waitpid(child, 0)
    answer = b""
    deadline = time.monotonic() + REPORT_SECONDS
    while time.monotonic() < deadline:
        ready, _w, _x = select.select([read_end], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            break
        chunk = os.read(read_end, 4096)
        if not chunk:
            break
        answer += chunk
        if answer.endswith(b"\n"):
            break
    os.close(read_end)
    try:
        reported = json.loads(answer.decode() or "{}")
    except ValueError:
        reported = {}
    if "pid" not in reported:
        raise TunnelError(f"the tunnel's supervisor did not start: {reported.get('error') or 'no answer'}")
    record.update(pid=reported["pid"], plugin_pid=reported["plugin_pid"], pid_start=process_start(reported["pid"]))
    return record


def wait_ready(record: Dict[str, Any], timeout: float, wait_timeout: Optional[float] = None) -> Optional[str]:
    """Wait up to ``timeout`` seconds (what is left of ``wait_timeout``, the option named in the message) until the
    local port accepts connections; None when it does, else why not."""
    deadline = time.monotonic() + timeout
    while True:
        if port_accepts(record["local_port"], timeout=max(min(deadline - time.monotonic(), 1.0), 0.05)):
            return None
        if not alive(record["pid"], record.get("pid_start")):
            return "the tunnel closed before its local port accepted connections: " + log_tail(record["log"])
        if time.monotonic() >= deadline:
            return (f"the local port {record['local_port']} did not accept connections within "
                    f"{timeout if wait_timeout is None else wait_timeout:g} s (wait_timeout): the node or the service "
                    "did not open the session's data channel in time. Raise wait_timeout if they are only slow; the "
                    f"tunnel's log: {log_tail(record['log'])}")
        time.sleep(min(0.2, max(deadline - time.monotonic(), 0.0)))


def log_tail(path: str, lines: int = 8) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = [line.strip() for line in handle.read().splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


def stop(record: Dict[str, Any], timeout: float = 15.0) -> bool:
    """Stop a tunnel's supervisor (which stops the plugin and ends the session); whether it is gone."""
    pid, start_time = record.get("pid"), record.get("pid_start")
    if alive(pid, start_time):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid, start_time):
        if time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            return False
        time.sleep(0.1)
    if record.get("plugin_start") and alive(record.get("plugin_pid"), record["plugin_start"]):
        # The supervisor died without stopping the plugin (it was killed): the plugin is an orphan now.
        with contextlib.suppress(ProcessLookupError):
            os.kill(record["plugin_pid"], signal.SIGTERM)
    return True
