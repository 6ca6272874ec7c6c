"""The test suite's warm interpreter, server side: a process that imports what every module run on the controller
imports (ansible's module_utils, boto3, botocore), then forks a child per AnsiballZ run handed to it by
``sitecustomize.py`` on its Unix socket.

A module run on the controller costs about 0.6 CPU-seconds, a third of it in those imports, and ``make test`` runs
thousands of them. The modules themselves, their module_utils from the AnsiballZ payload, and the AWS calls are what
ansible would run; only the interpreter's start is shared. Usage: ``python zygote.py SOCKET`` (the tests start it,
see tests/integration/ansible_cli.py); the socket's directory must be private to the user."""

import json
import os
import runpy
import signal
import socket
import sys
import traceback

PRELOAD = (
    "ansible.module_utils.basic",
    "ansible.module_utils.common.text.converters",
    "boto3",
    "boto3.session",
    "botocore.session",
    "botocore.client",
    "botocore.config",
    "botocore.exceptions",
    "botocore.waiter",
)
# The service models read by the modules the tests run: read once here, then shared by every child's clients.
SERVICES = ("ec2", "iam", "s3", "ssm", "sts", "kms", "logs", "cloudtrail")


def _share_botocore_models() -> None:
    """Give every botocore session of the children one loader, its service models already read (botocore's loader
    caches what it reads per instance; a module's fresh session would read the same JSON again). Only the default
    data path is shared: a session with AWS_DATA_PATH set gets a loader of its own, as before."""
    import botocore.loaders
    import botocore.session

    shared = botocore.loaders.create_loader()
    for service in SERVICES:
        for kind in ("service-2", "paginators-1", "waiters-2"):
            try:
                shared.load_service_model(service, kind)
            except botocore.exceptions.DataNotFoundError:
                pass
    for name in ("endpoints", "partitions", "sdk-default-configuration", "_retry"):
        try:
            shared.load_data(name)
        except botocore.exceptions.DataNotFoundError:
            pass
    original = botocore.loaders.create_loader

    def create_loader(search_path_string=None):
        return shared if search_path_string is None else original(search_path_string)

    botocore.session.create_loader = create_loader


def _receive(conn):
    """The hand-off: (argv, cwd, environment, umask, the client's three standard file descriptors)."""
    fds = []
    data, ancillary, _flags, _address = conn.recvmsg(4, socket.CMSG_SPACE(3 * 4))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(int.from_bytes(payload[i:i + 4], sys.byteorder) for i in range(0, len(payload), 4))
    while len(data) < 4:
        data += conn.recv(4 - len(data))
    size, body = int.from_bytes(data, "big"), b""
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise EOFError("the client went away mid-message")
        body += chunk
    request = json.loads(body)
    return request, fds


def _run(conn):
    """In the forked child: become the client's process, run its module, report the exit status."""
    request, fds = _receive(conn)
    for target, fd in zip((0, 1, 2), fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = list(request["argv"])
    sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))  # as ``python script.py`` would
    code = 0
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as stop:
        if stop.code is None:
            code = 0
        elif isinstance(stop.code, int):
            code = stop.code
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:  # pylint: disable=broad-except
        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    try:
        conn.sendall(str(code).encode())
    except OSError:
        pass
    os._exit(code)


def serve(path: str) -> None:
    """Preload, listen on ``path``, and fork a child per hand-off until the process that started us is gone."""
    parent = os.getppid()
    for name in PRELOAD:
        __import__(name)
    _share_botocore_models()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    listener.settimeout(2)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel; their status goes to the client
    while os.getppid() == parent:
        try:
            conn, _address = listener.accept()
        except socket.timeout:
            continue
        conn.settimeout(None)
        if os.fork() == 0:
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                listener.close()
                _run(conn)
            finally:
                os._exit(1)
        conn.close()
    listener.close()


if __name__ == "__main__":
    serve(sys.argv[1])
