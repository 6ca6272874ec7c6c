"""The test suite's warm interpreter (ssm_lab/harness/warm): a module file handed to the zygote sees what it would see
in an interpreter of its own (argv, working directory, environment, umask, standard streams) and exits with its own
status; without a zygote, or for any other script, Python starts as usual."""

import json
import os
import subprocess
import sys

import pytest
from ssm_lab.harness import testing

SCRIPT = """
import json, os, sys
data = sys.stdin.read()
print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "env": os.environ.get("PROBE"), "umask": os.umask(0),
                  "stdin": data, "main": __name__, "path0": sys.path[0], "pid": os.getpid()}))
print("to stderr", file=sys.stderr)
sys.exit(int(os.environ.get("PROBE_EXIT", "0")))
"""


@pytest.fixture(scope="module")
def warm():
    env = testing.warm_environ()
    if not env:
        pytest.skip("BASTIONLESS_WARM=0")
    return env


def run(script, warm_env, *args, exit_code=0, umask=0o027):
    env = {**os.environ, **warm_env, "PROBE": "probe value", "PROBE_EXIT": str(exit_code)}
    return subprocess.run([sys.executable, str(script), *args], input="the input", capture_output=True, text=True,
                          env=env, cwd=os.path.dirname(script), preexec_fn=lambda: os.umask(umask), timeout=60,
                          check=False)


@pytest.mark.parametrize("exit_code", [0, 1, 3])
def test_a_module_file_runs_in_the_zygote_as_it_would_alone(tmp_path, warm, exit_code):
    script = tmp_path / "AnsiballZ_probe.py"
    script.write_text(SCRIPT)
    alone, handed = run(script, {}, "x", exit_code=exit_code), run(script, warm, "x", exit_code=exit_code)
    assert (handed.returncode, handed.stderr) == (alone.returncode, alone.stderr) == (exit_code, "to stderr\n")
    seen_alone, seen_handed = json.loads(alone.stdout), json.loads(handed.stdout)
    assert seen_handed.pop("pid") != os.getpid()
    seen_alone.pop("pid")
    assert seen_handed == seen_alone == {"argv": [str(script), "x"], "cwd": str(tmp_path), "env": "probe value",
                                         "umask": 0o027, "stdin": "the input", "main": "__main__",
                                         "path0": str(tmp_path)}


def own_parent(script, env):
    """Whether ``script`` ran in the process this test started (not handed to the zygote)."""
    client = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, **env})
    return int(client.communicate(timeout=60)[0]) == os.getpid()


def test_the_zygote_answers_the_module_not_the_client(tmp_path, warm):
    """The hand-off happened: the module ran in a process whose parent is the zygote, not the client."""
    module = tmp_path / "AnsiballZ_parent.py"
    module.write_text("import os; print(os.getppid())")
    assert not own_parent(module, warm)


def test_other_scripts_other_namespaces_and_a_missing_zygote_start_as_usual(tmp_path, warm):
    other = tmp_path / "probe.py"
    other.write_text("import os; print(os.getppid())")
    assert own_parent(other, warm)
    module = tmp_path / "AnsiballZ_parent.py"
    module.write_text("import os; print(os.getppid())")
    # a module in a lab node's sandbox: another mount namespace than the zygote's
    assert own_parent(module, {**warm, "BASTIONLESS_WARM_MNTNS": "mnt:[1]"})
    script = tmp_path / "AnsiballZ_probe.py"
    script.write_text(SCRIPT)
    gone = run(script, {**warm, "BASTIONLESS_WARM_SOCKET": str(tmp_path / "no.sock")}, exit_code=2)
    assert gone.returncode == 2 and json.loads(gone.stdout)["stdin"] == "the input"


ANSIBLE = os.path.join(os.path.dirname(sys.executable), "ansible")


def children_of(pid: int) -> list:
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.isdigit() and int(fields[1]) == pid:
            found.append(int(entry))
    return found


def ansible_command(tmp_path, env, *args, **popen):
    """``ansible localhost`` with its local temporary directory under tmp_path and no inventory file."""
    command = [ANSIBLE, "localhost", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}", *args]
    environ = {**os.environ, **env, "ANSIBLE_LOCAL_TEMP": str(tmp_path / "local"),
               "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false", "ANSIBLE_NOCOLOR": "1"}
    return subprocess.Popen(command, env=environ, cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **popen)


def test_an_ansible_command_runs_in_the_zygote_as_it_would_alone(tmp_path, warm):
    """Same output, same status, and ansible-core's exit functions ran (its local temporary directory is gone)."""
    results = []
    for env in ({}, warm):
        process = ansible_command(tmp_path, env, "-m", "ansible.builtin.command", "-a", "echo hello")
        results.append((process.wait(timeout=120),) + process.communicate())
        assert os.listdir(tmp_path / "local") == []
    assert results[0] == results[1] and results[0][0] == 0 and "hello" in results[0][1], results
    failed = ansible_command(tmp_path, warm, "-m", "ansible.builtin.command", "-a", "false")
    assert failed.wait(timeout=120) == 2


def test_commands_share_module_payloads_by_working_directory_and_module_search(tmp_path, warm):
    """The first command builds ping's AnsiballZ payload into the zygote's store, the second reads it there (the same
    file: a rebuild would have renamed a new one into place), and each run's own directory, link included, is gone. A
    command with another collections path gets a store of its own."""
    store = os.path.join(os.path.dirname(testing._warm["path"]), "ansiballz")  # pylint: disable=protected-access

    def ping(env):
        process = ansible_command(tmp_path, env, "-m", "ansible.builtin.ping")
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0 and '"ping": "pong"' in out, out + err
        assert os.listdir(tmp_path / "local") == []
        return set(os.listdir(store))

    before = set(os.listdir(store)) if os.path.isdir(store) else set()
    [new] = ping(warm) - before
    [payload] = [os.path.join(store, new, name) for name in os.listdir(os.path.join(store, new))
                 if name.startswith("ansible.modules.ping-") and not name.endswith(".lock")]
    built = os.stat(payload)
    assert ping(warm) == before | {new}
    assert (os.stat(payload).st_ino, os.stat(payload).st_mtime_ns) == (built.st_ino, built.st_mtime_ns)
    other = {**warm, "ANSIBLE_COLLECTIONS_PATH": os.pathsep.join(
        filter(None, (str(tmp_path / "other"), os.environ.get("ANSIBLE_COLLECTIONS_PATH"))))}
    assert len(ping(other) - before) == 2


def test_an_ansible_command_is_handed_over_only_when_asked_and_ends_with_its_client(tmp_path, warm):
    zygote = testing._warm["zygote"]  # pylint: disable=protected-access
    before = set(children_of(zygote))
    alone = ansible_command(tmp_path, {k: v for k, v in warm.items() if k != "BASTIONLESS_WARM_CLI"},
                            "-m", "ansible.builtin.command", "-a", "sleep 30")
    handed = ansible_command(tmp_path, warm, "-m", "ansible.builtin.command", "-a", "sleep 30")
    try:
        testing.wait_until(lambda: set(children_of(zygote)) - before, timeout=30, what="the zygote's fork")
        [child] = set(children_of(zygote)) - before  # the handed command only
        handed.kill()  # as a test's timeout does: the command it handed over ends too
        testing.wait_until(lambda: not os.path.exists(f"/proc/{child}") or open(  # noqa: SIM115
            f"/proc/{child}/stat", encoding="utf-8").read().rsplit(")", 1)[1].split()[0] == "Z",
            timeout=30, what="the handed command's end")
    finally:
        alone.kill()
        handed.kill()
        alone.communicate()
        handed.communicate()


def test_what_the_preloaded_imports_print_every_child_prints(capfd):
    from ssm_lab.harness.warm import zygote  # pylint: disable=import-outside-toplevel

    with zygote._kept_output():  # pylint: disable=protected-access
        os.write(2, b"a deprecation warning at import\n")
        os.write(1, b"printed at import\n")
    assert capfd.readouterr() == ("", "")
    zygote._replay_preload_output()  # pylint: disable=protected-access
    assert capfd.readouterr() == ("printed at import\n", "a deprecation warning at import\n")
