"""Things every part of the lab agrees on: the account, the framing of the message channel, small helpers.

The lab plays AWS. Nothing here may come from the collection under test: a test whose two sides share one
rule cannot catch that rule being wrong.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import os
import secrets
import socket

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
ACCESS_KEY = "testing"
SECRET_KEY = "testing"

# The IAM users `ssm-lab up` creates unless told otherwise: those inventories/lab maps (operator_access_run_as in its
# group_vars/all.yml, which tests/lab/tests/test_lab_layout.py compares with this): alice, the operator Run As maps to
# the OS user alice, and moto, the identity of the lab's default credentials (arn:aws:sts::123456789012:user/moto),
# which runs site.yml and is mapped to ssm-user. operator_access refuses to map a user IAM does not have.
LAB_IAM_USERS = ("alice", "moto")

AGENT_VERSION = "3.3.1142.0"
PLUGIN_VERSION = "1.2.707.0"
HEARTBEAT_SECONDS = 2.0
# The real agent's ping happens every 5 minutes, but status follows a broken prerequisite within seconds
# because the control channel drops. The lab re-evaluates on every read, cached this long.
STATUS_CACHE_SECONDS = 1.0
# The lab's own AWS calls (what `ssm-lab up` builds, transcripts and Run Command output the service writes) say so
# in their User-Agent; the fault model (throttling, API delays) leaves them alone, so a lab started with faults on
# is built all the same, and only the calls of the code under test meet the faults.
INTERNAL_USER_AGENT = "ssm-lab-internal"

AMAZON_LINUX_2023 = {
    "PlatformType": "Linux",
    "PlatformName": "Amazon Linux",
    "PlatformVersion": "2023",
    "os_release": (
        'NAME="Amazon Linux"\nVERSION="2023"\nID="amzn"\nID_LIKE="fedora"\nVERSION_ID="2023"\n'
        'PLATFORM_ID="platform:al2023"\nPRETTY_NAME="Amazon Linux 2023.6.20241121"\nANSI_COLOR="0;33"\n'
        'CPE_NAME="cpe:2.3:o:amazon:amazon_linux:2023"\nHOME_URL="https://aws.amazon.com/linux/amazon-linux-2023/"\n'
        'SUPPORT_END="2029-06-30"\n'
    ),
}
UBUNTU_2404 = {
    "PlatformType": "Linux",
    "PlatformName": "Ubuntu",
    "PlatformVersion": "24.04",
    "os_release": (
        'PRETTY_NAME="Ubuntu 24.04.1 LTS"\nNAME="Ubuntu"\nVERSION_ID="24.04"\nVERSION="24.04.1 LTS (Noble Numbat)"\n'
        'VERSION_CODENAME=noble\nID=ubuntu\nID_LIKE=debian\nHOME_URL="https://www.ubuntu.com/"\n'
        "UBUNTU_CODENAME=noble\n"
    ),
}
# What a lab node's userland really is (the machine's Debian): the honest platform, and the one where apt works.
DEBIAN_12 = {
    "PlatformType": "Linux",
    "PlatformName": "Debian GNU/Linux",
    "PlatformVersion": "12",
    "os_release": (
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\n'
        'VERSION="12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\nHOME_URL="https://www.debian.org/"\n'
    ),
}
PLATFORMS = {"al2023": AMAZON_LINUX_2023, "ubuntu2404": UBUNTU_2404, "debian12": DEBIAN_12}
# Platforms whose SSM Agent the lab installs as a Debian package (dpkg -i at first boot, as user data would);
# on the others it is preinstalled, as on the AMIs.
DEB_AGENT_PLATFORMS = ("debian12",)


def now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def epoch(value: _dt.datetime | None) -> float | None:
    """AWS JSON protocols carry timestamps as epoch seconds."""
    return None if value is None else value.timestamp()


def internal_config(**settings):
    """botocore configuration for the lab's own calls (INTERNAL_USER_AGENT)."""
    from botocore.config import Config

    return Config(user_agent_extra=INTERNAL_USER_AGENT, **settings)


def random_hex(n: int) -> str:
    return secrets.token_hex((n + 1) // 2)[:n]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def state_dir(path: str | None = None) -> str:
    return os.path.abspath(path or os.environ.get("SSM_LAB_STATE_DIR") or ".lab")


# --- framing of the message channel --------------------------------------------------------------------
# Every connection to the message port starts with one JSON line (the "hello" of its role); a control
# channel then carries JSON lines both ways, a data channel raw bytes.


# The tasks started and not awaited by anyone: the event loop keeps only a weak reference to a task, so one that
# nothing else holds can be collected half-way (an agent that never answers a session request, now and then).
_RUNNING: set = set()


def spawn(coro) -> asyncio.Task:
    """Run ``coro`` as a task that nobody awaits, held until it is done."""
    task = asyncio.ensure_future(coro)
    _RUNNING.add(task)
    task.add_done_callback(_RUNNING.discard)
    return task


def dump_line(message: dict) -> bytes:
    return json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n"


async def read_line(reader: asyncio.StreamReader, limit_s: float | None = None) -> dict | None:
    try:
        raw = await asyncio.wait_for(reader.readline(), limit_s) if limit_s else await reader.readline()
    except (asyncio.TimeoutError, ConnectionError, asyncio.LimitOverrunError, ValueError):
        return None
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


async def writable(fd: int) -> None:
    """Wait until fd can be written to (a pty or pipe whose reader is behind), without polling, as the blocking
    write of the real agent or plugin would."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        await ready
    finally:
        loop.remove_writer(fd)


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, on_data=None, delay: float = 0.0) -> None:
    """Copy bytes until EOF; optionally tee them and delay each chunk by a one-way latency.

    The delay shifts delivery, it does not throttle: a chunk read at t is written at t+delay, in order.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue | None = asyncio.Queue() if delay > 0 else None

    async def delayed_writer():
        while True:
            due, data = await queue.get()
            if data is None:
                return
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    sender = asyncio.ensure_future(delayed_writer()) if queue is not None else None
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            if on_data:
                on_data(data)
            if queue is not None:
                queue.put_nowait((loop.time() + delay, data))
            else:
                writer.write(data)
                await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        if sender is not None:
            queue.put_nowait((0, None))
            try:
                await sender
            except (ConnectionError, asyncio.CancelledError):
                pass
        try:
            if writer.can_write_eof():
                writer.write_eof()
        except (OSError, RuntimeError):
            pass
