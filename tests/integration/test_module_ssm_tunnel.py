"""bastionless.ssm.ssm_tunnel against the lab, through ansible-playbook: tunnels to a TCP service behind a node and
to a port on the node carry data both ways (over the native transport, the default, and over the plugin), are gone
after state=absent and after the play ends (also when the Ansible process is killed), pick a free local port, are
idempotent, can outlive the play only when asked and then end at max_lifetime; each failure class; the documented
examples and playbooks/db-migration-tunnel.yml."""

import hashlib
import json
import os
import re
import signal
import socket
import subprocess

import pytest
from ansible_cli import (ROOT, call_module, call_module_cases, controller_play, module_examples, run, save_task,
                         write_controller_playbook)
from ssm_lab.harness.testing import EchoServer, accepts, echo_through, free_port, running_lab, wait_until

MODULE = "bastionless.ssm.ssm_tunnel"
TO_HOST = "AWS-StartPortForwardingSessionToRemoteHost"
TO_NODE = "AWS-StartPortForwardingSession"

# Run inside the play, on the controller: send random bytes through the tunnel, read the echo back, print a digest.
ECHO_CLIENT = r"""
import hashlib, os, socket, sys, threading
payload = os.urandom(int(sys.argv[2]))
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20) as connection:
    sender = threading.Thread(target=connection.sendall, args=(payload,))
    sender.start()
    received = bytearray()
    while len(received) < len(payload):
        chunk = connection.recv(65536)
        if not chunk:
            break
        received.extend(chunk)
    sender.join()
print("sent", hashlib.sha256(payload).hexdigest(), "echoed", hashlib.sha256(bytes(received)).hexdigest(),
      len(received))
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with running_lab(tmp_path_factory.mktemp("lab"), "--nodes", "2", "--provisioned") as lab:
        yield lab


@pytest.fixture(scope="module")
def node(lab) -> str:
    return sorted(n for n in lab.network["nodes"] if n.startswith("i-"))[0]


@pytest.fixture(scope="module")
def other_node(lab) -> str:
    return sorted(n for n in lab.network["nodes"] if n.startswith("i-"))[1]


@pytest.fixture
def echo():
    """A TCP echo service on the machine: behind the node (the nodes share the machine's network in the lab)."""
    with EchoServer() as server:
        yield server


@pytest.fixture
def state_dir(tmp_path):
    return str(tmp_path / "tunnels")


def play(lab, tmp_path, args: dict, *flags: str, fails: bool = False):
    """Run the module once with ``args`` in a play of its own; return (result, output)."""
    result, output, _recap = call_module(lab, tmp_path, MODULE, args, *flags, fails=fails)
    return result, output


def sessions(lab, state: str, **filters) -> list:
    found = lab.client("ssm").describe_sessions(
        State=state, Filters=[{"key": k, "value": v} for k, v in filters.items()])["Sessions"]
    return found


def ended(lab, session_id: str) -> dict:
    return wait_until(lambda: next(iter(sessions(lab, "History", SessionId=session_id)), None),
                      what=f"session {session_id} in the history")


def records(state_dir: str) -> list:
    if not os.path.isdir(state_dir):
        return []
    return sorted(n for n in os.listdir(state_dir) if n.endswith(".json"))


def gone(tunnel: dict) -> bool:
    """The tunnel's port refuses connections and its supervisor and plugin processes have ended."""
    def dead(pid):
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
                return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            return True

    return not accepts(tunnel["local_port"]) and dead(tunnel["pid"]) and dead(tunnel["plugin_pid"])


def echo_client(tmp_path) -> str:
    path = tmp_path / "echo_client.py"
    path.write_text(ECHO_CLIENT)
    return str(path)


def echo_task(tmp_path, port_expression: str, size: int = 262144) -> dict:
    return {"name": "Send bytes through the tunnel and read the echo",
            "ansible.builtin.command": {"argv": ["{{ ansible_playbook_python }}", echo_client(tmp_path),
                                                 port_expression, str(size)]},
            "register": "__echo", "changed_when": False}


def echo_ok(output: dict, size: int = 262144) -> str:
    """The digest of what the client sent, after checking that all of it came back."""
    words = output["stdout"].split()
    assert words[0] == "sent" and words[2] == "echoed", output
    assert words[1] == words[3] and int(words[4]) == size, output
    return words[1]


# --- the tunnels --------------------------------------------------------------------------------------------


def test_check_mode_opens_nothing(lab, node, echo, state_dir, tmp_path):
    args = {"target": node, "remote_host": "127.0.0.1", "remote_port": echo.port, "state_dir": state_dir}
    result, output = play(lab, tmp_path, args, "--check")
    assert result["changed"] is True
    assert result["tunnel"]["local_port"] is None and result["tunnel"]["session_id"] is None
    assert result["tunnel"]["document_name"] == TO_HOST
    assert sessions(lab, "Active", Target=node) == []
    assert records(state_dir) == []


def test_a_tunnel_to_a_host_behind_the_node_carries_data_and_ends_with_the_play(
        lab, node, echo, state_dir, tmp_path):
    output, recap = controller_play(lab, tmp_path, [
        {"name": "Open the tunnel", MODULE: {"target": node, "remote_host": "127.0.0.1", "remote_port": echo.port,
                                             "reason": "integration test", "state_dir": state_dir},
         "register": "__tunnel"},
        echo_task(tmp_path, "{{ __tunnel.tunnel.local_port }}"),
        {"name": "List the node's active sessions", "bastionless.ssm.ssm_session_info": {"state": "active",
                                                                                         "target": node},
         "register": "__active"},
        save_task("__tunnel", tmp_path / "tunnel.json"),
        save_task("__echo", tmp_path / "echo.json"),
        save_task("__active", tmp_path / "active.json"),
    ])
    assert recap["localhost"]["failed"] == 0, output
    tunnel = json.loads((tmp_path / "tunnel.json").read_text())["tunnel"]
    assert tunnel["document_name"] == TO_HOST
    assert (tunnel["target"], tunnel["remote_host"], tunnel["remote_port"]) == (node, "127.0.0.1", echo.port)
    assert 1024 <= tunnel["local_port"] <= 65535 and tunnel["local_port"] != echo.port  # picked
    assert (tunnel["transport"], tunnel["plugin_pid"]) == ("native", None)  # the default: no binary
    sent = echo_ok(json.loads((tmp_path / "echo.json").read_text()))
    assert echo.saw(sent)  # the service behind the node got the bytes, and sent them back
    [active] = [s for s in json.loads((tmp_path / "active.json").read_text())["sessions"]
                if s["session_id"] == tunnel["session_id"]]
    assert (active["document_name"], active["reason"], active["state"]) == (TO_HOST, "integration test", "active")

    # The play is over: the tunnel, its processes, its record and its session are gone.
    wait_until(lambda: gone(tunnel), what="the tunnel to close after the play")
    assert records(state_dir) == []
    assert ended(lab, tunnel["session_id"])["Status"] == "Terminated"
    with open(tunnel["log"], encoding="utf-8") as handle:
        log = handle.read()
    assert "the Ansible process that opened the tunnel" in log and "has exited" in log
    assert f"port {tunnel['local_port']} opened, multiplexed" in log, log


def test_a_tunnel_to_a_port_on_the_node_is_idempotent_and_closed_by_state_absent(
        lab, node, echo, state_dir, tmp_path):
    port = free_port()
    args = {"target": node, "remote_port": echo.port, "local_port": port, "state_dir": state_dir,
            "transport": "plugin"}
    output, recap = controller_play(lab, tmp_path, [
        {"name": "Open the tunnel", MODULE: args, "register": "__first"},
        {"name": "Open it again", MODULE: args, "register": "__again"},
        {"name": "Open it again, any local port", MODULE: {**args, "local_port": None}, "register": "__any"},
        echo_task(tmp_path, str(port)),
        {"name": "Close it, checking first", MODULE: {"state": "absent", "local_port": port, "state_dir": state_dir},
         "check_mode": True, "register": "__close_check"},
        {"name": "Check the port still accepts after check mode",
         "ansible.builtin.wait_for": {"port": port, "host": "127.0.0.1", "state": "started", "timeout": 1}},
        {"name": "Close it", MODULE: {"state": "absent", "local_port": port, "state_dir": state_dir},
         "register": "__close"},
        {"name": "Check the port is closed",
         "ansible.builtin.wait_for": {"port": port, "host": "127.0.0.1", "state": "stopped", "timeout": 1}},
        {"name": "Close it again", MODULE: {"state": "absent", "local_port": port, "state_dir": state_dir},
         "register": "__close_again"},
        save_task("{'first': __first, 'again': __again, 'any': __any, 'echo': __echo, 'close_check': __close_check,"
                  " 'close': __close, 'close_again': __close_again}", tmp_path / "results.json"),
    ])
    assert recap["localhost"]["failed"] == 0, output
    results = json.loads((tmp_path / "results.json").read_text())
    first = results["first"]["tunnel"]
    assert results["first"]["changed"] and first["document_name"] == TO_NODE and first["local_port"] == port
    assert first["transport"] == "plugin" and first["plugin_pid"]
    assert first["remote_host"] == ""
    for name in ("again", "any"):
        assert not results[name]["changed"] and results[name]["tunnel"] == first
    assert echo.saw(echo_ok(results["echo"]))
    assert results["close_check"]["changed"] and results["close"]["changed"]
    assert [t["session_id"] for t in results["close"]["stopped"]] == [first["session_id"]]
    assert not results["close_again"]["changed"] and results["close_again"]["stopped"] == []
    assert ended(lab, first["session_id"])["Status"] == "Terminated"
    assert gone(first) and records(state_dir) == []


def test_kept_after_the_play_until_state_absent(lab, node, echo, state_dir, tmp_path):
    args = {"target": node, "remote_host": "localhost", "remote_port": echo.port, "name": "kept",
            "keep_after_play": True, "state_dir": state_dir}
    result, output = play(lab, tmp_path, args)
    tunnel = result["tunnel"]
    assert tunnel["keep_after_play"] is True and tunnel["controller_pid"] is None
    # The play is over and the tunnel is still there, usable from anywhere on the controller.
    payload = os.urandom(50000)
    assert echo_through(tunnel["local_port"], payload) == payload
    assert echo.saw(hashlib.sha256(payload).hexdigest())
    assert [s["SessionId"] for s in sessions(lab, "Active", Target=node)] == [tunnel["session_id"]]

    result, output = play(lab, tmp_path, {**args, "keep_after_play": False})  # the same tunnel: reused as it is
    assert not result["changed"] and result["tunnel"]["pid"] == tunnel["pid"]

    result, output = play(lab, tmp_path, {"state": "absent", "name": "kept", "state_dir": state_dir})
    assert result["changed"] and result["stopped"][0]["local_port"] == tunnel["local_port"]
    assert gone(tunnel)
    assert ended(lab, tunnel["session_id"])["Status"] == "Terminated"


def test_max_lifetime_ends_a_kept_tunnel(lab, node, echo, state_dir, tmp_path):
    result, output = play(lab, tmp_path, {"target": node, "remote_port": echo.port, "keep_after_play": True,
                                          "max_lifetime": 10, "state_dir": state_dir})
    tunnel = result["tunnel"]
    assert tunnel["expires"] > tunnel["started"]
    assert accepts(tunnel["local_port"])  # long enough a lifetime to still be open here on a busy machine
    wait_until(lambda: gone(tunnel), timeout=40, what="max_lifetime to close the tunnel")
    with open(tunnel["log"], encoding="utf-8") as handle:
        assert "max_lifetime (10 s) has passed" in handle.read()
    assert ended(lab, tunnel["session_id"])["Status"] == "Terminated"


def test_a_killed_ansible_playbook_takes_its_tunnel_with_it(lab, node, echo, state_dir, tmp_path):
    result_file = tmp_path / "tunnel.json"
    path = write_controller_playbook(tmp_path, [
        {"name": "Open the tunnel", MODULE: {"target": node, "remote_port": echo.port, "state_dir": state_dir},
         "register": "__tunnel"},
        save_task("__tunnel", result_file, at_once=True),  # read while the play waits
        {"name": "Wait for the kill", "ansible.builtin.pause": {"seconds": 120}},
    ])
    # ansible-playbook in a process of its own (not handed to the tests' warm interpreter): its pid is the one killed
    process = subprocess.Popen(  # pylint: disable=consider-using-with
        ["ansible-playbook", "-i", "localhost,", path], cwd=ROOT, env=lab.environ(BASTIONLESS_WARM_CLI="0"),
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: result_file.exists() and result_file.stat().st_size > 0, timeout=60,
                   what="the play to open its tunnel")
        tunnel = json.loads(result_file.read_text())["tunnel"]
        assert tunnel["controller_pid"] == process.pid
        assert accepts(tunnel["local_port"])
        process.kill()  # SIGKILL: ansible-playbook runs no clean-up of its own
        process.wait(10)
        wait_until(lambda: gone(tunnel), what="the tunnel to close after ansible-playbook was killed")
        assert ended(lab, tunnel["session_id"])["Status"] == "Terminated"
        assert records(state_dir) == []
    finally:
        # the play's worker, left behind by SIGKILL, is still in its pause, in a session of its own (ansible-core
        # starts its workers with setsid): end every process that runs this playbook
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(10)
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    if path.encode() in handle.read().split(b"\0"):
                        os.kill(int(pid), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass


def test_a_killed_supervisor_takes_the_plugin_with_it_and_its_record_is_cleared(
        lab, node, echo, state_dir, tmp_path):
    args = {"target": node, "remote_port": echo.port, "keep_after_play": True, "max_lifetime": 300,
            "state_dir": state_dir, "transport": "plugin"}
    tunnel = play(lab, tmp_path, args)[0]["tunnel"]
    assert tunnel["transport"] == "plugin" and tunnel["plugin_pid"]
    os.kill(tunnel["pid"], signal.SIGKILL)  # no clean-up of its own: the plugin gets SIGTERM from the kernel
    wait_until(lambda: gone(tunnel), what="the plugin of a killed supervisor to exit")
    assert records(state_dir) == [f"tunnel-{tunnel['local_port']}.json"]  # stale, nobody removed it
    result = play(lab, tmp_path, args)[0]
    assert result["changed"] and result["tunnel"]["session_id"] != tunnel["session_id"]
    assert records(state_dir) == [f"tunnel-{result['tunnel']['local_port']}.json"]
    assert ended(lab, tunnel["session_id"])["Status"] == "Terminated"
    play(lab, tmp_path, {"state": "absent", "session_id": result["tunnel"]["session_id"], "state_dir": state_dir})
    assert gone(result["tunnel"]) and records(state_dir) == []


def test_a_named_tunnel_moves_when_its_destination_changes(lab, node, echo, state_dir, tmp_path):
    with EchoServer() as second:
        args = {"target": node, "remote_host": "127.0.0.1", "name": "db", "keep_after_play": True,
                "state_dir": state_dir}
        first = play(lab, tmp_path, {**args, "remote_port": echo.port})[0]
        moved = play(lab, tmp_path, {**args, "remote_port": second.port})[0]
        assert moved["changed"] and moved["tunnel"]["remote_port"] == second.port
        wait_until(lambda: gone(first["tunnel"]), what="the old tunnel of the name to close")
        payload = os.urandom(1000)
        assert echo_through(moved["tunnel"]["local_port"], payload) == payload
        assert second.saw(hashlib.sha256(payload).hexdigest())
        play(lab, tmp_path, {"state": "absent", "name": "db", "state_dir": state_dir})
        assert gone(moved["tunnel"])


# --- failures -----------------------------------------------------------------------------------------------


def test_a_node_that_is_not_connected(lab, other_node, echo, state_dir, tmp_path):
    lab.cli("agent", "stop", other_node)
    try:
        wait_until(lambda: lab.client("ssm").get_connection_status(Target=other_node)["Status"] == "notconnected",
                   what=f"{other_node} to go offline")
        result, output = play(lab, tmp_path, {"target": other_node, "remote_port": echo.port,
                                              "state_dir": state_dir}, fails=True)
        assert "TargetNotConnected" in result["msg"], result["msg"]
        assert records(state_dir) == []
    finally:
        lab.cli("agent", "start", other_node)
    wait_until(lambda: lab.client("ssm").get_connection_status(Target=other_node)["Status"] == "connected",
               timeout=30, what=f"{other_node} back online")


def test_a_plugin_that_is_not_there(lab, node, echo, state_dir, tmp_path):
    result, output = play(lab, tmp_path, {"target": node, "remote_port": echo.port, "state_dir": state_dir,
                                          "transport": "plugin",
                                          "plugin": str(tmp_path / "session-manager-plugin")}, fails=True)
    assert "is not an executable file; install the session-manager-plugin" in result["msg"]
    assert sessions(lab, "Active", Target=node) == []  # no session was started


@pytest.mark.skipif(os.path.exists("/usr/local/bin/session-manager-plugin"),
                    reason="this machine has the real session-manager-plugin in its default place")
def test_no_plugin_anywhere(lab, node, echo, state_dir, tmp_path):
    """Neither AWS_SESSION_MANAGER_PLUGIN nor a plugin on PATH: the symptom users meet first."""
    path = write_controller_playbook(tmp_path, [{"name": "Open", MODULE: {"target": node, "remote_port": echo.port,
                                                                          "transport": "plugin",
                                                                          "state_dir": state_dir}}])
    env = lab.environ(AWS_SESSION_MANAGER_PLUGIN="", ANSIBLE_NOCOLOR="1")
    venv = os.path.dirname(subprocess.check_output(["which", "ansible-playbook"], text=True).strip())
    env["PATH"] = os.pathsep.join([venv, "/usr/bin", "/bin"])
    if any(os.path.exists(os.path.join(d, "session-manager-plugin")) for d in env["PATH"].split(os.pathsep)):
        pytest.skip("this machine has a session-manager-plugin on the basic PATH")
    result = subprocess.run(["ansible-playbook", "-i", "localhost,", path], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "SessionManagerPlugin is not found: install the session-manager-plugin" in result.stdout, result.stdout
    assert sessions(lab, "Active", Target=node) == []


@pytest.mark.parametrize(
    "script, message",
    [
        ("echo 'Cannot perform start session: boom' >&2; exit 1",
         "the tunnel closed before its local port accepted connections: "),
        ("exec sleep 60", "did not accept connections within 2 s"),
    ],
)
def test_a_plugin_that_never_listens(lab, node, echo, state_dir, tmp_path, script, message):
    plugin = tmp_path / "session-manager-plugin"
    plugin.write_text(f"#!/bin/sh\n{script}\n")
    plugin.chmod(0o755)
    result, output = play(lab, tmp_path, {"target": node, "remote_port": echo.port, "state_dir": state_dir,
                                          "transport": "plugin", "plugin": str(plugin), "wait_timeout": 2},
                          fails=True)
    assert message in result["msg"], result["msg"]
    if "boom" in script:
        assert "Cannot perform start session: boom" in result["msg"]  # the plugin's own words, from its log
    tunnel = result["tunnel"]
    wait_until(lambda: gone(tunnel), what="the failed tunnel's processes to end")
    assert records(state_dir) == []
    assert ended(lab, tunnel["session_id"])["Status"] == "Terminated"


def test_a_local_port_in_use(lab, node, echo, state_dir, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result, output = play(lab, tmp_path, {"target": node, "remote_port": echo.port, "local_port": port,
                                              "state_dir": state_dir}, fails=True)
    assert f"local_port {port} is in use on 127.0.0.1 by another program" in result["msg"]
    assert sessions(lab, "Active", Target=node) == []


def test_it_refuses_to_run_on_a_node(lab, node, echo, state_dir, tmp_path):
    output, recap = run(lab, "ansible", "-i", "inventories/lab", node, "-m", MODULE, "-a",
                        f"target={node} remote_port={echo.port} state_dir={state_dir}", check=False)
    assert "runs on the controller, not over the amazon.aws.aws_ssm connection" in output, output
    assert sessions(lab, "Active", Target=node) == []


# Bounded waits (docs/reliability.md, "Bounded waits"): one play, each case an ssm_tunnel task with wait_timeout 3
# between two stamps taken on the controller; the stamp before it sets the lab's fault (its admin API, through curl),
# the one after clears it. A stream_rtt of 0.6 s keeps the handshake going past the moment the fault starts (0.1 s
# after the WebSocket opens). The bound checked is wait_timeout plus MARGIN (the task's own overhead and the
# supervisor's stop on a loaded machine); a wait that is not bounded takes 30 s or more (the data channel's
# handshake timeout, botocore's read timeout).
MARGIN = 15
FAULT_CASES = [
    ("stall", {"stall_channel_after": 0.1, "stream_rtt": 0.6}, {}),
    ("half", {"half_close_channel_after": 0.1, "stream_rtt": 0.6}, {}),
    ("plugin_stall", {"stall_channel_after": 0.1, "stream_rtt": 0.6}, {"transport": "plugin"}),
    ("api", {"api_delay": 6}, {}),
]
FAULTS_OFF = {"stall_channel_after": 0, "half_close_channel_after": 0, "stream_rtt": 0, "api_delay": 0}


def test_no_tunnel_task_waits_past_its_wait_timeout_whatever_the_service_does(lab, node, echo, state_dir, tmp_path):
    """A data channel the service stalls during the handshake (native and plugin transports), one it half-closes
    (again on each resumed WebSocket), a StartSession that does not answer: each task fails within wait_timeout plus
    MARGIN, naming wait_timeout, and leaves no tunnel; the session of a StartSession answered too late is ended by
    the module's detached StartSession as the answer arrives."""
    endpoint = lab.env["AWS_ENDPOINT_URL"]

    def fault(settings: dict) -> str:
        return (f"curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' {endpoint}/_lab/faults "
                f"-d '{json.dumps(settings)}'; date +%s.%N")

    tasks = []
    for name, settings, args in FAULT_CASES:
        tasks += [
            {"name": f"Fault on: {name}", "ansible.builtin.set_fact": {f"__on_{name}": "{{ lookup('pipe', cmd) }}"},
             "vars": {"cmd": fault(settings)}},
            {"name": f"A tunnel under {name}", MODULE: {
                "target": node, "remote_host": "127.0.0.1", "remote_port": echo.port, "wait_timeout": 3,
                "state_dir": state_dir, "reason": f"bounded {name}", "name": name, **args},
             "register": f"__{name}", "ignore_errors": True},
            {"name": f"Fault off: {name}", "ansible.builtin.set_fact": {f"__off_{name}": "{{ lookup('pipe', cmd) }}"},
             "vars": {"cmd": fault(FAULTS_OFF)}},
        ]
    summary = ", ".join(f"'{name}': [__on_{name} | float, __off_{name} | float, __{name}]" for name, _s, _a in FAULT_CASES)
    tasks.append(save_task("{" + summary + "}", tmp_path / "bounded.json"))
    try:
        output, recap = controller_play(lab, tmp_path, tasks)
    finally:
        lab.cli("faults", *[item for key, value in FAULTS_OFF.items()
                            for item in (f"--{key.replace('_', '-')}", str(value))])
    assert recap["localhost"]["failed"] == 0, output
    cases = json.loads((tmp_path / "bounded.json").read_text())
    for name, (on, off, result) in cases.items():
        assert off - on < 3 + MARGIN, (name, off - on, result)
        assert result.get("failed") or name == "half", (name, result)
        if "tunnel" in result:  # closed at once when the task failed, with the play when it opened
            wait_until(lambda: gone(result["tunnel"]), what=f"the {name} tunnel to close")  # pylint: disable=cell-var-from-loop
    for name in ("stall", "plugin_stall"):
        assert "did not accept connections within 3 s (wait_timeout): the node or the service did not open the " \
               "session's data channel in time. Raise wait_timeout" in cases[name][2]["msg"], cases[name]
    # Half-closed: resumed (ResumeSession) until the handshake is done and the tunnel opens, or until wait_timeout,
    # or given up by the data channel before it.
    half = cases["half"][2]
    assert (not half.get("failed") or "within 3 s (wait_timeout)" in half["msg"]
            or "the tunnel closed before its local port accepted" in half["msg"]), half
    assert cases["api"][2]["msg"] == (
        f"StartSession to {node} in us-east-1 did not answer within 3 s (wait_timeout): the Systems Manager endpoint "
        f"{endpoint} is slow or unreachable. Check the network path to it (proxy, VPC endpoint) or raise "
        "wait_timeout. A session it starts later all the same is ended as its answer arrives."), cases["api"]
    assert records(state_dir) == []
    # The lab starts the late session once its 6 s delay is over, as AWS may start one whose answer came too late;
    # the module's detached StartSession ends it as the answer arrives.
    late = wait_until(lambda: [s for s in sessions(lab, "History", Target=node) if s.get("Reason") == "bounded api"],
                      timeout=30, what="the late StartSession's session to be ended")
    assert [s["Status"] for s in late] == ["Terminated"], late
    left = [s for s in sessions(lab, "Active", Target=node) if (s.get("Reason") or "").startswith("bounded")]
    assert left == [], left


BAD_INPUT = [
    ({"state": "absent"}, "state=absent needs at least one of name, local_port, session_id"),
    ({"remote_port": 80}, "state=present needs target"),
    ({"target": "i-0123456789abcdef0", "remote_port": 70000}, "remote_port must be a TCP port from 1 to 65535"),
]


def test_bad_input(lab, tmp_path, state_dir):
    cases = call_module_cases(lab, tmp_path, MODULE, [{**args, "state_dir": state_dir} for args, _message in BAD_INPUT])
    for result, (args, message) in zip(cases.results, BAD_INPUT):
        assert result.get("failed") is True and message in result["msg"], (args, result)


# --- documentation and playbook -----------------------------------------------------------------------------


def test_the_documented_examples_run(lab, tmp_path):
    tasks = module_examples("ssm_tunnel")
    path = write_controller_playbook(tmp_path, tasks)
    output, recap = run(lab, "ansible-playbook", "-i", "inventories/lab", "-i", "localhost,", path)
    assert recap["localhost"]["failed"] == 0 and recap["localhost"]["ok"] == len(tasks), output
    assert not accepts(15432)


def test_the_db_migration_playbook(lab, node, tmp_path):
    def migrate():
        output, recap = run(lab, "ansible-playbook", "-i", "inventories/lab", "playbooks/db-migration-tunnel.yml",
                            "-e", "bastionless_db_lab_standin=true")
        assert recap["localhost"]["failed"] == 0, output
        return output

    output = migrate()
    assert "applied 001_create_accounts.sql" in output and "applied 002_add_email.sql" in output, output
    assert "schema version 2" in output
    # The stand-in ran on the node under Run Command and was stopped through the tunnel; the tunnel is closed.
    [standin] = [c for c in lab.client("ssm").list_commands(InstanceId=node)["Commands"]
                 if c["Comment"] == "bastionless lab database stand-in"]
    wait_until(lambda: lab.client("ssm").get_command_invocation(CommandId=standin["CommandId"], InstanceId=node)
               ["Status"] == "Success", what="the stand-in database to stop")
    migrations = [s for s in sessions(lab, "History", Target=node)
                  if s.get("Reason") == "database migration (playbooks/db-migration-tunnel.yml)"]
    assert [s["Status"] for s in migrations] == ["Terminated"]
    assert sessions(lab, "Active", Target=node) == []

    # Again: the schema is up to date, nothing to apply; the database kept its state on the node.
    output = migrate()
    assert "nothing applied: the schema is up to date" in output and "schema version 2" in output, output
    assert "applied 00" not in output

    # A wrong database port: the message names the database's host and port, not only the tunnel's local port.
    output, recap = run(lab, "ansible-playbook", "-i", "inventories/lab", "playbooks/db-migration-tunnel.yml",
                        "-e", "bastionless_db_port=25433", check=False)
    assert recap["localhost"]["failed"] == 1, output
    assert re.search(rf"The migration through the tunnel to 127\.0\.0\.1:25433 \(as {node} sees it; local port "
                     r"\d+\) failed: no database answers on 127\.0\.0\.1:\d+: the connection closed\. If no "
                     r"database answered, check bastionless_db_port and bastionless_db_host", output), output
    assert sessions(lab, "Active", Target=node) == []  # the tunnel was closed all the same


def test_the_db_migration_playbook_in_check_mode(lab, node):
    before = len(lab.client("ssm").list_commands(InstanceId=node)["Commands"])
    output, recap = run(lab, "ansible-playbook", "-i", "inventories/lab", "playbooks/db-migration-tunnel.yml",
                        "-e", "bastionless_db_lab_standin=true", "--check")
    assert recap["localhost"]["failed"] == 0, output
    assert len(lab.client("ssm").list_commands(InstanceId=node)["Commands"]) == before
    assert sessions(lab, "Active", Target=node) == []
