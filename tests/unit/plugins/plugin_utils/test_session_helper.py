"""The node's resident Python (plugin_utils/_session_helper.py), run as the session runs it: a real interpreter reading
requests on its stdin and answering on its stdout, forking real children. The payloads are small AnsiballZ-shaped
zips made here, with the names the helper preloads, so each test can say what must (not) be shared with a fork."""

import base64
import io
import json
import os
import subprocess
import sys
import time
import zipfile

import pytest

from ansible_collections.bastionless.ssm.plugins.plugin_utils import _session_protocol as protocol

HELPER = protocol.HELPER

# The shape of ansible-core 2.19's AnsiballZ wrapper, as far as the helper reads it: the wrapper line, and zip_data
# passed to _ansiballz_main, which writes the payload to a temporary ansible_<module>_payload.zip and imports from it.
WRAPPER = """#!/usr/bin/python3
from __future__ import annotations

_ANSIBALLZ_WRAPPER = True


def _ansiballz_main(zip_data, code, module_fqn=None):
    import base64, os, shutil, sys, tempfile
    folder = tempfile.mkdtemp(prefix="ansible_probe_payload_")
    archive = os.path.join(folder, "ansible_probe_payload.zip")
    with open(archive, "wb") as handle:
        handle.write(base64.b64decode(zip_data))
    sys.path.insert(0, archive)
    try:
        from ansible.module_utils._internal._ansiballz import _loader
        _loader.run(code, archive)
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    _ansiballz_main(
code={code!r},
module_fqn='{fqn}',
zip_data='{zip_data}',
)
"""

LOADER = """import json, os, signal, sys


def run(code, archive):
    import ansible.module_utils.basic as basic
    from ansible.module_utils import extra  # not preloaded: must come from this run's payload
    basic.RUNS += 1
    print(json.dumps({"runs": basic.RUNS, "version": basic.VERSION, "extra": extra.VALUE, "pid": os.getpid(),
                      "extra_file": extra.__file__, "extra_code": extra.CODE, "archive": archive,
                      "cwd": os.getcwd(), "probe": os.environ.get("PROBE"), "umask": os.umask(0o22),
                      "seen": basic.SEEN, "added": hasattr(basic, "ADDED"), "usr1": str(signal.getsignal(signal.SIGUSR1)),
                      "in_payload": basic.__file__.startswith(archive + os.sep) and os.path.exists(archive),
                      "path": list(sys.modules["ansible"].__path__)[0].startswith(archive),
                      "main": sys.modules["__main__"].__name__, "stdin": sys.stdin.read()}))
    sys.stdout.flush()
    exec(code, {"sys": sys})


def run_module(*, json_params, profile, module_fqn, modlib_path, extensions):  # as ansible-core 2.19's loader is called
    import tempfile
    from ansible.module_utils import extra
    params = json.loads(json_params)
    print(json.dumps({"modlib": modlib_path, "exists": os.path.exists(modlib_path), "extra_file": extra.__file__,
                      "extra": extra.VALUE, "profile": profile, "fqn": module_fqn, "params": params,
                      "extensions": extensions, "path0": sys.path[0], "tmp": os.listdir(tempfile.gettempdir())}))
    sys.stdout.flush()
    if params.get("fail"):
        extra.fail()
    sys.exit(0)
"""

# ansible-core 2.19's wrapper as far as the helper stands in for it: _ansiballz_main's parameters, and what it does
# with them (the payload written to a new temporary directory, the loader's run_module, the directory removed).
WRAPPER_219 = """#!/usr/bin/python3
from __future__ import annotations

_ANSIBALLZ_WRAPPER = True


def _ansiballz_main(zip_data, ansible_module, module_fqn, params, profile, date_time, extensions, rlimit_nofile):
    import base64, os, shutil, sys, tempfile
    folder = tempfile.mkdtemp(prefix="ansible_" + ansible_module + "_payload_")
    archive = os.path.join(folder, "ansible_" + ansible_module + "_payload.zip")
    with open(archive, "wb") as handle:
        handle.write(base64.b64decode(zip_data))
    sys.path.insert(0, archive)
    try:
        from ansible.module_utils._internal._ansiballz import _loader
        _loader.run_module(json_params=params.encode(), profile=profile, module_fqn=module_fqn, modlib_path=archive,
                           extensions=extensions)
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    _ansiballz_main(
zip_data='{zip_data}',
ansible_module='stat',
module_fqn='{fqn}',
params={params!r},
profile='legacy',
date_time=None,
extensions={{}},
rlimit_nofile=0,
)
"""


def _payload(version="v1", extra="first") -> str:
    files = {
        "ansible/__init__.py": "",
        "ansible/module_utils/__init__.py": "",
        "ansible/module_utils/_internal/__init__.py": "",
        "ansible/module_utils/_internal/_ansiballz/__init__.py": "",
        "ansible/module_utils/_internal/_ansiballz/_loader.py": LOADER,
        "ansible/module_utils/basic.py": f"RUNS = 0\nVERSION = {version!r}\nSEEN = []\n",
        "ansible/module_utils/extra.py": f"import sys\nVALUE = {extra!r}\nCODE = sys._getframe().f_code.co_filename\n"
                                         "def fail():\n    raise RuntimeError('raised in the payload')\n",
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, text in files.items():
            zipped.writestr(name, text)
    return base64.b64encode(buffer.getvalue()).decode()


def _module(code="", fqn="ansible.modules.probe", **payload) -> bytes:
    return WRAPPER.format(code=code, fqn=fqn, zip_data=_payload(**payload)).encode()


def _serve(requests, *args, env=None):
    """Run the helper on requests [(cmd, stdin or None, module?)]; [(rc, stdout, stderr, how)] and its status; how:
    "fork" or "process" (where the helper ran the module), False (as a command)."""
    markers, data = [], b""
    for cmd, stdin, module in requests:
        marker = protocol.new_marker()
        head, tail = protocol.helper_request(cmd, marker, stdin is not None, cmd.decode() if module else None)
        data += head + (protocol.b64_lines(stdin) if stdin is not None else b"") + tail
        markers.append(marker)
    done = subprocess.run([sys.executable, HELPER, "READY", *args], input=data + b"exit\n", capture_output=True,
                          timeout=120, check=False, env=env)
    assert done.stdout.startswith(b"PREADY\n"), done.stdout[:200] + done.stderr
    replies = []
    for marker in markers:
        start = done.stdout.index(f"{marker}:O".encode())
        reply = done.stdout[start:done.stdout.index(b"\n", done.stdout.index(protocol.end_of_reply(marker), start)) + 1]
        how = protocol.where_module_ran(reply, marker) or False
        replies.append(protocol.parse_reply(reply, marker) + (how,))
    return replies, done.returncode


def _json(out: bytes) -> dict:
    import json  # pylint: disable=import-outside-toplevel

    return json.loads(out.decode().splitlines()[0])


PYTHON = f"{sys.executable}".encode()


def test_plain_commands_are_framed_with_stdout_stderr_status_and_stdin():
    replies, status = _serve([(b"echo out; echo err >&2; exit 7", None, False),
                              (b"cat; printf '\\377\\000end'", b"line one\nline two\n", False)])
    assert replies == [(7, b"out\n", b"err\n", False), (0, b"line one\nline two\n\xff\x00end", b"", False)]
    assert status == 0


def test_each_module_runs_in_its_own_fork_with_the_preloaded_utils_and_its_own_payload():
    replies, _status = _serve([(PYTHON, _module(extra="first"), True), (PYTHON, _module(extra="second"), True)])
    first, second = (_json(r[1]) for r in replies)
    assert [r[0] for r in replies] == [0, 0] and all(r[3] for r in replies)
    # State set by one run never reaches the next: each fork starts from the preloaded, never-run modules.
    assert first["runs"] == second["runs"] == 1
    # A module the helper did not preload comes from the run's own payload, and so do the preloaded ones' files.
    assert (first["extra"], second["extra"]) == ("first", "second")
    assert first["in_payload"] and second["in_payload"] and first["path"] and second["path"]
    assert first["pid"] != second["pid"] and first["main"] == "__main__" and first["stdin"] == ""


def test_a_payloads_files_are_compiled_once_by_the_helper_and_still_imported_from_the_run_s_own_payload():
    """The helper compiles the payload's files (all but the preloaded) before the fork and keeps the code, by path,
    CRC and size: a file that changes is compiled again, and a module's __file__ is its path in this run's payload."""
    replies, _status = _serve([(PYTHON, _module(extra="first"), True), (PYTHON, _module(extra="first"), True),
                               (PYTHON, _module(extra="changed"), True)])
    runs = [_json(r[1]) for r in replies]
    assert [run["extra"] for run in runs] == ["first", "first", "changed"]
    for run in runs:
        # Code compiled by the helper names the file by its path in the payload; zipimport's, by its full path.
        assert run["extra_code"] == "ansible/module_utils/extra.py"
        assert run["extra_file"] == run["archive"] + "/ansible/module_utils/extra.py"
    assert len({run["archive"] for run in runs}) == 3


def test_a_payload_is_read_once_and_later_wrappers_of_it_get_what_reading_them_would_give(monkeypatch):
    """Payloads: a wrapper whose zip text the helper has seen gives module_payload's answer without module_payload
    (no search, no base64 decoding) and the zip's compiled files without reading the zip again; the least recently used
    payload goes beyond the limit; a wrapper not of the shape module_payload reads still goes through it."""
    from ansible_collections.bastionless.ssm.plugins.plugin_utils import _session_helper as helper  # pylint: disable=import-outside-toplevel

    monkeypatch.setattr(helper, "PRELOADED", helper.Preloaded())
    monkeypatch.setattr(helper, "COMPILED", helper.Compiled())
    payloads, read = helper.Payloads(limit=2), helper.module_payload
    zips = [_payload(extra=extra) for extra in ("a", "b", "c")]
    wrappers = [[WRAPPER.format(code=f"x = {n}", fqn="ansible.modules.probe", zip_data=z).encode() for n in (1, 2)]
                for z in zips]
    found, key = payloads.parse(wrappers[0][0])
    assert found == read(wrappers[0][0]) and found[1].count(helper.ZIP_NAME.encode()) == 1
    helper.PRELOADED.load(found[0])
    compiled, complete = payloads.compiled(key, found[0])
    assert "ansible/module_utils/extra.py" in compiled and complete

    calls = []
    monkeypatch.setattr(helper, "module_payload", lambda wrapper: calls.append(wrapper) or read(wrapper))
    monkeypatch.setattr(helper.COMPILED, "fill", lambda *args: calls.append(args) or {})
    again, same_key = payloads.parse(wrappers[0][1])
    assert calls == [] and same_key == key and again == read(wrappers[0][1]) and again[0] is found[0]
    assert payloads.compiled(same_key, again[0])[0] is compiled and calls == []

    payloads.parse(wrappers[1][0])
    payloads.parse(wrappers[2][0])  # the first payload is now the least recently used beyond the limit of 2
    assert len(calls) == 2
    assert payloads.parse(wrappers[0][1])[0] == read(wrappers[0][1]) and len(calls) == 3
    # a known zip text on a line of another shape: read as usual (and refused)
    odd = wrappers[1][0].replace(b"zip_data='" + zips[1].encode() + b"',", b"zip_data='" + zips[1].encode() + b"'x")
    assert payloads.parse(odd) == (None, None) and len(calls) == 4


def test_a_traceback_through_the_wrapper_shows_the_wrappers_own_line_numbers():
    """The wrapper is compiled in two parts (its definitions, kept; its call, compiled each time): a traceback still
    names the lines of the wrapper the controller sent."""
    wrapper = _module("raise ValueError('broken module')")
    [(rc, _out, err, forked)], _status = _serve([(PYTHON, wrapper, True)])
    call = wrapper.decode().splitlines().index("    _ansiballz_main(") + 1
    assert forked and rc == 1
    assert f'File "<stdin>", line {call}, in <module>' in err.decode()


EVERYDAY = "ansible.modules.stat"  # one of the modules the helper runs in itself
CHANGES = ("import os, signal, subprocess, sys; import ansible.module_utils.basic as basic; "
           "os.chdir('/'); os.environ['PROBE'] = 'leaked'; os.umask(0o077); basic.SEEN.append('leaked'); "
           "basic.ADDED = 1; signal.signal(signal.SIGUSR1, lambda *a: None); sys.path.append('/leaked'); "
           "print('cat read', subprocess.run(['cat'], stdout=subprocess.PIPE, check=False).stdout); "
           "sys.stdout.flush(); os.write(1, b'fd 1\\n'); os.write(2, b'fd 2\\n')")


def test_an_everyday_module_runs_in_the_resident_python_and_what_it_changes_there_is_put_back():
    replies, status = _serve([(PYTHON, _module(CHANGES, fqn=EVERYDAY), True), (b"echo between", None, False),
                              (PYTHON, _module(fqn=EVERYDAY, extra="second"), True)])
    (rc, out, err, how), between, (rc2, out2, _err2, how2) = replies
    assert (rc, how, rc2, how2, status) == (0, "process", 0, "process", 0)
    assert between == (0, b"between\n", b"", False)
    # What the module and the commands it starts write to their stdout and stderr is its output, and their stdin is
    # /dev/null: not the session's terminal, where the next request (echo between) was waiting.
    assert b"cat read b''\nfd 1\n" in out and err == b"fd 2\n"
    first, second = _json(out), _json(out2)
    assert first["pid"] == second["pid"]  # the same process
    for key in ("cwd", "probe", "umask", "seen", "added", "usr1", "runs"):
        assert second[key] == first[key], key
    assert second["extra"] == "second" and second["in_payload"]  # its own payload's module_utils, as in a fork


def test_an_everyday_module_runs_from_its_payload_in_memory_as_from_the_wrappers_temporary_zip(tmp_path):
    """In the resident Python, ansible-core 2.19's _ansiballz_main is stood in for: the module gets the same arguments
    and an archive path of the same shape, imports its own payload's module_utils, and no directory is made for it
    (the wrapper run in a fork makes one); a traceback still shows the payload's source lines."""
    def wrapper(**params):
        return WRAPPER_219.format(zip_data=_payload(extra="mine"), fqn=EVERYDAY, params=json.dumps(params)).encode()

    env = {**os.environ, "TMPDIR": str(tmp_path)}
    [(rc, out, err, how), (frc, _fout, ferr, fhow)], status = _serve(
        [(PYTHON, wrapper(name="x"), True), (PYTHON, wrapper(fail=True), True)], env=env)
    assert (rc, err, how, status) == (0, b"", "process", 0)
    [(forked, fout, _ferr2, forked_how)], _status = _serve([(PYTHON, wrapper(name="x"), True)], "fork", env=env)
    assert (forked, forked_how) == (0, "fork")
    memory, disk = _json(out), _json(fout)
    assert memory["tmp"] == [] and len(disk["tmp"]) == 1 and disk["tmp"][0].startswith("ansible_stat_payload_")
    assert disk["exists"] and not memory["exists"]
    assert memory["modlib"] == str(tmp_path / "ansible_stat_payload_in_memory" / "ansible_stat_payload.zip")
    for result in (memory, disk):
        assert result["extra_file"] == result["modlib"] + "/ansible/module_utils/extra.py"
        assert result["path0"] == result["modlib"]
    same = ("extra", "profile", "fqn", "params", "extensions")
    assert {k: memory[k] for k in same} == {k: disk[k] for k in same} == {
        "extra": "mine", "profile": "legacy", "fqn": EVERYDAY, "params": {"name": "x"}, "extensions": {}}
    assert (frc, fhow) == (1, "process")
    # the source lines of a payload file the helper compiled (extra) and of one it preloaded (the loader)
    assert "raise RuntimeError('raised in the payload')" in ferr.decode() and "    extra.fail()" in ferr.decode()
    assert os.listdir(tmp_path) == []


def test_a_module_not_known_to_be_safe_in_process_runs_in_a_fork():
    replies, _status = _serve([(PYTHON, _module(CHANGES, fqn="ansible.modules.setup"), True),
                               (PYTHON, _module(fqn=EVERYDAY), True), (PYTHON, _module(fqn=EVERYDAY), True)])
    assert [r[3] for r in replies] == ["fork", "process", "process"]
    assert _json(replies[1][1])["pid"] == _json(replies[2][1])["pid"] != _json(replies[0][1])["pid"]


def test_with_module_isolation_fork_every_module_runs_in_a_fork():
    replies, _status = _serve([(PYTHON, _module(CHANGES, fqn=EVERYDAY), True), (PYTHON, _module(fqn=EVERYDAY), True)],
                              "fork")
    assert [(r[0], r[3]) for r in replies] == [(0, "fork"), (0, "fork")]


def test_a_module_that_leaves_a_thread_running_makes_the_helper_fork_every_module_after_it():
    thread = "import threading, time; threading.Thread(target=time.sleep, args=(30,), daemon=True).start()"
    replies, _status = _serve([(PYTHON, _module(thread, fqn=EVERYDAY), True), (PYTHON, _module(fqn=EVERYDAY), True)])
    assert [(r[0], r[3]) for r in replies] == [(0, "process"), (0, "fork")]


@pytest.mark.parametrize("fqn", ["ansible.modules.probe", EVERYDAY])
@pytest.mark.parametrize("code, rc, stderr", [
    ("sys.exit(3)", 3, b""),
    ("sys.exit('bye')", 1, b"bye\n"),
    ("raise ValueError('broken module')", 1, b"ValueError: broken module"),
    ("import atexit; atexit.register(print, 'atexit ran')", 0, b""),
])
def test_a_module_exits_as_the_interpreter_would_in_a_fork_or_in_the_helper(code, rc, stderr, fqn):
    [(got_rc, out, err, how), after], _status = _serve([(PYTHON, _module(code, fqn=fqn), True), (b"echo on", None, False)])
    assert how == ("process" if fqn == EVERYDAY else "fork") and got_rc == rc and stderr in err
    assert after == (0, b"on\n", b"", False)
    assert (b"atexit ran" in out) is ("atexit" in code)


def test_a_payload_with_other_preloaded_files_or_another_interpreter_runs_as_a_plain_command():
    replies, _status = _serve([(PYTHON, _module(version="v1"), True),
                               (PYTHON, _module(version="v2"), True),  # another ansible-core: basic.py differs
                               (b"/usr/bin/python3", _module(), True)])  # not the helper's own interpreter
    same = os.path.realpath(sys.executable) == os.path.realpath("/usr/bin/python3")
    assert [r[3] for r in replies] == ["fork", False, "fork" if same else False]
    assert [_json(r[1])["version"] for r in replies] == ["v1", "v2", "v1"]
    assert all(r[0] == 0 for r in replies)


def test_a_wrapper_the_helper_does_not_know_runs_as_a_plain_command():
    script = b"import sys; print('plain', sys.argv)"
    [(rc, out, _err, forked)], _status = _serve([(PYTHON, script, True)])
    assert (rc, out, forked) == (0, b"plain ['']\n", False)


@pytest.mark.parametrize("path, expected", [
    ("/tmp/ansible_copy_payload_x1/ansible_copy_payload.zip", True),
    ("/tmp/ansible_copy_payload_x1/ansible_copy_payload.zip/ansible/module_utils", True),
    ("/tmp/x/ansible_copy_payload.zipper", False),
    ("/tmp/x/other_payload.zip", False),
])
def test_payload_archives_are_recognised_by_name(path, expected):
    sys.path.insert(0, os.path.dirname(HELPER))
    try:
        import _session_helper  # pylint: disable=import-outside-toplevel
    finally:
        sys.path.pop(0)
    assert _session_helper.payload_archive(path) is expected


@pytest.mark.parametrize("cmd, expected", [
    (b"/usr/bin/python3", "/usr/bin/python3"),
    (b"/bin/sh -c '/usr/bin/python3.11 && sleep 0'", "/usr/bin/python3.11"),
    (b"FOO=bar /usr/bin/python3", None),
    (b"sudo -H -S -n  -u root /bin/sh -c 'echo BECOME-SUCCESS-abc ; /usr/bin/python3'", None),
    (b"/usr/bin/python3 /home/ssm-user/.ansible/tmp/x/AnsiballZ_copy.py", None),
    (b"/usr/bin/python3;reboot", None),
])
def test_only_ansibles_plain_pipelined_module_run_is_offered_to_the_fork(cmd, expected):
    assert protocol.pipelined_interpreter(cmd) == expected


def test_a_child_left_in_the_background_does_not_hold_the_reply():
    """The reply comes when the command ends, with what it printed, though a child it left holds its pipes open."""
    started = time.monotonic()
    big = os.urandom(300000)
    replies, status = _serve([(b"sleep 20 & echo started; echo done >&2", None, False),
                              (b"(sleep 20; echo late) & cat", big, False),
                              (b"true", big, False),  # stdin the command never reads
                              (b"echo next", None, False)])
    assert replies == [(0, b"started\n", b"done\n", False), (0, big, b"", False), (0, b"", b"", False),
                       (0, b"next\n", b"", False)]
    assert status == 0
    assert time.monotonic() - started < 10


def _serve_requests(requests):
    """Run the helper on raw requests [(head, stdin bytes or None, tail, marker)]; [(rc, stdout, stderr, reply)]."""
    data = b"".join(head + (protocol.b64_lines(stdin) if stdin is not None else b"") + tail
                    for head, stdin, tail, _marker in requests)
    done = subprocess.run([sys.executable, HELPER, "READY"], input=data + b"exit\n", capture_output=True,
                          timeout=120, check=False)
    assert done.stdout.startswith(b"PREADY\n") and done.returncode == 0, done.stdout[:200] + done.stderr
    return [protocol.parse_reply(done.stdout, marker) + (done.stdout,) for _h, _s, _t, marker in requests]


def _segmented(cmd: bytes, wrapper: bytes, cached=(), interpreter=None, after_success=False):
    marker = protocol.new_marker()
    head, tail = protocol.helper_request(cmd, marker, True, interpreter, segmented=True, after_success=after_success)
    return head, protocol.segments(protocol.wrapper_pieces(wrapper), set(cached)), tail, marker


def test_a_module_wrappers_large_pieces_cross_once_and_are_named_by_digest_after():
    """The second run of a module sends only its arguments and the digests of its loader code and payload zip; the
    helper puts the same wrapper together (the module sees the same bytes on stdin: cat), and forks it as before."""
    first, second = _module(code="print('args one')"), _module(code="print('args two')")
    pieces = protocol.wrapper_pieces(first)
    assert b"".join(data for _digest, data in pieces) == first
    digests = [digest for digest, _data in pieces if digest]
    assert len(digests) == 2 and protocol.wrapper_pieces(b"print('not a wrapper')") is None
    later = protocol.segments(protocol.wrapper_pieces(second), set(digests))
    assert len(later) < 600 < len(first)  # the arguments and two digests
    # The payload zip crosses as the bytes its base64 stands for, named by the digest of its base64.
    zipped = pieces[2][1]
    sent = protocol.segments(pieces, set())
    assert zipped not in sent and base64.b64decode(zipped) in sent
    assert b"%%%s %d\n" % (pieces[2][0].encode(), len(base64.b64decode(zipped))) in sent
    replies = _serve_requests([_segmented(b"cat", first), _segmented(b"cat", second, digests),
                               _segmented(PYTHON, second, digests, interpreter=PYTHON.decode())])
    assert [r[:2] for r in replies[:2]] == [(0, first), (0, second)]
    rc, out, _err, reply = replies[2]
    assert rc == 0 and b"args two" in out and _json(out)["extra"] == "first"
    assert protocol.where_module_ran(reply, _segmented_marker(reply, 2)) == "fork"


def _segmented_marker(reply: bytes, index: int) -> str:
    """The marker of the index-th framed reply in reply."""
    import re  # pylint: disable=import-outside-toplevel

    return re.findall(rb"^(BL-[A-Za-z0-9]{20}):O", reply.replace(b"\r", b""), re.M)[index].decode()


def test_a_zip_piece_whose_base64_is_not_canonical_crosses_as_it_is():
    wrapper = _module()
    pieces = protocol.wrapper_pieces(wrapper)
    zipped = pieces[2][1]
    odd = zipped[:8] + b"\n" + zipped[8:]  # decodes to the same bytes, which encode to something else
    assert protocol.segments([pieces[2]], set()).startswith(b"%")
    assert protocol.segments([(pieces[2][0], odd)], set()) == b"+%s %d\n" % (pieces[2][0].encode(), len(odd)) + odd


def test_a_piece_the_helper_does_not_have_or_that_does_not_match_its_digest_is_a_miss_nothing_runs():
    wrapper = _module()
    [(digest, _code), _args, _zip, _rest] = protocol.wrapper_pieces(wrapper)
    tampered = protocol.segments(protocol.wrapper_pieces(wrapper), ()).replace(b"_ansiballz_main(zip_data",
                                                                               b"_ansiballz_main(zip_dat4")
    marker = protocol.new_marker()
    head, tail = protocol.helper_request(b"touch ran; cat", marker, True, segmented=True)
    replies = _serve_requests([_segmented(b"echo ran", wrapper, [digest]), (head, tampered, tail, marker)])
    for rc, out, err, reply in replies:
        assert (rc, out) == (protocol.CACHE_MISS, b"") and b"is not cached" in err
    assert protocol.cache_miss(replies[0][3], _segmented_marker(replies[0][3], 0))
    assert not protocol.cache_miss(replies[0][3], protocol.new_marker())


def test_a_request_after_success_runs_only_when_the_one_before_it_exited_0():
    requests = []
    for cmd, after in ((b"true", False), (b"echo second", True), (b"exit 4", False), (b"echo fourth", True),
                       (b"echo fifth", True), (b"echo sixth", False)):
        marker = protocol.new_marker()
        head, tail = protocol.helper_request(cmd, marker, False, after_success=after)
        requests.append((head, None, tail, marker))
    got = [(rc, out) for rc, out, _err, _reply in _serve_requests(requests)]
    assert got == [(0, b""), (0, b"second\n"), (4, b""), (protocol.CHAIN_BROKEN, b""), (protocol.CHAIN_BROKEN, b""),
                   (0, b"sixth\n")]


def _around_a_module(tmp: str) -> list:
    """The commands the connection sends around a module, in their exact shapes, for a task directory under tmp."""
    task = f"{tmp}/ansible-tmp-1765-1-2"
    make = (f'/bin/sh -c \'( umask 77 && mkdir -p "` echo {tmp} `"&& mkdir "` echo {task} `" && echo '
            f'ansible-tmp-1765-1-2="` echo {task} `" ) && sleep 0\'').encode()
    inner, _task, _answer = protocol.mkdtemp_answer(make)
    remove = f"/bin/sh -c 'rm -f -r {task}/ > /dev/null 2>&1 && sleep 0'".encode()
    assert protocol.removed_tmp(remove) == task
    module = f"{task}/AnsiballZ_probe.py"
    chmod = f"/bin/sh -c 'chmod u+rwx {task} {module} && sleep 0'".encode()
    assert protocol.tmp_chmod(chmod, task)
    return [(inner, None), (inner, None), (protocol.put_command(module), b"module\n"),
            (protocol.put_command(f"{tmp}/missing/file"), b"x"), (chmod, None),
            (chmod.replace(b"u+rwx", b"go-w").replace(b" && ", f" {tmp}/missing && ".encode()), None),
            (b"/usr/bin/stat -c %a " + module.encode(), None), (remove, None), (remove, None)]


def test_the_commands_around_a_module_run_in_the_helper_with_the_shells_results(tmp_path):
    """The helper runs them without a shell (its PATH is empty here: /bin/sh could not find mkdir, cat or rm), with
    what /bin/sh gives for them: output, errors, status, the modes made, the file written, the directory removed."""
    shell_tmp, helper_tmp = str(tmp_path / "shell" / "tmp"), str(tmp_path / "helper" / "tmp")
    expected = []
    for cmd, stdin in _around_a_module(shell_tmp):
        done = subprocess.run(["/bin/sh", "-c", cmd], input=stdin, capture_output=True, check=False)
        expected.append((done.returncode, done.stdout, done.stderr))
    replies, status = _serve([(cmd, stdin, False) for cmd, stdin in _around_a_module(helper_tmp)],
                             env={"PATH": "/nonexistent"})
    assert status == 0
    got = [reply[:3] for reply in replies]

    def same(text: bytes) -> bytes:  # the directories' names, and GNU's quotes, aside
        for path in (shell_tmp, helper_tmp):
            text = text.replace(path.encode(), b"TMP")
        return text.replace("\u2018".encode(), b"'").replace("\u2019".encode(), b"'")

    assert got[6][:2] == (0, b"744\n")  # the mode the two chmods left
    for (rc, out, err), (got_rc, got_out, got_err) in zip(expected, got):
        assert (got_rc, same(got_out)) == (rc, same(out))
        assert (same(got_err) == same(err)) if b"mkdir" in err else (bool(got_err) == bool(err))
    assert [r[0] for r in got] == [0, 1, 0, 2, 0, 1, 0, 0, 0]
    assert not os.path.exists(f"{helper_tmp}/ansible-tmp-1765-1-2") and os.stat(helper_tmp).st_mode & 0o777 == 0o700


def test_on_a_terminal_the_helper_reads_whole_chunks_and_puts_line_mode_back_when_it_ends():
    """On the session's pty the helper turns line editing off while it serves (a read then gives whatever has arrived,
    not one base64 line), a large stdin still crosses intact, and the shell after it gets its terminal as it was."""
    import pty  # pylint: disable=import-outside-toplevel
    import termios  # pylint: disable=import-outside-toplevel

    controller, terminal = pty.openpty()
    attrs = termios.tcgetattr(terminal)
    attrs[3] &= ~termios.ECHO  # as the session's stty -echo leaves it
    termios.tcsetattr(terminal, termios.TCSANOW, attrs)
    helper = subprocess.Popen([sys.executable, HELPER, "READY"], stdin=terminal, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        assert helper.stdout.readline() == b"PREADY\n"
        big, marker = os.urandom(1 << 20), protocol.new_marker()
        head, tail = protocol.helper_request(b"cat", marker, True, None)
        data = head + protocol.b64_lines(big) + tail
        while data:
            data = data[os.write(controller, data[:4096]):]
        reply = b""
        while protocol.end_of_reply(marker) not in reply or not reply.endswith(b"\n"):
            reply += helper.stdout.read1(65536)
        assert protocol.parse_reply(reply, marker) == (0, big, b"")
        assert not termios.tcgetattr(terminal)[3] & termios.ICANON
        os.write(controller, b"exit\n")
        assert helper.wait(timeout=30) == 0
        assert termios.tcgetattr(terminal)[3] & termios.ICANON
    finally:
        helper.kill()
        helper.wait()
        os.close(controller)
        os.close(terminal)
