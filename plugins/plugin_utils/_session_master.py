# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The per-host master of the bastionless.ssm.session connection (run as a script).

The connection starts it detached (its own session, stdio on pipes it owns) with ``sys.executable`` and this
file, and writes its parameters as one JSON document to its stdin: never on a command line. It then

- holds the session the connection started (StartSession), by one of two transports:
  ``native``: the session's data channel itself, with _data_channel_client.DataChannelClient (the ``websockets``
  package; the only import beyond the standard library, loaded from beside this file), which acknowledges, resends
  and resumes; the node's shell output arrives through an in-process pipe, so the loop below is the same for both;
  ``plugin``: session-manager-plugin on a pty, as amazon.aws.aws_ssm does (the plugin's own command line is the
  real plugin's: response, region, profile, target), after its ``Starting session with SessionId`` line;
- sends each set-up step and waits for its ready line, and notes which reader the node has (the resident Python
  or sh, _session_protocol.setup_steps);
- listens on a Unix socket (mode 0600 in a 0700 directory), reports ``{"ok": true}`` on stdout and closes it;
- serves one client at a time: a JSON header line, then length-prefixed frames of input that it writes to the
  session, while it relays the session's output back until the line that starts with the header's ``end``;
- ends the session (``exit`` to the shell) and exits after ``idle`` seconds without a client, on an ``exit``
  request, when the session ends (plugin gone), or, killing the plugin, when a client goes away or a command
  outlives its deadline in the middle of a reply (the shell's state is then unknown, so it is not reused).

It keeps no log and writes nothing to disk but its socket: what passes through it is never stored.
"""

import importlib.util
import json
import os
import pty
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import tty

STARTED = b"Starting session with SessionId"
HIGH_WATER = 1 << 20  # input bytes buffered for the plugin before the client is read again
SHELL_TYPES = ("Standard_Stream", "InteractiveCommands", "NonInteractiveCommands")
INPUT_WINDOW = 1024  # native: unacknowledged input messages before the master stops sending: 1 MiB in flight, a
# tenth of what AWS's plugin keeps (the client's own limit is higher and blocks; the master must stay free to meet its
# deadlines). An acknowledgement that opens the window again wakes the master's loop.
WRITE_CHUNK = 65536  # bytes handed to the session at a time


class SessionGone(Exception):
    """The session ended: the plugin exited or its output closed, or the data channel closed."""


def load_channel_client():
    """_data_channel_client, loaded from beside this file under the names it imports its codec by (this script runs
    outside Ansible, where the collection's package path is not importable)."""
    here = os.path.dirname(os.path.abspath(__file__))
    module = None
    for name, file in (("bastionless_data_channel", "_data_channel.py"),
                       ("bastionless_data_channel_client", "_data_channel_client.py")):
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, os.path.join(here, file))
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
    return module


def resume_with(config: dict):
    """A callable doing ResumeSession for the native transport (the new token, or None when the session is over),
    signed as the connection's StartSession was: its region, endpoint, profile or keys (config["resume"])."""
    options = config.get("resume") or {}

    def resume():
        import boto3  # pylint: disable=import-outside-toplevel  # only when a WebSocket breaks

        args = {"region_name": options.get("region") or None}
        for arg in ("profile_name", "aws_access_key_id", "aws_secret_access_key", "aws_session_token"):
            if options.get(arg):
                args[arg] = options[arg]
        from botocore.config import Config  # pylint: disable=import-outside-toplevel

        client = boto3.session.Session(**args).client("ssm", endpoint_url=options.get("endpoint") or None,
                                                      config=Config(retries=options["retries"])
                                                      if options.get("retries") else None)
        return client.resume_session(SessionId=config["session_id"]).get("TokenValue")

    return resume


class Master:
    def __init__(self, config: dict) -> None:
        self.config = config
        self.path = config["socket"]
        self.idle = float(config.get("idle", 60))
        self.native = config.get("transport") == "native"
        self.proc = None
        self.pty_fd = -1  # what select() watches for the session's output: the pty, or (native) the wake-up pipe
        self.channel = None  # native: the DataChannelClient
        self._output = bytearray()  # native: what the channel delivered and the loop has not read yet
        self._output_lock = threading.Lock()
        self._wake = -1  # native: the pipe's write end
        self._input_blocked = False  # native: the loop waits for acknowledgements before it sends more input
        self._err = []  # the fds of the plugin's stderr (none when native)
        self.stderr_tail = b""
        self.listener = None
        self.inode = None
        self.last_activity = time.monotonic()
        self.reader = "sh"  # what reads commands on the node: "python" (_session_helper.py) or "sh"
        self.cached = set()  # digests of the wrapper pieces the node's helper has been sent (_session_protocol.segments)
        self.memo = {}  # command -> [end of reply, reply]: answers that do not change within the session (echo ~)
        self.deferred = bytearray()  # requests written to the session before the next one (a task's cleanup)
        self.last_reply = b""

    # --- the session ----------------------------------------------------------------------------------
    def start(self) -> None:
        deadline = time.monotonic() + float(self.config.get("start_timeout", 60))
        seen = self._start_native(deadline) if self.native else self._start_plugin(deadline)
        before = b""
        for send, ready in self.config["steps"]:  # _session_protocol.setup_steps
            self._write_all(send.encode(), deadline)
            before, seen = self._wait_for(ready.encode() + b"\n", deadline, seen)
        self.reader = "python" if before.endswith(b"P") else "sh"  # the helper prints a P before its ready line

    def _start_native(self, deadline: float) -> bytes:
        """Open the data channel of the StartSession response; the output is read through a pipe."""
        module = load_channel_client()
        self.pty_fd, self._wake = os.pipe()
        for fd in (self.pty_fd, self._wake):
            os.set_blocking(fd, False)
        response = self.config["response"]
        # Input goes in messages of at most 1,024 bytes (the client's default), the size AWS's plugin sends and the
        # service is known to take. Larger messages halve the lab's time for a 5 MiB copy, but are not verified
        # against AWS.
        try:
            self.channel = module.DataChannelClient(response["SessionId"], response["TokenValue"],
                                                    response["StreamUrl"], on_data=self._on_data,
                                                    resume=resume_with(self.config),
                                                    on_acknowledged=self._on_acknowledged)
            self.channel.open(timeout=max(1.0, deadline - time.monotonic()))
        except module.DataChannelClosed as e:
            raise SessionGone(f"the data channel did not open: {e}") from None
        threading.Thread(target=self._wake_on_close, name="wake-on-close", daemon=True).start()
        if self.channel.session_type not in SHELL_TYPES:
            raise SessionGone(f"the session document starts a {self.channel.session_type or 'unknown'} session, "
                              "not a shell (set ssm_document to a Standard_Stream document)")
        return b""

    def _on_data(self, payload: bytes) -> None:
        """The channel's reader thread: keep the output and wake the loop (never blocks the reader)."""
        with self._output_lock:
            self._output += payload
        self._poke()

    def _on_acknowledged(self, pending: int) -> None:
        """The channel's reader thread: input was acknowledged; wake the loop when that reopens a full window."""
        if self._input_blocked and pending <= INPUT_WINDOW // 2:
            self._input_blocked = False
            self._poke()

    def _wake_on_close(self) -> None:
        self.channel.closed.wait()
        self._poke()

    def _poke(self) -> None:
        try:
            os.write(self._wake, b"x")
        except OSError:  # full (the loop will read anyway) or closed
            pass

    def _start_plugin(self, deadline: float) -> bytes:
        master_fd, slave_fd = pty.openpty()
        tty.setraw(slave_fd)  # no local line discipline on the plugin's output: what the node sends, unchanged
        self.proc = subprocess.Popen(self.config["argv"], stdin=subprocess.PIPE, stdout=slave_fd,
                                     stderr=subprocess.PIPE, close_fds=True, bufsize=0)
        os.close(slave_fd)
        self.pty_fd = master_fd
        os.set_blocking(master_fd, False)
        os.set_blocking(self.proc.stdin.fileno(), False)
        os.set_blocking(self.proc.stderr.fileno(), False)
        self._err = [self.proc.stderr]
        return self._wait_for(STARTED, deadline, b"")[1]

    def _ended(self) -> bool:
        """Whether the session is over (the plugin exited; the data channel closed)."""
        if self.native:
            return self.channel.closed.is_set()
        return self.proc.poll() is not None

    def _why_ended(self) -> str:
        if self.native:
            return "the data channel closed: " + (self.channel.close_output or self.channel.lost or "no reason given")
        return f"session-manager-plugin exited ({self.proc.returncode})"

    def _can_write(self) -> bool:
        """native: whether the channel takes more input now (the plugin's stdin is select()ed instead). When it
        does not, the acknowledgement that halves the window wakes the loop (_on_acknowledged)."""
        self._input_blocked = True  # first: an acknowledgement that comes meanwhile wakes the loop, at worst for nothing
        if self.channel.pending < INPUT_WINDOW and not self.channel.closed.is_set():
            self._input_blocked = False
            return True
        return False

    def _write_some(self, data) -> int:
        """Hand up to WRITE_CHUNK bytes of data to the session; how many it took. OSError when it is gone."""
        if self.native:
            try:
                piece = bytes(data[:WRITE_CHUNK])
                self.channel.send(piece)
                return len(piece)
            except Exception as e:  # DataChannelClosed: the channel ended under the write
                raise OSError(str(e)) from None
        return os.write(self.proc.stdin.fileno(), data[:WRITE_CHUNK])

    def _wait_for(self, what: bytes, deadline: float, seen: bytes) -> tuple:
        """Read the session until what appears; return (what came before it, what follows it)."""
        buffer = seen
        while what not in buffer.replace(b"\r", b""):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SessionGone(f"timed out waiting for {what.decode().strip()!r}; the session said: "
                                  + _printable(buffer + self.stderr_tail))
            readable, _w, _x = select.select([self.pty_fd] + self._err, [], [], min(remaining, 1.0))
            if self._err and self._err[0] in readable:
                self._read_stderr()
            if self.pty_fd in readable:
                data = self._read_pty()
                if data is None:
                    raise SessionGone("the session ended before it was ready: " + _printable(buffer + self.stderr_tail)
                                      + (f" ({self._why_ended()})" if self.native else ""))
                buffer += data
            elif self._ended() and not readable:
                raise SessionGone(f"{self._why_ended()}: " + _printable(buffer + self.stderr_tail))
        flat = buffer.replace(b"\r", b"")
        at = flat.index(what)
        return flat[:at], flat[at + len(what):]

    def _write_all(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            if time.monotonic() > deadline:
                raise SessionGone("the session does not take input")
            if self.native:
                writable = self._can_write()
                if not writable:
                    time.sleep(0.02)  # the service has not acknowledged enough yet
            else:
                writable = bool(select.select([], [self.proc.stdin], [], 1.0)[1])
            if writable:
                try:
                    view = view[self._write_some(view):]
                except BlockingIOError:
                    continue
                except OSError as e:
                    raise SessionGone(f"the session does not take input: {e}") from e

    def _read_pty(self):
        if self.native:
            return self._read_channel()
        try:
            data = os.read(self.pty_fd, 65536)
        except BlockingIOError:
            return b""
        except OSError:  # EIO: the plugin closed its side
            return None
        return data if data else None

    def _read_channel(self):
        """native: what the channel delivered since the last read (b"" for nothing); None once it closed and
        everything it delivered has been read."""
        try:
            while os.read(self.pty_fd, 65536):
                pass
        except (BlockingIOError, OSError):
            pass
        with self._output_lock:
            data, self._output = bytes(self._output), bytearray()
        if not data and self.channel.closed.is_set():
            return None
        return data

    def _read_stderr(self) -> None:
        try:
            data = os.read(self.proc.stderr.fileno(), 65536)
        except (BlockingIOError, OSError):
            return
        self.stderr_tail = (self.stderr_tail + data)[-4096:]

    # --- the socket -----------------------------------------------------------------------------------
    def listen(self) -> None:
        old = os.umask(0o077)
        try:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.listener.bind(self.path)
            os.chmod(self.path, 0o600)
            self.listener.listen(16)
            self.inode = os.stat(self.path).st_ino
        finally:
            os.umask(old)

    def unlisten(self) -> None:
        if self.listener is None:
            return
        try:
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except OSError:
            pass
        self.listener.close()
        self.listener = None

    # --- serving ---------------------------------------------------------------------------------------
    def serve(self) -> str:
        """Serve clients until the session ends or the master goes idle; return why."""
        while True:
            remaining = self.idle - (time.monotonic() - self.last_activity)
            if remaining <= 0:
                return "idle"
            readable, _w, _x = select.select([self.listener, self.pty_fd] + self._err, [], [], min(remaining, 5))
            if self._err and self._err[0] in readable:
                self._read_stderr()
            if self.pty_fd in readable and self._read_pty() is None:
                return "session ended"
            if self._ended():
                return "session ended"
            if self.listener in readable:
                try:
                    client, _addr = self.listener.accept()
                except OSError:
                    continue
                try:
                    outcome = self.handle(client)
                finally:
                    client.close()
                    self.last_activity = time.monotonic()
                if outcome:
                    return outcome

    def handle(self, client: socket.socket):
        """One client; returns a reason to stop, or None to go on serving."""
        client.settimeout(10)
        try:
            header = json.loads(_read_line(client))
        except (OSError, ValueError):
            return None
        op = header.get("op")
        if op == "info":
            _send(client, {"ok": True, "session": self.config.get("session_id"), "pid": os.getpid(),
                           "reader": self.reader})
            return None
        if op == "exit":
            _send(client, {"ok": True})
            return "asked to exit"
        if op == "defer":  # a request whose answer nobody waits for: it goes before the next one
            self.deferred += header.get("data", "").encode()
            _send(client, {"ok": True, "session": self.config.get("session_id"), "reader": self.reader})
            return None
        if op != "run":
            _send(client, {"ok": False, "error": f"unknown request {op!r}"})
            return None
        memo = header.get("memo")
        answer = {"ok": True, "session": self.config.get("session_id"), "reader": self.reader}
        if memo and memo in self.memo and not self.deferred:
            end, reply = self.memo[memo]
            _send(client, {**answer, "memo": {"end": end, "reply": reply}})
            return None
        cache = [digest for digest in header.get("cache") or [] if isinstance(digest, str)]
        _send(client, {**answer, "cached": [digest for digest in cache if digest in self.cached]})
        outcome = self.run(client, header["end"].encode(), float(header.get("timeout", 60)) + 5,
                           str(header.get("lost") or "").encode())
        if outcome is None:
            self.cached.update(cache)  # the helper has them now (or answered a miss, and the client sends them)
            end = header["end"].encode()
            if memo and end + b"0\n" in self.last_reply.replace(b"\r", b""):
                at = self.last_reply.rfind(end.split(b":")[0] + b":O")
                self.memo[memo] = [header["end"], self.last_reply[at:].decode("ascii", "replace")]
        return outcome

    def _lost(self, client: socket.socket, pending: bytes, lost: bytes) -> str:
        """The session ended in the middle of a command: hand the client what it has not had yet and, when it asked
        for it (the header's ``lost``), a line that says why (a failed ResumeSession's error, say)."""
        if lost:
            try:
                client.settimeout(5)
                client.sendall(pending + b"\n" + lost + " ".join(self._why_ended().split()).encode() + b"\n")
            except OSError:
                pass
        return "session ended"

    def run(self, client: socket.socket, end: bytes, timeout: float, lost: bytes = b""):
        client.setblocking(False)
        stdin = None if self.native else self.proc.stdin
        deadline = time.monotonic() + timeout
        inbuf = b""  # framed input from the client, not yet parsed
        to_plugin = bytearray(self.deferred)  # a task's cleanup first, then this request
        self.deferred.clear()
        input_done = False
        reply = bytearray()
        scan_from = sent = 0
        done_at = None
        to_client = bytearray()
        while True:
            # Done when the reply has reached the client and the client has ended its input (the frame of size 0
            # that follows the command's last frame). Closing before that end has arrived would break the pipe of
            # a client that was preempted between its last frame and that end, and fail a command that succeeded.
            if done_at is not None and not to_client and input_done:
                self.last_reply = bytes(reply[:done_at])
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "a command outlived its deadline"
            readers = [self.pty_fd] + self._err
            if not input_done and len(to_plugin) < HIGH_WATER:
                readers.append(client)
            session_takes = bool(to_plugin) and self.native and self._can_write()
            writers = ([stdin] if to_plugin and not self.native else []) + ([client] if to_client else [])
            wait = 0 if session_takes else min(remaining, 0.05 if to_plugin and self.native else 1.0)
            readable, writable, _x = select.select(readers, writers, [], wait)
            if self._err and self._err[0] in readable:
                self._read_stderr()
            if client in readable:
                try:
                    data = client.recv(262144)
                except BlockingIOError:
                    data = None
                except OSError:
                    data = b""
                if data == b"":
                    if done_at is not None and not to_client:
                        self.last_reply = bytes(reply[:done_at])
                        return None  # it had its whole reply
                    return "the client went away in the middle of a command"
                if data:
                    inbuf += data
                    while len(inbuf) >= 4:
                        (size,) = struct.unpack(">I", inbuf[:4])
                        if size == 0:
                            input_done = True
                            inbuf = inbuf[4:]
                            break
                        if len(inbuf) < 4 + size:
                            break
                        to_plugin += inbuf[4:4 + size]
                        inbuf = inbuf[4 + size:]
            if to_plugin and (session_takes or (stdin is not None and stdin in writable)):
                try:
                    written = self._write_some(to_plugin)
                    del to_plugin[:written]
                except BlockingIOError:
                    pass
                except OSError:
                    return self._lost(client, bytes(to_client), lost)
            if self.pty_fd in readable:
                data = self._read_pty()
                if data is None:
                    return self._lost(client, bytes(to_client), lost) if done_at is None else "session ended"
                if done_at is None:
                    reply += data
                    found = reply.find(end, scan_from)
                    if found >= 0:
                        newline = reply.find(b"\n", found)
                        if newline >= 0:
                            done_at = newline + 1
                        else:
                            scan_from = found
                    else:
                        scan_from = max(0, len(reply) - len(end))
                    limit = done_at if done_at is not None else len(reply)
                    to_client += reply[sent:limit]
                    sent = limit
            if client in writable and to_client:
                try:
                    written = client.send(to_client[:262144])
                    del to_client[:written]
                except BlockingIOError:
                    pass
                except OSError:
                    return "the client went away in the middle of a command"
            if self._ended() and not readable:
                return self._lost(client, bytes(to_client), lost) if done_at is None else "session ended"

    # --- the end ---------------------------------------------------------------------------------------
    def stop(self, graceful: bool) -> None:
        self.unlisten()
        if self.channel is not None:
            if graceful and not self.channel.closed.is_set():
                try:
                    self.channel.send(bytes(self.deferred) + b"\nexit\n")
                except Exception:  # pylint: disable=broad-exception-caught  # closed under the write
                    pass
                self.channel.closed.wait(3)  # the shell's exit ends the session: the service sends channel_closed
            self.channel.close()
            return
        if self.proc is None:
            return
        if graceful and self.proc.poll() is None:
            try:
                os.set_blocking(self.proc.stdin.fileno(), True)
                self.proc.stdin.write(bytes(self.deferred) + b"\nexit\n")
                self.proc.stdin.flush()
            except OSError:
                pass
            _wait(self.proc, 3)
        if self.proc.poll() is None:
            self.proc.terminate()
            if not _wait(self.proc, 2):
                self.proc.kill()
                _wait(self.proc, 2)


def _wait(proc, seconds: float) -> bool:
    try:
        proc.wait(seconds)
        return True
    except subprocess.TimeoutExpired:
        return False


def _read_line(client: socket.socket, limit: int = 65536) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = client.recv(1)
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            raise ValueError("header too long")
    return data


def _send(client: socket.socket, message: dict) -> None:
    try:
        client.sendall(json.dumps(message).encode() + b"\n")
    except OSError:
        pass


def _printable(data: bytes) -> str:
    text = data.decode("utf-8", "replace").replace("\r", "")
    return " ".join(text.split())[-800:] or "(nothing)"


def _exit_on_signal(signum, frame) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    config = json.loads(sys.stdin.buffer.read() or b"{}")
    report = sys.stdout.buffer
    master = Master(config)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        master.start()
        master.listen()
    except (SessionGone, OSError, KeyError) as e:
        report.write(json.dumps({"ok": False, "error": str(e)}).encode() + b"\n")
        report.flush()
        master.stop(graceful=False)
        return 1
    report.write(json.dumps({"ok": True, "pid": os.getpid()}).encode() + b"\n")
    report.flush()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    graceful = False
    try:
        reason = master.serve()
        graceful = reason in ("idle", "asked to exit")
    finally:
        master.stop(graceful)
    return 0


if __name__ == "__main__":
    sys.exit(main())
