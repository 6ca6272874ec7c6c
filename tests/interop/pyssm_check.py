"""Interoperability check: a third-party Session Manager client, pyssm-client 0.2.0, against the SSM lab.

Two checks through pyssm-client's library API (not its CLI), against the endpoint in AWS_ENDPOINT_URL:

- ``shell``: ``pyssm_client.utils.command.run_command`` runs ``echo pyssm-$((6*7))`` in a shell session on the node;
  the output must hold ``pyssm-42`` (computed on the node, not the echoed command line) and the exit status be 0;
- ``port-forward``: an AWS-StartPortForwardingSession to a TCP echo server this script runs on 127.0.0.1 (the lab's
  agents connect from the controller host), carried by pyssm-client's ``PortForwardBridge`` over its
  ``SessionDataChannel`` (smux, wired as its own CLI does in cli/coordinator.py): two TCP connections to the local
  port at once each push 256 KiB of random bytes, each echo must match by SHA-256, and closing them must close the
  destination connections (smux FIN).

pyssm-client covers only the protocol's normal path: it never retransmits, does not check payload digests and drops
its input while paused. So this complements the tests with AWS's own session-manager-plugin, it does not replace them.

    .venv-pyssm/bin/python tests/interop/pyssm_check.py [--target NODE] [--timeout 120] [--verbose]

Reads AWS_ENDPOINT_URL, AWS_REGION (or AWS_DEFAULT_REGION), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (``ssm-lab up``
prints them). One ``ok <check> ...`` or ``FAIL <check>: ...`` line per check; exit 0 when both pass, 1 when one fails,
2 on a setup error, 3 when the watchdog ends a run that outlived its timeout.
"""

import argparse
import asyncio
import hashlib
import logging
import os
import socket
import sys
import threading
import time

import boto3
from botocore.config import Config
from pyssm_client.cli.port_forward import PortForwardBridge
from pyssm_client.communicator.data_channel import SessionDataChannel
from pyssm_client.communicator.utils import create_websocket_config
from pyssm_client.constants import CLIENT_VERSION
from pyssm_client.session.plugins.port import PortSessionPlugin
from pyssm_client.session.registry import get_session_registry
from pyssm_client.session.session_handler import SessionHandler
from pyssm_client.utils.command import run_command

SHELL_COMMAND, SHELL_EXPECTED = "echo pyssm-$((6*7))", "pyssm-42"
PAYLOAD, CONNECTIONS = 256 * 1024, 2
STEP = 45.0  # seconds at most for one check's main wait


class CheckFailed(Exception):
    pass


class Run:
    """The lab's endpoint, the target node, the deadline, and the port sessions to terminate at the end."""

    def __init__(self, endpoint, region, deadline):
        self.endpoint, self.region, self.deadline, self.target = endpoint, region, deadline, None
        self.ssm = boto3.client("ssm", endpoint_url=endpoint, region_name=region,
                                config=Config(connect_timeout=5, read_timeout=20, retries={"max_attempts": 2}))
        self.sessions, self.results = [], {}

    def budget(self):  # what is left before the deadline, less time for a check's clean-up (at most STEP)
        return max(1.0, min(STEP, self.deadline - time.monotonic() - 10))


async def check_shell(run):
    started, seconds = time.monotonic(), run.budget()
    # run_command makes its own SSM client on endpoint_url, starts the session and, in its finally block, closes the
    # WebSocket and calls TerminateSession itself (also when wait_for cancels it).
    try:
        result = await asyncio.wait_for(run_command(run.target, SHELL_COMMAND, region=run.region,
                                                    endpoint_url=run.endpoint, timeout=max(1, int(seconds) - 2)),
                                        seconds)
    except asyncio.TimeoutError:
        raise CheckFailed(f"no answer within {seconds:.0f} s") from None
    out = result.stdout.decode("utf-8", "replace")
    if result.exit_code != 0 or SHELL_EXPECTED not in out:
        raise CheckFailed(f"expected {SHELL_EXPECTED!r} and exit 0 from {SHELL_COMMAND!r}, got exit "
                          f"{result.exit_code}, stdout {out!r}, stderr {result.stderr[-200:]!r}")
    return f"{run.target}: {SHELL_COMMAND!r} printed {SHELL_EXPECTED} in {time.monotonic() - started:.2f} s"


async def start_echo_server(handlers):
    """The port forward's destination on 127.0.0.1: echoes every connection; ``handlers`` collects their tasks."""

    async def echo(reader, writer):
        handlers.add(asyncio.current_task())
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(echo, "127.0.0.1", 0)


async def all_ended(handlers, count):
    while len(handlers) < count or not all(task.done() for task in handlers):
        await asyncio.sleep(0.05)


async def round_trip(port, number, progress):
    """Push PAYLOAD random bytes through one local connection while reading the echo; compare by SHA-256."""
    data = os.urandom(PAYLOAD)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    writer.write(data)
    sender, got = asyncio.ensure_future(writer.drain()), bytearray()
    try:
        # pyssm-client quirk: its bridge ends both directions as soon as the local client half-closes, so the whole
        # echo is read before this end closes (no write_eof).
        while len(got) < len(data):
            chunk = await reader.read(65536)
            if not chunk:
                raise CheckFailed(f"connection {number} ended after {len(got)} of {len(data)} echoed bytes")
            got += chunk
            progress[number] = len(got)
        await sender
    except (ConnectionError, OSError) as error:
        raise CheckFailed(f"connection {number}: {error!r}") from None
    finally:
        sender.cancel()
        writer.close()
    if hashlib.sha256(got).digest() != hashlib.sha256(data).digest():
        raise CheckFailed(f"connection {number}: the echo differs from what was sent (sha256)")
    return hashlib.sha256(data).hexdigest()[:12]


async def check_port_forward(run):
    started, handlers = time.monotonic(), set()
    echo_server = await start_echo_server(handlers)
    echo_port = echo_server.sockets[0].getsockname()[1]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        local_port = probe.getsockname()[1]
    params = {"portNumber": str(echo_port), "localPortNumber": str(local_port)}
    answer = run.ssm.start_session(Target=run.target, DocumentName="AWS-StartPortForwardingSession",
                                   Parameters={name: [value] for name, value in params.items()})
    run.sessions.append(answer["SessionId"])
    registry = get_session_registry()
    if not registry.is_session_type_supported("Port"):
        registry.register_plugin("Port", PortSessionPlugin())
    session = await SessionHandler().validate_input_and_create_session({
        "sessionId": answer["SessionId"], "streamUrl": answer["StreamUrl"], "tokenValue": answer["TokenValue"],
        "target": run.target, "documentName": "AWS-StartPortForwardingSession", "sessionType": "Port",
        "parameters": {"portNumber": str(echo_port)}})
    channel = SessionDataChannel(create_websocket_config(answer["StreamUrl"], answer["TokenValue"],
                                                         connect_timeout=10.0, retry_attempts=1))
    closed = asyncio.Event()
    channel.set_coalescing(False)  # smux bytes go out as they come, as in pyssm-client's CLI
    channel.set_closed_handler(closed.set)
    channel.set_client_info("pyssm-client", CLIENT_VERSION)
    session.set_data_channel(channel)
    bridge = PortForwardBridge(channel, closed, params)  # its handlers are in place before the WebSocket opens
    progress = dict.fromkeys(range(1, CONNECTIONS + 1), 0)
    try:
        port = await bridge.start(local_port)
        try:
            await asyncio.wait_for(session.execute(), 15)
        except asyncio.TimeoutError:
            raise CheckFailed("the data channel did not open within 15 s") from None
        seconds = run.budget()
        try:
            digests = await asyncio.wait_for(asyncio.gather(
                *(round_trip(port, number, progress) for number in progress)), seconds)
        except asyncio.TimeoutError:
            raise CheckFailed(f"no complete echo within {seconds:.0f} s: " + ", ".join(
                f"{got} of {PAYLOAD} bytes back on connection {number}" for number, got in progress.items())
                + ("; the data channel closed" if closed.is_set() else "")) from None
        # pyssm-client quirk: PortForwardBridge.stop() sends no smux FIN for streams still open (its SmuxSession
        # marks itself closed before it closes them), so let each connection's own cleanup send its FIN first.
        try:
            await asyncio.wait_for(all_ended(handlers, CONNECTIONS), 5)
        except asyncio.TimeoutError:
            raise CheckFailed("the destination connections were still open 5 s after the local clients closed "
                              "(smux FIN)") from None
        elapsed = time.monotonic() - started
    finally:
        await bridge.stop()
        try:
            await asyncio.wait_for(session.terminate_session(), 5)  # pyssm-client closes its WebSocket
        except asyncio.TimeoutError:
            print("warning: pyssm-client's WebSocket close did not complete within 5 s", file=sys.stderr)
        except Exception as error:  # noqa: BLE001 - report, do not mask the check's own result
            print(f"warning: pyssm-client's WebSocket close: {error!r}", file=sys.stderr)
        echo_server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
    return (f"{run.target}: {CONNECTIONS} concurrent connections 127.0.0.1:{port} -> 127.0.0.1:{echo_port}, "
            f"{PAYLOAD // 1024} KiB each echoed intact (sha256 {', '.join(digests)}) in {elapsed:.2f} s")


CHECKS = {"shell": check_shell, "port-forward": check_port_forward}


async def run_checks(run):
    for name, check in CHECKS.items():
        line = f"FAIL {name}: interrupted"
        try:
            line = f"ok {name} {await check(run)}"
        except asyncio.CancelledError:
            line = f"FAIL {name}: the overall timeout expired during this check"
            raise
        except Exception as error:  # noqa: BLE001 - every failure is reported under its check's name
            line = f"FAIL {name}: {error if isinstance(error, CheckFailed) else repr(error)}"
        finally:
            run.results[name] = line.startswith("ok")
            print(line, flush=True)


def setup_error(message):
    sys.stderr.write(f"pyssm_check: {message}\n")
    sys.exit(2)


def watchdog_expired(seconds):
    print(f"FAIL watchdog: the run did not end within {seconds:.0f} s", flush=True)
    os._exit(3)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", help="node id (default: the first Online node)")
    parser.add_argument("--timeout", type=float, default=120.0, help="overall timeout in seconds (default 120)")
    parser.add_argument("--verbose", action="store_true", help="pyssm-client's debug log on stderr")
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(name)s %(levelname)s: %(message)s")
    for noisy in ("botocore", "boto3", "urllib3", "websockets", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    missing = [name for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")
               if not (region if name == "AWS_REGION" else os.environ.get(name))]
    if missing:
        setup_error(f"set {', '.join(missing)} (the `export` lines of ssm-lab up)")
    # The last resort if something blocks the event loop (boto3 calls are synchronous): end the process.
    watchdog = threading.Timer(args.timeout + 15, watchdog_expired, (args.timeout + 15,))
    watchdog.daemon = True
    watchdog.start()
    run = Run(os.environ["AWS_ENDPOINT_URL"], region, time.monotonic() + args.timeout)
    try:
        run.target = args.target or next(
            (node["InstanceId"] for page in run.ssm.get_paginator("describe_instance_information").paginate()
             for node in page.get("InstanceInformationList", []) if node.get("PingStatus") == "Online"), None)
    except Exception as error:  # noqa: BLE001
        setup_error(f"DescribeInstanceInformation at {run.endpoint} failed: {error}")
    if not run.target:
        setup_error(f"no Online node at {run.endpoint}")
    try:
        asyncio.run(asyncio.wait_for(run_checks(run), args.timeout))
    except asyncio.TimeoutError:
        pass
    finally:
        for session_id in run.sessions:
            try:
                run.ssm.terminate_session(SessionId=session_id)
            except Exception as error:  # noqa: BLE001 - report, do not mask the checks' result
                print(f"warning: TerminateSession {session_id}: {error}", file=sys.stderr)
    watchdog.cancel()
    for name in (name for name in CHECKS if name not in run.results):
        print(f"FAIL {name}: not run, the overall timeout of {args.timeout:g} s expired", flush=True)
    failed = [name for name in CHECKS if not run.results.get(name)]
    if failed:
        print(f"pyssm_check: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
