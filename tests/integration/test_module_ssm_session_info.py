"""bastionless.ssm.ssm_session_info and ssm_session against the lab, through ansible-playbook: the history shows the
sessions the tests opened (a tunnel by one IAM user, connection sessions by another) with their owners, the
filters select them, and ssm_session ends sessions by ID or by node, with check mode and idempotence; the
documented examples."""

import json

import pytest
from ansible_cli import call_module, call_module_cases, controller_play, module_examples, run, save_task
from ssm_lab.harness.testing import EchoServer, accepts, running_lab, wait_until

INFO = "bastionless.ssm.ssm_session_info"
END = "bastionless.ssm.ssm_session"
TUNNEL = "bastionless.ssm.ssm_tunnel"
TO_HOST = "AWS-StartPortForwardingSessionToRemoteHost"
SHELL = "SSM-SessionManagerRunShell"


class Caller:
    """The lab as seen by one IAM user: ansible runs with that user's access key."""

    def __init__(self, lab, name: str) -> None:
        iam = lab.client("iam")
        self.arn = iam.create_user(UserName=name)["User"]["Arn"]
        # The lab judges an IAM user's own policies; what ssm_session_info lists is the test, so both may do anything.
        iam.put_user_policy(UserName=name, PolicyName="everything", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        self.lab = lab
        self.keys = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}

    def environ(self, **extra):
        return self.lab.environ(**self.keys, **extra)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with running_lab(tmp_path_factory.mktemp("lab"), "--nodes", "2", "--provisioned") as lab:
        lab.client("s3").create_bucket(Bucket="bastionless-lab-transfer")  # for the aws_ssm connection
        yield lab


@pytest.fixture(scope="module")
def nodes(lab) -> list:
    return sorted(n for n in lab.network["nodes"] if n.startswith("i-"))


@pytest.fixture(scope="module")
def echo_port():
    with EchoServer() as server:
        yield server.port


def play(lab, tmp_path, module: str, args: dict, *flags: str, fails: bool = False):
    """Run ``module`` once with ``args`` on the controller; return (result, output)."""
    result, output, _recap = call_module(lab, tmp_path, module, args, *flags, fails=fails)
    return result, output


def open_tunnel(lab, tmp_path, node: str, port: int, **extra) -> dict:
    """A tunnel kept after its play, so that its session stays active."""
    args = {"target": node, "remote_host": "127.0.0.1", "remote_port": port, "keep_after_play": True,
            "max_lifetime": 300, "state_dir": str(tmp_path / "tunnels"), **extra}
    result, _output = play(lab, tmp_path, TUNNEL, args)
    return result["tunnel"]


def active_ids(lab, **filters) -> list:
    sessions = lab.client("ssm").describe_sessions(
        State="Active", Filters=[{"key": k, "value": v} for k, v in filters.items()])["Sessions"]
    return [s["SessionId"] for s in sessions]


@pytest.fixture(scope="module")
def history(lab, nodes, echo_port, tmp_path_factory):
    """Sessions opened the ways users open them: alice through a tunnel to the first node, bob through the
    amazon.aws.aws_ssm connection to the second. Returns who opened what."""
    tmp_path = tmp_path_factory.mktemp("history")
    alice, bob = Caller(lab, "alice"), Caller(lab, "bob")
    output, recap = controller_play(alice, tmp_path, [
        {"name": "Open a tunnel", TUNNEL: {"target": nodes[0], "remote_host": "127.0.0.1", "remote_port": echo_port,
                                           "reason": "alice looks at the echo service",
                                           "state_dir": str(tmp_path / "tunnels")},
         "register": "__tunnel"},
        save_task("__tunnel", tmp_path / "tunnel.json"),
    ])
    assert recap["localhost"]["failed"] == 0, output
    tunnel = json.loads((tmp_path / "tunnel.json").read_text())["tunnel"]
    output, recap = run(bob, "ansible", "-i", "inventories/lab", nodes[1], "-m", "ansible.builtin.ping")
    assert recap == {} or recap[nodes[1]]["failed"] == 0, output
    assert '"ping": "pong"' in output, output
    wait_until(lambda: not active_ids(lab, Target=nodes[0]) and not active_ids(lab, Target=nodes[1]),
               what="the sessions to end")
    return {"alice": alice.arn, "bob": bob.arn, "tunnel": tunnel}


def test_history_shows_the_sessions_the_tests_opened_with_their_owners(lab, nodes, history, tmp_path):
    result, output = play(lab, tmp_path, INFO, {"state": "history"})
    assert result["changed"] is False
    sessions = result["sessions"]
    [tunnel] = [s for s in sessions if s["session_id"] == history["tunnel"]["session_id"]]
    assert tunnel["owner"] == history["alice"] == "arn:aws:iam::123456789012:user/alice"
    assert (tunnel["target"], tunnel["document_name"]) == (nodes[0], TO_HOST)
    assert (tunnel["status"], tunnel["state"]) == ("Terminated", "history")
    assert tunnel["reason"] == "alice looks at the echo service"
    assert tunnel["start_date"] < tunnel["end_date"]
    assert tunnel["session_id"].startswith("alice-")
    bobs = [s for s in sessions if s["owner"] == history["bob"]]
    assert bobs and {(s["target"], s["document_name"], s["status"]) for s in bobs} == {(nodes[1], SHELL,
                                                                                        "Terminated")}
    assert all(s["session_id"].startswith("bob-") for s in bobs)
    assert {s["owner"] for s in sessions} == {history["alice"], history["bob"]}
    starts = [s["start_date"] for s in sessions]
    assert starts == sorted(starts, reverse=True)  # newest first


FILTERS = [
    ({"owner": "arn:aws:iam::123456789012:user/alice"}, {"alice"}),
    ({"owner": "arn:aws:iam::123456789012:user/bob"}, {"bob"}),
    ({"target": "NODE1"}, {"bob"}),
    ({"document_name": TO_HOST}, {"alice"}),
    ({"document_name": SHELL, "target": "NODE0"}, set()),
    ({"status": "Terminated"}, {"alice", "bob"}),
    ({"status": "Failed"}, set()),
    ({"invoked_after": "2000-01-01"}, {"alice", "bob"}),
    ({"invoked_after": "2999-01-01T00:00:00Z"}, set()),
    ({"invoked_before": "2000-01-01T00:00:00+02:00"}, set()),
    ({"state": "active"}, set()),
]


@pytest.fixture(scope="module")
def filtered(lab, nodes, history, tmp_path_factory):  # pylint: disable=redefined-outer-name,unused-argument
    """Every case of FILTERS, run once in one play after the history is made."""
    cases = [{"state": "history", **{k: {"NODE0": nodes[0], "NODE1": nodes[1]}.get(v, v) for k, v in args.items()}}
             for args, _who in FILTERS]
    return call_module_cases(lab, tmp_path_factory.mktemp("filters"), INFO, cases)


@pytest.mark.parametrize("case", range(len(FILTERS)))
def test_filters(filtered, case):
    result = filtered.results[case]
    assert not result.get("failed"), filtered.output
    assert {s["owner"].rsplit("/", 1)[1] for s in result["sessions"]} == FILTERS[case][1]


def test_by_session_id_and_max_results(lab, history, tmp_path):
    session_id = history["tunnel"]["session_id"]
    result, output = play(lab, tmp_path, INFO, {"session_id": session_id})
    assert [s["session_id"] for s in result["sessions"]] == [session_id]
    result, output = play(lab, tmp_path, INFO, {"state": "history", "max_results": 1})
    assert len(result["sessions"]) == 1


def test_active_sessions_and_ending_one_by_id(lab, nodes, history, echo_port, tmp_path):
    tunnel = open_tunnel(lab, tmp_path, nodes[0], echo_port, reason="to be ended")
    output, recap = controller_play(lab, tmp_path, [
        {"name": "List", INFO: {"state": "active", "target": nodes[0]}, "register": "__active"},
        {"name": "End it, checking first", END: {"session_ids": [tunnel["session_id"]]}, "check_mode": True,
         "register": "__check"},
        {"name": "List again", INFO: {"state": "active"}, "register": "__still"},
        {"name": "End it", END: {"session_ids": [tunnel["session_id"]]}, "register": "__end"},
        {"name": "End it again, and one that never was",
         END: {"session_ids": [tunnel["session_id"], "nobody-0123456789abcdef0"]}, "register": "__again"},
        save_task("{'active': __active, 'check': __check, 'still': __still, 'end': __end, 'again': __again}",
                  tmp_path / "results.json"),
    ])
    assert recap["localhost"]["failed"] == 0, output
    results = json.loads((tmp_path / "results.json").read_text())
    [active] = results["active"]["sessions"]
    assert (active["session_id"], active["status"], active["state"]) == (tunnel["session_id"], "Connected", "active")
    assert active["end_date"] is None and active["reason"] == "to be ended"
    assert results["check"]["changed"] and results["check"]["terminated"] == [tunnel["session_id"]]
    assert [s["session_id"] for s in results["still"]["sessions"]] == [tunnel["session_id"]]
    end = results["end"]
    assert end["changed"] and end["terminated"] == [tunnel["session_id"]]
    assert [(s["status"], s["state"]) for s in end["sessions"]] == [("Terminated", "history")]
    again = results["again"]
    assert not again["changed"] and again["terminated"] == []
    assert again["already_ended"] == [tunnel["session_id"]]
    assert again["not_found"] == ["nobody-0123456789abcdef0"]
    # Ending the session ended the tunnel that rode on it.
    wait_until(lambda: not accepts(tunnel["local_port"]), what="the tunnel of the ended session to close")


def test_ending_every_session_to_a_node(lab, nodes, echo_port, tmp_path):
    first = open_tunnel(lab, tmp_path, nodes[1], echo_port, name="one")
    second = open_tunnel(lab, tmp_path, nodes[1], echo_port, name="two", local_port=None, remote_host="localhost")
    elsewhere = open_tunnel(lab, tmp_path, nodes[0], echo_port, name="three")
    try:
        result, output = play(lab, tmp_path, END, {"target": nodes[1]})
        assert result["changed"]
        assert sorted(result["terminated"]) == sorted([first["session_id"], second["session_id"]])
        assert active_ids(lab, Target=nodes[1]) == []
        assert active_ids(lab, Target=nodes[0]) == [elsewhere["session_id"]]
        result, output = play(lab, tmp_path, END, {"target": nodes[1]})
        assert not result["changed"] and result["terminated"] == []
    finally:
        play(lab, tmp_path, TUNNEL, {"state": "absent", "target": nodes[0], "state_dir": str(tmp_path / "tunnels")})


BAD_INPUT = [
    (INFO, {"invoked_after": "last tuesday"}, "invoked_after must be an ISO 8601 date or time"),
    (INFO, {"status": "Open"}, "value of status must be one of: Connected, Connecting"),
    (INFO, {"max_results": 0}, "max_results must be 1 or more"),
    (END, {}, "one of the following is required: session_ids, target, owner"),
    (END, {"session_ids": ["x"], "target": "i-0123456789abcdef0"},
     "parameters are mutually exclusive: session_ids|target"),
]


@pytest.fixture(scope="module")
def bad_input(lab, tmp_path_factory):
    """Every case of BAD_INPUT, run once in one play."""
    return call_module_cases(lab, tmp_path_factory.mktemp("bad_input"), [module for module, _a, _m in BAD_INPUT],
                             [args for _module, args, _message in BAD_INPUT])


BAD_INPUT_IDS = [f"{module.rsplit('.', 1)[1]}-{index}" for index, (module, _a, _m) in enumerate(BAD_INPUT)]


@pytest.mark.parametrize("case", range(len(BAD_INPUT)), ids=BAD_INPUT_IDS)
def test_bad_input(bad_input, case):
    result = bad_input.results[case]
    assert result.get("failed") is True, bad_input.output
    assert BAD_INPUT[case][2] in result["msg"], result["msg"]


@pytest.mark.parametrize("module", ["ssm_session_info", "ssm_session"])
def test_the_documented_examples_run(lab, nodes, history, tmp_path, module):
    tasks = module_examples(module)
    output, recap = controller_play(lab, tmp_path, tasks, "-i", "inventories/lab")
    assert recap["localhost"]["failed"] == 0, output
