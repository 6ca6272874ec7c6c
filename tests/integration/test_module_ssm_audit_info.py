"""bastionless.ssm.ssm_audit_info against the lab's CloudTrail, in one ansible-playbook run (check mode: the module
only reads), and playbooks/audit-report.yml in a second: two IAM users open sessions (alice a shell under Run As, which she ends herself; bob a port forward to
a remote host, which the administrator ends), alice runs a command, mallory is refused a session; the module joins
each with its principal, node name, document, forwarding, ending, Run As and transcript, and its filters by
principal, node and document select them. The trail and the sessions are made with boto3 (no playbook run)."""

import csv
import json

import pytest
from ansible_cli import call_module_cases, run
from ssm_lab.harness.testing import running_lab, wait_until

MODULE = "bastionless.ssm.ssm_audit_info"
TO_HOST = "AWS-StartPortForwardingSessionToRemoteHost"
SHELL = "SSM-SessionManagerRunShell"
BUCKET = "audit-transcripts"
GROUP = "/audit/sessions"


def _user(lab, name: str, allowed: bool = True, tags: dict | None = None) -> tuple:
    iam = lab.client("iam")
    arn = iam.create_user(UserName=name, Tags=[{"Key": k, "Value": v} for k, v in (tags or {}).items()])["User"]["Arn"]
    if allowed:
        iam.put_user_policy(UserName=name, PolicyName="everything", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return arn, lab.client("ssm", key["AccessKeyId"], key["SecretAccessKey"])


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with running_lab(tmp_path_factory.mktemp("lab"), "--nodes", "2", "--provisioned") as lab:
        yield lab


@pytest.fixture(scope="module")
def trail(lab):
    """What the audit must show: made through the lab's API as the users' clients make it."""
    ssm, ec2 = lab.client("ssm"), lab.client("ec2")
    web, db_host = sorted(n for n in lab.network["nodes"] if n.startswith("i-"))
    ec2.create_tags(Resources=[web], Tags=[{"Key": "Name", "Value": "web-1"}])
    ec2.create_tags(Resources=[db_host], Tags=[{"Key": "Name", "Value": "db-1"}])
    lab.client("s3").create_bucket(Bucket=BUCKET)
    lab.client("logs").create_log_group(logGroupName=GROUP)
    ssm.create_document(Name=SHELL, DocumentType="Session", DocumentFormat="JSON", Content=json.dumps({
        "schemaVersion": "1.0", "description": "audit test", "sessionType": "Standard_Stream",
        "inputs": {"s3BucketName": BUCKET, "s3KeyPrefix": "sessions", "s3EncryptionEnabled": False,
                   "cloudWatchLogGroupName": GROUP, "cloudWatchEncryptionEnabled": False,
                   "runAsEnabled": True, "runAsDefaultUser": "ops"}}))
    alice_arn, alice = _user(lab, "alice", tags={"SSMSessionRunAs": "alice_os"})
    bob_arn, bob = _user(lab, "bob")
    _mallory_arn, mallory = _user(lab, "mallory", allowed=False)
    shell = alice.start_session(Target=web, Reason="look at the logs")["SessionId"]
    forward = bob.start_session(Target=db_host, DocumentName=TO_HOST, Parameters={
        "host": ["db.internal"], "portNumber": ["5432"], "localPortNumber": ["15432"]})["SessionId"]
    with pytest.raises(Exception):
        mallory.start_session(Target=web)
    command = alice.send_command(InstanceIds=[db_host], DocumentName="AWS-RunShellScript", Comment="audit",
                                 Parameters={"commands": ["uptime", "id"]})["Command"]["CommandId"]
    alice.terminate_session(SessionId=shell)
    ssm.terminate_session(SessionId=forward)
    wait_until(lambda: not ssm.describe_sessions(State="Active")["Sessions"], what="the sessions to end")
    return {"web": web, "db_host": db_host, "alice": alice_arn, "bob": bob_arn, "shell": shell, "forward": forward,
            "command": command}


CASES = [
    {"start_time": "1h"},
    {"start_time": "1h", "principals": ["alice"]},
    {"start_time": "1h", "nodes": ["web-1"], "include_commands": False},
    {"start_time": "1h", "documents": [TO_HOST]},
    {"start_time": "100d", "principals": ["arn:aws:iam::123456789012:user/bob"]},
    {"start_time": "last tuesday"},
    {"start_time": "now", "end_time": "1h"},
]


@pytest.fixture(scope="module")
def results(lab, trail, tmp_path_factory):  # pylint: disable=redefined-outer-name,unused-argument
    """Every case of CASES in one play, in check mode."""
    return call_module_cases(lab, tmp_path_factory.mktemp("cases"), MODULE, CASES, "--check")


def _ok(results, case: int) -> dict:
    result = results.results[case]
    assert not result.get("failed"), results.output
    assert result["changed"] is False
    return result


def test_a_shell_session_with_its_principal_node_run_as_ending_and_transcript(results, trail):
    result = _ok(results, 0)
    [shell] = [s for s in result["sessions"] if s["session_id"] == trail["shell"]]
    assert shell["principal"]["arn"] == trail["alice"]
    assert (shell["principal"]["type"], shell["principal"]["name"], shell["principal"]["source_ip"]) == (
        "IAMUser", "alice", "127.0.0.1")
    assert shell["node"] == {"id": trail["web"], "name": "web-1"}
    assert (shell["document"], shell["forwarding"], shell["reason"]) == (SHELL, None, "look at the logs")
    assert shell["run_as"] == "alice_os"
    assert (shell["ended"], shell["status"]) == ("terminated", "Terminated")
    assert shell["terminated_by"]["arn"] == trail["alice"]
    assert shell["start_time"] <= shell["end_time"]
    assert shell["transcript"] == {"s3_bucket": BUCKET, "s3_key": f"sessions/{trail['shell']}.log",
                                   "log_group": GROUP, "log_stream": trail["shell"], "source": "session history"}
    assert result["history_covers_range"] is True and result["events_read"] >= 4


def test_a_port_forward_to_a_remote_host_ended_by_the_administrator(results, trail):
    result = _ok(results, 0)
    [forward] = [s for s in result["sessions"] if s["session_id"] == trail["forward"]]
    assert forward["principal"]["arn"] == trail["bob"]
    assert forward["node"] == {"id": trail["db_host"], "name": "db-1"}
    assert forward["forwarding"] == {"host": "db.internal", "port": "5432", "local_port": "15432"}
    assert forward["parameters"]["host"] == ["db.internal"]
    assert (forward["run_as"], forward["transcript"]) == (None, None)
    assert forward["ended"] == "terminated"
    assert forward["terminated_by"]["arn"] == "arn:aws:sts::123456789012:user/moto"


def test_the_command_with_its_text_and_targets_and_the_refused_session(results, trail):
    result = _ok(results, 0)
    [command] = result["commands"]
    assert command["command_id"] == trail["command"]
    assert command["principal"]["arn"] == trail["alice"]
    assert command["commands"] == ["uptime", "id"] and command["document"] == "AWS-RunShellScript"
    assert command["nodes"] == [{"id": trail["db_host"], "name": "db-1"}] and command["comment"] == "audit"
    [denied] = result["denied"]
    assert (denied["event"], denied["principal"]["name"], denied["node_ids"], denied["error_code"]) == (
        "StartSession", "mallory", [trail["web"]], "AccessDeniedException")


def test_filters_by_principal_node_and_document(results, trail):
    alice = _ok(results, 1)
    assert [s["session_id"] for s in alice["sessions"]] == [trail["shell"]]
    assert [c["command_id"] for c in alice["commands"]] == [trail["command"]] and alice["denied"] == []
    web = _ok(results, 2)
    assert [s["session_id"] for s in web["sessions"]] == [trail["shell"]]
    assert web["commands"] == [] and [d["principal"]["name"] for d in web["denied"]] == ["mallory"]
    to_host = _ok(results, 3)
    assert [s["session_id"] for s in to_host["sessions"]] == [trail["forward"]] and to_host["commands"] == []


def test_a_range_older_than_the_event_history_is_said_plainly(results, trail):
    result = _ok(results, 4)
    assert [s["session_id"] for s in result["sessions"]] == [trail["forward"]]
    assert result["history_covers_range"] is False
    assert any("keeps only the last 90 days" in w for w in result.get("warnings", [])), result


def test_bad_times_fail_with_the_option_and_the_fix(results):
    assert results.results[5]["failed"]
    assert results.results[5]["msg"].startswith("start_time must be 'now', a duration ago such as 30m")
    assert results.results[6]["failed"]
    assert "is after end_time" in results.results[6]["msg"]


def test_the_report_playbook_writes_the_page_the_tables_and_the_json(lab, trail, tmp_path):
    where = tmp_path / "report"
    output, recap = run(lab, "ansible-playbook", "playbooks/audit-report.yml", "-e", json.dumps({
        "bastionless_audit_start_time": "1h", "bastionless_audit_dir": str(where),
        "bastionless_audit_title": "Lab audit"}))
    assert recap["localhost"]["failed"] == 0, output
    assert "2 sessions, 1 commands and 1 refused calls from" in output
    data = json.loads((where / "audit.json").read_text())
    assert {s["session_id"] for s in data["sessions"]} == {trail["shell"], trail["forward"]}
    assert data["history_covers_range"] is True
    with open(where / "sessions.csv", encoding="utf-8", newline="") as handle:
        rows = {row["session_id"]: row for row in csv.DictReader(handle)}
    forward = rows[trail["forward"]]
    assert (forward["principal"], forward["forwarded_host"], forward["forwarded_port"], forward["node_name"]) == (
        trail["bob"], "db.internal", "5432", "db-1")
    assert rows[trail["shell"]]["transcript_s3"] == f"s3://{BUCKET}/sessions/{trail['shell']}.log"
    with open(where / "commands.csv", encoding="utf-8", newline="") as handle:
        [command] = list(csv.DictReader(handle))
    assert (command["command_id"], command["commands"]) == (trail["command"], "uptime\nid")
    page = (where / "audit.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<title>Lab audit</title>" in page
    assert f'data-session="{trail["forward"]}"' in page and f'data-session="{trail["shell"]}"' in page
