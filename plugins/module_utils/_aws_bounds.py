# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Bounds on a module's AWS calls, so that a task ends within its timeout whatever the endpoint does.

botocore bounds one attempt of a call by its read timeout (60 s by default) and retries a timed-out attempt (3 to 10
attempts), so an endpoint that stops answering would hold a task for minutes. ``bounded_aws_config`` returns the
``aws_config`` (botocore ``Config`` settings) under which one call, its attempts and botocore's backoff between them
end within a number of seconds: fewer attempts when the time does not allow them all, and each attempt's connect and
read timeouts from the rest. A timed-out call raises botocore's ReadTimeoutError or ConnectTimeoutError (``is_timeout``
tells), and no thread is left behind: nothing of the call goes on after the task.

A request AWS took but answered too late may still have been carried out (a session started, a command sent); the
caller says so where it matters. ``call_detached`` is for a call whose late result must be undone (StartSession): the
call runs in a detached process, the caller waits for it a bounded time, and when the caller has given up the process
hands the late result to an undo function (TerminateSession) as it arrives.

Internal to bastionless.ssm: no compatibility promise.
"""

import contextlib
import os
import pickle
import select
import socket
import struct
import time
from typing import Any
from typing import Callable
from typing import Dict
from typing import Optional

try:
    from botocore.exceptions import ClientError
    from botocore.exceptions import ConnectTimeoutError
    from botocore.exceptions import ReadTimeoutError
    TIMEOUT_ERRORS: tuple = (ReadTimeoutError, ConnectTimeoutError)
except ImportError:  # reported by AnsibleAWSModule
    TIMEOUT_ERRORS = ()
    ClientError = None

BACKOFF_CAP = 20.0  # the most seconds botocore's standard mode sleeps before a retry
MIN_ATTEMPT_SECONDS = 5.0  # an attempt gets at least this long, or there is one attempt only
MAX_CONNECT_SECONDS = 10.0
DEFAULT_ATTEMPTS = 3  # botocore's own default (standard mode), first attempt included
ACK_SECONDS = 30.0  # how long a detached call's process waits for its caller to take the result


class Late(Exception):
    """A detached call did not answer within its time (it goes on in its process, which undoes its result)."""


class Deadline:
    """A point in time a task must not pass (``clock`` for the tests)."""

    def __init__(self, seconds: float, clock=time.monotonic) -> None:
        self._clock = clock
        self.seconds = seconds
        self.end = clock() + seconds

    def left(self) -> float:
        return max(self.end - self._clock(), 0.0)

    def passed(self) -> bool:
        return self._clock() >= self.end


def most_backoff(attempts: int) -> float:
    """The most seconds botocore sleeps between ``attempts`` attempts of one call (standard mode: up to 2**(n-1) s
    before retry n, at most BACKOFF_CAP; legacy's sleeps are as long, uncapped, which changes nothing for the few
    attempts a bound allows)."""
    return sum(min(2.0 ** retry, BACKOFF_CAP) for retry in range(attempts - 1))


def _user_attempts(retries: Any) -> Optional[int]:
    """The attempts a ``retries`` setting asks for, the first included; None when it does not say."""
    if not isinstance(retries, dict):
        return None
    for key, extra in (("total_max_attempts", 0), ("max_attempts", 1)):
        value = retries.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return max(value + extra, 1)
    return None


def call_settings(seconds: float, attempts: int = DEFAULT_ATTEMPTS) -> Dict[str, Any]:
    """(attempts, connect_timeout, read_timeout) for one call to end within ``seconds``, as a dict: the attempts
    (at most ``attempts``) that leave each at least MIN_ATTEMPT_SECONDS after botocore's backoff, and each attempt's
    share split between connecting (a third, at most MAX_CONNECT_SECONDS) and reading."""
    seconds = max(float(seconds), 1.0)
    attempts = max(int(attempts), 1)
    while attempts > 1 and (seconds - most_backoff(attempts)) / attempts < MIN_ATTEMPT_SECONDS:
        attempts -= 1
    share = (seconds - most_backoff(attempts)) / attempts
    connect = round(min(share / 3, MAX_CONNECT_SECONDS), 3)
    return {"attempts": attempts, "connect_timeout": connect, "read_timeout": round(share - connect, 3)}


def bounded_aws_config(aws_config: Optional[Dict[str, Any]], seconds: float) -> Dict[str, Any]:
    """The module's ``aws_config`` (botocore Config settings; None for none) with the settings that end each call
    within ``seconds``: the attempts it asks for (botocore's default when it does not say) as far as they fit, its
    retry mode (standard when unset), and timeouts no longer than its own."""
    config = dict(aws_config or {})
    retries = dict(config.get("retries") or {})
    settings = call_settings(seconds, _user_attempts(retries) or DEFAULT_ATTEMPTS)
    for name in ("connect_timeout", "read_timeout"):
        own = config.get(name)
        if not (isinstance(own, (int, float)) and not isinstance(own, bool) and 0 < own < settings[name]):
            config[name] = settings[name]
    retries.pop("max_attempts", None)
    retries["total_max_attempts"] = settings["attempts"]
    retries.setdefault("mode", "standard")
    config["retries"] = retries
    return config


def detached_aws_config(aws_config: Optional[Dict[str, Any]], seconds: float) -> Dict[str, Any]:
    """The ``aws_config`` of a call made with call_detached: each attempt reads for ``seconds`` at least (the caller's
    bound and the time a late answer is waited for), so that a late answer arrives to be undone instead of being
    retried (each attempt may have been carried out); its attempts as asked."""
    config = dict(aws_config or {})
    own = config.get("read_timeout")
    if not (isinstance(own, (int, float)) and not isinstance(own, bool) and own > seconds):
        config["read_timeout"] = seconds
    config.setdefault("connect_timeout", MAX_CONNECT_SECONDS)
    return config


def is_timeout(error: BaseException) -> bool:
    """Whether an error is (or was caused by) an AWS call that timed out: botocore's ReadTimeoutError or
    ConnectTimeoutError, also wrapped in an AnsibleAWSError (its ``exception``) or raised from one."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if TIMEOUT_ERRORS and isinstance(error, TIMEOUT_ERRORS):
            return True
        error = getattr(error, "exception", None) or error.__cause__
    return False


def slow_endpoint(call: str, seconds: float, option: str, endpoint: Optional[str]) -> str:
    """The sentence for an AWS call that did not answer in time, naming the option that bounds it and the fix."""
    where = f" {endpoint}" if endpoint else ""
    return (f"{call} did not answer within {seconds:g} s ({option}): the Systems Manager endpoint{where} is slow or "
            f"unreachable. Check the network path to it (proxy, VPC endpoint) or raise {option}.")


def _portable(outcome):
    """The outcome, as pickle can carry it: a modelled AWS error (a class botocore makes at run time) as the
    ClientError it is, any other error that does not pickle as a RuntimeError with its text."""
    kind, value = outcome
    if kind == "error" and ClientError is not None and isinstance(value, ClientError):
        value = ClientError(value.response, value.operation_name)
    try:
        return pickle.dumps((kind, value))
    except Exception:  # pylint: disable=broad-exception-caught
        return pickle.dumps((kind, RuntimeError(f"{type(value).__name__}: {value}")))


def close_fds_except(keep) -> None:
    """Close every file descriptor above 2 but those in ``keep`` (a detached child keeps nothing of its parent's)."""
    low = 3
    for fd in sorted(keep) + [min(os.sysconf("SC_OPEN_MAX"), 65536)]:
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1


def _carry(call: Callable[[], Any], undo: Callable[[Any], None], channel: socket.socket) -> None:
    """In the detached process: make the call, hand the outcome to the caller, undo the result it did not take."""
    try:
        outcome = ("ok", call())
    except Exception as error:  # pylint: disable=broad-exception-caught
        outcome = ("error", error)
    data = _portable(outcome)
    taken = False
    with contextlib.suppress(OSError):
        channel.settimeout(ACK_SECONDS)
        channel.sendall(struct.pack("!I", len(data)) + data)
        taken = channel.recv(1) == b"k"  # b"" once the caller has given up and closed its end
    if not taken and outcome[0] == "ok":
        with contextlib.suppress(Exception):
            undo(outcome[1])


def call_detached(call: Callable[[], Any], seconds: float, undo: Callable[[Any], None]) -> Any:
    """call()'s result, or its error raised here, when it comes within ``seconds``; Late when it does not. The call
    runs in a detached process (a fork of this one, so ``call`` uses what is prepared for it here: a client of its
    own), which outlives the caller: a result that comes after the caller gave up goes to ``undo`` (end a late
    session). The call's client should read for longer than ``seconds`` (detached_aws_config), or there is never a
    late result to undo."""
    mine, theirs = socket.socketpair()
    child = os.fork()
    if child == 0:  # pragma: no cover - the first child: detach, fork the carrier, leave
        try:
            mine.close()
            os.setsid()
            if os.fork() == 0:
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)  # the module's output pipe is not held open by the carrier
                close_fds_except({theirs.fileno()})
                _carry(call, undo, theirs)
        finally:
            os._exit(0)  # never back into the caller's code (no atexit, no buffers flushed twice)
    theirs.close()
    os.waitpid(child, 0)
    deadline = time.monotonic() + seconds
    data = b""
    try:
        while True:
            size = struct.unpack("!I", data[:4])[0] if len(data) >= 4 else None
            if size is not None and len(data) >= 4 + size:
                break
            left = deadline - time.monotonic()
            ready = select.select([mine], [], [], max(left, 0))[0] if left > 0 else []
            if not ready:
                raise Late()
            chunk = mine.recv(65536)
            if not chunk:
                raise RuntimeError("the process of the AWS call ended without an answer")
            data += chunk
        with contextlib.suppress(OSError):
            mine.sendall(b"k")
    finally:
        mine.close()
    kind, value = pickle.loads(data[4:4 + size])
    if kind == "error":
        raise value
    return value
