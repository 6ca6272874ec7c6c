# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The resident Python that bastionless.ssm.session runs in a node's session shell, where the node has python3.

This file is not imported on the controller: its source is sent through the session when the session starts (see
_session_protocol.setup_steps, compressed) and runs on the node as ``python3 -c <bootstrap> <source> <ready line>
<auto|fork>``. Standard library only, Python 3.6 or later (3.8 or later for the module runs below).

It reads requests from the session's pty (stdin) and writes framed replies to it (stdout), exactly as the sh script
of _session_protocol.command_script frames them, so the master and the connection read both the same way::

    <marker> <0|1|2: stdin follows; 2: as segments>[&: only if the request before succeeded] [<python interpreter>]
    <the command, base64 lines>
    <marker>
    <the command's stdin, base64 lines>     (when announced)
    <marker>                                (when announced)

Segmented stdin (``2``) names the large pieces of a module wrapper by their SHA-256 once it has sent them
(_session_protocol.segments, Segments below), so a module's payload crosses the session once per session, not once
per task; a piece no longer kept is answered with status 252 and `` M``, and the connection sends it again. A request
marked ``&`` runs only when the one before it exited 0 (else status 253): the connection sends a task's commands that
depend on each other in one exchange.

A command runs with ``/bin/sh -c``: one process, where the sh script costs about eight (base64, mktemp, cat, rm and
their subshells).

A request that names an interpreter is Ansible's pipelined module run (``<interpreter>``, or ``/bin/sh -c
'<interpreter> && sleep 0'``, with an AnsiballZ wrapper on stdin; _session_protocol.pipelined_interpreter). When the
interpreter is this Python, the module runs with ``ansible.module_utils.basic`` and the AnsiballZ loader already
imported, from the first module's payload: a module run then costs the node the module's own work, not a new
interpreter importing ``module_utils`` again (about 90 ms of CPU). That is done only when every preloaded file is byte
for byte (CRC-32 and size) in this module's payload; the preloaded modules are then pointed at this payload, as if it
had imported them. Anything else (another interpreter, another ansible-core, a wrapper this code does not know) runs
as a plain command.

ansible-core's everyday file and command modules (IN_PROCESS) run in this process itself, which puts back after each
run what a module may change in it (Resident); every other module, and every module with ``fork`` as the second
argument (the connection's module_isolation), runs in a fork of it. Either way, what each run would otherwise do again
is done once here: the payloads' other files are compiled and kept (Compiled), and so are the wrapper's definitions
(Wrappers). Measured with Python 3.11, a ``lineinfile`` costs the node 8 ms of CPU in this process, 16 in a fork, and
26 in a fork that compiles its files itself.

The loader it preloads is a private module of ansible-core; the controller names an interpreter in a request (and so
asks for a fork) only when its own ansible-core, which builds the payloads, is one _session_support.module_forks
accepts.
"""

import base64
import binascii
import hashlib
import io
import os
import re
import select
import subprocess
import sys
import time
import zipfile

ANSIBLE_ROOTS = ("ansible", "ansible_collections")
PRELOAD = ("ansible.module_utils._internal._ansiballz._loader", "ansible.module_utils.basic")
ZIP_DATA = re.compile(rb"^zip_data='([A-Za-z0-9+/=]+)',?$", re.M)  # how ansible-core 2.19's wrapper passes the zip
WRAPPER = b"\n_ANSIBALLZ_WRAPPER = True\n"


def payload_archive(path: str) -> bool:
    """Whether path is (inside) an AnsiballZ payload zip: .../ansible_<module>_payload.zip[/...]."""
    archive, sep, rest = path.partition("_payload.zip")
    return bool(sep) and os.path.basename(archive).startswith("ansible_") and rest[:1] in ("", os.sep)


class Preloaded:
    """ansible.module_utils imported once into this process, and what they were imported from."""

    def __init__(self) -> None:
        self.files = None  # {module name: (path in the zip, CRC-32, size)}; None: not tried; {}: not possible

    def load(self, payload: bytes) -> None:
        import importlib
        import shutil
        import tempfile

        self.files = {}
        folder = tempfile.mkdtemp(prefix="bastionless-ssm-")
        archive = os.path.join(folder, "ansible_preload_payload.zip")
        before = set(sys.modules)
        try:
            with open(archive, "wb") as handle:
                handle.write(payload)
            sys.path.insert(0, archive)
            for name in PRELOAD:
                importlib.import_module(name)
            prefix = archive + os.sep
            with zipfile.ZipFile(archive) as zipped:
                for name, module in list(sys.modules.items()):
                    path = getattr(module, "__file__", None) or ""
                    if path.startswith(prefix):
                        info = zipped.getinfo(path[len(prefix):])
                        self.files[name] = (info.filename, info.CRC, info.file_size)
        except Exception:  # any failure: forget what was imported, and run modules as plain commands
            for name in set(sys.modules) - before:
                if name.partition(".")[0] in ANSIBLE_ROOTS:
                    del sys.modules[name]
            self.files = {}
        finally:
            if archive in sys.path:
                sys.path.remove(archive)
            sys.path_importer_cache.clear()
            shutil.rmtree(folder, ignore_errors=True)

    def matches(self, zipped) -> bool:
        """Whether every preloaded file is in zipped (a payload's ZipFile) with the same CRC-32 and size."""
        try:
            for path, crc, size in self.files.values():
                info = zipped.getinfo(path)
                if info.CRC != crc or info.file_size != size:
                    return False
        except KeyError:
            return False
        return True


class ZipImporterWhenUsed:
    """zipimport's importer of a folder of the payload, the preloaded modules' __loader__, made when first used (to read
    a module's source for a traceback, say): making one reads the zip's whole directory."""

    def __init__(self, folder: str) -> None:
        self.folder, self.importer = folder, None

    def __getattr__(self, name):
        if self.importer is None and name == "get_source" and in_memory(self.folder) is not None:
            return lambda fullname: in_memory_source(self.folder, fullname.replace(".", "/"))
        if self.importer is None:
            import zipimport

            try:
                self.importer = zipimport.zipimporter(self.folder)
            except (ImportError, OSError):  # the payload is gone (a traceback printed after the wrapper's cleanup)
                raise AttributeError(name) from None
        return getattr(self.importer, name)


class Rebase:
    """In a module's fork: the first import of an ansible module after the wrapper has put its payload on sys.path
    points the preloaded modules (their __file__, __loader__, __spec__, and the packages' __path__) at that payload,
    so the rest of the module's imports, and everything that reads those attributes, use it."""

    def __init__(self, files: dict, code: dict) -> None:
        self.files, self.code = files, code
        self.done = False
        self.archive = ""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] not in ANSIBLE_ROOTS:
            return None
        if not self.done:
            archive = next((p for p in sys.path if isinstance(p, str) and payload_archive(p)), None)
            if archive:
                self.rebase(archive)
        if self.done:
            spec = self.compiled(name)
            if spec is not None:
                return spec
        parent = sys.modules.get(name.rpartition(".")[0])
        search = getattr(parent, "__path__", None)
        if self.done and path is not None and search is not None and list(path) != list(search):
            # The import system read the parent's __path__ before this rebased it: search the new one.
            from importlib.machinery import PathFinder

            return PathFinder.find_spec(name, list(search), target)
        return None

    def compiled(self, name: str):
        """A spec that loads name from the code Compiled kept for this payload, or None."""
        import importlib.util

        base = name.replace(".", "/")
        for inner in (base + "/__init__.py", base + ".py"):
            code = self.code.get(inner)
            if code is not None:
                loader = CodeLoader(code, self.archive, inner)
                spec = importlib.util.spec_from_loader(name, loader, origin=loader.get_filename(name),
                                                       is_package=loader.is_package(name))
                spec.has_location = True
                if spec.submodule_search_locations is not None:
                    spec.submodule_search_locations.append(os.path.dirname(spec.origin))
                return spec
        return None

    def rebase(self, archive: str) -> None:
        self.done = True
        self.archive = archive
        loaders = {}
        for name, (inner, _crc, _size) in self.files.items():
            module = sys.modules.get(name)
            if module is None:
                continue
            path = os.path.join(archive, inner)
            folder = os.path.dirname(path)
            if folder not in loaders:
                loaders[folder] = ZipImporterWhenUsed(folder)
            module.__file__ = path
            module.__loader__ = loaders[folder]
            spec = getattr(module, "__spec__", None)
            if spec is not None:
                spec.origin = path
                spec.loader = loaders[folder]
            if hasattr(module, "__path__"):
                module.__path__ = [folder]
                if spec is not None:
                    spec.submodule_search_locations = [folder]


class Compiled:
    """The code of the ansible and collection files in module payloads, compiled in this process (before a fork, so
    that it is done once per session, not once per module run) and kept by path, CRC-32 and size: zipimport compiles
    a file from source at each import (and twice, in Python 3.11 and 3.12), which was half of a small module's CPU.
    Code objects carry the file's path in the payload as their file name; a module's __file__ is its real path."""

    def __init__(self, limit: int = 8 << 20) -> None:
        self.limit, self.size, self.code = limit, 0, {}

    def fill(self, zipped, skip: set) -> dict:
        """Compile what is new in zipped (a ZipFile), except the files in skip (preloaded); return the payload's
        {path: code} for every file whose code is kept."""
        found = {}
        for info in zipped.infolist():
            name = info.filename
            if not name.endswith(".py") or name.partition("/")[0] not in ANSIBLE_ROOTS or name in skip:
                continue
            key = (name, info.CRC, info.file_size)
            code = self.code.pop(key, None)
            if code is None:
                try:
                    code = compile(zipped.read(info), name, "exec", dont_inherit=True)
                except (SyntaxError, ValueError, zipfile.BadZipFile, OSError):
                    continue  # left to zipimport, which reports it as the import would
                self.size += info.file_size
            self.code[key] = code  # most recently used last
            found[name] = code
        while self.size > self.limit and len(self.code) > len(found):
            oldest = next(iter(self.code))
            self.size -= oldest[2]
            del self.code[oldest]
        return found


class CodeLoader:
    """Loads a module from code compiled by Compiled; its source (for tracebacks) is read from the payload."""

    def __init__(self, code, archive: str, inner: str) -> None:
        self.code, self.archive, self.inner = code, archive, inner

    def create_module(self, spec):  # the default module
        return None

    def exec_module(self, module) -> None:
        exec(self.code, module.__dict__)  # pylint: disable=exec-used

    def get_code(self, _name):
        return self.code

    def is_package(self, _name) -> bool:
        return self.inner.endswith("/__init__.py")

    def get_filename(self, _name) -> str:
        return os.path.join(self.archive, self.inner)

    def get_source(self, _name):
        try:
            with zipfile.ZipFile(in_memory(self.archive) or self.archive) as zipped:
                return zipped.read(self.inner).decode("utf-8")
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            return None


# The payloads of the module runs that use them where they are, in this process's memory (ansiballz_main_in_memory):
# {the archive path the run was given: the zip's bytes}, for the source lines of a traceback.
IN_MEMORY = {}


def in_memory(path: str):
    """A file-like view of the in-memory payload that path (an archive, or a folder in it) names, or None."""
    archive, sep, _rest = path.partition("_payload.zip")
    payload = IN_MEMORY.get(archive + sep)
    return io.BytesIO(payload) if payload is not None else None


def in_memory_source(folder: str, name: str):
    """The source of module name (a/b/c) in the in-memory payload that folder is part of, or None."""
    payload = in_memory(folder)
    if payload is not None:
        try:
            with zipfile.ZipFile(payload) as zipped:
                for inner in (name + ".py", name + "/__init__.py"):
                    if inner in zipped.NameToInfo:
                        return zipped.read(inner).decode("utf-8")
        except (KeyError, ValueError, zipfile.BadZipFile):
            pass
    return None


PRELOADED = Preloaded()
COMPILED = Compiled()


def same_interpreter(interpreter: str) -> bool:
    try:
        return os.path.realpath(interpreter) == os.path.realpath(sys.executable)
    except (OSError, ValueError):
        return False


ZIP_NAME = "_bastionless_ssm_zip_data"  # what the wrapper's zip_data literal is replaced by in the compiled wrapper


def module_payload(wrapper: bytes):
    """(the payload zip, the wrapper's source with its zip_data literal replaced by the name ZIP_NAME, the literal's
    text) of an AnsiballZ wrapper, or None when this is not a wrapper this code knows."""
    if WRAPPER not in wrapper[:4096]:
        return None
    found = ZIP_DATA.search(wrapper)
    if not found:
        return None
    try:
        payload = base64.b64decode(found.group(1), validate=True)
    except (binascii.Error, ValueError):
        return None
    line = b"zip_data=" + ZIP_NAME.encode() + (b"," if found.group(0).endswith(b",") else b"")
    return payload, wrapper[:found.start()] + line + wrapper[found.end():], found.group(1).decode("ascii")


class Payloads:
    """What run_module reads from a wrapper's payload zip, kept by the zip's base64 text for the session's later runs
    of the same module: finding the text, decoding it and reading the zip's directory cost about 1.5 ms a run (of a
    payload of 128 KiB), more than a run of the command module in this process. A wrapper whose text is new here goes
    through module_payload; the most recently used ``limit`` payloads are kept."""

    START, QUOTE = b"\nzip_data='", b"'"

    def __init__(self, limit: int = 16) -> None:
        self.limit, self.kept = limit, {}

    def parse(self, wrapper: bytes):
        """module_payload(wrapper), and the key of its payload (None: not kept)."""
        if WRAPPER not in wrapper[:4096]:
            return None, None
        start = wrapper.find(self.START)
        end = wrapper.find(self.QUOTE, start + len(self.START)) if start >= 0 else -1
        if end > 0:
            after = end + 1 + (wrapper[end + 1:end + 2] == b",")
            key = wrapper[start + len(self.START):end]
            kept = self.kept.pop(key, None) if wrapper[after:after + 1] in (b"\n", b"") else None
            if kept is not None:
                self.kept[key] = kept  # most recently used last
                payload, zip_text, _compiled = kept
                line = b"zip_data=" + ZIP_NAME.encode() + wrapper[end + 1:after]
                return (payload, wrapper[:start + 1] + line + wrapper[after:], zip_text), key
        found = module_payload(wrapper)
        if found is None:
            return None, None
        key = found[2].encode("ascii")
        self.kept[key] = (found[0], found[2], None)
        while len(self.kept) > self.limit:
            del self.kept[next(iter(self.kept))]
        return found, key

    def compiled(self, key: bytes, payload: bytes):
        """(the payload's compiled files (Compiled.fill), or False when its preloaded files are not the ones this
        process preloaded; whether every file in it is compiled or preloaded); read from the zip once per kept
        payload."""
        kept = self.kept.get(key)
        if kept is not None and kept[2] is not None:
            return kept[2]
        complete = False
        with zipfile.ZipFile(io.BytesIO(payload)) as zipped:
            preloaded = {inner for inner, _crc, _size in PRELOADED.files.values()}
            compiled = PRELOADED.matches(zipped) and COMPILED.fill(zipped, preloaded)
            if compiled:
                complete = all(info.is_dir() or info.filename in compiled or info.filename in preloaded
                               for info in zipped.infolist())
        if kept is not None:
            self.kept[key] = kept[:2] + ((compiled, complete),)
        return compiled, complete


PAYLOADS = Payloads()


def run_module(interpreter: str, wrapper: bytes):
    """(stdout, stderr, rc, b" I" or b" F") of a module run with module_utils preloaded, in this process (IN_PROCESS
    modules, while Resident is usable) or in a fork; None to run it as a command.

    What each run would otherwise do again is done here, once: the payload's files are compiled (Compiled) and the
    wrapper too, without its zip_data literal (a large string that compiling alone costs more than a small module's
    work), and what the payload zip gives is kept for the next run of the same module (Payloads). The run is then
    given the payload as a string under ZIP_NAME."""
    if sys.version_info < (3, 8) or sys.implementation.name != "cpython" or not same_interpreter(interpreter):
        return None
    found, key = PAYLOADS.parse(wrapper)
    if found is None:
        return None
    payload, source, zip_text = found
    if PRELOADED.files is None:
        PRELOADED.load(payload)
    if not PRELOADED.files:
        return None
    try:
        compiled, complete = PAYLOADS.compiled(key, payload)
        if compiled is False:
            return None
        code = WRAPPERS.compile(source)
    except (zipfile.BadZipFile, ValueError, OSError, SyntaxError):
        return None  # as a command, the interpreter reports what is wrong with it
    fqn = MODULE_FQN.search(source)
    if fqn and fqn.group(1).decode() in IN_PROCESS and RESIDENT.usable:
        return RESIDENT.run(code, {ZIP_NAME: zip_text}, compiled, payload if complete else None) + (b" I",)
    return forked(code, {ZIP_NAME: zip_text}, compiled) + (b" F",)


# Modules that run in this process itself, without a fork: ansible-core's everyday file and command modules, which
# start no threads, leave no handlers and change no process state that Resident does not put back. Every other module
# (facts, packages, services, any collection's) runs in a fork.
IN_PROCESS = frozenset("ansible.modules." + name for name in (
    "blockinfile", "command", "copy", "file", "find", "lineinfile", "ping", "replace", "slurp", "stat", "tempfile"))
MODULE_FQN = re.compile(rb"^module_fqn='([A-Za-z0-9_.]+)',?$", re.M)


class Resident:
    """Module runs in this process: what a module may change in it is noted before the run and put back after it.

    Its file descriptors 0, 1 and 2 (the session's terminal) point at /dev/null and two temporary files while the
    module runs, so that neither it nor the commands it starts can read the session's requests or write into its
    replies. Put back after the run: the working directory, the environment, the umask, the locale, the handlers of
    CAUGHT_SIGNALS, the open-files limit, sys (argv, path, meta_path, path_hooks, the importer cache, modules, the
    standard streams, the hooks), zipimport's cache, warnings' filters, tempfile's directory, and the globals of the
    preloaded modules, whose containers (dicts, lists, sets) get their contents back in place. The modules the run
    imported are forgotten. A run that leaves a thread running makes this process unfit: every module after it runs
    in a fork."""

    def __init__(self) -> None:
        self.usable = True

    def run(self, code: tuple, names: dict, compiled: dict, payload=None) -> tuple:
        import tempfile

        saved = self.note()
        out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        devnull = os.open(os.devnull, os.O_RDONLY)
        fds = [os.dup(fd) for fd in (0, 1, 2)]
        status = 1
        try:
            for fd, target in ((0, devnull), (1, out.fileno()), (2, err.fileno())):
                os.dup2(target, fd)
            status = child(code, names, compiled, payload)
        finally:
            for fd, original in enumerate(fds):
                os.dup2(original, fd)
                os.close(original)
            os.close(devnull)
            self.put_back(saved)
        results = []
        for handle in (out, err):
            handle.seek(0)
            results.append(handle.read())
            handle.close()
        return results[0], results[1], status

    @staticmethod
    def note() -> dict:
        import locale
        import resource
        import signal
        import tempfile
        import threading
        import warnings

        umask = os.umask(0o22)
        os.umask(umask)
        try:
            cwd = os.getcwd()
        except OSError:
            cwd = "/"
        handlers = {}
        for name in CAUGHT_SIGNALS:
            number = getattr(signal, name, None)
            if number is None:
                continue
            try:
                handler = signal.getsignal(number)
            except (OSError, ValueError):
                continue
            if handler is not None:
                handlers[number] = handler
        preloaded = {}
        for name in PRELOADED.files:
            module = sys.modules.get(name)
            if module is not None:
                values = dict(vars(module))
                contents = {key: type(value)(value) for key, value in values.items()
                            if type(value) in (dict, list, set) and not key.startswith("__")}  # not __builtins__
                preloaded[name] = (module, values, contents)
        return {
            "cwd": cwd, "environ": dict(os.environ), "umask": umask, "signals": handlers,
            "locale": locale.setlocale(locale.LC_ALL), "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
            "sys": {name: getattr(sys, name) for name in SYS_NAMES}, "path": list(sys.path),
            "meta_path": list(sys.meta_path), "path_hooks": list(sys.path_hooks),
            "importers": set(sys.path_importer_cache), "modules": dict(sys.modules), "preloaded": preloaded,
            "filters": list(warnings.filters), "tempdir": tempfile.tempdir, "threads": set(threading.enumerate()),
            "zip_directories": set(zip_directories()),
        }

    def put_back(self, saved: dict) -> None:
        import locale
        import resource
        import signal
        import tempfile
        import threading
        import warnings

        for name, value in saved["sys"].items():
            setattr(sys, name, value)
        sys.path[:] = saved["path"]
        sys.meta_path[:] = saved["meta_path"]
        sys.path_hooks[:] = saved["path_hooks"]
        for key in set(sys.path_importer_cache) - saved["importers"]:
            del sys.path_importer_cache[key]
        directories = zip_directories()
        for key in set(directories) - saved["zip_directories"]:
            del directories[key]
        for name in set(sys.modules) - set(saved["modules"]):
            del sys.modules[name]
        for name, module in saved["modules"].items():
            if sys.modules.get(name) is not module:
                sys.modules[name] = module
        for module, values, contents in saved["preloaded"].values():
            namespace = vars(module)
            for key in set(namespace) - set(values):
                del namespace[key]
            for key, value in values.items():
                if key in contents:
                    value.clear()
                    if isinstance(value, list):
                        value.extend(contents[key])
                    else:
                        value.update(contents[key])
                namespace[key] = value
        warnings.filters[:] = saved["filters"]
        if hasattr(warnings, "_filters_mutated"):
            warnings._filters_mutated()  # pylint: disable=protected-access
        tempfile.tempdir = saved["tempdir"]
        for key in set(os.environ) - set(saved["environ"]):
            del os.environ[key]
        for key, value in saved["environ"].items():
            if os.environ.get(key) != value:
                os.environ[key] = value
        os.umask(saved["umask"])
        for number, handler in saved["signals"].items():
            if signal.getsignal(number) is not handler:
                signal.signal(number, handler)
        try:
            os.chdir(saved["cwd"])
            locale.setlocale(locale.LC_ALL, saved["locale"])
            resource.setrlimit(resource.RLIMIT_NOFILE, saved["nofile"])
        except (OSError, ValueError, locale.Error):
            pass
        if any(thread.is_alive() for thread in set(threading.enumerate()) - saved["threads"]):
            self.usable = False


def zip_directories() -> dict:
    """zipimport's cache of the zip files' directories it has read, by path (one entry per payload otherwise)."""
    import zipimport

    return getattr(zipimport, "_zip_directory_cache", {})


# The signals whose handlers a module run may set (timeouts, children, termination), put back after it.
CAUGHT_SIGNALS = ("SIGALRM", "SIGCHLD", "SIGHUP", "SIGINT", "SIGPIPE", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2",
                  "SIGWINCH", "SIGXFSZ")
SYS_NAMES = ("argv", "path", "stdin", "stdout", "stderr", "__stdin__", "__stdout__", "__stderr__", "excepthook",
             "displayhook")
RESIDENT = Resident()


class Wrappers:
    """The code of AnsiballZ wrappers, compiled in two parts: the definitions, the same in every wrapper of an
    ansible-core release, kept by digest; and the call at the end (``if __name__ == "__main__": ...``) that carries
    the module's name and arguments, compiled each time, at its own line numbers."""

    CALL = b'\nif __name__ == "__main__":'

    def __init__(self, keep: int = 8) -> None:
        self.keep, self.code = keep, {}

    def compile(self, source: bytes) -> tuple:
        at = source.rfind(self.CALL) + 1
        if at <= 0:
            return (compile(source, "<stdin>", "exec", dont_inherit=True),)
        head, tail = source[:at], source[at:]
        digest = hashlib.sha256(head).digest()
        code = self.code.pop(digest, None)
        if code is None:
            code = compile(head, "<stdin>", "exec", dont_inherit=True)
        self.code[digest] = code  # most recently used last
        while len(self.code) > self.keep:
            del self.code[next(iter(self.code))]
        return code, compile(b"\n" * head.count(b"\n") + tail, "<stdin>", "exec", dont_inherit=True)


WRAPPERS = Wrappers()


def forked(code, names: dict, compiled: dict) -> tuple:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:  # the child never returns
        status = 1
        try:
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            for fd in (devnull, out_r, out_w, err_r, err_w):
                os.close(fd)
            status = child(code, names, compiled)
        finally:
            os._exit(status)
    os.close(out_w)
    os.close(err_w)
    out, err = collect(out_r, err_r)
    _pid, status = os.waitpid(pid, 0)
    return out, err, exit_code(status)


def child(wrapper: tuple, names: dict, compiled: dict, payload=None) -> int:
    """Run the wrapper's code (its parts, one after the other) as ``python3`` would have run the wrapper from stdin,
    with names in its globals; return the exit status. With payload (the zip's bytes, every file of it compiled or
    preloaded), the wrapper's _ansiballz_main is ansiballz_main_in_memory's, when it is the one that knows."""
    import atexit
    import builtins
    import traceback
    import types

    encoding, errors = sys.stdout.encoding, sys.stdout.errors
    sys.stdin = sys.__stdin__ = io.open(0, "r", encoding=encoding, errors=errors, closefd=False)
    sys.stdout = sys.__stdout__ = io.open(1, "w", encoding=encoding, errors=errors, closefd=False)
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(io.open(2, "wb", buffering=0, closefd=False), encoding=encoding,
                                                   errors="backslashreplace", write_through=True)
    made = (sys.stdout, sys.stderr)
    sys.argv = [""]
    main = types.ModuleType("__main__")
    main.__file__ = "<stdin>"
    main.__builtins__ = builtins
    main.__dict__.update(names)
    sys.modules["__main__"] = main
    sys.meta_path.insert(0, Rebase(PRELOADED.files, compiled))
    code = 0
    try:
        for part in wrapper:
            exec(part, main.__dict__)  # pylint: disable=exec-used
            if payload is not None and part is wrapper[0] and len(wrapper) == 2:
                ansiballz_main_in_memory(main.__dict__, payload)
    except SystemExit as e:
        code = exit_status(e.code)
    except BaseException:  # as the interpreter does: the traceback on stderr, status 1
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr) + made:  # made: in case the module replaced them (in process, fds change)
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    IN_MEMORY.clear()
    return code


# The parameters of ansible-core 2.19's _ansiballz_main, which ansiballz_main_in_memory stands in for.
ANSIBALLZ_MAIN = ("zip_data", "ansible_module", "module_fqn", "params", "profile", "date_time", "extensions",
                  "rlimit_nofile")


def ansiballz_main_in_memory(names: dict, payload: bytes) -> None:
    """Put in names (a wrapper's globals) an _ansiballz_main that does what ansible-core 2.19's does, but runs the
    module from the payload where it is: in this process's memory, its files compiled (Compiled) or preloaded.

    The wrapper's own writes its zip_data to a new temporary directory, adds a sitecustomize.py to that zip (for a
    Python the module would start), has zipimport read the zip's directory, runs the module, and removes the
    directory: about 3 ms of a node's CPU for a 128 KiB payload, more than a lineinfile's own work in this process.
    Used for IN_PROCESS modules only, which start no Python of their own. The module is given the archive path the
    wrapper would give it (in a directory that is not made), so every name and path in it reads as before; the source
    lines of a traceback come from the payload in memory (IN_MEMORY). A wrapper with other parameters keeps its own."""
    original = names.get("_ansiballz_main")
    code = getattr(original, "__code__", None)
    if code is None or code.co_varnames[:code.co_argcount] != ANSIBALLZ_MAIN:
        return

    def _ansiballz_main(zip_data, ansible_module, module_fqn, params, profile, date_time, extensions,
                        rlimit_nofile):  # pylint: disable=unused-argument
        import __main__
        import tempfile

        try:  # as the wrapper: a working directory that is gone is replaced by the home directory, or /
            os.getcwd()
        except OSError:
            try:
                os.chdir(os.path.expanduser("~"))
            except OSError:
                os.chdir("/")
        if rlimit_nofile:
            import resource

            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            if min(hard, rlimit_nofile) != soft:
                try:
                    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, rlimit_nofile), hard))
                except ValueError:
                    pass
        scriptdir = None
        try:
            scriptdir = os.path.dirname(os.path.realpath(__main__.__file__))
        except (AttributeError, OSError):
            pass
        sys.path = [p for p in sys.path if p not in ("", ".", scriptdir)]
        folder = os.path.join(os.path.realpath(tempfile.gettempdir()), "ansible_%s_payload_in_memory" % ansible_module)
        archive = os.path.join(folder, "ansible_%s_payload.zip" % ansible_module)
        IN_MEMORY[archive] = payload
        sys.path.insert(0, archive)
        from ansible.module_utils._internal._ansiballz import _loader

        _loader.run_module(json_params=params.encode(), profile=profile, module_fqn=module_fqn, modlib_path=archive,
                           extensions=extensions)

    names["_ansiballz_main"] = _ansiballz_main


def exit_status(code) -> int:
    """The exit status the interpreter gives for sys.exit(code)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write(str(code) + "\n")
    except (OSError, ValueError):
        pass
    return 1


def exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def collect(*fds) -> list:
    """Read fds to their end, together (neither pipe can fill and stall the other)."""
    data = {fd: [] for fd in fds}
    open_fds = list(fds)
    while open_fds:
        readable, _w, _x = select.select(open_fds, [], [])
        for fd in readable:
            chunk = os.read(fd, 65536)
            if chunk:
                data[fd].append(chunk)
            else:
                open_fds.remove(fd)
                os.close(fd)
    return [b"".join(data[fd]) for fd in fds]


def run_command(cmd: bytes, stdin) -> tuple:
    try:
        proc = subprocess.Popen(cmd, shell=True, stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as e:
        return b"", str(e).encode(), 127
    out, err = gather(proc, stdin)
    return out, err, (128 - proc.returncode if proc.returncode < 0 else proc.returncode)


def gather(proc, stdin, grace: float = 1.0) -> tuple:
    """(stdout, stderr) of proc, its stdin written, read until proc has exited, not until its pipes close: a child
    the command left in the background (``sleep 75 &``) keeps the pipes open, and must not hold the reply. After the
    exit, what is already in the pipes is read (for at most ``grace`` seconds), and the rest is left to the child."""
    outputs = {proc.stdout.fileno(): [], proc.stderr.fileno(): []}
    readers = list(outputs)
    pending = memoryview(stdin or b"")
    writer = proc.stdin.fileno() if proc.stdin is not None else None
    if writer is not None:
        os.set_blocking(writer, False)
    for fd in readers:
        os.set_blocking(fd, False)
    exited_at = None
    while readers:
        if writer is not None and not pending:
            proc.stdin.close()
            writer = None
        if exited_at is None and proc.poll() is not None:
            exited_at = time.monotonic()
        if exited_at is not None and time.monotonic() - exited_at > grace:
            break
        wait = 0.1 if exited_at is None else 0.0
        readable, writable, _x = select.select(readers, [writer] if writer is not None else [], [], wait)
        if not readable and not writable and exited_at is not None:
            break  # exited, and nothing more is waiting in the pipes
        for fd in writable:
            try:
                pending = pending[os.write(fd, pending[:65536]):]
            except BlockingIOError:
                pass
            except OSError:  # the command closed its stdin (or ended): the rest is not wanted
                pending = pending[:0]
        for fd in readable:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if chunk:
                outputs[fd].append(chunk)
            else:
                readers.remove(fd)
    if writer is not None:
        try:
            proc.stdin.close()
        except OSError:
            pass
    proc.stdout.close()
    proc.stderr.close()
    proc.wait()
    return tuple(b"".join(chunks) for chunks in outputs.values())


# The commands around a module that the connection sends in exactly these shapes, run here without a shell (about six
# processes for the first, four for a chmod, three and two for the others): Ansible's making of a task's temporary
# directory (as _session_protocol.mkdtemp_answer passes it on), the connection's write of a file into it
# (_session_protocol.put_command), Ansible's chmod of its files (_session_protocol.TMP_CHMOD) and removal of it
# (_session_protocol.REMOVE_TMP). The paths are those the shell would not expand or split; anything else runs with
# /bin/sh -c.
SAFE_PATH = rb"/[A-Za-z0-9/._+-]*"
MAKE_TMP = re.compile(rb'^\( umask (?P<umask>[0-7]{1,4}) && mkdir -p "` echo (?P<base>' + SAFE_PATH + rb') `"&& mkdir "` echo '
                      rb'(?P<dir>' + SAFE_PATH + rb') `" && echo (?P<name>ansible-tmp-[0-9.-]+)="` echo (?P=dir) `" \)$')
PUT_FILE = re.compile(rb"^cat > (?P<path>" + SAFE_PATH + rb"|'" + SAFE_PATH + rb"') && sha256sum < (?P=path)$")
REMOVE_TMP = re.compile(rb"^/\S+ -c 'rm -f -r (?P<dir>" + SAFE_PATH + rb"/ansible-tmp-[0-9.-]+/?) > /dev/null 2>&1 && sleep 0'$")
CHMOD = re.compile(rb"^/\S+ -c 'chmod (?P<who>[ugoa]+)(?P<op>[+-])(?P<what>[rwx]+) (?P<paths>" + SAFE_PATH
                   + rb"(?: " + SAFE_PATH + rb")*) && sleep 0'$")  # Ansible's _remote_chmod (u+rwx), as TMP_CHMOD


def builtin(cmd: bytes, stdin):
    """(stdout, stderr, rc) of cmd run here, when it is one of the shapes above; None to run it with a shell."""
    found = MAKE_TMP.match(cmd)
    if found and stdin is None:
        return make_tmp(found)
    found = PUT_FILE.match(cmd)
    if found and stdin is not None:
        path = os.fsdecode(found.group("path").strip(b"'"))
        try:
            with open(path, "wb") as handle:
                handle.write(stdin)
        except OSError as e:
            return b"", ("/bin/sh: 1: cannot create %s: %s\n" % (path, e.strerror)).encode(), 2
        return hashlib.sha256(stdin).hexdigest().encode() + b"  -\n", b"", 0
    found = REMOVE_TMP.match(cmd)
    if found and stdin is None and b"/../" not in found.group("dir") + b"/":
        import shutil

        path = os.fsdecode(found.group("dir"))
        if os.path.islink(path.rstrip("/")) or not os.path.lexists(path.rstrip("/")):
            return None if os.path.islink(path.rstrip("/")) else (b"", b"", 0)
        failed = []
        shutil.rmtree(path, onerror=lambda *args: failed.append(args))
        return b"", b"", 1 if failed else 0
    found = CHMOD.match(cmd)
    if found and stdin is None and b"/../" not in found.group("paths") + b"/":
        return chmod(found)
    return None


def chmod(found) -> tuple:
    """chmod <who><+|-><rwx> <paths>, as coreutils' chmod does it (following symbolic links), with its messages."""
    shifts = {"u": (6,), "g": (3,), "o": (0,), "a": (6, 3, 0)}
    bits = sum(1 << "xwr".index(perm) for perm in found.group("what").decode())
    mask = sum(bits << shift for who in found.group("who").decode() for shift in shifts[who])
    errors, rc = [], 0
    for path in found.group("paths").split():
        try:
            mode = os.stat(path).st_mode & 0o7777
            os.chmod(path, mode | mask if found.group("op") == b"+" else mode & ~mask)
        except OSError as e:
            rc = 1
            what = "access" if isinstance(e, FileNotFoundError) else "change permissions of"
            errors.append("chmod: cannot %s '%s': %s\n" % (what, os.fsdecode(path), e.strerror))
    return b"", "".join(errors).encode(), rc


def make_tmp(found) -> tuple:
    umask = os.umask(int(found.group("umask"), 8))
    try:
        for path, parents in ((found.group("base"), True), (found.group("dir"), False)):
            try:
                if parents:
                    os.makedirs(path, exist_ok=True)
                else:
                    os.mkdir(path)
            except OSError as e:
                why = "File exists" if isinstance(e, FileExistsError) else e.strerror
                return b"", ("mkdir: cannot create directory '%s': %s\n" % (os.fsdecode(path), why)).encode(), 1
    finally:
        os.umask(umask)
    return found.group("name") + b"=" + found.group("dir") + b"\n", b"", 0


def read_block(stream, marker: bytes) -> bytes:
    lines = []
    for line in iter(stream.readline, b""):
        if line.rstrip(b"\r\n") == marker:
            return base64.b64decode(b"".join(lines))
        lines.append(line)
    raise EOFError("the session's input ended in the middle of a request")


CACHE_MISS = 252  # _session_protocol.CACHE_MISS: a segment named by digest is not (or no longer) here
CHAIN_BROKEN = 253  # _session_protocol.CHAIN_BROKEN: not run, the request before it failed


class Segments:
    """The large pieces of module wrappers (their loader code, their payload zips) sent once per session and named by
    SHA-256 afterwards (_session_protocol.segments); the least recently used go beyond ``limit`` bytes."""

    def __init__(self, limit: int = 64 << 20) -> None:
        self.limit, self.size, self.kept = limit, 0, {}

    def keep(self, digest: bytes, data: bytes) -> None:
        if digest in self.kept:
            return
        self.kept[digest] = data
        self.size += len(data)
        while self.size > self.limit and len(self.kept) > 1:
            oldest = next(iter(self.kept))
            self.size -= len(self.kept.pop(oldest))

    def assemble(self, data: bytes) -> tuple:
        """(the stdin the segments make, None) or (None, the digest that is missing or does not match)."""
        out, at = [], 0
        while at < len(data):
            newline = data.index(b"\n", at)
            kind, fields = data[at:at + 1], data[at + 1:newline].split()
            at = newline + 1
            if kind == b"@":
                piece = self.kept.pop(fields[0], None)
                if piece is None:
                    return None, fields[0]
                self.kept[fields[0]] = piece  # most recently used last
            else:
                size = int(fields[-1])
                piece, at = data[at:at + size], at + size
                if kind == b"%":  # the piece is the base64 of these bytes
                    piece = base64.b64encode(piece)
                if kind in (b"+", b"%"):
                    if hashlib.sha256(piece).hexdigest().encode() != fields[0]:
                        return None, fields[0]
                    self.keep(fields[0], piece)
            out.append(piece)
        return b"".join(out), None


SEGMENTS = Segments()


def serve(reader, writer) -> int:
    last_rc = 0
    for head in iter(reader.readline, b""):
        parts = head.split()
        if parts == [b"exit"]:
            return 0
        flag = parts[1].rstrip(b"&") if len(parts) in (2, 3) else b""
        if flag not in (b"0", b"1", b"2"):
            continue  # a blank line, or noise
        marker = parts[0]
        cmd = read_block(reader, marker)
        stdin = read_block(reader, marker) if flag != b"0" else None
        result, how = None, b""
        if parts[1].endswith(b"&") and last_rc != 0:
            result = (b"", b"not run: the command before it in this exchange failed\n", CHAIN_BROKEN)
        elif flag == b"2":
            stdin, missing = SEGMENTS.assemble(stdin)
            if stdin is None:
                result, how = (b"", b"segment " + missing + b" is not cached\n", CACHE_MISS), b" M"
        if result is None and len(parts) == 3 and stdin is not None:
            try:
                result = run_module(os.fsdecode(parts[2]), stdin)
            except OSError:  # no fork (process limit, memory): the module runs as a plain command
                result = None
            if result is not None:
                result, how = result[:3], result[3]
        if result is None:
            result = builtin(cmd, stdin)
        out, err, rc = run_command(cmd, stdin) if result is None else result
        last_rc = rc
        # A newline first: what the command wrote to the terminal (/dev/tty) without one stays off the frame's line.
        writer.write(b"\n" + marker + b":O\n" + base64.encodebytes(out) + marker + b":E\n" + base64.encodebytes(err)
                     + marker + b":R " + str(rc).encode() + how + b"\n")
        writer.flush()
    return 0


def main() -> int:
    if sys.version_info < (3, 6):
        return 3  # the session's shell goes on without it
    if len(sys.argv) > 1:
        sys.stdout.write("P" + sys.argv[1] + "\n")  # the ready line; P: this helper reads the requests
        sys.stdout.flush()
    if sys.argv[2:3] == ["fork"]:  # the connection's module_isolation: every module in a fork
        RESIDENT.usable = False
    line_mode = whole_reads(0)
    try:
        return serve(sys.stdin.buffer, sys.stdout.buffer)
    except (EOFError, OSError):
        return 0
    finally:
        if line_mode is not None:
            put_back_terminal(0, line_mode)


def whole_reads(fd: int):
    """Turn off the line editing (ICANON) of the terminal fd is, if it is one, and return its settings to put back.

    In line mode each read of the session's pty gives one line: a 1 MiB file's 18,400 base64 lines took as many
    reads, 65 to 105 ms of the node's CPU, where reads of whatever has arrived take 20 to 30. Only this process reads
    the terminal (a command or module gets /dev/null or a pipe), and the requests are plain lines, so nothing else
    changes: no echo (the session's ``stty -echo``), and no control characters for the terminal to act on."""
    try:
        import termios

        settings = termios.tcgetattr(fd)
        raw = list(settings)
        raw[3] &= ~termios.ICANON
        raw[6] = list(settings[6])
        raw[6][termios.VMIN], raw[6][termios.VTIME] = 1, 0
        termios.tcsetattr(fd, termios.TCSANOW, raw)
    except Exception:  # not a terminal (termios.error), or no termios: reads are whole already, or stay by line
        return None
    return settings


def put_back_terminal(fd: int, settings) -> None:
    """The terminal's settings as they were before whole_reads, for the session's shell after this process."""
    try:
        import termios

        termios.tcsetattr(fd, termios.TCSANOW, settings)
    except Exception:  # the session is gone
        pass


if __name__ == "__main__":
    sys.exit(main())
