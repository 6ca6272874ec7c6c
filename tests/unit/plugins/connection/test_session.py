"""bastionless.ssm.session's pure logic: the framed command script (run by a real local sh, as the node's shell
would run it), base64 chunking, checksums, control paths, the options it shares with amazon.aws.aws_ssm, and what
loading the plugin imports (by Ansible's real plugin loader, in a new interpreter), the choice of transport, and the
session master's handling of a slow client (the real master script on both transports: with sh for the plugin, and
with a real local WebSocket data channel whose shell is sh for the native transport, which also resumes after the
WebSocket breaks)."""

import ast
import base64
import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import ansible.errors as session_errors
import pytest
import yaml
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import serve

from ansible_collections.bastionless.ssm.plugins.plugin_utils import _data_channel as dc
from ansible_collections.bastionless.ssm.plugins.plugin_utils import _session_protocol as protocol
from ansible_collections.bastionless.ssm.plugins.plugin_utils import _session_support as support

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
BASE = os.path.join(os.path.dirname(yaml.__file__), "..", "ansible_collections", "amazon", "aws", "plugins",
                    "connection", "aws_ssm.py")


def _doc(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    [text] = [n.value.value for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "DOCUMENTATION"]
    return yaml.safe_load(text)


def _with_fragments(doc: dict) -> dict:
    """``doc`` with the options of the collection's doc fragments it extends, merged key by key as ansible-doc does."""
    for name in doc.get("extends_documentation_fragment") or []:
        if not name.startswith("bastionless.ssm."):
            continue
        path = os.path.join(ROOT, "plugins", "doc_fragments", name.split(".")[-1] + ".py")
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
        [text] = [n.value.value for n in ast.walk(tree) if isinstance(n, ast.Assign) and n.targets[0].id == "DOCUMENTATION"]
        for option, spec in yaml.safe_load(text)["options"].items():
            doc["options"][option] = {**spec, **doc["options"].get(option, {})}
    return doc


def _sh(script: bytes) -> bytes:
    """What a node's sh prints for the script (with CRLF, as a pty with onlcr sends it)."""
    result = subprocess.run(["/bin/sh"], input=script, capture_output=True, timeout=30, check=True)
    return result.stdout.replace(b"\n", b"\r\n")


def _run(cmd: bytes, stdin: bytes | None = None) -> tuple:
    marker = protocol.new_marker()
    head, tail = protocol.command_script(cmd, marker, stdin is not None)
    script = head + (protocol.b64_lines(stdin) if stdin is not None else b"") + tail
    return protocol.parse_reply(b"noise before\r\n" + _sh(script), marker)


@pytest.mark.parametrize("cmd, stdin, expected", [
    (b"echo hello", None, (0, b"hello\n", b"")),
    (b"echo out; echo err >&2; exit 7", None, (7, b"out\n", b"err\n")),
    (b"cat", b"", (0, b"", b"")),
    (b"cat", bytes(range(256)) * 3, (0, bytes(range(256)) * 3, b"")),
    (b"printf '\\377\\376caf\\351\\033[31m'", None, (0, b"\xff\xfecaf\xe9\x1b[31m", b"")),
    (b"printf 'a\\nb'\nprintf 'c'", None, (0, b"a\nbc", b"")),  # a command of several lines
    (b"echo \"it's $((1+1))\" '\"quoted\"'", None, (0, b"it's 2 \"quoted\"\n", b"")),
    (b"read line; echo got:$line", b"secret\n", (0, b"got:secret\n", b"")),
    (b"cat >/dev/null; echo no stdin left", None, (0, b"no stdin left\n", b"")),
])
def test_a_command_script_round_trips_through_sh(cmd, stdin, expected):
    assert _run(cmd, stdin) == expected


def test_a_child_left_in_the_background_does_not_hold_the_reply():
    """``raw: sleep 75 & echo started`` answers when the command ends, not when the child it leaves does."""
    started = time.monotonic()
    assert _run(b"sleep 20 & echo started") == (0, b"started\n", b"")
    assert _run(b"cat; sleep 20 & echo started >&2", b"in\n") == (0, b"in\n", b"started\n")
    assert time.monotonic() - started < 10


def _on_a_pty(argv: list, data: bytes, marker: str, timeout: float = 30) -> bytes:
    """What argv prints on a pseudo-terminal (echo off, as the session's set-up leaves it) that is its controlling
    terminal, as the session's shell has one, for data written to it; up to the end of the reply of marker."""
    import fcntl  # pylint: disable=import-outside-toplevel
    import pty  # pylint: disable=import-outside-toplevel
    import select  # pylint: disable=import-outside-toplevel
    import termios  # pylint: disable=import-outside-toplevel

    master, slave = pty.openpty()
    attrs = termios.tcgetattr(slave)
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))  # pylint: disable=W1509
    os.close(slave)
    try:
        os.write(master, data)
        output, end, deadline = b"", protocol.end_of_reply(marker), time.monotonic() + timeout
        while end not in output or b"\n" not in output[output.index(end):]:
            readable, _w, _x = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            assert readable, output
            output += os.read(master, 65536)
        return output
    finally:
        proc.kill()
        proc.wait()
        os.close(master)


TTY_WRITER = b"echo out; printf 'no newline' >/dev/tty; echo err >&2; echo 'a line' >/dev/tty; printf more"


def test_what_a_command_writes_to_its_terminal_stays_out_of_the_sh_readers_frame():
    marker = protocol.new_marker()
    head, tail = protocol.command_script(TTY_WRITER, marker, False)
    output = _on_a_pty(["/bin/sh", "-c", "exec /bin/sh 2>/dev/null"], head + tail, marker)  # as SH_START runs it
    assert b"no newline" in output and b"a line" in output  # it did reach the terminal
    assert protocol.parse_reply(output, marker) == (0, b"out\nmore", b"err\n")


def test_what_a_command_writes_to_its_terminal_stays_out_of_the_resident_pythons_frame():
    marker = protocol.new_marker()
    head, tail = protocol.helper_request(TTY_WRITER, marker, False)
    output = _on_a_pty([sys.executable, protocol.HELPER, "READY"], head + tail, marker)
    assert b"no newline" in output
    assert protocol.parse_reply(output, marker) == (0, b"out\nmore", b"err\n")


def test_no_script_line_is_long_and_nothing_is_in_clear():
    marker = protocol.new_marker()
    secret = b"hunter2-" * 200
    head, tail = protocol.command_script(b"echo " + secret, marker, True)
    script = head + protocol.b64_lines(secret) + tail
    assert max(len(line) for line in script.split(b"\n")) < 200  # far below a pty's 4096 in canonical mode
    assert b"hunter2" not in script
    assert protocol.end_of_reply(marker) not in script  # an echoed script never ends a reply


def test_the_marker_cannot_be_a_base64_line():
    marker = protocol.new_marker()
    assert len(marker) == 23 and "-" in marker
    assert set(marker) - set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


@pytest.mark.parametrize("reply, message", [
    (b"nothing framed\r\n", "no framed output"),
    (b"{m}:O\r\naGk=\r\n{m}:E\r\n", "no exit status"),
    (b"{m}:O\r\naGk=\r\n{m}:E\r\n{m}:R \r\n", "no valid exit status"),
    (b"{m}:O\r\n!!!!\r\n{m}:E\r\n{m}:R 0\r\n", "not valid base64"),
])
def test_a_reply_that_is_not_framed_is_refused(reply, message):
    marker = protocol.new_marker()
    with pytest.raises(protocol.ProtocolError, match=message):
        protocol.parse_reply(reply.replace(b"{m}", marker.encode()), marker)


@pytest.mark.parametrize("size", [0, 1, 56, 57, 58, 57 * 1024, 57 * 1024 + 1, 300000])
def test_files_are_chunked_in_whole_base64_lines_and_hashed(size):
    data = os.urandom(size)
    digest = hashlib.sha256()
    chunks = list(protocol.b64_file_chunks(io.BytesIO(data), digest))
    assert base64.b64decode(b"".join(chunks)) == data
    assert all(len(line) <= 76 for chunk in chunks for line in chunk.split(b"\n"))
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert len(chunks) == -(-size // protocol.READ_CHUNK)


def test_a_chunk_size_that_splits_lines_is_refused():
    with pytest.raises(ValueError, match="multiple of 57"):
        list(protocol.b64_file_chunks(io.BytesIO(b"x"), hashlib.sha256(), chunk=1000))


def test_a_request_is_framed_for_the_reader_the_session_has():
    marker = protocol.new_marker()
    assert protocol.request(b"true", marker, True, "python", "/usr/bin/python3", after_success=True) == (
        protocol.helper_request(b"true", marker, True, "/usr/bin/python3", after_success=True))
    assert protocol.request(b"true", marker, True, "sh", "/usr/bin/python3", after_success=True) == (
        protocol.command_script(b"true", marker, True))


def test_the_put_command_carries_the_checksum(tmp_path):
    target = tmp_path / "it's a file"
    data = os.urandom(5000)
    rc, out, err = _run(protocol.put_command(str(target)), data)
    assert (rc, err) == (0, b"") and target.read_bytes() == data
    assert protocol.sha256_of(out) == hashlib.sha256(data).hexdigest()
    assert protocol.sha256_of(b"not a sum") == ""


@pytest.mark.parametrize("value, expected", [
    (65536, 65536), (4194304, 4194304), (100000, 65536), ("1048577", 1048576)])
def test_the_chunk_size_is_a_whole_number_of_blocks(value, expected):
    assert protocol.chunk_size(value) == expected


@pytest.mark.parametrize("value", [0, 65535, -1, "x", None])
def test_a_chunk_size_below_one_block_is_one_error_naming_the_option(value):
    with pytest.raises(ValueError, match=r"^transfer_chunk_size \(ansible_aws_ssm_transfer_chunk_size\) must be at "
                                         rf"least 65536 bytes, not {value}$"):
        protocol.chunk_size(value)


@pytest.mark.parametrize("size, chunk, expected", [
    (0, 65536, [(0, 0)]),
    (1, 65536, [(0, 1)]),
    (65536, 65536, [(0, 65536)]),
    (65537, 65536, [(0, 65536), (65536, 1)]),
    (3 * 65536 + 5, 131072, [(0, 131072), (131072, 65536 + 5)]),
])
def test_a_transfer_is_planned_in_chunks_that_cover_the_file_once(size, chunk, expected):
    assert protocol.plan(size, chunk) == expected


@pytest.mark.parametrize("size, chunk, expected", [
    (1, 65536, 8 * 1024 * 1024),
    (100 * 1024 * 1024, 16 * 1024 * 1024, 16 * 1024 * 1024),
    (200 * 1024 ** 3, 4 * 1024 * 1024, 21495808),  # 200 GiB / 10,000 parts, rounded up to whole blocks
])
def test_bucket_parts_are_at_least_8_mib_and_at_most_10000(size, chunk, expected):
    part = protocol.part_size(size, chunk)
    assert part == expected and part % protocol.DD_BLOCK == 0 and len(protocol.plan(size, part)) <= 10000


def test_a_files_chunks_are_read_a_commands_share_at_a_time():
    data = os.urandom(3 * 57 * 1024 + 100)
    handle, digest, parts = io.BytesIO(data), hashlib.sha256(), []
    for _offset, length in protocol.plan(len(data), 65536):
        parts.append(base64.b64decode(b"".join(protocol.b64_file_chunks(handle, digest, limit=length))))
    assert [len(p) for p in parts] == [65536, 65536, len(data) - 131072] and b"".join(parts) == data
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert list(protocol.b64_file_chunks(io.BytesIO(data), hashlib.sha256(), limit=0)) == []


def test_a_file_put_a_chunk_per_command_arrives_whole_with_its_checksum(tmp_path):
    target, data = tmp_path / "it's a file", os.urandom(3 * 65536 + 5)
    target.write_bytes(b"an older, longer content" * 20000)
    for offset, length in protocol.plan(len(data), 65536):
        rc, out, err = _run(protocol.put_chunk_command(str(target), offset == 0, offset + length >= len(data)),
                            data[offset:offset + length])
        assert (rc, err) == (0, b"")
        assert (out == b"") == (offset + length < len(data)), "only the last command prints the checksum"
    assert target.read_bytes() == data and protocol.sha256_of(out) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("size", [0, 1, 65536, 3 * 65536 + 5])
def test_a_file_fetched_a_chunk_per_command_arrives_whole(tmp_path, size):
    source, data = tmp_path / "it's a file", os.urandom(size)
    source.write_bytes(data)
    rc, first, err = _run(protocol.fetch_head_command(str(source), 65536))
    assert rc == 0 and protocol.fetch_head(err) == (size, hashlib.sha256(data).hexdigest())
    got = first
    for offset, length in protocol.plan(size, 65536)[1:]:
        rc, out, err = _run(protocol.fetch_chunk_command(str(source), offset, length))
        assert rc == 0 and len(out) == length
        got += out
    assert got == data
    rc, out, err = _run(protocol.fetch_head_command(str(source), 0))  # the bucket's head: no data
    assert rc == 0 and out == b"" and protocol.fetch_head(err)[0] == size


def test_a_fetch_head_that_is_not_one_is_refused(tmp_path):
    rc, out, err = _run(protocol.fetch_head_command(str(tmp_path / "missing"), 65536))
    assert rc != 0 and out == b"" and b"missing" in err
    for stderr in (b"", b"not a sum\n12\n", b"%s  -\nmany\n" % (b"0" * 64,)):
        with pytest.raises(ValueError, match="did not print the file's SHA-256 and size"):
            protocol.fetch_head(stderr)
    with pytest.raises(ValueError, match="multiple of 65536"):
        protocol.fetch_chunk_command("/f", 1000, 10)


@pytest.fixture(name="curl_args")
def fixture_curl_args(tmp_path, monkeypatch):
    """The arguments of every curl the node's commands start (what /proc/PID/cmdline shows any local user), recorded
    by a curl first on PATH that then runs the real one."""
    real = shutil.which("curl")
    shim, log = tmp_path / "bin", tmp_path / "curl-args"
    shim.mkdir()
    (shim / "curl").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\nexec {real} "$@"\n')
    (shim / "curl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}:{os.environ['PATH']}")
    return lambda: log.read_text().splitlines()


def test_the_node_downloads_a_byte_range_per_command_with_curl(tmp_path, curl_args):
    source, target, data = tmp_path / "object", tmp_path / "it's the copy", os.urandom(200001)
    source.write_bytes(data)
    url = source.as_uri() + "?X-Amz-Security-Token=secret%2Btoken&X-Amz-Signature=s1gnature"
    steps = protocol.plan(len(data), 65536)
    for offset, length in steps:
        cmd = protocol.download_range_command(str(target), offset, length, offset == 0, offset + length >= len(data))
        rc, out, err = _run(cmd, protocol.curl_config(url))
        assert (rc, err) == (0, b"") and b"secret" not in cmd
    assert target.read_bytes() == data and protocol.sha256_of(out) == hashlib.sha256(data).hexdigest()
    assert len(curl_args()) == len(steps) and not [a for a in curl_args() if "secret" in a or "s1gnature" in a]


def test_a_url_reaches_curl_as_written_or_is_refused():
    assert protocol.curl_config('https://h/k?a=%2F&b="x"\\') == b'url = "https://h/k?a=%2F&b=\\"x\\"\\\\"\n'
    with pytest.raises(ValueError, match="no line break"):
        protocol.curl_config("https://h/k\n-o /etc/passwd")


def _part_server(received, hold=None):
    """A local S3 that answers UploadPart with an ETag; with hold (an Event), one that takes the request and waits."""
    class Part(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):  # noqa: N802 (http.server's name)
            if hold is not None:
                received.append(self.path)
                hold.wait(20)
                return
            received.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("ETag", '"etag-%d"' % len(received))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Part)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_the_node_uploads_a_part_with_curl_and_returns_its_etag(tmp_path, curl_args, monkeypatch):
    source, data, received = tmp_path / "it's a file", os.urandom(3 * 65536 + 5), []
    source.write_bytes(data)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    server = _part_server(received)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/bucket/key?partNumber=2&uploadId=a%2Bb&X-Amz-Signature=x"
        cmd = protocol.upload_part_command(str(source), 65536, 2 * 65536 + 5)
        rc, out, err = _run(cmd, protocol.curl_config(url))
    finally:
        server.shutdown()
    assert (rc, err) == (0, b"") and protocol.etag_of(out) == '"etag-1"'
    assert received == [("/bucket/key?partNumber=2&uploadId=a%2Bb&X-Amz-Signature=x", data[65536:])]
    assert b"Signature" not in cmd and not [a for a in curl_args() if "Signature" in a or "127.0.0.1" in a]
    assert os.listdir(tmp_path / "tmp") == []
    assert protocol.etag_of(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n") == ""


def test_an_upload_killed_halfway_leaves_no_file_on_the_node(tmp_path):
    """The part's temporary file is unlinked before the upload starts: while curl waits on S3 it has no name, and a
    SIGKILL (no trap runs) leaves nothing in the temporary directory."""
    source, received, hold = tmp_path / "big", [], threading.Event()
    source.write_bytes(os.urandom(65536 * 4))
    (tmp_path / "tmp").mkdir()
    server = _part_server(received, hold)
    url = f"http://127.0.0.1:{server.server_address[1]}/bucket/key?partNumber=1"
    proc = subprocess.Popen(["/bin/sh", "-c", protocol.upload_part_command(str(source), 0, 65536 * 4)],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "TMPDIR": str(tmp_path / "tmp")}, start_new_session=True)
    try:
        proc.stdin.write(protocol.curl_config(url))
        proc.stdin.close()
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert received == ["/bucket/key?partNumber=1"], "the upload reached S3"
        assert os.listdir(tmp_path / "tmp") == [], "the part has no name while it uploads"
        os.killpg(proc.pid, 9)
        proc.wait(10)
    finally:
        hold.set()
        server.shutdown()
    assert os.listdir(tmp_path / "tmp") == []


def _transfer_connection(monkeypatch, **options):
    """The session connection with its commands run by a local sh (as the node's sh reader runs them)."""
    from ansible.playbook.play_context import PlayContext  # pylint: disable=import-outside-toplevel
    from ansible_collections.bastionless.ssm.plugins.connection import session  # pylint: disable=import-outside-toplevel

    conn = session.Connection(PlayContext())
    conn._options.update({"instance_id": "i-0abc", "bucket_name": None, "transfer_threshold": 8388608,
                          "transfer_chunk_size": 65536, **options})
    conn._connected = True
    conn.commands = []

    def execute(cmd, stdin_chunks=None, interpreter=None, doing=None):
        conn.commands.append((cmd, doing))
        stdin = base64.b64decode(b"".join(stdin_chunks)) if stdin_chunks is not None else None
        return _run(cmd, stdin)

    monkeypatch.setattr(conn, "_execute", execute)
    return conn


def test_the_connection_fetches_and_puts_a_chunk_per_command(monkeypatch, tmp_path):
    conn = _transfer_connection(monkeypatch)
    source, fetched, put = tmp_path / "source", tmp_path / "fetched", tmp_path / "put"
    data = os.urandom(5 * 65536 + 7)
    source.write_bytes(data)
    conn.fetch_file(str(source), str(fetched))
    assert fetched.read_bytes() == data and len(conn.commands) == 6  # the head brings the first chunk
    assert conn.commands[-1][1] == f"fetching {source} to {fetched} stopped after {5 * 65536} of {len(data)} bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fetched", "source"], "no part file is left"
    conn.commands.clear()
    conn.put_file(str(fetched), str(put))
    assert put.read_bytes() == data and len(conn.commands) == 6
    assert conn.commands[2][1] == f"copying {fetched} to {put} stopped after {2 * 65536} of {len(data)} bytes"


def test_a_fetch_that_fails_leaves_the_destination_as_it_was(monkeypatch, tmp_path):
    conn = _transfer_connection(monkeypatch)
    source, fetched = tmp_path / "source", tmp_path / "fetched"
    source.write_bytes(os.urandom(3 * 65536))
    fetched.write_bytes(b"what an earlier fetch brought")
    real = conn._execute

    def changing(cmd, *args, **kwargs):  # the file changes on the node after its checksum was taken
        if len(conn.commands) == 1:
            source.write_bytes(os.urandom(3 * 65536))
        return real(cmd, *args, **kwargs)

    monkeypatch.setattr(conn, "_execute", changing)
    with pytest.raises(session_errors.AnsibleError, match="arrived with another SHA-256 than it has there"):
        conn.fetch_file(str(source), str(fetched))
    assert fetched.read_bytes() == b"what an earlier fetch brought"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fetched", "source"], "no part file is left"

    def shrinking(cmd, *args, **kwargs):  # the file is cut short on the node after its first chunk
        if len(conn.commands) == 1:
            source.write_bytes(source.read_bytes()[:65536])
        return real(cmd, *args, **kwargs)

    conn.commands.clear()
    monkeypatch.setattr(conn, "_execute", shrinking)
    with pytest.raises(session_errors.AnsibleError, match=r"changed during the fetch: 0 bytes at byte 65536 where "
                                                          r"65536 were expected"):
        conn.fetch_file(str(source), str(fetched))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fetched", "source"]


def test_a_chunk_that_does_not_arrive_in_time_names_the_file_the_bytes_and_the_option(monkeypatch, tmp_path):
    from ansible.playbook.play_context import PlayContext  # pylint: disable=import-outside-toplevel
    from ansible_collections.bastionless.ssm.plugins.connection import session  # pylint: disable=import-outside-toplevel

    conn = session.Connection(PlayContext())
    sock = tmp_path / "master.sock"
    sock.write_text("")
    ended = []

    def timed_out(*args, **kwargs):
        raise session._Timeout()

    monkeypatch.setattr(conn, "_control_paths", lambda: (str(sock), str(tmp_path / "lock")))
    monkeypatch.setattr(conn, "_command_timeout", lambda: 3)
    monkeypatch.setattr(conn, "_talk", timed_out)
    monkeypatch.setattr(conn, "_terminate_session", ended.append)
    conn.instance_id = "i-0abc"
    with pytest.raises(session_errors.AnsibleConnectionFailure) as failure:
        conn._execute(b"dd", doing=session._progress("fetching", "/var/log/big", "/tmp/big", 8388608, 33554432))
    assert str(failure.value) == (
        "fetching /var/log/big to /tmp/big stopped after 8388608 of 33554432 bytes: i-0abc sent no chunk within 3 s "
        "(command_timeout); the session was ended. Raise ansible_aws_ssm_command_timeout (or lower "
        "ansible_aws_ssm_transfer_chunk_size)")
    assert ended == [None]


IDENTITY = {"endpoint": "", "region": "us-east-1", "profile": "", "key": "AKIA1", "instance": "i-0abc",
            "document": "", "plugin": "", "uid": 0}


@pytest.mark.parametrize("change", [{"key": "AKIA2"}, {"instance": "i-0abd"}, {"region": "eu-west-1"},
                                    {"document": "Custom"}, {"uid": 1000}, {"profile": "other"},
                                    {"endpoint": "http://127.0.0.1:1"}, {"transport": "plugin"}])
def test_each_part_of_the_identity_names_another_socket(change):
    assert protocol.control_name(IDENTITY) != protocol.control_name({**IDENTITY, **change})
    assert protocol.control_name(IDENTITY) == protocol.control_name(dict(IDENTITY))
    assert "i-0abc" not in protocol.control_name(IDENTITY) and "AKIA" not in protocol.control_name(IDENTITY)


def test_control_paths_and_their_length_limit():
    # A short directory of its own: pytest's tmp_path (longer still under pytest-xdist) may leave no room.
    with tempfile.TemporaryDirectory(prefix="cp-") as short:
        sock, lock = protocol.control_paths(short, IDENTITY)
        assert sock.endswith(".sock") and lock.endswith(".lock") and os.path.dirname(sock) == short
    with pytest.raises(ValueError, match="control_path_dir"):
        protocol.control_paths("/tmp/" + "x" * 100, IDENTITY)


def test_a_control_dir_others_can_open_is_refused(tmp_path):
    private = tmp_path / "cp"
    protocol.check_control_dir(str(private), os.getuid())
    assert (os.stat(private).st_mode & 0o777) == 0o700
    os.chmod(private, 0o755)
    with pytest.raises(ValueError, match="chmod 700"):
        protocol.check_control_dir(str(private), os.getuid())
    with pytest.raises(ValueError, match="not to you"):
        protocol.check_control_dir(str(tmp_path), os.getuid() + 1)


@pytest.mark.parametrize("resident_python", [True, False])
def test_the_setup_steps_print_their_ready_lines_only_when_run(resident_python):
    (quiet, quiet_ready), (start, ready) = protocol.setup_steps(resident_python)
    assert quiet_ready not in quiet  # echoed before stty -echo takes effect, it cannot be taken for the answer
    assert "stty -echo" in quiet and "unset HISTFILE" in quiet and quiet.endswith("\n") and quiet.count("\n") == 1
    assert ready not in start.replace(f"'{ready}'", "") and start.endswith("exec /bin/sh 2>/dev/null\n")
    assert ("python3 -c" in start) is resident_python
    assert (f"'{ready}' auto;" in start) is resident_python
    (_quiet, _ready), (forking, ready) = protocol.setup_steps(resident_python, "fork")
    assert (f"'{ready}' fork;" in forking) is resident_python


def test_every_option_of_aws_ssm_is_an_option_of_session():
    base = _doc(BASE)["options"]
    ours = _doc(os.path.join(ROOT, "plugins", "connection", "session.py"))["options"]
    for name, spec in base.items():
        assert name in ours, name
        for source in ("vars", "env", "ini"):
            assert ours[name].get(source) == spec.get(source), (name, source)
        assert ours[name].get("default") == spec.get("default"), name
    assert {"persist_idle_timeout", "control_path_dir", "command_timeout", "transfer_threshold", "pipelining"} <= set(ours)
    assert ours["pipelining"]["default"] is True
    assert set(support.AWS_SSM_OPTIONS) == set(base), "the options handed to aws_ssm for Windows nodes"


def test_the_options_are_documented_in_our_words_with_the_plugin_version_only():
    doc = _with_fragments(_doc(os.path.join(ROOT, "plugins", "connection", "session.py")))
    assert doc["version_added"] == "0.1.0" and "version_added_collection" not in doc
    base = _doc(BASE)["options"]
    for name, spec in doc["options"].items():
        assert "version_added" not in spec, name
        assert spec.get("type"), name
        text = " ".join(spec["description"] if isinstance(spec["description"], list) else [spec["description"]])
        assert "Added in version" not in text and "9.1.0" not in text, name
        if name in base:
            theirs = base[name]["description"]
            for sentence in theirs if isinstance(theirs, list) else [theirs]:
                assert sentence not in text, (name, sentence)


_LOADED = r"""
import json, sys
from ansible.plugins.loader import connection_loader, init_plugin_loader, shell_loader
from ansible.playbook.play_context import PlayContext
init_plugin_loader()
pc = PlayContext()
pc.remote_addr = "i-0123456789abcdef0"
linux = connection_loader.get("bastionless.ssm.session", pc)
linux.set_options(var_options={"ansible_aws_ssm_region": "eu-west-1"})
out = {"linux_is_windows": linux.is_windows, "instance": linux.instance_id, "region": linux.get_option("region"),
       "boto3_for_linux": "boto3" in sys.modules, "forks": list(sys.modules[type(linux).__module__].FORKS),
       "linux_executable": linux.allow_executable}
win = connection_loader.get("bastionless.ssm.session", pc, shell=shell_loader.get("powershell"))
win.set_options(var_options={"ansible_aws_ssm_region": "eu-west-1", "ansible_aws_ssm_instance_id": "mi-0123456789abcdef0"})
base = win._aws_ssm()
out.update(windows=win.is_windows, windows_executable=win.allow_executable, base=type(base).__module__, base_is_windows=base.is_windows,
           base_region=base.get_option("region"), base_instance=base.instance_id, same_shell=base._shell is win._shell)
print(json.dumps(out))
"""


def test_a_linux_task_loads_no_boto3_and_windows_gets_aws_ssm_with_the_same_options():
    """Ansible runs each task in a new worker process: importing boto3 there (amazon.aws.aws_ssm does) costs about
    80 ms of CPU per task and host, so the plugin leaves it to the tasks that call AWS and to Windows nodes."""
    collections = os.path.abspath(os.path.join(protocol.__file__, *[".."] * 6))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections)
    done = subprocess.run([sys.executable, "-c", _LOADED], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"linux_is_windows": False, "instance": "i-0123456789abcdef0", "region": "eu-west-1",
                   "boto3_for_linux": False, "forks": [True, ""], "windows": True,
                   "linux_executable": True, "windows_executable": False,
                   "base": "ansible_collections.amazon.aws.plugins.connection.aws_ssm", "base_is_windows": True,
                   "base_region": "eu-west-1", "base_instance": "mi-0123456789abcdef0", "same_shell": True}


_NO_TRANSPORT = r"""
import json, sys
sys.modules["websockets"] = None  # as on a controller without the package: find_spec refuses it
from ansible.errors import AnsibleError
from ansible.plugins.loader import connection_loader, init_plugin_loader
from ansible.playbook.play_context import PlayContext
init_plugin_loader()
pc = PlayContext()
pc.remote_addr = "i-0123456789abcdef0"
errors = {}
for transport in ("native", None):
    conn = connection_loader.get("bastionless.ssm.session", pc)
    conn.set_options(var_options={"ansible_aws_ssm_transport": transport, "ansible_aws_ssm_plugin": "/nonexistent/smp",
                                  "ansible_aws_ssm_control_path_dir": sys.argv[1]})
    try:
        conn.exec_command("true")
    except AnsibleError as error:
        errors[str(transport)] = str(error.message)
print(json.dumps({"errors": errors, "boto3": "boto3" in sys.modules}))
"""


def test_a_task_without_websockets_or_the_plugin_fails_before_any_aws_call_naming_both():
    """The transport is chosen when a session starts, by the real plugin in a new interpreter whose websockets cannot
    be imported: transport native names the package; unset, the error names the package and the plugin. Neither
    called AWS (boto3 is not even imported)."""
    collections = os.path.abspath(os.path.join(protocol.__file__, *[".."] * 6))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections)
    with tempfile.TemporaryDirectory(prefix="cp", dir="/tmp") as control:  # short: socket paths stay under 100
        done = subprocess.run([sys.executable, "-c", _NO_TRANSPORT, control], env=env, capture_output=True, text=True,
                              timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["errors"]["native"].startswith("bastionless.ssm.session: transport native needs the Python package "
                                              "websockets, which is not installed")
    assert out["errors"]["None"].startswith("bastionless.ssm.session: bastionless.ssm.session cannot reach Session "
                                            "Manager: the Python package websockets is not installed")
    assert "session-manager-plugin was not found (the plugin option: /nonexistent/smp)" in out["errors"]["None"]
    assert out["boto3"] is False


_FAKE_AWS_SSM = r'''
DOCUMENTATION = """
name: aws_ssm
short_description: a stand-in for the guard test
description: [Declares OPTIONS only.]
author: [bastionless.ssm maintainers (@bastionless)]
options:
%s
"""
from ansible.plugins.connection import ConnectionBase


class Connection(ConnectionBase):
    transport = "amazon.aws.aws_ssm"

    def _connect(self):
        return self

    def exec_command(self, cmd, in_data=None, sudoable=True):
        return 0, b"", b""

    def put_file(self, in_path, out_path):
        pass

    def fetch_file(self, in_path, out_path):
        pass

    def close(self):
        pass
'''

_WINDOWS = r"""
import json
from ansible.errors import AnsibleError
from ansible.plugins.loader import connection_loader, init_plugin_loader, shell_loader
from ansible.playbook.play_context import PlayContext
init_plugin_loader()
pc = PlayContext()
pc.remote_addr = "mi-0123456789abcdef0"
win = connection_loader.get("bastionless.ssm.session", pc, shell=shell_loader.get("powershell"))
win.set_options(var_options={"ansible_aws_ssm_region": "eu-west-1"})
try:
    win.exec_command("Get-Date")
    print(json.dumps({"error": None}))
except AnsibleError as e:
    print(json.dumps({"error": e.message}))
"""


@pytest.mark.parametrize("version, options, error", [
    ("9.5.0", support.AWS_SSM_OPTIONS, "needs ansible-core 2.19 and amazon.aws 10.x (amazon.aws >=10.0.0,<11.0.0); "
     "found amazon.aws 9.5.0: install a release in that range"),
    ("10.0.0", [o for o in support.AWS_SSM_OPTIONS if o not in ("bucket_endpoint_url", "plugin")],
     "the aws_ssm of amazon.aws 10.0.0 has no option bucket_endpoint_url, plugin:"),
    ("10.0.0", support.AWS_SSM_OPTIONS, None),
], ids=["amazon.aws-9", "aws_ssm-without-options", "amazon.aws-10"])
def test_windows_nodes_need_an_amazon_aws_in_the_range_whose_aws_ssm_has_every_option(tmp_path, version, options,
                                                                                      error):
    """A stand-in amazon.aws ahead of the real one on the collections path: its version and its aws_ssm's options
    decide, through Ansible's real plugin loader and the plugin API, whether a Windows task may run."""
    fake = tmp_path / "ansible_collections" / "amazon" / "aws"
    (fake / "plugins" / "connection").mkdir(parents=True)
    (fake / "MANIFEST.json").write_text(json.dumps({"collection_info": {"namespace": "amazon", "name": "aws",
                                                                        "version": version}}))
    (fake / "meta").mkdir()
    (fake / "meta" / "runtime.yml").write_text('requires_ansible: ">=2.17.0"\n')
    declared = "".join(f"  {name}:\n    description: [{name}]\n    vars: [{{name: ansible_aws_ssm_{name}}}]\n"
                       for name in options)
    (fake / "plugins" / "connection" / "aws_ssm.py").write_text(_FAKE_AWS_SSM % declared)
    collections = os.path.abspath(os.path.join(protocol.__file__, *[".."] * 6))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=f"{tmp_path}:{collections}")
    done = subprocess.run([sys.executable, "-c", _WINDOWS], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])["error"]
    if error is None:
        assert found is None
    else:
        assert found.startswith("bastionless.ssm.session runs Windows nodes through amazon.aws.aws_ssm")
        assert error in found


def _frame(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _recv_until(client, needle: bytes) -> bytes:
    data = b""
    while needle not in data:
        chunk = client.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


class ShellService:
    """A Session Manager data channel on a real local WebSocket (websockets' server) whose shell is a local /bin/sh on
    pipes: the service's side of the protocol as _data_channel writes it (handshake, acknowledgements, input in
    order, output kept until acknowledged, channel_closed when the shell exits), so the native master runs against
    real frames. The session outlives its WebSocket: drop() closes it, and a client that resumes with a new token
    goes on with the same shell and sequence numbers (its unacknowledged output resent)."""

    def __init__(self, session_type: str = "Standard_Stream") -> None:
        self.session_type = session_type
        self.tokens = []
        self.ws = None
        self.shell = None
        self.lock = threading.Lock()
        self.sequence = 0
        self.unacked = {}  # output sequence number -> frame
        self.inbound = dc.InOrder()
        self.server = serve(self._handle, "127.0.0.1", 0)
        self.url = f"ws://127.0.0.1:{self.server.socket.getsockname()[1]}/v1/data-channel/test-1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _send(self, frame: bytes) -> None:
        try:
            self.ws.send(frame)
        except ConnectionClosed:  # resent on the next WebSocket, if the client resumes
            pass

    def _output(self, payload: bytes, payload_type: int = dc.OUTPUT_DATA) -> None:
        with self.lock:
            frame = dc.data(dc.OUTPUT, self.sequence, payload, payload_type).encode()
            self.unacked[self.sequence] = frame
            self.sequence += 1
            self._send(frame)

    def _pump(self) -> None:
        for chunk in iter(lambda: os.read(self.shell.stdout.fileno(), 65536), b""):
            self._output(chunk)
        with self.lock:
            self._send(dc.channel_closed("test-1", "i-test").encode())

    def _handle(self, ws) -> None:
        self.tokens.append(dc.read_token_message(ws.recv(5))["TokenValue"])
        with self.lock:
            self.ws = ws
            for number in sorted(self.unacked):
                self._send(self.unacked[number])
        if self.sequence == 0:
            self._output(dc.handshake_request(self.session_type), dc.HANDSHAKE_REQUEST)
        try:
            for frame in ws:
                message = dc.decode(frame)
                if message.message_type == dc.ACK:
                    with self.lock:
                        self.unacked.pop(dc.acknowledged_sequence(message), None)
                if message.message_type != dc.INPUT:
                    continue
                with self.lock:
                    self._send(dc.acknowledge(message).encode())
                for each in self.inbound.receive(message)[1]:
                    if each.payload_type == dc.HANDSHAKE_RESPONSE:
                        self.shell = subprocess.Popen(["/bin/sh"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                      stderr=subprocess.STDOUT)
                        self._output(dc.handshake_complete(), dc.HANDSHAKE_COMPLETE)
                        threading.Thread(target=self._pump, daemon=True).start()
                    elif each.payload_type == dc.OUTPUT_DATA:
                        self.shell.stdin.write(each.payload)
                        self.shell.stdin.flush()
        except (ConnectionClosed, OSError):  # the client left or the shell ended
            pass

    def drop(self) -> None:
        """The WebSocket breaks under the session (as the service's do about hourly)."""
        self.ws.close()

    def close(self) -> None:
        self.server.shutdown()
        if self.shell is not None and self.shell.poll() is None:
            self.shell.kill()
            self.shell.wait()


class ResumeEndpoint:
    """An SSM API endpoint that answers ResumeSession with a new token (and records the requests), or, with
    ``refuse``, with that error (as the service answers for a session it has ended)."""

    def __init__(self, service: ShellService, refuse: str = "") -> None:
        requests = self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                requests.append((self.headers["X-Amz-Target"], json.loads(body)))
                answer = json.dumps({"SessionId": "test-1", "TokenValue": f"token-{len(requests) + 1}",
                                     "StreamUrl": service.url}).encode()
                if refuse:
                    answer = json.dumps({"__type": "InvalidParameters", "message": refuse}).encode()
                self.send_response(400 if refuse else 200)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def _master_config(transport: str, sock: str, resident_python: bool, service=None) -> dict:
    config = {"transport": transport, "socket": sock, "idle": 30, "start_timeout": 20,
              "steps": protocol.setup_steps(resident_python), "session_id": "test-1"}
    if transport == "native":
        config["response"] = {"SessionId": "test-1", "TokenValue": "token-1", "StreamUrl": service.url}
    else:
        config["argv"] = ["/bin/sh", "-c", "echo 'Starting session with SessionId: test-1'; exec /bin/sh"]
    return config


@pytest.fixture
def shell_service():
    made = []
    yield lambda *args: made.append(ShellService(*args)) or made[-1]
    for service in made:
        service.close()


@pytest.mark.parametrize("transport, resident_python",
                         [("plugin", True), ("plugin", False), ("native", True), ("native", False)])
def test_the_master_waits_for_the_end_of_input_of_a_client_that_was_slow_to_send_it(
        tmp_path, shell_service, transport, resident_python):
    """A client preempted between its command's last frame and its end-of-input frame must still get its reply: the
    master keeps the connection until that frame (it used to close it, and the late frame broke the pipe: the
    command's task went UNREACHABLE although the command had run). Then it serves the next client. With
    resident_python, the real set-up starts the helper (this machine has python3) and the master says so. On the
    native transport, the master speaks the data channel itself (the service sees the token once), and a client's
    exit ends the session with the shell (the service's channel_closed)."""
    sock = str(tmp_path / "master.sock")
    service = shell_service() if transport == "native" else None
    config = _master_config(transport, sock, resident_python, service)
    master = subprocess.Popen([sys.executable, os.path.join(ROOT, "plugins", "plugin_utils", "_session_master.py")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        master.stdin.write(json.dumps(config).encode())
        master.stdin.close()
        assert json.loads(master.stdout.readline())["ok"]
        marker = protocol.new_marker()
        end = protocol.end_of_reply(marker)
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(20)
            client.connect(sock)
            client.sendall(json.dumps({"op": "run", "end": end.decode(), "timeout": 20}).encode() + b"\n")
            answer = json.loads(_recv_until(client, b"\n"))
            assert answer["ok"] and answer["reader"] == ("python" if resident_python else "sh")
            head, tail = protocol.request(b"echo hello; echo oops >&2; exit 3", marker, False, answer["reader"])
            client.sendall(b"".join(_frame(part) for part in (head, tail) if part))  # a frame of 0 is the end
            reply = _recv_until(client, end)
            reply += _recv_until(client, b"\n") if not reply.split(end, 1)[1].count(b"\n") else b""
            time.sleep(0.5)  # the master has had all the time it needs to close, had it been going to
            client.sendall(struct.pack(">I", 0))  # BrokenPipeError here before the fix
            while chunk := client.recv(65536):
                reply += chunk
        assert protocol.parse_reply(reply, marker) == (3, b"hello\n", b"oops\n")
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(20)
            client.connect(sock)
            client.sendall(b'{"op": "exit"}\n')
            assert json.loads(_recv_until(client, b"\n"))["ok"]
        assert master.wait(20) == 0
        if service is not None:
            assert service.tokens == ["token-1"]
    finally:
        if master.poll() is None:
            master.kill()


def _command(sock: str, cmd: bytes) -> tuple:
    """One command through a running master, as the connection sends it: (rc, stdout, stderr)."""
    marker = protocol.new_marker()
    end = protocol.end_of_reply(marker)
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(20)
        client.connect(sock)
        client.sendall(json.dumps({"op": "run", "end": end.decode(), "timeout": 20}).encode() + b"\n")
        answer = json.loads(_recv_until(client, b"\n"))
        head, tail = protocol.request(cmd, marker, False, answer["reader"])
        client.sendall(b"".join(_frame(part) for part in (head, tail) if part) + struct.pack(">I", 0))
        reply = b""
        while chunk := client.recv(65536):
            reply += chunk
    return protocol.parse_reply(reply, marker)


def test_the_native_master_resumes_a_dropped_data_channel_with_the_same_shell(tmp_path, shell_service):
    """The WebSocket breaks while the session idles: the master calls ResumeSession (signed with the keys it was
    given, on the connection's endpoint), opens a new WebSocket with the new token, and the next command runs in the
    same shell of the same session."""
    service = shell_service()
    endpoint = ResumeEndpoint(service)
    sock = str(tmp_path / "master.sock")
    config = _master_config("native", sock, False, service)
    config["resume"] = {"region": "us-east-1", "endpoint": endpoint.url, "aws_access_key_id": "AKIDEXAMPLE",
                        "aws_secret_access_key": "not-a-secret"}
    master = subprocess.Popen([sys.executable, os.path.join(ROOT, "plugins", "plugin_utils", "_session_master.py")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        master.stdin.write(json.dumps(config).encode())
        master.stdin.close()
        assert json.loads(master.stdout.readline())["ok"]
        assert _command(sock, b"echo one") == (0, b"one\n", b"")
        shell = service.shell
        service.drop()
        deadline = time.monotonic() + 15
        while len(service.tokens) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert service.tokens == ["token-1", "token-2"]
        assert endpoint.requests == [("AmazonSSM.ResumeSession", {"SessionId": "test-1"})]
        assert _command(sock, b"echo two; exit 4") == (4, b"two\n", b"")
        assert service.shell is shell and shell.poll() is None
    finally:
        master.kill()
        master.wait()
        endpoint.close()


def test_a_failed_resume_in_the_middle_of_a_command_is_named_to_the_client(tmp_path, shell_service):
    """The WebSocket breaks while a command runs and ResumeSession fails: the client gets the lost line with
    ResumeSession's error (the connection's task names it), in bounded time, instead of a reply without a frame."""
    service = shell_service()
    endpoint = ResumeEndpoint(service, refuse="Session test-1 is Terminated and cannot be resumed.")
    sock = str(tmp_path / "master.sock")
    config = _master_config("native", sock, False, service)
    config["resume"] = {"region": "us-east-1", "endpoint": endpoint.url, "aws_access_key_id": "AKIDEXAMPLE",
                        "aws_secret_access_key": "not-a-secret"}
    master = subprocess.Popen([sys.executable, os.path.join(ROOT, "plugins", "plugin_utils", "_session_master.py")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        master.stdin.write(json.dumps(config).encode())
        master.stdin.close()
        assert json.loads(master.stdout.readline())["ok"]
        marker = protocol.new_marker()
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(30)
            client.connect(sock)
            client.sendall(json.dumps({"op": "run", "end": protocol.end_of_reply(marker).decode(), "timeout": 20,
                                       "lost": protocol.lost_mark(marker)}).encode() + b"\n")
            answer = json.loads(_recv_until(client, b"\n"))
            head, tail = protocol.request(b"sleep 5; echo done", marker, False, answer["reader"])
            client.sendall(b"".join(_frame(part) for part in (head, tail) if part) + struct.pack(">I", 0))
            time.sleep(1)  # the command runs (its reply comes at its end)
            service.drop()
            reply = b""
            while chunk := client.recv(65536):
                reply += chunk
        with pytest.raises(protocol.ProtocolError):
            protocol.parse_reply(reply, marker)
        why = protocol.lost_reason(reply, marker)
        assert why.startswith("the data channel closed: ResumeSession failed: "), why
        assert "InvalidParameters" in why and "cannot be resumed" in why, why
        assert endpoint.requests == [("AmazonSSM.ResumeSession", {"SessionId": "test-1"})]
        assert master.wait(10) == 0
    finally:
        if master.poll() is None:
            master.kill()
        endpoint.close()


def test_the_lost_line_is_read_only_after_its_marker():
    marker = protocol.new_marker()
    reply = b"partial output\n" + protocol.lost_mark(marker).encode() + b"the data channel closed: gone\n"
    assert protocol.lost_reason(reply, marker) == "the data channel closed: gone"
    assert protocol.lost_reason(reply, protocol.new_marker()) == ""
    assert protocol.lost_reason(b"", marker) == ""


def test_the_native_master_refuses_a_session_that_is_not_a_shell(tmp_path, shell_service):
    """A document whose session is not a shell (a port forwarding document as ssm_document) fails the start with
    the session type named, instead of waiting for ready lines that never come."""
    config = _master_config("native", str(tmp_path / "master.sock"), False, shell_service("Port"))
    done = subprocess.run([sys.executable, os.path.join(ROOT, "plugins", "plugin_utils", "_session_master.py")],
                          input=json.dumps(config).encode(), capture_output=True, timeout=30, check=False)
    report = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert done.returncode == 1 and not report["ok"]
    assert "starts a Port session, not a shell" in report["error"]


def test_the_native_master_names_a_stream_url_it_cannot_open(tmp_path):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    config = _master_config("plugin", str(tmp_path / "master.sock"), False)
    url = f"ws://127.0.0.1:{port}/x"
    config.update(transport="native", response={"SessionId": "test-1", "TokenValue": "t", "StreamUrl": url})
    done = subprocess.run([sys.executable, os.path.join(ROOT, "plugins", "plugin_utils", "_session_master.py")],
                          input=json.dumps(config).encode(), capture_output=True, timeout=30, check=False)
    report = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert done.returncode == 1
    assert report["error"].startswith(f"the data channel did not open: cannot open the data channel ws://127.0.0.1:{port}/x")


_NO_PLUGIN = (None, "/usr/local/bin/session-manager-plugin, then session-manager-plugin on PATH (/usr/bin)")


@pytest.mark.parametrize("option, websockets, plugin, expected", [
    (None, True, _NO_PLUGIN, "native"),
    (None, True, ("/usr/local/bin/session-manager-plugin", ""), "native"),
    (None, False, ("/usr/local/bin/session-manager-plugin", ""), "plugin"),
    ("", False, ("/usr/local/bin/session-manager-plugin", ""), "plugin"),
    ("native", True, _NO_PLUGIN, "native"),
    ("plugin", True, ("/opt/smp", ""), "plugin"),
])
def test_the_transport_is_the_option_else_native_where_websockets_imports(option, websockets, plugin, expected):
    assert support.choose_transport(option, websockets, *plugin, "https://install") == expected


@pytest.mark.parametrize("option, websockets, plugin, message", [
    (None, False, _NO_PLUGIN, "bastionless.ssm.session cannot reach Session Manager: the Python package websockets "
     "is not installed for the controller's Python (pip install websockets, as the collection's requirements.txt "
     "lists it), and session-manager-plugin was not found (/usr/local/bin/session-manager-plugin, then "
     "session-manager-plugin on PATH (/usr/bin)). Install websockets (transport native, no binary needed), or install "
     "it on the controller (https://install) or set ansible_aws_ssm_plugin to its path (transport plugin)"),
    ("native", False, ("/usr/local/bin/session-manager-plugin", ""), "transport native needs the Python package "
     "websockets, which is not installed for the controller's Python: pip install websockets"),
    ("plugin", True, _NO_PLUGIN, "transport plugin needs session-manager-plugin, which was not found "
     "(/usr/local/bin/session-manager-plugin, then session-manager-plugin on PATH (/usr/bin)): install it on the "
     "controller (https://install) or set ansible_aws_ssm_plugin to its path, or set ansible_aws_ssm_transport to "
     "native"),
    ("websocket", True, _NO_PLUGIN, "transport (ansible_aws_ssm_transport) must be one of native, plugin, not "
     "'websocket'"),
])
def test_a_transport_that_cannot_run_is_one_error_naming_the_fix(option, websockets, plugin, message):
    with pytest.raises(ValueError) as failure:
        support.choose_transport(option, websockets, *plugin, "https://install")
    assert str(failure.value).startswith(message)


_RETRIES = r"""
import json, sys
from ansible.errors import AnsibleError
from ansible.plugins.loader import connection_loader, init_plugin_loader
from ansible.playbook.play_context import PlayContext
init_plugin_loader()
pc = PlayContext()
pc.remote_addr = "i-0123456789abcdef0"
out = {}
for name, variables in (("default", {}), ("set", {"bastionless_aws_retry_mode": "adaptive",
                                                  "bastionless_aws_max_attempts": 15}),
                        ("bad", {"bastionless_aws_max_attempts": 0})):
    conn = connection_loader.get("bastionless.ssm.session", pc)
    conn.set_options(var_options={"ansible_aws_ssm_region": "eu-west-1", **variables})
    try:
        client = conn.ssm_client
        out[name] = {"client": client.meta.config.retries, "resume": conn._resume_options("https://e")["retries"]}
    except AnsibleError as error:
        out[name] = str(error.message)
print(json.dumps(out))
"""


def test_the_aws_clients_retry_as_the_variables_say():
    collections = os.path.abspath(os.path.join(protocol.__file__, *[".."] * 6))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections)
    done = subprocess.run([sys.executable, "-c", _RETRIES], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["default"]["client"] == out["default"]["resume"] == {"mode": "standard", "total_max_attempts": 10}
    assert out["set"]["client"] == out["set"]["resume"] == {"mode": "adaptive", "total_max_attempts": 15}
    assert out["bad"].startswith("bastionless.ssm.session: aws_max_attempts (bastionless_aws_max_attempts) is 0;")


def _as_ansible_sends(command: str, executable: str = "/bin/sh") -> bytes:
    """command as ActionBase._low_level_execute_command hands it to the connection (the task's shell executable)."""
    import shlex  # pylint: disable=import-outside-toplevel

    return f"{executable} -c {shlex.quote(command + ' && sleep 0')}".encode()


def _sh_plugin():
    from ansible.plugins.shell.sh import ShellModule  # pylint: disable=import-outside-toplevel

    shell = ShellModule()
    shell.set_options()
    return shell


def test_ansibles_commands_around_a_module_are_recognised_only_with_paths_the_shell_leaves_alone(tmp_path):
    """The commands come from ansible-core's own sh shell plugin, as the action plugins build them: the temporary
    directory's creation (answered without the node: its output is only the directory), the chmod of its files and
    its removal; anything with a path the shell would expand, or that leaves the directory, is not touched."""
    shell = _sh_plugin()
    base = "/home/ssm-user/.ansible/tmp"
    name = "ansible-tmp-1796608153.4613557-18466-12298862628934"
    made = shell._mkdtemp2(basefile=name, system=False, tmpdir=base)  # pylint: disable=protected-access
    command, directory, output = protocol.mkdtemp_answer(_as_ansible_sends(made.command))
    assert directory == f"{base}/{name}" and output == f"{name}={base}/{name}\n".encode()
    assert command == made.command.encode()
    here = _as_ansible_sends(made.command.replace(base, str(tmp_path)))
    done = subprocess.run(["/bin/sh", "-c", here], capture_output=True, check=False)  # the real command, run here
    assert done.stdout == protocol.mkdtemp_answer(here)[2] and (tmp_path / name).is_dir()
    assert protocol.mkdtemp_answer(_as_ansible_sends(made.command.replace(base, "/tmp/x-$HOME"))) is None
    assert protocol.mkdtemp_answer(_as_ansible_sends(made.command.replace(base, "/tmp/../etc"))) is None
    removal = _as_ansible_sends(shell.remove(f"{base}/{name}/", recurse=True))
    assert protocol.removed_tmp(removal) == f"{base}/{name}"
    assert protocol.removed_tmp(_as_ansible_sends(shell.remove(f"{base}/other/", recurse=True))) is None
    chmod = _as_ansible_sends(shell.chmod([f"{base}/{name}/", f"{base}/{name}/.source.txt"], "u+rwx"))
    assert protocol.tmp_chmod(chmod, f"{base}/{name}")
    assert not protocol.tmp_chmod(chmod, None) and not protocol.tmp_chmod(chmod, f"{base}/other")
    assert not protocol.tmp_chmod(_as_ansible_sends(shell.chmod([f"{base}/{name}/../../x"], "u+x")), f"{base}/{name}")
    assert protocol.expands_user(_as_ansible_sends(shell.expand_user("~")))
    assert protocol.expands_user(_as_ansible_sends(shell.expand_user("~ssm-user")))
    assert not protocol.expands_user(_as_ansible_sends("echo ~; touch x"))


def test_the_master_keeps_deferred_requests_memos_and_the_digests_it_has_sent(tmp_path):
    """A deferred request runs before the next one, and before the exit when none comes; a memo is answered by the
    master without the node (the side effect happens once); digests sent are remembered for the session."""
    sock = str(tmp_path / "master.sock")
    config = _master_config("plugin", sock, True)
    master = subprocess.Popen([sys.executable, os.path.join(ROOT, "plugins", "plugin_utils", "_session_master.py")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=tmp_path)
    counter, first, last = tmp_path / "counter", tmp_path / "first", tmp_path / "last"

    def talk(header: dict, cmd: bytes = b"") -> tuple:
        marker = protocol.new_marker()
        header = {"end": protocol.end_of_reply(marker).decode(), "timeout": 20, **header}
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(20)
            client.connect(sock)
            client.sendall(json.dumps(header).encode() + b"\n")
            answer = json.loads(_recv_until(client, b"\n"))
            if header["op"] != "run" or "memo" in answer:
                return answer, None
            head, tail = protocol.helper_request(cmd, marker, False)
            client.sendall(_frame(head) + struct.pack(">I", 0))
            reply = b""
            while chunk := client.recv(65536):
                reply += chunk
        return answer, protocol.parse_reply(reply, marker)

    try:
        master.stdin.write(json.dumps(config).encode())
        master.stdin.close()
        assert json.loads(master.stdout.readline())["ok"]
        deferred = protocol.helper_request(f"touch {first}".encode(), protocol.new_marker(), False)[0]
        assert talk({"op": "defer", "data": deferred.decode()})[0]["ok"] and not first.exists()
        answer, result = talk({"op": "run", "memo": "home", "cache": ["d1"]}, f"test -e {first} && echo $HOME".encode())
        assert answer["cached"] == [] and result == (0, os.environ["HOME"].encode() + b"\n", b"")
        for _again in (1, 2):
            answer, _result = talk({"op": "run", "memo": "count"}, f"echo x >> {counter}; echo counted".encode())
        assert protocol.parse_reply(answer["memo"]["reply"].encode(), answer["memo"]["end"][:-3]) == (0, b"counted\n",
                                                                                                      b"")
        assert counter.read_text() == "x\n"
        assert talk({"op": "run", "cache": ["d1", "d2"]}, b"true")[0]["cached"] == ["d1"]
        deferred = protocol.helper_request(f"touch {last}".encode(), protocol.new_marker(), False)[0]
        talk({"op": "defer", "data": deferred.decode()})
        assert talk({"op": "exit"})[0]["ok"] and master.wait(20) == 0
        assert last.exists()
    finally:
        if master.poll() is None:
            master.kill()


def test_markers_are_drawn_from_their_whole_alphabet_and_a_reply_s_status_line_is_read_by_its_marker():
    markers = {protocol.new_marker() for _i in range(2000)}
    assert len(markers) == 2000
    assert all(m.startswith("BL-") and len(m) == 23 and set(m[3:]) <= set(protocol.MARK_ALPHABET) for m in markers)
    assert set("".join(m[3:] for m in markers)) == set(protocol.MARK_ALPHABET)
    marker = protocol.new_marker()
    end = protocol.end_of_reply(marker)
    assert protocol.where_module_ran(b"output\n" + end + b"0 F\r\n", marker) == "fork"
    assert protocol.where_module_ran(end + b"1 I", marker) == "process"
    assert [protocol.where_module_ran(reply, marker) for reply in (
        end + b"0\n", end + b"x F\n", b"", protocol.end_of_reply(protocol.new_marker()) + b"0 F\n")] == [None] * 4
    assert protocol.cache_miss(end + b"252 M\n", marker)
    assert not any(protocol.cache_miss(reply, marker) for reply in (end + b"252\n", end + b"0 F\n", b"252 M\n"))


def test_the_masters_answer_line_is_read_whole_and_what_follows_it_is_kept():
    from ansible_collections.bastionless.ssm.plugins.connection import session  # pylint: disable=import-outside-toplevel

    ours, master = socket.socketpair()
    try:
        master.sendall(b'{"ok": true, ')
        threading.Timer(0.2, master.sendall, args=(b'"reader": "python"}\nreply starts',)).start()
        assert session._recv_line(ours) == (b'{"ok": true, "reader": "python"}\n', b"reply starts")
        master.close()
        assert session._recv_line(ours) == (b"", b"")
    finally:
        ours.close()
