# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The pure helpers of bastionless.ssm.ssm_tunnel: validation, documents and session parameters, the plugin's
command line, which recorded tunnel is the one wanted, free local ports, process identity and the records."""

import json
import os
import socket
import subprocess
import sys

import pytest

from ansible_collections.bastionless.ssm.plugins.module_utils import _plugin_path
from ansible_collections.bastionless.ssm.plugins.module_utils import _ssm_tunnel as tunnels
from ansible_collections.bastionless.ssm.plugins.modules import ssm_tunnel

NODE = "i-0123456789abcdef0"


def params(**overrides):
    base = {"state": "present", "target": NODE, "remote_port": 5432, "remote_host": None, "local_port": None,
            "name": None, "session_id": None, "reason": None, "plugin": None, "wait_timeout": 30,
            "max_lifetime": None, "keep_after_play": False, "state_dir": "/tmp/t"}
    base.update(overrides)
    return base


# --- validation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"remote_host": "db.example.internal", "local_port": 15432, "max_lifetime": 600},
        {"remote_port": 1, "local_port": 65535},
        {"state": "absent", "target": None, "remote_port": None, "local_port": 15432},
        {"state": "absent", "target": None, "remote_port": None, "name": "db"},
        {"state": "absent", "target": None, "remote_port": None, "session_id": "alice-0123"},
    ],
)
def test_valid_input(overrides):
    assert ssm_tunnel.validate(params(**overrides)) is None


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"target": None}, "state=present needs target: the node to go through"),
        ({"target": None, "remote_port": None}, "state=present needs target and remote_port"),
        ({"remote_port": 0}, "remote_port must be a TCP port from 1 to 65535, not 0"),
        ({"local_port": 70000}, "local_port must be a TCP port from 1 to 65535, not 70000"),
        ({"session_id": "s-1"}, "session_id selects a tunnel to close; it is only for state=absent"),
        ({"state": "absent", "target": None, "remote_port": None},
         "state=absent needs at least one of name, local_port, session_id, target, remote_host, remote_port"),
        ({"wait_timeout": 0}, "wait_timeout must be 1 second or more"),
        ({"max_lifetime": 0}, "max_lifetime must be 1 second or more"),
    ],
)
def test_bad_input_is_named(overrides, message):
    assert message in ssm_tunnel.validate(params(**overrides))


@pytest.mark.parametrize(
    "internal, expected",
    [
        ({"_controller_pid": 4242, "_controller_start": 987654}, (4242, 987654)),
        ({"_controller_pid": 4242, "_controller_start": None}, (4242, None)),
        ({"_controller_pid": 0, "_controller_start": -1}, (None, None)),
        ({"_controller_pid": True}, (None, None)),
        ({}, (None, None)),
    ],
)
def test_controller_process_from_the_action_plugin(internal, expected):
    assert ssm_tunnel.controller_process(params(**internal)) == expected


def test_a_new_record_watches_the_controller_unless_kept():
    records = tunnels.Records("/tmp/t")
    watched = ssm_tunnel.new_record(params(max_lifetime=60), 41000, records, (4242, 987654))
    assert (watched["controller_pid"], watched["controller_start"]) == (4242, 987654)
    assert watched["log"] == "/tmp/t/tunnel-41000.log" and watched["expires"] > watched["started"]
    kept = ssm_tunnel.new_record(params(keep_after_play=True), 41000, records, (4242, 987654))
    assert (kept["controller_pid"], kept["controller_start"], kept["expires"]) == (None, None, None)
    predicted = ssm_tunnel.new_record(params(), None, records)
    assert predicted["local_port"] is None and predicted["log"] is None


# --- documents, parameters, command line ------------------------------------------------------------------


def test_document_follows_remote_host():
    assert tunnels.document_for(None) == "AWS-StartPortForwardingSession"
    assert tunnels.document_for("") == "AWS-StartPortForwardingSession"
    assert tunnels.document_for("db.internal") == "AWS-StartPortForwardingSessionToRemoteHost"


def test_session_parameters_are_lists_of_strings():
    assert tunnels.session_parameters(80, 8080) == {"portNumber": ["80"], "localPortNumber": ["8080"]}
    assert tunnels.session_parameters(5432, 15432, "db.internal") == {
        "portNumber": ["5432"], "localPortNumber": ["15432"], "host": ["db.internal"]}


def test_plugin_command_line_carries_the_session_not_the_credentials():
    response = {"SessionId": "alice-1", "TokenValue": "tok", "StreamUrl": "wss://ssmmessages/1",
                "ResponseMetadata": {"RequestId": "r", "HTTPHeaders": {"authorization": "AWS4 secret"}}}
    parameters = tunnels.session_parameters(5432, 15432, "db.internal")
    argv = tunnels.plugin_argv("/usr/local/bin/session-manager-plugin", response, "eu-west-1", None, NODE,
                               tunnels.DOCUMENT_TO_REMOTE_HOST, parameters, "https://ssm.eu-west-1.amazonaws.com")
    assert argv[0] == "/usr/local/bin/session-manager-plugin"
    assert json.loads(argv[1]) == {"SessionId": "alice-1", "TokenValue": "tok", "StreamUrl": "wss://ssmmessages/1"}
    assert argv[2:5] == ["eu-west-1", "StartSession", ""]
    assert json.loads(argv[5]) == {"Target": NODE, "DocumentName": tunnels.DOCUMENT_TO_REMOTE_HOST,
                                   "Parameters": parameters}
    assert argv[6] == "https://ssm.eu-west-1.amazonaws.com"
    assert "secret" not in " ".join(argv)


def test_profile_is_passed_by_name():
    response = {"SessionId": "s", "TokenValue": "t", "StreamUrl": "u"}
    argv = tunnels.plugin_argv("p", response, "us-east-1", "ops", NODE, tunnels.DOCUMENT_TO_NODE, {}, "e")
    assert argv[4] == "ops"


# --- which tunnel is which --------------------------------------------------------------------------------


def record(**overrides):
    base = {"name": "", "target": NODE, "document_name": tunnels.DOCUMENT_TO_REMOTE_HOST, "remote_host": "db",
            "remote_port": 5432, "local_port": 41000, "session_id": "alice-1"}
    base.update(overrides)
    return base


@pytest.mark.parametrize(
    "overrides, same",
    [
        ({}, True),  # no local port asked: the existing one will do
        ({"local_port": 41000}, True),
        ({"local_port": 41001}, False),
        ({"remote_port": 5433}, False),
        ({"remote_host": "other"}, False),
        ({"remote_host": None}, False),  # to the node itself: another document
        ({"target": "i-0fedcba9876543210"}, False),
        ({"name": "db"}, False),  # a name asked for, the record has none
    ],
)
def test_same_tunnel(overrides, same):
    wanted = tunnels.wanted_tunnel(params(**{"remote_host": "db", **overrides}))
    assert tunnels.same_tunnel(record(), wanted) is same


def test_a_named_tunnel_matches_by_name_and_destination():
    wanted = tunnels.wanted_tunnel(params(remote_host="db", name="db"))
    assert tunnels.same_tunnel(record(name="db"), wanted)
    assert not tunnels.same_tunnel(record(name="db", remote_port=3306), wanted)


@pytest.mark.parametrize(
    "selector, selected",
    [
        ({"local_port": 41000}, True),
        ({"local_port": 41001}, False),
        ({"session_id": "alice-1"}, True),
        ({"target": NODE, "remote_port": 5432}, True),
        ({"target": NODE, "remote_port": 3306}, False),
        ({"name": "db"}, False),
        ({"name": None, "local_port": None, "target": NODE}, True),  # unset options select nothing themselves
        ({"name": None, "local_port": None}, False),  # nothing given: nothing selected
    ],
)
def test_absent_selects(selector, selected):
    assert tunnels.selects(record(), selector) is selected


def test_public_record_leaves_out_internals():
    full = record(pid=1, pid_start=2, plugin_pid=3, plugin_start=4, controller_pid=5, controller_start=6,
                  max_lifetime=None, plugin="/p", live=True)
    public = tunnels.public_record(full)
    assert "pid_start" not in public and "controller_start" not in public and "live" not in public
    assert public["pid"] == 1 and public["local_port"] == 41000


# --- ports and processes ----------------------------------------------------------------------------------


def test_free_port_is_free_and_accepts_nothing():
    port = tunnels.free_port()
    assert 1024 <= port <= 65535
    assert not tunnels.port_accepts(port, timeout=0.5)
    with socket.socket() as server:
        server.bind((tunnels.LOCAL_ADDRESS, port))  # nothing holds it
        server.listen(1)
        assert tunnels.port_accepts(port, timeout=0.5)


def test_free_ports_differ_while_held():
    held = []
    try:
        for _attempt in range(5):
            port = tunnels.free_port()
            server = socket.socket()
            server.bind((tunnels.LOCAL_ADDRESS, port))
            held.append(server)
        assert len({s.getsockname()[1] for s in held}) == 5
    finally:
        for server in held:
            server.close()


def test_process_identity():
    me = tunnels.process_start(os.getpid())
    assert me is not None and me > 0
    assert tunnels.alive(os.getpid(), me)
    assert not tunnels.alive(os.getpid(), me + 1)  # same PID, another start: a reused PID
    assert tunnels.process_start(None) is None and tunnels.process_start(0) is None


def test_a_zombie_is_not_alive():
    child = subprocess.Popen([sys.executable, "-c", "pass"])  # pylint: disable=consider-using-with
    start = tunnels.process_start(child.pid)
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
    assert not tunnels.alive(child.pid, start)
    child.wait()
    assert tunnels.process_start(child.pid) is None


def test_find_plugin(tmp_path, monkeypatch):
    plugin = tmp_path / "session-manager-plugin"
    plugin.write_text("#!/bin/sh\n")
    plugin.chmod(0o755)
    assert tunnels.find_plugin(str(plugin)) == str(plugin)
    with pytest.raises(tunnels.TunnelError, match="is not an executable file"):
        tunnels.find_plugin(str(tmp_path / "missing"))
    monkeypatch.setattr(_plugin_path, "DEFAULT_PATH", str(tmp_path / "nowhere"))
    monkeypatch.delenv("AWS_SESSION_MANAGER_PLUGIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert tunnels.find_plugin(None) == str(plugin)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(tunnels.TunnelError, match="SessionManagerPlugin is not found"):
        tunnels.find_plugin(None)


# --- records ----------------------------------------------------------------------------------------------


def test_records_round_trip_and_liveness(tmp_path):
    records = tunnels.Records(str(tmp_path / "tunnels"))
    records.ensure()
    assert oct(os.stat(records.directory).st_mode & 0o777) == "0o700"
    mine = record(pid=os.getpid(), pid_start=tunnels.process_start(os.getpid()))
    gone = record(local_port=41001, pid=os.getpid(), pid_start=1)
    records.save(mine)
    records.save(gone)
    (tmp_path / "tunnels" / "tunnel-41002.json").write_text("{not json")
    found = {r["local_port"]: r["live"] for r in records.all()}
    assert found == {41000: True, 41001: False}
    assert oct(os.stat(records.path(41000)).st_mode & 0o777) == "0o600"

    records.remove(mine, only_if_pid=12345)  # another supervisor's record now: kept
    assert os.path.exists(records.path(41000))
    records.remove(mine, only_if_pid=os.getpid())
    assert not os.path.exists(records.path(41000))
    assert [r["local_port"] for r in records.all()] == [41001]


def test_no_directory_no_records(tmp_path):
    assert not tunnels.Records(str(tmp_path / "none")).all()


def test_log_tail(tmp_path):
    log = tmp_path / "t.log"
    log.write_text("\n".join(f"line {i}" for i in range(20)) + "\n\n")
    assert tunnels.log_tail(str(log), 2) == "line 18 | line 19"
    assert tunnels.log_tail(str(tmp_path / "missing")) == "(no log)"


def test_old_logs_of_closed_tunnels_are_pruned(tmp_path):
    records = tunnels.Records(str(tmp_path))
    for port in (41000, 41001, 41002):
        (tmp_path / f"tunnel-{port}.log").write_text("log\n")
    (tmp_path / "tunnel-41003.log").write_text("recent\n")
    (tmp_path / "other.log").write_text("not ours\n")
    old = 8 * 86400
    for port in (41000, 41001, 41002):
        os.utime(tmp_path / f"tunnel-{port}.log", (os.path.getmtime(tmp_path / "other.log") - old,) * 2)
    os.utime(tmp_path / "other.log", (os.path.getmtime(tmp_path / "other.log") - old,) * 2)
    records.prune_logs({41001})  # 41001 is open: its log stays, however old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.log", "tunnel-41001.log", "tunnel-41003.log"]


# --- the transport ----------------------------------------------------------------------------------------

PLUGIN_UTILS = os.path.join(os.path.dirname(os.path.abspath(tunnels.__file__)), "..", "plugin_utils")


@pytest.mark.parametrize("option, native_problem, plugin, expected", [
    (None, "", None, "native"),
    ("", "", "/usr/local/bin/session-manager-plugin", "native"),
    (None, "no websockets", "/usr/local/bin/session-manager-plugin", "plugin"),
    ("native", "", None, "native"),
    ("plugin", "", None, "plugin"),  # find_plugin then names the missing plugin
])
def test_the_transport_is_the_option_else_native_where_it_can_run(option, native_problem, plugin, expected):
    assert tunnels.choose_transport(option, native_problem, plugin) == expected


@pytest.mark.parametrize("option, message", [
    ("native", "transport native cannot run: no websockets; or set transport: plugin"),
    (None, "cannot reach Session Manager: no websockets, and no session-manager-plugin was found. Install websockets"),
    ("ssh", "transport must be one of native, plugin, not 'ssh'"),
])
def test_a_transport_that_cannot_run_is_named_with_the_fix(option, message):
    with pytest.raises(tunnels.TunnelError, match=message.replace(".", r"\.")):
        tunnels.choose_transport(option, "no websockets", None)


def test_the_native_forwarder_loads_from_the_directory_the_action_names():
    forward, problem = tunnels.load_native(PLUGIN_UTILS)
    assert problem == "" and forward.__name__ == "bastionless_port_forward"
    assert hasattr(forward, "PortForwarder") and forward.MUX_AFTER == "3.0.196.0"


@pytest.mark.parametrize("directory", [None, "", "/nonexistent"])
def test_without_the_action_plugin_the_native_forwarder_is_missing_by_name(directory):
    forward, problem = tunnels.load_native(directory)
    assert forward is None and "run the module as bastionless.ssm.ssm_tunnel" in problem


def test_the_module_falls_back_to_the_plugin_only_when_native_cannot_run(tmp_path):
    plugin = tmp_path / "session-manager-plugin"
    plugin.write_text("#!/bin/sh\n")
    plugin.chmod(0o755)
    assert ssm_tunnel.choose_transport(params(_native_client=PLUGIN_UTILS))[0] == "native"
    assert ssm_tunnel.choose_transport(params(_native_client=None, plugin=str(plugin))) == ("plugin", None,
                                                                                            str(plugin))
    with pytest.raises(tunnels.TunnelError, match="transport native cannot run: the native port forwarder was not"):
        ssm_tunnel.choose_transport(params(_native_client=None, transport="native"))


# --- bounded waits ----------------------------------------------------------------------------------------


def test_a_native_tunnel_whose_service_never_answers_stops_at_once(tmp_path):
    """The supervisor opens the data channel in a thread: a stop (the module gave up at wait_timeout) ends a tunnel
    whose service never completes even the WebSocket's upgrade, and is no failure of its own."""
    forward, problem = tunnels.load_native(PLUGIN_UTILS)
    assert problem == ""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # takes the connection, never answers
        response = {"SessionId": "s-1", "TokenValue": "t", "StreamUrl": f"ws://127.0.0.1:{silent.getsockname()[1]}/"}
        with open(tmp_path / "tunnel.log", "w", encoding="utf-8") as log:
            carrier = tunnels.NativeCarrier(forward, response, 0, lambda: None, log)
            carrier.open()  # returns at once: the WebSocket's open timeout is 45 s
            assert carrier.ended() is None
            carrier.stop()
            assert carrier.ended() == "stopped" and carrier.failed == ""


def test_the_local_port_that_never_accepts_names_wait_timeout_and_the_log(tmp_path):
    log = tmp_path / "tunnel-1.log"
    log.write_text("2025-01-31T08:00:00+00:00 ssm_tunnel: starting AWS-StartPortForwardingSession\n")
    record = {"local_port": tunnels.free_port(), "pid": os.getpid(), "pid_start": tunnels.process_start(os.getpid()),
              "log": str(log)}
    assert tunnels.wait_ready(record, 0.2, 3) == (
        f"the local port {record['local_port']} did not accept connections within 3 s (wait_timeout): the node or the "
        "service did not open the session's data channel in time. Raise wait_timeout if they are only slow; the "
        "tunnel's log: 2025-01-31T08:00:00+00:00 ssm_tunnel: starting AWS-StartPortForwardingSession")
