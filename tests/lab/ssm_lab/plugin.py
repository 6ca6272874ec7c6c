"""session-manager-plugin for the lab: the real plugin's command line, messages and behaviour.

    session-manager-plugin '<StartSession response JSON>' <region> StartSession <profile> \
        '<{"Target": id, ...}>' <ssm endpoint url>

It connects to the StreamUrl of the response and then, by the session type the service answers with:
- Standard_Stream / InteractiveCommands: relays stdin to the node's shell and its output to stdout;
- Port with a localPortNumber (or for port forwarding documents): listens on 127.0.0.1 and opens one stream
  per accepted connection;
- Port without a local port (AWS-StartSSHSession as an ssh ProxyCommand): relays stdin/stdout, silently.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import threading
import urllib.parse

from . import common

USAGE = (
    "\nThe Session Manager plugin was installed successfully. Use the AWS CLI to start a session.\n\n"
)


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


class Plugin:
    def __init__(self, response: dict, target: dict) -> None:
        self.session_id = response["SessionId"]
        self.token = response["TokenValue"]
        url = urllib.parse.urlparse(response["StreamUrl"])
        self.host, self.port = url.hostname, url.port
        self.target = target

    async def _connect(self, stream) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, dict]:
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=2**20)
        writer.write(common.dump_line({"t": "client", "session": self.session_id, "token": self.token,
                                       "stream": stream}))
        answer = await common.read_line(reader, 30) or {"ok": False, "error": "the service closed the connection"}
        return reader, writer, answer

    def _fail(self, error: str) -> int:
        _out(f"\n\nSessionId: {self.session_id} : {error}\n\n")
        return 1

    async def run(self) -> int:
        document = self.target.get("DocumentName", "")
        parameters = self.target.get("Parameters") or {}
        port_session = document.startswith("AWS-StartPortForwardingSession") or "localPortNumber" in parameters
        if port_session:
            return await self._port_forward(parameters)
        reader, writer, answer = await self._connect(0)
        if not answer.get("ok"):
            return self._fail(answer.get("error", "failed"))
        silent = answer.get("session_type") == "Port"
        if not silent:
            _out(f"\nStarting session with SessionId: {self.session_id}\n")
        await self._stdio(reader, writer)
        if not silent:
            _out(f"\n\nExiting session with sessionId: {self.session_id}.\n\n")
        return 0

    async def _stdio(self, reader, writer) -> None:
        loop = asyncio.get_running_loop()
        stdin = sys.stdin.buffer.raw if hasattr(sys.stdin.buffer, "raw") else sys.stdin.buffer
        out_fd = sys.stdout.fileno()

        # stdin is read by a daemon thread: a read blocked on a pipe that stays open (amazon.aws.aws_ssm keeps
        # it open) must not keep the plugin from exiting when the session ends, as an executor thread would.
        chunks: asyncio.Queue = asyncio.Queue()

        def read_stdin() -> None:
            while True:
                try:
                    data = os.read(stdin.fileno(), 65536)
                except OSError:
                    data = b""
                try:
                    loop.call_soon_threadsafe(chunks.put_nowait, data)
                except RuntimeError:  # the loop is closed: the session is over
                    return
                if not data:
                    return

        threading.Thread(target=read_stdin, name="plugin-stdin", daemon=True).start()

        async def up() -> None:
            while True:
                data = await chunks.get()
                if not data:
                    # stdin closed: the service keeps the session until the shell exits or it is terminated.
                    return
                writer.write(data)
                await writer.drain()

        upward = asyncio.ensure_future(up())
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                view = memoryview(data)
                while view:
                    try:
                        view = view[os.write(out_fd, view):]
                    except BlockingIOError:
                        await common.writable(out_fd)  # the reader is behind: wait for it, as a blocking write would
        except (ConnectionError, OSError):
            pass
        finally:
            upward.cancel()
            writer.close()

    async def _port_forward(self, parameters: dict) -> int:
        control_reader, control_writer, answer = await self._connect("ctl")
        if not answer.get("ok"):
            return self._fail(answer.get("error", "failed"))
        wanted = int((parameters.get("localPortNumber") or ["0"])[0] or 0)
        counter = {"n": 0}

        async def accepted(c_reader, c_writer) -> None:
            counter["n"] += 1
            _out(f"\nConnection accepted for session [{self.session_id}]\n")
            try:
                s_reader, s_writer, s_answer = await self._connect(counter["n"])
            except OSError:
                c_writer.close()
                return
            if not s_answer.get("ok"):
                _out(f"\n{s_answer.get('error')}\n")
                c_writer.close()
                s_writer.close()
                return
            up = asyncio.ensure_future(common.pump(c_reader, s_writer))
            await common.pump(s_reader, c_writer)
            up.cancel()
            c_writer.close()

        try:
            server = await asyncio.start_server(accepted, "127.0.0.1", wanted, family=socket.AF_INET)
        except OSError as error:
            return self._fail(f"Unable to start listener on port {wanted}: {error}")
        port = server.sockets[0].getsockname()[1]
        _out(f"\nStarting session with SessionId: {self.session_id}\n")
        _out(f"Port {port} opened for sessionId {self.session_id}.\n")
        _out("Waiting for connections...\n")
        stop = asyncio.get_running_loop().create_future()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, lambda: stop.done() or stop.set_result(True))
        closed = asyncio.ensure_future(control_reader.read())  # EOF: the session was terminated
        await asyncio.wait({stop, closed}, return_when=asyncio.FIRST_COMPLETED)
        server.close()
        control_writer.close()
        _out(f"\n\nExiting session with sessionId: {self.session_id}.\n\n")
        return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        _out(USAGE)
        return 0
    if args[0] in ("--version", "-version", "version"):
        _out(common.PLUGIN_VERSION + "\n")
        return 0
    if len(args) < 3 or args[2] != "StartSession":
        sys.stderr.write("Invalid arguments for session-manager-plugin: expected "
                         "'<response>' <region> StartSession [<profile>] [<parameters>] [<endpoint>]\n")
        return 1
    try:
        response = json.loads(args[0])
        target = json.loads(args[4]) if len(args) > 4 and args[4] else {}
    except ValueError as error:
        sys.stderr.write(f"Cannot perform start session: {error}\n")
        return 1
    try:
        return asyncio.run(Plugin(response, target).run())
    except KeyboardInterrupt:
        return 130
    except OSError as error:
        sys.stderr.write(f"Cannot perform start session: {error}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
