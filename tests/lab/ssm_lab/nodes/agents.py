"""The agent host: one process playing the SSM Agent of every lab node.

Each agent connects out to the control plane's message port (as the real agent polls ssmmessages and
ec2messages outbound on 443), keeps a heartbeat, and answers what the service sends down: open a session
stream (a shell on a pty, a port forward opened from the node's side, sshd for AWS-StartSSHSession), close a
session, run a command. A shell or command process exists only while a session or command runs.

Runs as root inside its own mount namespace (``unshare --mount``), where the nodes' overlays are mounted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import functools
import json
import logging
import os
import pty
import signal
import struct
import sys
import termios
import time
import urllib.request

from .. import common
from . import sshd
from .sandbox import SSM_USER, LightNode, Sandbox, SandboxError

log = logging.getLogger("ssm_lab.agents")
# The documents a Linux node runs, each as a shell script (the lab's rendition of AWS-ApplyAnsiblePlaybooks is one,
# made by the control plane), and the folder of the command's step under its orchestration directory.
ANSIBLE_STEP = "runShellScript"
LINUX_DOCUMENTS = {"AWS-RunShellScript": "awsrunShellScript/0.awsrunShellScript", "AWS-ApplyAnsiblePlaybooks": ANSIBLE_STEP}


class Agent:
    def __init__(self, host: "AgentHost", spec: dict) -> None:
        self.host = host
        self.id = spec["id"]
        self.spec = spec
        self.sandbox = host.sandbox_for(spec)
        self.task: asyncio.Task | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.sessions: dict[str, set] = {}  # session id -> {(process, writer)}
        self.ptys: dict[str, set] = {}  # session id -> the pty masters of its shells
        self.sizes: dict[str, bytes] = {}  # session id -> the client's last terminal size (struct winsize)
        self.commands: dict[str, asyncio.subprocess.Process] = {}
        self.stopping = False

    # --- control channel -----------------------------------------------------------------------------------
    async def run(self) -> None:
        backoff = 0.2
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self.sandbox.ensure)  # the node's disk, before the agent starts
            if self.spec.get("sshd"):
                await loop.run_in_executor(None, sshd.prepare, self.sandbox)
        except SandboxError as error:
            log.error("node %s: %s", self.id, error)
        while not self.stopping:
            try:
                reader, writer = await asyncio.open_connection(self.host.msg_host, self.host.msg_port, limit=2**20)
            except OSError:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            self.writer = writer
            version = await loop.run_in_executor(None, self.sandbox.agent_version)
            writer.write(common.dump_line({"t": "agent", "node": self.id, "version": version}))
            answer = await common.read_line(reader, 10)
            if not answer or not answer.get("ok"):
                writer.close()
                await asyncio.sleep(1.0)
                continue
            backoff = 0.2
            beat = asyncio.ensure_future(self._heartbeat(writer))
            try:
                while True:
                    message = await common.read_line(reader)
                    if message is None:
                        break
                    self._dispatch(message)
            finally:
                beat.cancel()
                writer.close()
                self.writer = None
            if not self.stopping:
                await asyncio.sleep(0.5)

    async def _heartbeat(self, writer) -> None:
        while True:
            writer.write(common.dump_line({"t": "ping", "at": time.time()}))
            await writer.drain()
            await asyncio.sleep(common.HEARTBEAT_SECONDS)

    def _dispatch(self, message: dict) -> None:
        kind = message.get("t")
        if kind == "open":
            common.spawn(self._open(message))
        elif kind == "close":
            self._close_session(message["session"])
        elif kind == "resize":
            self._resize(message)
        elif kind == "run":
            common.spawn(self._run_command(message))
        elif kind == "drop":
            self.stop()
        elif kind == "restart" and self.writer is not None:
            self.writer.close()  # the control channel only: reconnect as the restarted agent

    def stop(self) -> None:
        """The agent process goes away: its channel, its sessions and its commands with it."""
        self.stopping = True
        for session_id in list(self.sessions):
            self._close_session(session_id)
        for process in list(self.commands.values()):
            _kill(process)
        if self.writer is not None:
            self.writer.close()
        if self.task is not None:
            self.task.cancel()

    def _resize(self, message: dict) -> None:
        """The client's terminal size (the data channel's Size message), applied to the session's pty."""
        try:
            size = struct.pack("HHHH", int(message["rows"]), int(message["cols"]), 0, 0)
        except (KeyError, ValueError, TypeError, struct.error):
            return
        self.sizes[message.get("session")] = size  # for a shell still starting
        for master in self.ptys.get(message.get("session"), ()):
            with contextlib.suppress(OSError):
                fcntl.ioctl(master, termios.TIOCSWINSZ, size)

    def _close_session(self, session_id: str) -> None:
        self.sizes.pop(session_id, None)
        self.ptys.pop(session_id, None)
        for process, writer in self.sessions.pop(session_id, set()):
            if process is not None:
                _kill(process)
            if writer is not None and not writer.is_closing():
                writer.close()

    # --- session streams -----------------------------------------------------------------------------------
    async def _open(self, message: dict) -> None:
        session_id, stream = message["session"], message["stream"]
        try:
            reader, writer = await asyncio.open_connection(self.host.msg_host, self.host.msg_port, limit=2**20)
        except OSError:
            return
        hello = {"t": "agent-data", "session": session_id, "stream": stream, "node": self.id}
        try:
            if message["type"] == "Standard_Stream":
                await self._shell(message, hello, reader, writer)
            elif message["type"] == "InteractiveCommands":
                command = (message["parameters"].get("command") or [""])[0]
                await self._shell(message, hello, reader, writer, command=command)
            elif message["document"] == "AWS-StartSSHSession" and self.spec.get("sshd"):
                await self._sshd(message, hello, reader, writer)
            else:
                await self._forward(message, hello, reader, writer)
        except SandboxError as error:
            writer.write(common.dump_line({**hello, "ok": False, "error": f"Unable to start command: {error}"}))
        finally:
            if not writer.is_closing():
                writer.close()

    def _track(self, session_id: str, process, writer) -> tuple:
        entry = (process, writer)
        self.sessions.setdefault(session_id, set()).add(entry)
        return entry

    async def _shell(self, message, hello, reader, writer, command: str = "") -> None:
        loop = asyncio.get_running_loop()
        user = message.get("run_as") or SSM_USER
        await loop.run_in_executor(None, self.sandbox.ensure)
        if user == SSM_USER:
            await loop.run_in_executor(None, self.sandbox.ensure_ssm_user)
        elif self.sandbox.user(user) is None:
            raise SandboxError(f"Failed to start pty since RunAs user {user} does not exist")
        inner = ["/bin/bash", "--noprofile", "--norc"] + (["-c", command] if command else [])
        # argv() may start the node's init (and wait for it): never on the event loop that serves every agent.
        argv = await loop.run_in_executor(None, functools.partial(self.sandbox.argv, inner, user=user))
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, self.sizes.get(message["session"]) or struct.pack("HHHH", 50, 200, 0, 0))
        process = await asyncio.create_subprocess_exec(
            "setsid", "-c", *argv, stdin=slave, stdout=slave, stderr=slave, close_fds=True
        )
        os.close(slave)
        entry = self._track(message["session"], process, writer)
        self.ptys.setdefault(message["session"], set()).add(master)
        if message["session"] in self.sizes:  # a size that came while the shell started
            with contextlib.suppress(OSError):
                fcntl.ioctl(master, termios.TIOCSWINSZ, self.sizes[message["session"]])
        writer.write(common.dump_line({**hello, "ok": True}))
        if message.get("shell_profile"):
            os.write(master, message["shell_profile"].encode() + b"\n")
        try:
            await _relay_fd(master, reader, writer)
        finally:
            self.ptys.get(message["session"], set()).discard(master)
            os.close(master)
            _kill(process)
            self.sessions.get(message["session"], set()).discard(entry)

    async def _sshd(self, message, hello, reader, writer) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sshd.prepare, self.sandbox)
        argv = await loop.run_in_executor(None, functools.partial(self.sandbox.argv, ["/usr/sbin/sshd", "-i", "-e"],
                                                                  user="root"))
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, start_new_session=True
        )
        entry = self._track(message["session"], process, writer)
        writer.write(common.dump_line({**hello, "ok": True}))
        try:
            up = asyncio.ensure_future(common.pump(reader, process.stdin))
            await common.pump(process.stdout, writer)
            up.cancel()
        finally:
            _kill(process)
            self.sessions.get(message["session"], set()).discard(entry)

    async def _forward(self, message, hello, reader, writer) -> None:
        params = message.get("parameters") or {}
        host = (params.get("host") or ["localhost"])[0]
        port = int((params.get("portNumber") or ["80"])[0])
        try:
            t_reader, t_writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        except (OSError, asyncio.TimeoutError):
            writer.write(common.dump_line({**hello, "ok": False, "error":
                                           f"Connection to destination port {port} on {host} failed, check SSM Agent logs."}))
            return
        entry = self._track(message["session"], None, t_writer)
        writer.write(common.dump_line({**hello, "ok": True}))
        try:
            up = asyncio.ensure_future(common.pump(reader, t_writer))
            await common.pump(t_reader, writer)
            await asyncio.wait_for(up, 5)
        except asyncio.TimeoutError:
            pass
        finally:
            t_writer.close()
            self.sessions.get(message["session"], set()).discard(entry)

    # --- Run Command ---------------------------------------------------------------------------------------
    async def _run_command(self, message: dict) -> None:
        command_id = message["command"]
        result = {"t": "result", "command": command_id, "status": "Failed", "code": -1, "stdout": "", "stderr": ""}
        try:
            step = LINUX_DOCUMENTS.get(message.get("document"))
            if step is None:
                result["stderr"] = f"{message.get('document')} is not supported on this platform (Linux)."
                raise _NotRun
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self.sandbox.ensure)
            folder = f"/var/lib/amazon/ssm/{self.id}/document/orchestration/{command_id}/{step}"
            os.makedirs(self.sandbox.path(folder), exist_ok=True)
            script = self.sandbox.path(folder + "/_script.sh")
            with open(script, "w", encoding="utf-8") as handle:
                handle.write("\n".join(message.get("commands") or []) + "\n")
            os.chmod(script, 0o700)
            argv = await loop.run_in_executor(None, functools.partial(
                self.sandbox.argv, ["/bin/sh", folder + "/_script.sh"], user="root",
                workdir=message.get("working_directory") or (folder if step == ANSIBLE_STEP else "/")))
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True,
            )
            self.commands[command_id] = process
            try:
                out, err = await asyncio.wait_for(process.communicate(), float(message.get("timeout") or 3600))
            except asyncio.TimeoutError:
                _kill(process)
                out, err = b"", b""
                result.update(status="TimedOut", code=-1)
            else:
                result.update(status="Success" if process.returncode == 0 else "Failed", code=process.returncode)
            result["stdout"] = out.decode("utf-8", "replace")
            result["stderr"] = err.decode("utf-8", "replace")
        except SandboxError as error:
            result["stderr"] = str(error)
        except _NotRun:
            pass
        finally:
            self.commands.pop(command_id, None)
        # As the real agent keeps a result until it can report it: after a restart, on the new channel.
        deadline = time.time() + 15
        while not self.stopping and time.time() < deadline:
            if self.writer is not None and not self.writer.is_closing():
                self.writer.write(common.dump_line(result))
                return
            await asyncio.sleep(0.2)


class _NotRun(Exception):
    """The command ends before it starts (its result is already set)."""


def _kill(process) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        try:
            process.kill()
        except ProcessLookupError:
            pass


async def _relay_fd(master: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Relay a pty master and a stream until the shell exits (EIO on the master) or the peer goes away."""
    loop = asyncio.get_running_loop()
    os.set_blocking(master, False)
    queue: asyncio.Queue = asyncio.Queue()

    def readable() -> None:
        try:
            data = os.read(master, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(master)
            queue.put_nowait(None)
        else:
            queue.put_nowait(data)

    loop.add_reader(master, readable)

    async def down() -> None:
        while True:
            data = await queue.get()
            if data is None:
                return
            writer.write(data)
            await writer.drain()

    async def up() -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            view = memoryview(data)
            while view:
                try:
                    written = os.write(master, view)
                    view = view[written:]
                except BlockingIOError:
                    await common.writable(master)  # the pty's input queue is full (4 KiB): wait until the shell reads
                except OSError:
                    return

    tasks = [asyncio.ensure_future(down()), asyncio.ensure_future(up())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        try:
            loop.remove_reader(master)
        except (ValueError, OSError):
            pass


class AgentHost:
    def __init__(self, state_dir: str, endpoint: str, msg_host: str, msg_port: int) -> None:
        self.state_dir = state_dir
        self.endpoint = endpoint.rstrip("/")
        self.msg_host = msg_host
        self.msg_port = msg_port
        self.agents: dict[str, Agent] = {}
        self.boots: dict[str, int] = {}  # the last boot of each node this host carried out
        self.light: Sandbox | None = None  # the sandbox every light node shares, made for the first one

    def sandbox_for(self, spec: dict):
        """A node's sandbox: its own, or for a light node its view of the one the light nodes share."""
        if not spec.get("light"):
            return Sandbox(self.state_dir, spec["id"], spec["hostname"], spec["os_release"], spec.get("proxy", ""),
                           platform=spec.get("platform", "al2023"), endpoint=spec.get("endpoint", ""))
        if self.light is None:
            self.light = Sandbox(self.state_dir, LightNode.SHARED_ID, LightNode.SHARED_ID, spec["os_release"],
                                 platform=spec.get("platform", "al2023"), endpoint=spec.get("endpoint", ""))
        return LightNode(self.light, spec["id"], spec["hostname"], spec.get("proxy", ""))

    def _fetch(self) -> list[dict]:
        with urllib.request.urlopen(f"{self.endpoint}/_lab/agents", timeout=5) as response:
            return json.load(response)["agents"]

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                specs = await loop.run_in_executor(None, self._fetch)
            except OSError:
                await asyncio.sleep(1.0)
                continue
            for spec in specs:
                if spec.get("boot", 0) != self.boots.setdefault(spec["id"], spec.get("boot", 0)):
                    await self._boot(spec)
                agent = self.agents.get(spec["id"])
                if spec["run"] and (agent is None or agent.stopping):
                    replacement = Agent(self, spec)
                    if agent is not None:
                        replacement.sandbox = agent.sandbox  # the node's disk survives an agent restart
                    self.agents[spec["id"]] = replacement
                    replacement.task = asyncio.ensure_future(replacement.run())
                elif not spec["run"] and agent is not None and not agent.stopping:
                    agent.stop()
                elif agent is not None:
                    agent.spec = spec
            await asyncio.sleep(0.5)

    async def _boot(self, spec: dict) -> None:
        """After RebootInstances: the agent comes back only if its unit is enabled on the node's disk."""
        loop = asyncio.get_running_loop()
        agent = self.agents.get(spec["id"])
        if agent is not None and not agent.stopping:
            agent.stop()
        sandbox = agent.sandbox if agent is not None else self.sandbox_for(spec)
        try:
            if not spec.get("light"):  # a light node's reboot restarts its agent only: the sandbox is shared
                await loop.run_in_executor(None, sandbox.stop_init)  # every process of the node ends
            await loop.run_in_executor(None, sandbox.ensure)
            if not spec.get("light"):
                await loop.run_in_executor(None, sandbox.new_boot_id)
            enabled = await loop.run_in_executor(None, sandbox.agent_enabled)
            body = json.dumps({"agent": enabled, "boot": spec.get("boot", 0)}).encode()
            request = urllib.request.Request(f"{self.endpoint}/_lab/nodes/{spec['id']}/booted", data=body,
                                             method="POST", headers={"Content-Type": "application/json"})
            await loop.run_in_executor(None, lambda: urllib.request.urlopen(request, timeout=5).close())
        except (OSError, SandboxError) as error:
            log.error("boot of %s: %s", spec["id"], error)
            return
        self.boots[spec["id"]] = spec.get("boot", 0)
        log.info("node %s rebooted; agent %s", spec["id"], "enabled" if enabled else "disabled: stays down")

    def shutdown(self) -> None:
        for agent in self.agents.values():
            agent.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ssm-lab-agents")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--message-host", default="127.0.0.1")
    parser.add_argument("--message-port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    host = AgentHost(args.state_dir, args.endpoint, args.message_host, args.message_port)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    def stop(*_):
        host.shutdown()
        loop.call_later(0.2, loop.stop)

    loop.add_signal_handler(signal.SIGTERM, stop)
    loop.add_signal_handler(signal.SIGINT, stop)
    _running = loop.create_task(host.run())  # held: the loop keeps only a weak reference
    try:
        loop.run_forever()
    finally:
        host.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
