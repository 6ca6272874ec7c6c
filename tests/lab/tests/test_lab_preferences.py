"""Session Manager preferences (the SSM-SessionManagerRunShell Session document): transcripts to encrypted S3
and CloudWatch Logs, and Run As. Each test deletes the document again, so the other tests see no preferences."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import secrets
import select
import struct
import subprocess
import termios
import time

import pytest
from labhelpers import wait_until
from ssm_lab.harness import testing

PREFERENCES = "SSM-SessionManagerRunShell"


@pytest.fixture
def preferences(main_lab):
    """``preferences(inputs)`` writes the account's preferences document; it is deleted at teardown."""
    ssm = main_lab.ssm

    def write(inputs: dict) -> None:
        content = json.dumps({"schemaVersion": "1.0", "description": "lab session preferences",
                              "sessionType": "Standard_Stream", "inputs": inputs})
        ssm.create_document(Name=PREFERENCES, DocumentType="Session", DocumentFormat="JSON", Content=content)

    yield write
    try:
        ssm.delete_document(Name=PREFERENCES)
    except ssm.exceptions.InvalidDocument:
        pass


def _session_output(lab, shell, node: str, script: str, ssm=None) -> tuple[str, str]:
    """Run ``script`` in a shell session, exit, and return (session id, plugin output)."""
    response, process = shell(lab, node, ssm)
    process.write(script + "\nexit\n")
    process.wait_for(rf"Exiting session with sessionId: {response['SessionId']}\.")
    assert process.wait_exit() == 0
    return response["SessionId"], process.output


def _whoami(lab, shell, node: str, ssm=None) -> str:
    _session_id, output = _session_output(lab, shell, node, "echo user=$(whoami)=", ssm)
    users = [line.split("=")[1] for line in output.splitlines() if line.startswith("user=")]
    assert len(users) == 1, output
    return users[0]


def test_default_user_is_ssm_user(main_lab, shell):
    assert _whoami(main_lab, shell, main_lab.ec2_ids[4]) == "ssm-user"


def test_run_as_default_user_and_run_as_tag(main_lab, shell, preferences):
    node = main_lab.ec2_ids[4]
    token = secrets.token_hex(3)
    default_user, tagged_user = "labops", f"alice{token}"
    main_lab.run_ok(node, f"id -u {default_user} >/dev/null 2>&1 || useradd -m {default_user}",
                    f"useradd -m {tagged_user}")
    preferences({"runAsEnabled": True, "runAsDefaultUser": default_user})

    assert _whoami(main_lab, shell, node) == default_user

    iam = main_lab.client("iam")
    iam_user = f"lab-runas-{token}"
    iam.create_user(UserName=iam_user, Tags=[{"Key": "SSMSessionRunAs", "Value": tagged_user}])
    # The lab judges an IAM user's own policies (test_lab_iam_enforcement.py): this one may start sessions and
    # open their data channels.
    iam.put_user_policy(UserName=iam_user, PolicyName="start-sessions", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["ssm:StartSession", "ssmmessages:OpenDataChannel"], "Resource": "*"}]}))
    key = iam.create_access_key(UserName=iam_user)["AccessKey"]
    as_user = main_lab.client("ssm", access_key=key["AccessKeyId"], secret_key=key["SecretAccessKey"])
    assert _whoami(main_lab, shell, node, as_user) == tagged_user

    sessions = main_lab.ssm.describe_sessions(State="History", Filters=[{"key": "Target", "value": node}])
    owners = {s["Owner"] for s in sessions["Sessions"]}
    assert f"arn:aws:iam::123456789012:user/{iam_user}" in owners


class Terminal:
    """A command on a pty of its own, as a user's terminal runs it: what it prints, keys typed into it."""

    def __init__(self, argv: list[str], env: dict) -> None:
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.process = subprocess.Popen(argv, stdin=self.slave, stdout=self.slave, stderr=self.slave, env=env,
                                        preexec_fn=self._own_terminal)
        self.output = b""

    @staticmethod
    def _own_terminal() -> None:
        """In the child: a session of its own, whose controlling terminal is the pty (Ctrl-C then signals it)."""
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    def read_until(self, pattern: str, timeout: float = 20.0) -> re.Match:
        regex, deadline = re.compile(pattern), time.monotonic() + timeout
        while not (found := regex.search(self.output.decode("utf-8", "replace"))):
            assert time.monotonic() < deadline, f"no {pattern!r} on the terminal: {self.output!r}"
            if select.select([self.master], [], [], 0.2)[0]:
                self.output += os.read(self.master, 65536)
        return found

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 9)
            self.process.wait(10)
        os.close(self.master)
        os.close(self.slave)


def test_ssm_lab_shell_opens_a_terminal_as_an_iam_user_with_her_run_as_user(main_lab, preferences):
    """docs/run-as.md's last step in the lab: ``ssm-lab shell NODE --as alice`` on a terminal; her key is made for
    the session and deleted after it, and the terminal's own echo comes back."""
    node, token = main_lab.ec2_ids[4], secrets.token_hex(3)
    os_user, iam_user = f"sh{token}", f"lab-shell-{token}"
    main_lab.run_ok(node, f"useradd -m {os_user}")
    preferences({"runAsEnabled": True, "runAsDefaultUser": "ssm-user"})
    iam = main_lab.client("iam")
    iam.create_user(UserName=iam_user, Tags=[{"Key": "SSMSessionRunAs", "Value": os_user}])
    iam.put_user_policy(UserName=iam_user, PolicyName="sessions", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["ssm:StartSession", "ssmmessages:OpenDataChannel"], "Resource": "*"}]}))
    ssm_lab = [testing.SSM_LAB, "--state-dir", main_lab.state_dir, "shell"]
    terminal = Terminal([*ssm_lab, node, "--as", iam_user], testing.clean_environ())
    try:
        started = terminal.read_until(r"Starting session with SessionId: (\S+)")
        assert started.group(1).startswith(iam_user + "-")
        terminal.read_until(r"\$ $")  # the node's prompt: from here on only the node's shell echoes what is typed
        terminal.type("echo user=$(whoami)=\n")
        assert terminal.read_until(r"user=(\w[\w-]*)=").group(1) == os_user
        assert terminal.output.count(b"echo user=") == 1  # the plugin turned the terminal's own echo off
        terminal.type("sleep 30\n")
        time.sleep(1)
        terminal.type("\x03")  # Ctrl-C: SIGINT for the terminal's processes; it ends the node's sleep, not the session
        # The next prompt before the next line: the node's terminal discards what was typed ahead of a Ctrl-C.
        terminal.read_until(r"\^C[\s\S]*\$ $")
        terminal.type("echo after=$?\n")
        terminal.read_until(r"after=130")
        terminal.type("exit\n")
        terminal.read_until(rf"Exiting session with sessionId: {started.group(1)}\.")
        assert terminal.process.wait(15) == 0
        assert termios.tcgetattr(terminal.slave)[3] & termios.ECHO  # the plugin gave the terminal back
    finally:
        terminal.close()
    assert iam.list_access_keys(UserName=iam_user)["AccessKeyMetadata"] == []

    missing = subprocess.run([*ssm_lab, node, "--as", f"nobody-{token}"], capture_output=True, text=True,
                             env=testing.clean_environ(), timeout=60, check=False)
    assert missing.returncode == 2
    assert missing.stderr.startswith(f"ssm-lab: --as nobody-{token}: the lab has no IAM user nobody-{token}; create "
                                     "it with .venv/bin/python -c 'import boto3; ")


def test_run_as_user_missing_on_the_node_fails_the_session(main_lab, shell, plugin, preferences):
    node = main_lab.ec2_ids[5]
    preferences({"runAsEnabled": True, "runAsDefaultUser": "nobody-here"})
    response = main_lab.ssm.start_session(Target=node)
    process = plugin(main_lab, response, {"Target": node})
    assert process.wait_exit() == 0  # AWS's plugin exits 0 and prints the reason
    assert "RunAs user nobody-here does not exist" in process.output


@pytest.fixture
def kms_key(main_lab):
    return main_lab.client("kms").create_key(Description="lab session transcripts")["KeyMetadata"]["Arn"]


def test_transcripts_land_in_encrypted_s3_and_cloudwatch(main_lab, shell, preferences, kms_key):
    token = secrets.token_hex(4)
    bucket, group, prefix = f"lab-transcripts-{token}", f"/lab/sessions/{token}", f"sessions/{token}"
    s3, logs = main_lab.client("s3"), main_lab.client("logs")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [
        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": kms_key}}]})
    logs.create_log_group(logGroupName=group, kmsKeyId=kms_key)
    preferences({"s3BucketName": bucket, "s3KeyPrefix": prefix, "s3EncryptionEnabled": True,
                 "cloudWatchLogGroupName": group, "cloudWatchEncryptionEnabled": True})

    marker = f"transcript-{token}-$((6*7))"
    expected = f"transcript-{token}-42"
    session_id, output = _session_output(main_lab, shell, main_lab.ec2_ids[4], f"echo {marker}")
    assert expected in output

    key = f"{prefix}/{session_id}.log"

    def s3_transcript():
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode() if listed else None

    transcript = wait_until(s3_transcript, what=f"s3://{bucket}/{key}")
    assert expected in transcript

    def log_events():
        streams = logs.describe_log_streams(logGroupName=group, logStreamNamePrefix=session_id)["logStreams"]
        if not streams:
            return None
        events = logs.get_log_events(logGroupName=group, logStreamName=session_id)["events"]
        return "".join(e["message"] for e in events) or None

    logged = wait_until(log_events, what=f"log stream {session_id} in {group}")
    assert expected in logged
    assert [s["logStreamName"] for s in logs.describe_log_streams(logGroupName=group)["logStreams"]] == [session_id]

    ended = main_lab.ssm.describe_sessions(State="History", Filters=[{"key": "SessionId", "value": session_id}])
    assert ended["Sessions"][0]["OutputUrl"]["S3OutputUrl"].endswith(f"/{key}")

    # ssm-lab summary (make demo's last step, and the README's) counts them where the preferences say, and sums up
    # the recap of a playbook's output.
    log = os.path.join(main_lab.state_dir, f"playbook-{token}.log")
    with open(log, "w", encoding="utf-8") as handle:
        handle.write("PLAY RECAP *****\ni-0aaa1111bbbb2222c               : ok=12   changed=3    unreachable=0    "
                     "failed=0    skipped=1\nlocalhost                  : ok=5    changed=0    unreachable=0    "
                     "failed=1    skipped=0\n")
    summary = main_lab.cli("summary", "--playbook-log", log).stdout
    assert f"playbook-{token}.log: changed: i-0aaa1111bbbb2222c 3, localhost 0; failed or unreachable: localhost\n" \
        in summary, summary
    assert f"transcripts: s3://{bucket}/{prefix} (1 objects), CloudWatch Logs {group} (1 streams)\n" in summary, summary
    assert re.search(r"^nodes Online in SSM: \d+ of \d+$", summary, re.M), summary
    assert re.search(r"^SSH: \d+ AWS-StartSSHSession sessions, 0 nodes with sshd, port 22 on this machine closed$",
                     summary, re.M), summary


def test_unencrypted_log_group_refuses_the_session(main_lab, plugin, preferences):
    # A log group has no KMS key unless given one; with cloudWatchEncryptionEnabled the agent refuses it.
    group = f"/lab/plain-{secrets.token_hex(4)}"
    main_lab.client("logs").create_log_group(logGroupName=group)
    preferences({"cloudWatchLogGroupName": group, "cloudWatchEncryptionEnabled": True})
    node = main_lab.ec2_ids[4]
    response = main_lab.ssm.start_session(Target=node)
    process = plugin(main_lab, response, {"Target": node})
    assert process.wait_exit() == 0
    assert f"unable to validate encryption on CloudWatch Logs log group {group}" in process.output
    assert response["SessionId"] in process.output
    failed = wait_until(lambda: main_lab.ssm.describe_sessions(
        State="History", Filters=[{"key": "SessionId", "value": response["SessionId"]}])["Sessions"],
        what="the refused session in the history")
    assert failed[0]["Status"] == "Failed"
