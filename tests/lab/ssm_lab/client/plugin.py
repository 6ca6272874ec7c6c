"""session-manager-plugin for the lab: AWS's plugin's command line, output lines and exit codes, over the data channel
client of the collection (plugins/plugin_utils/_data_channel_client.py), so that it speaks Session Manager's real
wire protocol to any service, the lab's or AWS's.

    session-manager-plugin '<StartSession response JSON>' <region> StartSession <profile> \
        '<{"Target": id, ...}>' <ssm endpoint url>

The first argument may also name an environment variable holding the response (AWS_SSM_START_SESSION_RESPONSE...),
as the AWS CLI passes it. What runs depends on the handshake, as with AWS's plugin:
- Standard_Stream, InteractiveCommands, NonInteractiveCommands: stdin to the session, its output to stdout; the
  terminal size when stdout is a sized terminal; stdin's end ends the plugin ("Cannot perform start session: EOF");
- Port with ``type: LocalPortForwarding``: listens on localhost:<localPortNumber> (0 or none: a free port); many
  clients at once over smux for agents newer than 3.0.196.0, one at a time otherwise; Ctrl-C ends the session;
- Port without a type (AWS-StartSSHSession as an ssh ProxyCommand): stdin and stdout relayed.
It exits 0 whenever it ends by itself, and prints its errors on stdout, as AWS's plugin does.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import struct
import sys
import termios
import threading

from .. import common
from ..codec import dc, load_collection_module  # the codec first: the client imports it by its name

USAGE = (
    "\nThe Session Manager plugin was installed successfully. Use the AWS CLI to start a session.\n\n"
)
MUX_AFTER = "3.0.196.0"
# AWS's plugin puts at most 1,024 bytes in a message; the lab's puts up to 32 KiB (the lab's service takes any size),
# so that the machine's CPU, which the lab's plugin shares with the nodes and the controller, goes where the Go
# plugin would leave it: to Ansible and the nodes. make interop runs the real one, with its 1,024 bytes.
CHUNK = 32768
SIGNAL_BYTES = {signal.SIGINT: b"\x03", signal.SIGQUIT: b"\x1c", signal.SIGTSTP: b"\x1a"}


client_module = load_collection_module("_data_channel_client.py", "bastionless_data_channel_client")


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            import select
            select.select([], [fd], [], 1.0)


def _terminal_size(fd: int) -> tuple[int, int] | None:
    """(cols, rows) of a terminal; None when ``fd`` is no terminal; (0, 0) for one never sized."""
    if not os.isatty(fd):
        return None
    try:
        rows, cols, _x, _y = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return None
    return cols, rows


def _keys_to_session(fd: int):
    """When stdin is a terminal, hand each key to the session as it is typed and leave the echo to the node's shell,
    as AWS's plugin does (no local echo, no line buffering; Ctrl-C and the like still arrive as signals, which
    ``_shell`` forwards). Returns what restores the terminal."""
    if not os.isatty(fd):
        return lambda: None
    saved = termios.tcgetattr(fd)
    changed = termios.tcgetattr(fd)
    changed[3] &= ~(termios.ECHO | termios.ICANON)
    changed[6][termios.VMIN], changed[6][termios.VTIME] = 1, 0
    termios.tcsetattr(fd, termios.TCSANOW, changed)
    return lambda: termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class Plugin:
    def __init__(self, response: dict, region: str, profile: str, endpoint: str) -> None:
        fields = {key.lower(): value for key, value in response.items()}
        self.session_id = str(fields.get("sessionid", ""))
        self.region, self.profile, self.endpoint = region, profile, endpoint
        self.done = threading.Event()
        self.stdout = sys.stdout.fileno()
        self.channel = client_module.DataChannelClient(
            self.session_id, str(fields.get("tokenvalue", "")), str(fields.get("streamurl", "")),
            on_data=self._on_data, on_flag=self._on_flag, resume=self._resume, chunk=CHUNK)
        self._on_port_data = None

    # --- the service ----------------------------------------------------------------------------------------
    def _resume(self) -> str | None:
        """ResumeSession on the endpoint of the command line; the new token, or None when the session is over."""
        import boto3  # the controller's SDK; only needed when a WebSocket breaks

        session = boto3.session.Session(profile_name=self.profile or None, region_name=self.region or None)
        answer = session.client("ssm", endpoint_url=self.endpoint or None).resume_session(SessionId=self.session_id)
        return answer.get("TokenValue")

    def _on_data(self, payload: bytes) -> None:
        if self._on_port_data is not None:
            self._on_port_data(payload)
        else:
            _write_all(self.stdout, payload)

    def _on_flag(self, value: int) -> None:
        if value == dc.CONNECT_TO_PORT_ERROR:
            _out("\nConnection to destination port failed, check SSM Agent logs.\n")

    def _ended(self) -> int:
        if self.channel.close_output:
            _out(f"\n\nSessionId: {self.session_id} : {self.channel.close_output}\n\n")
        elif self.channel.lost and self.channel.lost.startswith("Session:"):
            _out(f"{self.channel.lost}\n")
        else:
            _out(f"\n\nExiting session with sessionId: {self.session_id}.\n\n")
        return 0

    def run(self) -> int:
        _out(f"\nStarting session with SessionId: {self.session_id}\n")
        try:
            self.channel.open()
        except client_module.DataChannelClosed as error:
            if self.channel.close_output:
                _out(f"\n\nSessionId: {self.session_id} : {self.channel.close_output}\n\n")
            else:
                _out(f"Cannot perform start session: {error}\n")
            return 0
        if self.channel.customer_message:
            _out(self.channel.customer_message + "\n")
        kind, properties = self.channel.session_type, self.channel.properties
        if kind in ("Standard_Stream", "InteractiveCommands", "NonInteractiveCommands"):
            return self._shell()
        if kind != "Port":
            _out(f"Cannot perform start session: Unknown session type {kind}\n")
            return 0
        if properties.get("type") != "LocalPortForwarding":
            return self._stdio()
        if dc.version_newer(self.channel.agent_version, MUX_AFTER):
            return self._mux(properties)
        return self._basic(properties)

    # --- shell and stdio -------------------------------------------------------------------------------------
    def _read_stdin(self, on_eof) -> None:
        while True:
            try:
                data = os.read(0, CHUNK)
            except OSError:
                data = b""
            if not data:
                on_eof()
                return
            try:
                self.channel.send(b"\r" if data == b"\n" else data)
            except client_module.DataChannelClosed:
                return

    def _shell(self) -> int:
        eof = threading.Event()

        def send_signal(signum, _frame) -> None:
            try:
                self.channel.send(SIGNAL_BYTES[signum])
            except client_module.DataChannelClosed:
                pass

        for signum in SIGNAL_BYTES:
            signal.signal(signum, send_signal)
        size = _terminal_size(self.stdout)
        try:
            if size is None:
                self.channel.send_size(300, 100)
            elif all(size):
                self.channel.send_size(*size)
        except client_module.DataChannelClosed:
            pass
        restore = _keys_to_session(0)
        try:
            threading.Thread(target=self._read_stdin, args=(eof.set,), daemon=True).start()
            ticks = 0
            while not (self.channel.closed.wait(0.05) or eof.is_set()):
                ticks += 1
                if ticks % 10:
                    continue
                now = _terminal_size(self.stdout)
                if now and all(now) and now != size:
                    size = now
                    self.channel.send_size(*size)
        finally:
            restore()
        if eof.is_set() and not self.channel.closed.is_set():
            _out("Cannot perform start session: EOF\n")
            self.channel.close()
            return 0
        return self._ended()

    def _stdio(self) -> int:
        eof = threading.Event()
        threading.Thread(target=self._read_stdin, args=(eof.set,), daemon=True).start()
        while not (self.channel.closed.wait(0.05) or eof.is_set()):
            pass
        self.channel.close()
        return 0

    # --- port forwarding ---------------------------------------------------------------------------------------
    def _listen(self, properties: dict) -> socket.socket | None:
        wanted = int(properties.get("localPortNumber") or 0)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("127.0.0.1", wanted))
        except OSError as error:
            _out(f"Cannot perform start session: Unable to start listener on port {wanted}: {error}\n")
            listener.close()
            return None
        listener.listen(16)
        return listener

    @staticmethod
    def _connections(listener: socket.socket, first_line: str):
        """The local clients as they come, until the listener closes; the first announced as AWS's plugin does."""
        first = True
        while True:
            try:
                conn, _peer = listener.accept()
            except OSError:
                return
            if first:
                _out(first_line)
                first = False
            yield conn

    def _until_terminated(self, listener: socket.socket) -> int:
        stop = threading.Event()

        def terminate(_signum, _frame) -> None:
            stop.set()

        for signum in (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP):
            signal.signal(signum, terminate)
        while not (stop.wait(0.2) or self.channel.closed.is_set()):
            pass
        if stop.is_set() and not self.channel.closed.is_set():
            _out("Terminate signal received, exiting.\n")
            try:
                self.channel.send_flag(dc.TERMINATE_SESSION)
                self.channel.wait_acknowledged(1.0)
            except client_module.DataChannelClosed:
                pass
        listener.close()
        self.channel.close()
        return self._ended()

    def _mux(self, properties: dict) -> int:
        listener = self._listen(properties)
        if listener is None:
            return 0
        port = listener.getsockname()[1]
        _out(f"Port {port} opened for sessionId {self.session_id}.\nWaiting for connections...\n")
        clients: dict[int, socket.socket] = {}
        reader = dc.SmuxReader()
        lock = threading.Lock()

        finished: dict[int, threading.Event] = {}

        def from_service(payload: bytes) -> None:
            for command, stream_id, data in reader.feed(payload):
                conn = clients.get(stream_id)
                if conn is None:
                    continue
                try:
                    if command == dc.PSH:
                        conn.sendall(data)
                    elif command == dc.FIN:
                        conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                if command == dc.FIN and stream_id in finished:
                    finished[stream_id].set()

        self._on_port_data = from_service

        def serve(conn: socket.socket, stream_id: int) -> None:
            try:
                while True:
                    data = conn.recv(32768)
                    if not data:
                        break
                    self.channel.send(dc.smux_frame(dc.PSH, stream_id, data))
                self.channel.send(dc.smux_frame(dc.FIN, stream_id))
                # The local client only closed its sending side: what the destination still says reaches it
                # until the service's FIN (or the end of the session).
                while not (finished[stream_id].wait(0.5) or self.channel.closed.is_set()):
                    pass
            except (OSError, client_module.DataChannelClosed):
                pass
            finally:
                with lock:
                    clients.pop(stream_id, None)
                    finished.pop(stream_id, None)
                conn.close()

        def accept() -> None:
            stream_id = 3
            for conn in self._connections(listener, f"\nConnection accepted for session [{self.session_id}]\n"):
                with lock:
                    clients[stream_id] = conn
                    finished[stream_id] = threading.Event()
                try:
                    self.channel.send(dc.smux_frame(dc.SYN, stream_id))
                except client_module.DataChannelClosed:
                    conn.close()
                    return
                threading.Thread(target=serve, args=(conn, stream_id), daemon=True).start()
                stream_id += 2

        threading.Thread(target=accept, daemon=True).start()
        return self._until_terminated(listener)

    def _basic(self, properties: dict) -> int:
        listener = self._listen(properties)
        if listener is None:
            return 0
        port = listener.getsockname()[1]
        _out(f"Port {port} opened for sessionId {self.session_id}.\n")
        current: dict[str, socket.socket | None] = {"conn": None}

        def from_service(payload: bytes) -> None:
            conn = current["conn"]
            if conn is not None:
                try:
                    conn.sendall(payload)
                except OSError:
                    pass

        self._on_port_data = from_service

        def accept() -> None:
            for conn in self._connections(listener, f"\nConnection accepted for session {self.session_id}.\n"):
                current["conn"] = conn
                try:
                    while True:
                        data = conn.recv(CHUNK)
                        if not data:
                            break
                        self.channel.send(data)
                    current["conn"] = None
                    self.channel.send_flag(dc.DISCONNECT_TO_PORT)
                except (OSError, client_module.DataChannelClosed):
                    return
                finally:
                    current["conn"] = None
                    conn.close()

        threading.Thread(target=accept, daemon=True).start()
        return self._until_terminated(listener)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        _out(USAGE)
        return 0
    if args[0] in ("--version", "-version", "version"):
        _out(common.PLUGIN_VERSION + "\n")
        return 0
    if len(args) < 3:
        _out("Unknown operation\n")
        return 0
    if args[2] != "StartSession":
        _out("Invalid Operation\n")
        return 0
    first = args[0]
    if first.startswith("AWS_SSM_START_SESSION_RESPONSE"):
        first = os.environ.pop(first, "")
    try:
        response = json.loads(first)
        target = json.loads(args[4]) if len(args) > 4 and args[4] else {}
    except ValueError as error:
        _out(f"Cannot perform start session: {error}\n")
        return 0
    if not isinstance(response, dict) or not isinstance(target, dict):
        _out("Cannot perform start session: the response and the request must be JSON objects\n")
        return 0
    profile = args[3] if len(args) > 3 else ""
    endpoint = args[5] if len(args) > 5 else ""
    try:
        return Plugin(response, args[1], profile, endpoint).run()
    except client_module.DataChannelClosed as error:
        _out(f"Cannot perform start session: {error}\n")
        return 0


if __name__ == "__main__":
    sys.exit(main())
