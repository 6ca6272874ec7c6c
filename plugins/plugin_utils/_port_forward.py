# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Port forwarding over a Session Manager data channel, with no session-manager-plugin: the native transport of
bastionless.ssm.ssm_tunnel.

    forwarder = PortForwarder(response["SessionId"], response["TokenValue"], response["StreamUrl"], local_port,
                              resume=lambda: client.resume_session(SessionId=...)["TokenValue"], log=print)
    forwarder.start()           # the data channel, its handshake (a Port session), then the local listener
    forwarder.closed.wait()     # the session ended: forwarder.why() says how
    forwarder.stop()            # or end it: TerminateSession flag, listener and connections closed

After the handshake (a ``Port`` session of type ``LocalPortForwarding``, as the port forwarding documents start) it
listens on ``127.0.0.1:<local_port>`` and carries each TCP connection accepted there to the destination:

- multiplexed, when the agent's version is newer than MUX_AFTER (as the agent and AWS's plugin decide): every
  connection is a stream of smux v1 over the one session (SYN, PSH, FIN; odd stream ids from 3, as the smux client
  numbers them), so many connections share it at once; smux keep-alives (NOP every KEEPALIVE seconds) only for agents
  that still expect them (not newer than KEEPALIVE_UNTIL);
- basic, for older agents: one connection at a time, the next one accepted after the DisconnectToPort flag.

The data channel (acknowledgements, resends, ResumeSession after a drop) is _data_channel_client's. Threads: the
channel's reader delivers the service's data (never blocking for long: a local client that reads nothing for
LOCAL_TIMEOUT seconds loses its connection), one accepts, one per connection reads the local side.
"""

import socket
import threading

try:
    from ansible_collections.bastionless.ssm.plugins.plugin_utils import _data_channel as dc
    from ansible_collections.bastionless.ssm.plugins.plugin_utils import _data_channel_client as client_module
except ImportError:  # loaded by path, beside the client (ssm_tunnel's supervisor, which runs outside Ansible)
    import bastionless_data_channel as dc  # pylint: disable=import-error
    import bastionless_data_channel_client as client_module  # pylint: disable=import-error

LOCAL_ADDRESS = "127.0.0.1"
MUX_AFTER = "3.0.196.0"  # agents newer than this multiplex port sessions
KEEPALIVE_UNTIL = "3.1.1446.0"  # agents up to this one expect smux keep-alives from the client
KEEPALIVE = 10.0  # seconds between smux keep-alives
READ_SIZE = 32768  # bytes read from a local connection at a time
LOCAL_TIMEOUT = 60.0  # seconds a local connection may refuse to take data before it is closed
STOP_ACK = 1.0  # seconds stop() waits for the acknowledgement of the TerminateSession flag


class PortForwardError(Exception):
    """The session cannot forward a port: the data channel did not open, it is no port session, or the local port
    cannot be listened on."""


class PortForwarder:
    """One port forwarding session (see the module's description)."""

    def __init__(self, session_id: str, token: str, stream_url: str, local_port: int = 0, resume=None, log=None,
                 address: str = LOCAL_ADDRESS, chunk: int = dc.MAX_CHUNK,
                 ack_timeout: float = client_module.ACK_TIMEOUT) -> None:
        self.session_id = session_id
        self.address = address
        self.port = local_port
        self.log = log or (lambda message: None)
        self.mode = ""  # "multiplexed" or "basic", once started
        self.channel = client_module.DataChannelClient(session_id, token, stream_url, on_data=self._on_data,
                                                       on_flag=self._on_flag, resume=resume, chunk=chunk,
                                                       ack_timeout=ack_timeout)
        self.closed = self.channel.closed
        self.accepted = 0  # local connections accepted so far
        self._listener = None
        self._send_lock = threading.Lock()  # one smux frame's messages are never interleaved with another's
        self._lock = threading.Lock()  # the connections
        self._streams: dict = {}  # stream id -> [socket, the destination's FIN seen (Event)]
        self._smux = dc.SmuxReader()
        self._basic = None  # basic mode: the connection being carried
        self._stopping = threading.Event()

    # --- start and stop ------------------------------------------------------------------------------------------
    def start(self, timeout: float = client_module.HANDSHAKE_TIMEOUT) -> None:
        """Open the data channel and the local listener; PortForwardError naming the cause when either fails."""
        try:
            self.channel.open(timeout=timeout)
        except client_module.DataChannelClosed as error:
            raise PortForwardError(f"the data channel did not open: {error}") from None
        kind, properties = self.channel.session_type, self.channel.properties
        if kind != "Port" or properties.get("type") != "LocalPortForwarding":
            self.channel.close()
            raise PortForwardError(f"session {self.session_id} is a {kind or 'unknown'} session"
                                   f"{' of type ' + properties['type'] if properties.get('type') else ''}, not port "
                                   "forwarding (AWS-StartPortForwardingSession or ...ToRemoteHost)")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.address, self.port))
        except OSError as error:
            listener.close()
            self.stop()
            raise PortForwardError(f"cannot listen on {self.address}:{self.port}: {error}") from None
        listener.listen(64)
        self._listener = listener
        self.port = listener.getsockname()[1]
        agent = self.channel.agent_version
        self.mode = "multiplexed" if dc.version_newer(agent, MUX_AFTER) else "basic"
        self.log(f"session {self.session_id}: port {self.port} opened, {self.mode} (agent {agent or 'unknown'})")
        threading.Thread(target=self._accept, name="port-forward-accept", daemon=True).start()
        if self.mode == "multiplexed" and not dc.version_newer(agent, KEEPALIVE_UNTIL):
            threading.Thread(target=self._keepalive, name="port-forward-keepalive", daemon=True).start()

    def why(self) -> str:
        """Why the session ended (once ``closed`` is set)."""
        if self._stopping.is_set():
            return "stopped"
        if self.channel.service_closed:
            return ("the service closed the session (terminated, or ended by the node)"
                    + (f": {self.channel.close_output}" if self.channel.close_output else ""))
        return f"the data channel was lost: {self.channel.lost or 'no reason given'}"

    def stop(self) -> None:
        """End the session (the TerminateSession flag, as AWS's plugin sends on Ctrl-C) and every connection."""
        self._stopping.set()
        if not self.channel.closed.is_set() and self.channel.handshake_done.is_set():
            try:
                self.channel.send_flag(dc.TERMINATE_SESSION)
                self.channel.wait_acknowledged(STOP_ACK)
            except client_module.DataChannelClosed:
                pass
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the accepting thread (Linux)
            except OSError:
                pass
            self._listener.close()
        self.channel.close()
        with self._lock:
            connections = [entry[0] for entry in self._streams.values()] + ([self._basic] if self._basic else [])
            self._streams.clear()
        for connection in connections:
            _close(connection)

    # --- the service's side --------------------------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        with self._send_lock:
            self.channel.send(data)

    def _on_flag(self, value: int) -> None:
        if value == dc.CONNECT_TO_PORT_ERROR:
            self.log(f"session {self.session_id}: the agent could not connect to the destination port "
                     "(nothing listens there, or the node cannot reach it; the agent's log has more)")

    def _on_data(self, payload: bytes) -> None:
        if self.mode == "basic":
            connection = self._basic
            if connection is not None and not _deliver(connection, payload):
                self._basic = None
                _close(connection)
            return
        try:
            frames = self._smux.feed(payload)
        except dc.DataChannelError as error:
            self.log(f"session {self.session_id}: the agent's stream is not smux: {error}")
            self.channel.close()
            return
        for command, stream_id, data in frames:
            with self._lock:
                entry = self._streams.get(stream_id)
            if entry is None:
                continue
            if command == dc.PSH and not _deliver(entry[0], data):
                self._end_stream(stream_id, tell_agent=True)
            elif command == dc.FIN:
                entry[1].set()
                try:
                    entry[0].shutdown(socket.SHUT_WR)  # the destination closed: the local client reads its end
                except OSError:
                    pass

    def _end_stream(self, stream_id: int, tell_agent: bool) -> None:
        with self._lock:
            entry = self._streams.pop(stream_id, None)
        if entry is None:
            return
        _close(entry[0])
        if tell_agent:
            try:
                self._send(dc.smux_frame(dc.FIN, stream_id))
            except client_module.DataChannelClosed:
                pass

    def _keepalive(self) -> None:
        while not self.channel.closed.wait(KEEPALIVE):
            try:
                self._send(dc.smux_frame(dc.NOP, 0))
            except client_module.DataChannelClosed:
                return

    # --- the local side ------------------------------------------------------------------------------------------
    def _accept(self) -> None:
        stream_id = 1
        while not self.channel.closed.is_set():
            try:
                connection, _peer = self._listener.accept()
            except OSError:
                return
            connection.settimeout(LOCAL_TIMEOUT)
            self.accepted += 1
            if self.mode == "basic":
                self._carry_basic(connection)  # one at a time: the next waits in the listen queue
                continue
            stream_id += 2
            with self._lock:
                self._streams[stream_id] = [connection, threading.Event()]
            try:
                self._send(dc.smux_frame(dc.SYN, stream_id))
            except client_module.DataChannelClosed:
                self._end_stream(stream_id, tell_agent=False)
                return
            threading.Thread(target=self._carry_stream, args=(connection, stream_id), daemon=True,
                             name=f"port-forward-{stream_id}").start()

    def _carry_stream(self, connection: socket.socket, stream_id: int) -> None:
        """One local connection's data to its smux stream, then its FIN; closed once both sides have ended."""
        try:
            while True:
                data = _receive(connection, self.channel.closed)
                if not data:
                    break
                self._send(dc.smux_frame(dc.PSH, stream_id, data))
            self._send(dc.smux_frame(dc.FIN, stream_id))
            with self._lock:
                entry = self._streams.get(stream_id)
            # The local client only closed its sending side: what the destination still sends reaches it until the
            # destination's FIN (smux v1 has no half-close of its own).
            while entry is not None and not (entry[1].wait(0.5) or self.channel.closed.is_set()):
                pass
        except (OSError, client_module.DataChannelClosed):
            pass
        self._end_stream(stream_id, tell_agent=False)

    def _carry_basic(self, connection: socket.socket) -> None:
        self._basic = connection
        try:
            while True:
                data = _receive(connection, self.channel.closed)
                if not data:
                    break
                self._send(data)
            self._basic = None
            self.channel.send_flag(dc.DISCONNECT_TO_PORT)
        except (OSError, client_module.DataChannelClosed):
            pass
        finally:
            self._basic = None
            _close(connection)


def _receive(connection: socket.socket, closed) -> bytes:
    """The next bytes from a local connection (b"" at its end or the session's); waits as long as it is quiet."""
    while not closed.is_set():
        try:
            return connection.recv(READ_SIZE)
        except socket.timeout:
            continue
    return b""


def _deliver(connection: socket.socket, data: bytes) -> bool:
    """Write the destination's bytes to the local connection; False when it is gone or took nothing for
    LOCAL_TIMEOUT seconds."""
    try:
        connection.sendall(data)
        return True
    except OSError:  # socket.timeout included
        return False


def _close(connection: socket.socket) -> None:
    """Close a local connection, waking a thread blocked reading it (close() alone does not, on Linux)."""
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        connection.close()
    except OSError:
        pass
