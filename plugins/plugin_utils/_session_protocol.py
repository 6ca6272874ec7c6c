# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What bastionless.ssm.session sends through a Session Manager shell, and how it reads the answer (pure logic).

A command travels as a short POSIX sh script written to the session's pty (echo off): the command itself and its
stdin as base64 in here-documents, so the terminal cannot mangle binary data and no line exceeds 77 characters;
the answer comes back, once the command has ended, framed by a random marker, stdout and stderr each base64 encoded
(so output that is not UTF-8, or that holds terminal control bytes, arrives unchanged) and the exit status last.
Anything before the first marker line (what a command wrote to /dev/tty, the terminal itself) is not part of it:

    <marker>:O
    <stdout, base64>
    <marker>:E
    <stderr, base64>
    <marker>:R <rc>

The marker holds a ``-``, which base64 never does, so no data line can end a section early. Markers in the script
are printed by concatenation (``'%s:R'``), so even an echoed script never contains the end marker.

Where the node has python3, the session's reader is the resident Python of _session_helper.py instead of sh: the
same command and stdin go as a request of base64 lines (helper_request), and its replies are framed the same way,
with `` F`` after the exit status when it ran a pipelined module in its preloaded fork, `` I`` when in itself
(where_module_ran).
"""

import base64
import binascii
import functools
import hashlib
import json
import os
import re
import secrets
import shlex
import string
import zlib

VERSION = 2  # of the requests below: part of a session's identity, so a master of another version is not reused
B64_LINE = 57  # raw bytes per base64 line: 76 characters plus a newline
READ_CHUNK = 57 * 1024  # bytes of a file read at a time (a multiple of 57 keeps the base64 lines whole)
MARK_ALPHABET = string.ascii_letters + string.digits
SOCKET_PATH_MAX = 100  # sockaddr_un.sun_path is 108 bytes on Linux, 104 on macOS

# Sent after "Starting session with SessionId", in two steps, each answered by a line the master waits for. First:
# echo off (this line itself is still echoed, and holds nothing secret), no history file. Then, with echo off, the
# resident Python of _session_helper.py where the node has python3 (it prints its ready line with a P in front and
# reads the requests), else a plain non-interactive sh: no prompt, no readline, no history. The helper's exit status 3
# means "not started" (a Python older than 3.6) and leaves the sh; any other ends the session, as the sh's own end
# would. Ready lines are printed by concatenation, so nothing echoed can look like one.
QUIET = "stty -echo 2>/dev/null; unset HISTFILE; printf '%s_%s\\n' '{head}' '{tail}'\n"
HELPER_START = ("command -v python3 >/dev/null 2>&1 && {{ python3 -c "
                "'import base64, sys, zlib; exec(zlib.decompress(base64.b64decode(sys.argv.pop(1))))' "
                "\"$(cat <<'{end}'\n{source}{end}\n)\" '{head}_{tail}' {isolation}; [ $? = 3 ] || exit; }}; ")
SH_START = "printf '%s_%s\\n' '{head}' '{tail}'; exec /bin/sh 2>/dev/null\n"
HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_session_helper.py")

# Ansible's pipelined module run: the module's AnsiballZ wrapper on the stdin of "<python>", or of
# "<shell> -c '<python> && sleep 0'" when Ansible wraps the command in the task's shell executable (as it does for this
# connection, which takes one).
_PYTHON = r"(/[^\s'\"\\$`;&|<>()]*/python[0-9.]*)"
PIPELINED = re.compile(rf"^(?:{_PYTHON}|/\S+ -c '{_PYTHON} && sleep 0')$")


class ProtocolError(Exception):
    """The session answered something that is not a framed reply (the shell is not the one we set up)."""


def new_marker() -> str:
    """A random marker: 'BL-' and 20 letters or digits (about 119 bits), from one draw of the system's random source
    (a draw per character cost 0.6 ms a marker, and a task makes a few)."""
    number, chars = secrets.randbelow(len(MARK_ALPHABET) ** 20), []
    for _i in range(20):
        number, digit = divmod(number, len(MARK_ALPHABET))
        chars.append(MARK_ALPHABET[digit])
    return "BL-" + "".join(chars)


def _ready_line() -> tuple:
    head, tail = "BLREADY", "".join(secrets.choice(MARK_ALPHABET) for _i in range(16))
    return head, tail, f"{head}_{tail}"


@functools.lru_cache(maxsize=1)
def _helper_source() -> str:
    """The resident Python's source, compressed (the session's shell reads it through readline, about 6 us a byte)
    and in base64 lines: read and compressed once per process, not at every session's start (about 5 ms)."""
    with open(HELPER, "rb") as handle:
        return base64.encodebytes(zlib.compress(handle.read(), 9)).decode()


def setup_steps(resident_python: bool = True, module_isolation: str = "auto") -> list:
    """The session's set-up: [[what to send, the line to wait for], ...] (see QUIET and HELPER_START). module_isolation
    (auto or fork) is the resident Python's second argument: where it runs the modules it may run in itself."""
    head, tail, quiet = _ready_line()
    steps = [[QUIET.format(head=head, tail=tail), quiet]]
    head, tail, ready = _ready_line()
    start = SH_START.format(head=head, tail=tail)
    if resident_python:
        start = HELPER_START.format(end=new_marker(), source=_helper_source(), head=head, tail=tail,
                                    isolation="fork" if module_isolation == "fork" else "auto") + start
    steps.append([start, ready])
    return steps


def pipelined_interpreter(cmd: bytes):
    """The interpreter of Ansible's pipelined module run ("/usr/bin/python3", or "/bin/sh -c '/usr/bin/python3 &&
    sleep 0'"), else None."""
    found = PIPELINED.match(cmd.decode("utf-8", "replace"))
    return (found.group(1) or found.group(2)) if found else None


def helper_request(cmd: bytes, marker: str, has_stdin: bool, interpreter=None, segmented: bool = False,
                   after_success: bool = False) -> tuple:
    """A request to the resident helper, as (head, tail) around the stdin's base64 lines (if any). With an
    interpreter (pipelined_interpreter), the helper may run the module in its preloaded fork. segmented: the stdin is
    segments (see segments()), which the helper puts together from what it has cached. after_success: the helper runs
    it only when the request before it in the session exited 0 (else it answers CHAIN_BROKEN, not run)."""
    module = f" {interpreter}" if interpreter and has_stdin else ""
    flag = ("2" if segmented else "1") if has_stdin else "0"
    flag += "&" if after_success else ""
    head = f"{marker} {flag}{module}\n".encode() + b64_lines(cmd) + f"{marker}\n".encode()
    return head, (f"{marker}\n".encode() if has_stdin else b"")


def request(cmd: bytes, marker: str, has_stdin: bool, reader: str, interpreter=None, after_success: bool = False) -> tuple:
    """(head, tail) of a command for the reader the session has: "python" (the helper) or "sh", as its master says.
    interpreter and after_success: see helper_request (the sh reader runs the command as it is)."""
    if reader == "python":
        return helper_request(cmd, marker, has_stdin, interpreter, after_success=after_success)
    return command_script(cmd, marker, has_stdin)


# --- fewer bytes and fewer round trips per task (resident Python only) ------------------------------------------
# An AnsiballZ wrapper of ansible-core 2.19 is the same loader code for every module, the module's payload zip (the
# same for every run of that module) and a few lines of arguments. Its two large pieces go to the node once per
# session and are then named by their SHA-256; the helper keeps them (CACHE_LIMIT) and puts the wrapper together.
WRAPPER_LINE = b"\n_ANSIBALLZ_WRAPPER = True\n"
WRAPPER_MAIN = b'\nif __name__ == "__main__":\n'
WRAPPER_ZIP = re.compile(rb"^zip_data='([A-Za-z0-9+/=]+)',?$", re.M)
CACHE_MISS = 252  # the exit status the helper answers, with " M" after it, for a segment it no longer has
CHAIN_BROKEN = 253  # the exit status of a request not run because the one before it failed (after_success)


def wrapper_pieces(data: bytes):
    """[(sha256 hex or None, bytes), ...] that join to data, an AnsiballZ wrapper: its loader code and its payload
    zip with their digests (cacheable), the rest (the arguments) without; None when data is not such a wrapper."""
    if WRAPPER_LINE not in data[:4096]:
        return None
    main = data.find(WRAPPER_MAIN)
    found = WRAPPER_ZIP.search(data, main) if main > 0 else None
    if not found:
        return None
    code, zipped = data[:main], found.group(1)
    return [(hashlib.sha256(code).hexdigest(), code), (None, data[main:found.start(1)]),
            (hashlib.sha256(zipped).hexdigest(), zipped), (None, data[found.end(1):])]


ZIP_BASE64 = b"UEsDB"  # how the base64 of a zip (its first local file header, "PK\x03\x04") begins


def segments(pieces, cached) -> bytes:
    """The segmented stdin of pieces (wrapper_pieces) for a helper that has the digests in cached:
    ``=<size>\\n<bytes>`` as is, ``+<sha256> <size>\\n<bytes>`` to keep and use, ``%<sha256> <size>\\n<bytes>`` the
    same for a piece that is the base64 of these bytes (the payload zip: it crosses the session once in the request's
    own base64, not twice, a quarter fewer bytes), ``@<sha256>\\n`` kept before. The digest is always the piece's."""
    out = []
    for digest, data in pieces:
        if digest is None:
            out.append(b"=%d\n" % len(data) + data)
        elif digest in cached:
            out.append(b"@%s\n" % digest.encode())
        else:
            raw = _canonical_base64(data) if data.startswith(ZIP_BASE64) else None
            if raw is not None:
                out.append(b"%%%s %d\n" % (digest.encode(), len(raw)) + raw)
            else:
                out.append(b"+%s %d\n" % (digest.encode(), len(data)) + data)
    return b"".join(out)


def _canonical_base64(text: bytes):
    """The bytes text is the base64 of, when encoding them gives text back exactly; else None."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw) == text else None


def cache_miss(output: bytes, marker: str) -> bool:
    """Whether the helper answered that it no longer has a segment this request named ("<marker>:R 252 M")."""
    return _after_mark(output, end_of_reply(marker)) == b"%d M" % CACHE_MISS


def _after_mark(output: bytes, mark: bytes):
    """The rest of the line after mark in output (without its line end), or None when mark is not there. Markers are
    random and a reply holds each once, so a search for the text does what a pattern made for each marker would do
    (compiling one, each time, cost the controller about 2 ms)."""
    at = output.find(mark)
    if at < 0:
        return None
    end = output.find(b"\n", at)
    return output[at + len(mark):end if end >= 0 else len(output)].rstrip(b"\r")


# Ansible's own commands around a module that the connection can answer or move (the task's shell executable wraps
# each: "<executable> -c '<command> && sleep 0'"). Paths are matched only when they hold nothing the shell expands.
_SAFE_PATH = r"/[A-Za-z0-9/._+-]*"
EXPAND_USER = re.compile(r"^/\S+ -c 'echo ~(?:[a-z_][a-z0-9_.-]*\$?)? && sleep 0'$")


def expands_user(cmd: bytes) -> bool:
    """Whether cmd is Ansible's ``echo ~user`` (its remote home), whose answer does not change within a session."""
    return EXPAND_USER.match(cmd.decode("utf-8", "replace")) is not None


MKDTEMP = re.compile(rf"^/\S+ -c '(\( umask [0-7]+ && mkdir -p \"` echo {_SAFE_PATH} `\"&& mkdir \"` echo (?P<dir>{_SAFE_PATH}) `\" "
                     rf"&& echo (?P<name>ansible-tmp-[0-9.-]+)=\"` echo (?P=dir) `\" \)) && sleep 0'$")
REMOVE_TMP = re.compile(rf"^/\S+ -c 'rm -f -r (?P<dir>{_SAFE_PATH}/ansible-tmp-[0-9.-]+/?) > /dev/null 2>&1 && sleep 0'$")


def mkdtemp_answer(cmd: bytes):
    """For Ansible's command that makes a task's remote temporary directory: (the command without its wrapper, the
    directory, what it prints); None for any other command. Its output does not depend on the node: the connection
    answers it and runs the command just before the next one of the task, in the same exchange."""
    found = MKDTEMP.match(cmd.decode("utf-8", "replace"))
    if not found or ".." in found.group("dir").split("/"):
        return None
    return found.group(1).encode(), found.group("dir"), f"{found.group('name')}={found.group('dir')}\n".encode()


TMP_CHMOD = re.compile(rf"^/\S+ -c 'chmod [ugoa]*[+=-][rwxX]+ (?P<paths>{_SAFE_PATH}(?: {_SAFE_PATH})*) && sleep 0'$")


def tmp_chmod(cmd: bytes, tmpdir) -> bool:
    """Whether cmd is Ansible's chmod of files in the task's temporary directory tmpdir (and of that directory)."""
    found = TMP_CHMOD.match(cmd.decode("utf-8", "replace")) if tmpdir else None
    if not found:
        return False
    paths = found.group("paths").split()
    return all(path.rstrip("/") == tmpdir or (path.startswith(tmpdir + "/") and ".." not in path.split("/"))
               for path in paths)


def removed_tmp(cmd: bytes):
    """The directory of Ansible's command that removes a task's remote temporary directory; None for any other."""
    found = REMOVE_TMP.match(cmd.decode("utf-8", "replace"))
    if not found or ".." in found.group("dir").split("/"):
        return None
    return found.group("dir").rstrip("/")


def b64_lines(data: bytes) -> bytes:
    """base64 in lines of 76 characters, each ending in a newline ('' for no data)."""
    return base64.encodebytes(data)


def b64_file_chunks(handle, digest, chunk: int = READ_CHUNK, limit=None):
    """Yield a file's content as base64 lines, a chunk at a time, feeding each raw chunk to digest (a hashlib object).
    limit: read at most that many bytes (one transfer command's share of the file), else to the end."""
    if chunk % B64_LINE:
        raise ValueError("chunk must be a multiple of 57 bytes")
    left = limit
    while left is None or left > 0:
        data = handle.read(chunk if left is None else min(chunk, left))
        if not data:
            return
        if left is not None:
            left -= len(data)
        digest.update(data)
        yield base64.encodebytes(data)


def command_script(cmd: bytes, marker: str, has_stdin: bool) -> tuple:
    """The script that runs cmd; returns (head, tail): head, then the stdin as base64 lines (if any), then tail.

    The command runs in a subshell whose stdout and stderr go to files in a private temporary directory, its exit
    status to a third; the framed reply is printed from them once the subshell has ended, and the directory removed.
    So a child the command leaves in the background (``sleep 75 &``) does not hold the reply, and what the command
    writes to the terminal itself (``/dev/tty``) comes before the reply's first line, which a newline starts.
    """
    m = marker
    cmd_b64 = b64_lines(cmd).decode()
    stdin = f"base64 -d <<'{m}' | " if has_stdin else ""
    redirect = "" if has_stdin else " </dev/null"
    head = (
        f"c=$(base64 -d <<'{m}'\n{cmd_b64}{m}\n); d=$(mktemp -d)\n"
        f"{{ {stdin}( eval \"$c\" ){redirect} >\"$d/o\" 2>\"$d/e\"; echo $? >\"$d/r\"; }}\n"
    )
    tail = (
        (f"{m}\n" if has_stdin else "")
        + f"printf '\\n%s:O\\n' '{m}'; base64 <\"$d/o\"; printf '%s:E\\n' '{m}'; base64 <\"$d/e\"; "
        f"printf '%s:R %s\\n' '{m}' \"$(cat \"$d/r\")\"; rm -rf \"$d\"\n"
    )
    return head.encode(), tail.encode()


def end_of_reply(marker: str) -> bytes:
    """What the last line of a reply starts with (the master reads up to the newline after it)."""
    return f"{marker}:R ".encode()


def lost_mark(marker: str) -> str:
    """What starts the line the master sends, instead of the rest of a reply, when the session ends in the middle of a
    command: ``<marker>:L <why>`` (the request header's ``lost``)."""
    return f"{marker}:L "


def lost_reason(output: bytes, marker: str) -> str:
    """The master's reason for a session that ended in the middle of this command (see lost_mark); "" when none."""
    found = _after_mark(output, lost_mark(marker).encode())
    return found.decode("utf-8", "replace").strip() if found is not None else ""


def parse_reply(output: bytes, marker: str) -> tuple:
    """(rc, stdout, stderr) from a framed reply; ProtocolError when it is not one."""
    lines = output.replace(b"\r", b"").split(b"\n")
    start, err, end = f"{marker}:O".encode(), f"{marker}:E".encode(), end_of_reply(marker)
    try:
        first = lines.index(start)
        middle = lines.index(err, first + 1)
    except ValueError:
        raise ProtocolError("the session's answer has no framed output") from None
    rc_line = next((line for line in lines[middle + 1:] if line.startswith(end)), None)
    if rc_line is None:
        raise ProtocolError("the session's answer has no exit status")
    status = (rc_line[len(end):].split() or [b""])[0]  # "<rc>", or "<rc> F" when the helper forked a module
    if not status.isdigit():
        raise ProtocolError(f"the session's answer has no valid exit status ({status[:40]!r})")
    stop = lines.index(rc_line, middle + 1)
    try:
        stdout = base64.b64decode(b"".join(lines[first + 1:middle]), validate=True)
        stderr = base64.b64decode(b"".join(lines[middle + 1:stop]), validate=True)
    except (binascii.Error, ValueError) as e:
        raise ProtocolError(f"the session's answer is not valid base64: {e}") from e
    return int(status), stdout, stderr


def where_module_ran(output: bytes, marker: str):
    """Where the resident Python ran the module of this reply: "fork" (its preloaded fork, "<marker>:R <rc> F"),
    "process" (in itself, "<marker>:R <rc> I"), or None (as a command, or not the resident Python)."""
    status, _sep, where = (_after_mark(output, end_of_reply(marker)) or b"").partition(b" ")
    return {b"F": "fork", b"I": "process"}.get(where) if status.isdigit() else None


def put_command(out_path: str) -> bytes:
    """Write stdin to out_path, print its sha256 (stdout)."""
    return put_chunk_command(out_path, True, True)


# --- transfers in chunks: one command per chunk, each bounded by command_timeout --------------------------------------
# A file travels as a series of commands of at most a chunk each (transfer_chunk_size), so what the controller holds
# is bounded by the chunk, and a transfer fails only when one chunk does not arrive within command_timeout, however
# long the whole file takes. The node reads a fetched file with dd in blocks of DD_BLOCK, so a chunk is a whole number
# of blocks; the SHA-256 of the whole file is checked at the end.
DD_BLOCK = 65536
MIN_CHUNK = DD_BLOCK
PART_MIN = 8 * 1024 * 1024  # bytes per bucket part (S3's multipart minimum is 5 MiB)
PART_MAX_COUNT = 10000  # S3's most parts per upload


def chunk_size(value) -> int:
    """The transfer_chunk_size option as the number of bytes a transfer command carries: a whole number of DD_BLOCK
    (rounded down); ValueError naming the option when it is smaller than one block."""
    try:
        size = int(value)
    except (TypeError, ValueError):
        size = 0
    if size < MIN_CHUNK:
        raise ValueError(f"transfer_chunk_size (ansible_aws_ssm_transfer_chunk_size) must be at least {MIN_CHUNK} "
                         f"bytes, not {value}")
    return size - size % DD_BLOCK


def plan(size: int, chunk: int) -> list:
    """The (offset, length) of each command of a transfer of size bytes in chunks of chunk bytes; one of length 0
    for an empty file, so every transfer has a first and a last command."""
    if size <= 0:
        return [(0, 0)]
    return [(offset, min(chunk, size - offset)) for offset in range(0, size, chunk)]


def part_size(size: int, chunk: int) -> int:
    """Bytes per part of a transfer through the bucket: at least PART_MIN and the chunk, few enough for
    PART_MAX_COUNT parts, a whole number of DD_BLOCK."""
    least = max(PART_MIN, chunk, -(-size // PART_MAX_COUNT))
    return -(-least // DD_BLOCK) * DD_BLOCK


def put_chunk_command(out_path: str, first: bool, last: bool) -> bytes:
    """Write stdin to out_path (the first chunk) or append it (the others); the last also prints the file's sha256
    (stdout)."""
    q = shlex.quote(out_path)
    return (f"cat {'>' if first else '>>'} {q}" + (f" && sha256sum < {q}" if last else "")).encode()


def _dd(q: str, offset: int, length: int) -> str:
    if offset % DD_BLOCK:
        raise ValueError(f"a chunk starts at a multiple of {DD_BLOCK} bytes, not at {offset}")
    return f"dd if={q} bs={DD_BLOCK} skip={offset // DD_BLOCK} count={-(-length // DD_BLOCK)} 2>/dev/null"


def fetch_head_command(in_path: str, first: int) -> bytes:
    """Print the file's sha256 and its size on stderr (two lines), then its first ``first`` bytes on stdout (none
    for 0)."""
    q = shlex.quote(in_path)
    head = f"sha256sum < {q} >&2 && wc -c < {q} >&2"
    return (head + (f" && {_dd(q, 0, first)}" if first else "")).encode()


def fetch_head(stderr: bytes) -> tuple:
    """(size, sha256) from what fetch_head_command printed on stderr; ValueError when it is not that."""
    lines = stderr.strip().splitlines()
    digest = sha256_of(lines[0]) if lines else ""
    if len(lines) != 2 or not digest or not lines[1].strip().isdigit():
        raise ValueError(f"the node did not print the file's SHA-256 and size: {stderr[:200]!r}")
    return int(lines[1].strip()), digest


def fetch_chunk_command(in_path: str, offset: int, length: int) -> bytes:
    """Print length bytes of the file from offset (a multiple of DD_BLOCK) on stdout."""
    return _dd(shlex.quote(in_path), offset, length).encode()


def curl_config(url: str) -> bytes:
    """What curl reads with ``-K -`` (the command's stdin) to name url: a presigned URL is a credential for as long as
    it lives, and on a command line any local user reads it in /proc/PID/cmdline; stdin keeps it out of every process's
    argv and out of the node's files. ValueError for a URL with a line break (it would end the setting)."""
    if "\n" in url or "\r" in url:
        raise ValueError("a URL for curl has no line break")
    quoted = url.replace("\\", "\\\\").replace('"', '\\"')
    return f'url = "{quoted}"\n'.encode()


def upload_part_command(in_path: str, offset: int, length: int) -> bytes:
    """Upload length bytes of the file from offset to the presigned UploadPart URL that curl_config gives on the
    command's stdin; print the response's headers (its ETag) on stdout. S3 wants the part's length up front, so the
    bytes go through a temporary file, unlinked as soon as it is open: a command killed halfway (a session ended, a
    SIGKILL) leaves no file behind."""
    q = shlex.quote(in_path)
    return (f"t=$(mktemp) && exec 3<>\"$t\" && rm -f \"$t\" && {_dd(q, offset, length)} >&3 && "
            "curl -sSf -K - -X PUT -T /dev/fd/3 -D - -o /dev/null").encode()


def download_range_command(out_path: str, offset: int, length: int, first: bool, last: bool) -> bytes:
    """Download bytes offset..offset+length-1 of the presigned GET URL that curl_config gives on the command's stdin
    into out_path (the first part) or after it (the others); the last also prints the file's sha256 (stdout). With
    length 0 nothing is downloaded (and the command reads no stdin)."""
    q = shlex.quote(out_path)
    get = f"curl -sSf -K - -r {offset}-{offset + length - 1}" if length else "true"
    return (f"{get} {'>' if first else '>>'} {q}" + (f" && sha256sum < {q}" if last else "")).encode()


_ETAG = re.compile(rb"^etag:\s*(\S+)\s*$", re.I | re.M)


def etag_of(headers: bytes) -> str:
    """The ETag of an HTTP response's headers (curl -D -), quotes kept as S3 wants them back; "" when none."""
    found = _ETAG.findall(headers.replace(b"\r", b""))
    return found[-1].decode("ascii", "replace") if found else ""


_SUM = re.compile(rb"^([0-9a-f]{64})\s")


def sha256_of(output: bytes) -> str:
    """The hex digest sha256sum printed ('' if none)."""
    match = _SUM.match(output.strip() + b" ")
    return match.group(1).decode() if match else ""


def control_name(identity: dict) -> str:
    """The master's socket name: a hash of what makes a session (endpoint, region, profile, key, node, document,
    local user), so nothing about it shows in the file name and two identities never share a session."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return f"ssm-{digest[:24]}"


def control_paths(control_dir: str, identity: dict) -> tuple:
    """(socket path, lock path); ValueError when the socket path is too long for a Unix socket."""
    base = os.path.join(os.path.expanduser(control_dir), control_name(identity))
    sock = base + ".sock"
    if len(os.fsencode(sock)) > SOCKET_PATH_MAX:
        raise ValueError(f"{sock} is {len(os.fsencode(sock))} bytes long, more than the {SOCKET_PATH_MAX} a Unix "
                         "socket path may have: set a shorter control_path_dir (ansible_aws_ssm_control_path_dir)")
    return sock, base + ".lock"


def check_control_dir(path: str, uid: int) -> None:
    """Create the control directory 0700 if needed; refuse one that others can use (ValueError naming the fix)."""
    path = os.path.expanduser(path)
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.stat(path)
    if info.st_uid != uid:
        raise ValueError(f"control directory {path} belongs to uid {info.st_uid}, not to you ({uid}): set "
                         "control_path_dir (ansible_aws_ssm_control_path_dir) to a directory of your own")
    if info.st_mode & 0o077:
        raise ValueError(f"control directory {path} is open to other users (mode {oct(info.st_mode & 0o777)}): "
                         f"run chmod 700 {shlex.quote(path)} or set control_path_dir to a private directory")
