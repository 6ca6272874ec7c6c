"""The test suite's warm interpreter, client side (imported by every Python started with this directory on PYTHONPATH).

When ``BASTIONLESS_WARM_SOCKET`` names a running ``zygote.py``, this process was started to run an AnsiballZ
module file (or, with ``BASTIONLESS_WARM_CLI=1``, one of the ``ansible``, ``ansible-playbook`` and
``ansible-inventory`` commands), and it shares the zygote's mount namespace (``BASTIONLESS_WARM_MNTNS``: not inside
a lab node), it hands its argv, environment, working directory, umask and standard streams to the zygote, which runs
the module or the command in a fork of a process that has already imported ansible's module_utils and boto3, and
exits with its status. Anything else, or a zygote that does not answer, starts as usual. Only the tests set the
variables."""

import os
import sys


def _hand_off():
    path = os.environ.get("BASTIONLESS_WARM_SOCKET")
    script = sys.argv[0] if sys.argv else ""
    name = os.path.basename(script)
    module = name.startswith("AnsiballZ_") and name.endswith(".py")
    command = name in ("ansible", "ansible-playbook", "ansible-inventory") and os.environ.get("BASTIONLESS_WARM_CLI") == "1"
    if not path or not (module or command):
        return
    try:  # a module inside a lab node's sandbox (another mount namespace) must run there, never in the zygote
        if os.readlink("/proc/self/ns/mnt") != os.environ.get("BASTIONLESS_WARM_MNTNS"):
            return
    except OSError:
        return
    import array
    import json
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return  # no zygote: run the module here
    umask = os.umask(0o022)
    os.umask(umask)
    payload = json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask}).encode()
    message = len(payload).to_bytes(4, "big") + payload
    # From here on the zygote may run the module: whatever happens, this process must not run it a second time.
    status = b""
    try:
        sent = sock.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))])
        if sent < len(message):
            sock.sendall(message[sent:])
        while not status.endswith(b"\n"):
            chunk = sock.recv(64)
            if not chunk:
                break
            status += chunk
    except OSError as error:
        os.write(2, f"warm interpreter: the hand-off to {path} failed: {error}\n".encode())
        os._exit(1)
    if not status:
        os.write(2, b"warm interpreter: the module's process ended without an exit status\n")
        os._exit(1)
    os._exit(int(status))


_hand_off()
