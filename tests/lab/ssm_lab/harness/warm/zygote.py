"""The test suite's warm interpreter, server side: a process that imports what every module run on the controller
imports (ansible's module_utils, boto3, botocore), then forks a child per AnsiballZ run handed to it by
``sitecustomize.py`` on its Unix socket.

A module run on the controller costs about 0.6 CPU-seconds, a third of it in those imports, and ``make test`` runs
thousands of them. The modules themselves, their module_utils from the AnsiballZ payload, and the AWS calls are what
ansible would run; only the interpreter's start is shared. Usage: ``python zygote.py SOCKET`` (the tests start it,
see tests/integration/ansible_cli.py); the socket's directory must be private to the user.

The ``ansible``, ``ansible-playbook`` and ``ansible-inventory`` commands the tests run are handed over too (see
``CLI_SCRIPTS``): for them the zygote has also imported what those commands import that does not read ansible's
configuration (jinja2, yaml, multiprocessing, cryptography, ansible's module_utils: ``_cli_modules``). Nothing under
``ansible`` but its module_utils is imported before the fork: ``ansible.constants`` reads the configuration (the
working directory's ansible.cfg, the ``ANSIBLE_*`` variables) when it is imported, so the command's own process
imports it, with its own directory and environment, as a cold start would. Botocore's models are shared with the
command's processes too: its inventory plugin's clients and its connection plugins' clients in the forked workers.
The commands share the AnsiballZ payloads they build (``_SharedPayloads``), which ansible-core would build again in each."""

import atexit
import contextlib
import hashlib
import importlib.abc
import json
import os
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
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
# The console scripts whose runs the zygote takes too (sitecustomize.py hands them over when BASTIONLESS_WARM_CLI=1).
CLI_SCRIPTS = ("ansible", "ansible-playbook", "ansible-inventory")
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


# What decides which file a module name resolves to (besides the working directory, whose ansible.cfg may set them):
# commands that agree on all of them build the same AnsiballZ payloads.
_MODULE_SEARCH = ("ANSIBLE_CONFIG", "ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_COLLECTIONS_PATHS", "ANSIBLE_LIBRARY",
                  "ANSIBLE_MODULE_UTILS", "ANSIBLE_PLAYBOOK_DIR")


class _SharedPayloads(importlib.abc.MetaPathFinder):
    """The AnsiballZ payloads a command builds, kept for the zygote's later commands: ansible-core builds each module's
    payload once per run (reading and compiling the module and every module_util it imports, about 0.1 CPU-second a
    module) into the run's own local temporary directory (``ansiballz_cache``), and a test runs dozens of commands with
    the same modules. Here that directory is a link to one the zygote keeps per working directory and module search
    settings, so a later command reads the payload as a run's second worker does. ansible-core's own lock and
    write-then-rename keep concurrent commands safe; its clean-up at exit removes the link, not the payloads."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def find_spec(self, fullname, path, target=None):
        if fullname != "ansible.executor.module_common":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                original_exec = spec.loader.exec_module

                def exec_module(module, original_exec=original_exec):
                    original_exec(module)
                    self._patch(module)

                spec.loader.exec_module = exec_module
                return spec
        return None

    def _patch(self, module_common) -> None:
        find = module_common._find_module_utils  # pylint: disable=protected-access
        directory = self.directory

        def _find_module_utils(*args, **kwargs):
            link = os.path.join(module_common.C.DEFAULT_LOCAL_TMP, "ansiballz_cache")
            if not os.path.lexists(link):
                os.makedirs(directory, mode=0o700, exist_ok=True)
                with contextlib.suppress(FileExistsError):
                    os.symlink(directory, link)
            return find(*args, **kwargs)

        module_common._find_module_utils = _find_module_utils  # pylint: disable=protected-access


def _share_payloads(top: str, cwd: str, env: dict) -> None:
    key = json.dumps([os.path.realpath(cwd)] + [env.get(name) for name in _MODULE_SEARCH])
    directory = os.path.join(top, "ansiballz", hashlib.sha256(key.encode()).hexdigest()[:16])
    sys.meta_path.insert(0, _SharedPayloads(directory))


def _cli_modules() -> list:
    """What ``ansible-playbook`` imports that reads no configuration: every module it loads but ``ansible``'s own,
    except ``ansible.module_utils``. Asked of a throwaway interpreter (once per zygote), so that the list follows the
    installed ansible-core."""
    probe = ("import sys; before = set(sys.modules); import ansible.cli.playbook; "
             "print('\\n'.join(sorted(m for m in set(sys.modules) - before if not m.startswith('_') and "
             "(m.split('.')[0] != 'ansible' or m.startswith('ansible.module_utils.')))))")
    try:
        listed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                                check=True, cwd="/", env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return listed.split()


def _preload_cli() -> None:
    for name in _cli_modules():
        try:
            __import__(name)
        except Exception:  # pylint: disable=broad-except  # a module that needs more than an import: the child's
            pass
    if "ansible.constants" in sys.modules:  # never: the command must read its own configuration
        raise RuntimeError("the warm interpreter imported ansible.constants before a fork")


_FINISHED = threading.Event()


def _watch_client(conn) -> None:
    """A command whose client went away before its end (a test's timeout killed it) ends with its process group
    (its workers; the session connection's masters start sessions of their own and stay)."""
    def watch():
        try:
            while conn.recv(64):
                pass
        except OSError:
            pass
        if not _FINISHED.is_set():
            os.killpg(0, signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()


# What the preloaded imports printed (a deprecation warning, say): every child prints it again, first, as the process
# that imported them itself would have.
_PRELOAD_OUTPUT = {1: b"", 2: b""}


@contextlib.contextmanager
def _kept_output():
    """Keep what is written to stdout and stderr while open, for _replay_preload_output."""
    saved = {fd: os.dup(fd) for fd in _PRELOAD_OUTPUT}
    files = {fd: tempfile.TemporaryFile() for fd in _PRELOAD_OUTPUT}  # pylint: disable=consider-using-with
    for fd, handle in files.items():
        os.dup2(handle.fileno(), fd)
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for fd, handle in files.items():
            os.dup2(saved[fd], fd)
            os.close(saved[fd])
            handle.seek(0)
            _PRELOAD_OUTPUT[fd] = handle.read()
            handle.close()


def _replay_preload_output() -> None:
    for fd, output in _PRELOAD_OUTPUT.items():
        if output:
            os.write(fd, output)


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


def _fresh_standard_streams() -> None:
    """sys.stdin, stdout and stderr made anew over the client's descriptors, as a new interpreter makes them (the
    zygote's were made over /dev/null: ansible-core reconfigures them at its start, which a stream that believes it
    can seek refuses on a pipe)."""
    for name, fd, mode in (("stdin", 0, "r"), ("stdout", 1, "w"), ("stderr", 2, "w")):
        line = mode == "w" and (fd == 2 or os.isatty(fd))
        stream = open(fd, mode, buffering=1 if line else -1, closefd=False,  # pylint: disable=consider-using-with
                      errors="backslashreplace" if fd == 2 else None)
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _run(conn):
    """In the forked child: become the client's process, run its module, report the exit status."""
    request, fds = _receive(conn)
    for target, fd in zip((0, 1, 2), fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    _fresh_standard_streams()
    _replay_preload_output()
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = list(request["argv"])
    if os.path.basename(sys.argv[0]) in CLI_SCRIPTS:
        os.setpgid(0, 0)
        _watch_client(conn)
        _share_payloads(_TOP[0], request["cwd"], request["env"])
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
    try:  # what an interpreter does at its end: wait for its threads, run its exit functions (ansible-core removes
        threading._shutdown()  # pylint: disable=protected-access  # its local temporary directory in one)
        atexit._run_exitfuncs()  # pylint: disable=protected-access
    except BaseException:  # pylint: disable=broad-except
        traceback.print_exc()
        code = code or 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    _FINISHED.set()
    try:  # the status ends with a newline: the command's workers hold the socket too, so EOF may come later
        conn.sendall(f"{code}\n".encode())
    except OSError:
        pass
    os._exit(code)


_TOP = [""]  # the zygote's private directory: its socket, and the payloads its commands share


def _remove_top(*_args) -> None:
    shutil.rmtree(_TOP[0], ignore_errors=True)
    os._exit(0)


def serve(path: str) -> None:
    """Preload, listen on ``path``, and fork a child per hand-off until the process that started us is gone (or
    until it ends us); then remove the socket's directory, made for us alone."""
    parent = os.getppid()
    _TOP[0] = os.path.dirname(os.path.abspath(path))
    signal.signal(signal.SIGTERM, _remove_top)
    with _kept_output():
        for name in PRELOAD:
            __import__(name)
        _preload_cli()
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
    _remove_top()


if __name__ == "__main__":
    serve(sys.argv[1])
