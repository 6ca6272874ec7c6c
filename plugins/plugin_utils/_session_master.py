# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The per-host master of the bastionless.ssm.session connection (standard library only, run as a script).

The connection starts it detached (its own session, stdio on pipes it owns) with ``sys.executable`` and this
file, and writes its parameters as one JSON document to its stdin: never on a command line. It then

- runs session-manager-plugin on a pty, as amazon.aws.aws_ssm does, with the StartSession response the
  connection obtained (the plugin's own command line is the real plugin's: response, region, profile, target);
- waits for ``Starting session with SessionId``, then sends each set-up step and waits for its ready line, and
  notes which reader the node has (the resident Python or sh, _session_protocol.setup_steps);
- listens on a Unix socket (mode 0600 in a 0700 directory), reports ``{"ok": true}`` on stdout and closes it;
- serves one client at a time: a JSON header line, then length-prefixed frames of input that it writes to the
  session, while it relays the session's output back until the line that starts with the header's ``end``;
- ends the session (``exit`` to the shell) and exits after ``idle`` seconds without a client, on an ``exit``
  request, when the session ends (plugin gone), or, killing the plugin, when a client goes away or a command
  outlives its deadline in the middle of a reply (the shell's state is then unknown, so it is not reused).

It keeps no log and writes nothing to disk but its socket: what passes through it is never stored.
"""

import json
import os
import pty
import select
import signal
import socket
import struct
import subprocess
import sys
import time
import tty

STARTED = b"Starting session with SessionId"
HIGH_WATER = 1 << 20  # input bytes buffered for the plugin before the client is read again


class SessionGone(Exception):
    """The plugin exited or its output closed."""


class Master:
    def __init__(self, config: dict) -> None:
        self.config = config
        self.path = config["socket"]
        self.idle = float(config.get("idle", 60))
        self.proc = None
        self.pty_fd = -1
        self.stderr_tail = b""
        self.listener = None
        self.inode = None
        self.last_activity = time.monotonic()
        self.reader = "sh"  # what reads commands on the node: "python" (_session_helper.py) or "sh"

    # --- the session ----------------------------------------------------------------------------------
    def start(self) -> None:
        master_fd, slave_fd = pty.openpty()
        tty.setraw(slave_fd)  # no local line discipline on the plugin's output: what the node sends, unchanged
        self.proc = subprocess.Popen(self.config["argv"], stdin=subprocess.PIPE, stdout=slave_fd,
                                     stderr=subprocess.PIPE, close_fds=True, bufsize=0)
        os.close(slave_fd)
        self.pty_fd = master_fd
        os.set_blocking(master_fd, False)
        os.set_blocking(self.proc.stdin.fileno(), False)
        os.set_blocking(self.proc.stderr.fileno(), False)
        deadline = time.monotonic() + float(self.config.get("start_timeout", 60))
        seen = self._wait_for(STARTED, deadline, b"")[1]
        before = b""
        for send, ready in self.config["steps"]:  # _session_protocol.setup_steps
            self._write_all(send.encode(), deadline)
            before, seen = self._wait_for(ready.encode() + b"\n", deadline, seen)
        self.reader = "python" if before.endswith(b"P") else "sh"  # the helper prints a P before its ready line

    def _wait_for(self, what: bytes, deadline: float, seen: bytes) -> tuple:
        """Read the session until what appears; return (what came before it, what follows it)."""
        buffer = seen
        while what not in buffer.replace(b"\r", b""):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SessionGone(f"timed out waiting for {what.decode().strip()!r}; the session said: "
                                  + _printable(buffer + self.stderr_tail))
            readable, _w, _x = select.select([self.pty_fd, self.proc.stderr], [], [], min(remaining, 1.0))
            if self.proc.stderr in readable:
                self._read_stderr()
            if self.pty_fd in readable:
                data = self._read_pty()
                if data is None:
                    raise SessionGone("the session ended before it was ready: " + _printable(buffer + self.stderr_tail))
                buffer += data
            elif self.proc.poll() is not None and not readable:
                raise SessionGone(f"session-manager-plugin exited ({self.proc.returncode}): "
                                  + _printable(buffer + self.stderr_tail))
        flat = buffer.replace(b"\r", b"")
        at = flat.index(what)
        return flat[:at], flat[at + len(what):]

    def _write_all(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            if time.monotonic() > deadline:
                raise SessionGone("the session does not take input")
            _r, writable, _x = select.select([], [self.proc.stdin], [], 1.0)
            if writable:
                try:
                    view = view[os.write(self.proc.stdin.fileno(), view):]
                except BlockingIOError:
                    continue
                except OSError as e:
                    raise SessionGone(f"the session does not take input: {e}") from e

    def _read_pty(self):
        try:
            data = os.read(self.pty_fd, 65536)
        except BlockingIOError:
            return b""
        except OSError:  # EIO: the plugin closed its side
            return None
        return data if data else None

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
            readable, _w, _x = select.select([self.listener, self.pty_fd, self.proc.stderr], [], [], min(remaining, 5))
            if self.proc.stderr in readable:
                self._read_stderr()
            if self.pty_fd in readable and self._read_pty() is None:
                return "session ended"
            if self.proc.poll() is not None:
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
        if op != "run":
            _send(client, {"ok": False, "error": f"unknown request {op!r}"})
            return None
        _send(client, {"ok": True, "session": self.config.get("session_id"), "reader": self.reader})
        return self.run(client, header["end"].encode(), float(header.get("timeout", 60)) + 5)

    def run(self, client: socket.socket, end: bytes, timeout: float):
        client.setblocking(False)
        stdin = self.proc.stdin
        deadline = time.monotonic() + timeout
        inbuf = b""  # framed input from the client, not yet parsed
        to_plugin = bytearray()
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
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "a command outlived its deadline"
            readers = [self.pty_fd, self.proc.stderr]
            if not input_done and len(to_plugin) < HIGH_WATER:
                readers.append(client)
            writers = ([stdin] if to_plugin else []) + ([client] if to_client else [])
            readable, writable, _x = select.select(readers, writers, [], min(remaining, 1.0))
            if self.proc.stderr in readable:
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
            if stdin in writable and to_plugin:
                try:
                    written = os.write(stdin.fileno(), to_plugin[:65536])
                    del to_plugin[:written]
                except BlockingIOError:
                    pass
                except OSError:
                    return "session ended"
            if self.pty_fd in readable:
                data = self._read_pty()
                if data is None:
                    return "session ended"
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
            if self.proc.poll() is not None and not readable:
                return "session ended"

    # --- the end ---------------------------------------------------------------------------------------
    def stop(self, graceful: bool) -> None:
        self.unlisten()
        if self.proc is None:
            return
        if graceful and self.proc.poll() is None:
            try:
                os.set_blocking(self.proc.stdin.fileno(), True)
                self.proc.stdin.write(b"\nexit\n")
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
