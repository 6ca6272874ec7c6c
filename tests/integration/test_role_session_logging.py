"""bastionless.ssm.session_logging against the lab: a session's transcript lands in the bucket, encrypted with the
role's key, and in the log group; Run As follows the preferences; check mode and bad input (idempotence: test_site.py's
second site.yml run, and the molecule scenario)."""

import json
import os

import pytest
from ansible_cli import run, run_cases
from ssm_lab.harness.testing import running_lab, wait_until

PLAYBOOK = os.path.join(os.path.dirname(__file__), "playbooks", "session_logging.yml")
BUCKET = "bastionless-lab-audit"
GROUP = "/bastionless/ssm/sessions"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with running_lab(tmp_path_factory.mktemp("lab"), "--nodes", "1", "--provisioned") as lab:
        # the lab inventory's connection checks its transfer bucket even for raw
        lab.client("s3").create_bucket(Bucket="bastionless-lab-transfer")
        yield lab


def _apply(lab, check=True, check_mode=False, **extra):
    argv = ["ansible-playbook", "-i", "localhost,", PLAYBOOK, "-e", json.dumps({"session_logging_bucket": BUCKET, **extra})]
    if check_mode:
        argv.append("--check")
    output, recap = run(lab, *argv, check=check)
    return output, recap.get("localhost", {})


def _session(lab, command):
    output, recap = run(lab, "ansible", "-i", "inventories/lab", "all", "-m", "ansible.builtin.raw", "-a", command)
    return output


def _key_arn(lab):
    return lab.client("kms").describe_key(KeyId="alias/bastionless-ssm-sessions")["KeyMetadata"]["Arn"]


def _preferences(lab):
    content = lab.client("ssm").get_document(Name="SSM-SessionManagerRunShell")["Content"]
    return json.loads(content)["inputs"]


def test_check_mode_on_a_fresh_lab_predicts_and_changes_nothing(lab):
    output, recap = _apply(lab, check_mode=True)
    assert recap["failed"] == 0 and recap["changed"] >= 4, output
    assert BUCKET not in [b["Name"] for b in lab.client("s3").list_buckets()["Buckets"]]
    assert lab.client("logs").describe_log_groups(logGroupNamePrefix=GROUP)["logGroups"] == []
    assert lab.client("kms").list_aliases()["Aliases"] == [] or "alias/bastionless-ssm-sessions" not in [
        a["AliasName"] for a in lab.client("kms").list_aliases()["Aliases"]]


def test_the_role_sets_up_logging(lab):  # a second run: test_site.py's second site.yml run; the molecule scenario
    output, recap = _apply(lab)
    assert recap["failed"] == 0, output
    key = _key_arn(lab)
    assert lab.client("kms").get_key_rotation_status(KeyId=key)["KeyRotationEnabled"]
    encryption = lab.client("s3").get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert encryption["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert encryption["BucketKeyEnabled"] is True
    block = lab.client("s3").get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"]
    assert all(block.values())
    policy = json.loads(lab.client("s3").get_bucket_policy(Bucket=BUCKET)["Policy"])
    assert policy["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    [group] = lab.client("logs").describe_log_groups(logGroupNamePrefix=GROUP)["logGroups"]
    assert group["kmsKeyId"] == key and group["retentionInDays"] == 365
    inputs = _preferences(lab)
    assert inputs["s3BucketName"] == BUCKET and inputs["cloudWatchLogGroupName"] == GROUP
    assert inputs["s3EncryptionEnabled"] is True and inputs["cloudWatchEncryptionEnabled"] is True


def test_a_session_leaves_its_transcript_in_the_bucket_and_the_log_group(lab):
    marker = "audited-by-bastionless-4711"
    _session(lab, f"echo {marker}")
    s3 = lab.client("s3")

    def transcripts():
        found = s3.list_objects_v2(Bucket=BUCKET, Prefix="sessions/").get("Contents", [])
        return [o["Key"] for o in found if marker in s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read().decode()]

    [key] = wait_until(transcripts, timeout=30, what="the transcript in S3")
    head = s3.head_object(Bucket=BUCKET, Key=key)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"].endswith(_key_arn(lab).split("/")[-1])
    logs = lab.client("logs")

    def events():
        streams = logs.describe_log_streams(logGroupName=GROUP)["logStreams"]
        return [s for s in streams for e in logs.get_log_events(logGroupName=GROUP, logStreamName=s["logStreamName"])["events"]
                if marker in e["message"]]

    wait_until(events, timeout=30, what="the session in CloudWatch Logs")


def test_run_as_runs_sessions_as_the_default_user(lab):
    run(lab, "ansible", "-i", "inventories/lab", "all", "-b", "-m", "ansible.builtin.raw",
        "-a", "id -u auditor >/dev/null 2>&1 || useradd -m -s /bin/bash auditor")
    output, recap = _apply(lab, session_logging_run_as_enabled=True, session_logging_run_as_default_user="auditor")
    assert recap["failed"] == 0 and recap["changed"] >= 1, output
    assert _preferences(lab)["runAsDefaultUser"] == "auditor"
    try:
        assert "auditor" in _session(lab, "whoami")
    finally:
        output, recap = _apply(lab)
        assert recap["failed"] == 0, output


# The bad inputs, all in one run (each case a host of its own).
BAD_INPUT = {
    "idle-timeout": ({"session_logging_idle_timeout": 61},
                     "session_logging_idle_timeout: 61 is out of range; AWS accepts 1 to 60 minutes"),
    "bucket-name": ({"session_logging_bucket": "Bad_Bucket"},
                    "session_logging_bucket: Bad_Bucket is not a bucket name AWS accepts"),
    "run-as-user": ({"session_logging_run_as_default_user": "9ops"},
                    "session_logging_run_as_default_user: 9ops is not a user name Linux accepts"),
    "missing-key": ({"session_logging_kms_key_arn":
                     "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"},
                    "is not an enabled key in us-east-1"),
    "missing-role": ({"session_logging_key_user_role_names": ["no-such-role"]},
                     "session_logging_key_user_role_names: no-such-role does not exist"),
}


def test_bad_input_one_clear_error_and_nothing_changed(lab, tmp_path):
    before = _preferences(lab)
    buckets = sorted(b["Name"] for b in lab.client("s3").list_buckets()["Buckets"])
    cases = run_cases(lab, tmp_path, "bastionless.ssm.session_logging",
                      {name: extra for name, (extra, _message) in BAD_INPUT.items()},
                      role_vars={"session_logging_bucket": BUCKET, "session_logging_key_user_role_names": ["ssm-lab-node"]})
    for name, (_extra, message) in BAD_INPUT.items():
        assert message in cases.only_failure(name), (name, cases.failures.get(name))
    assert _preferences(lab) == before
    assert sorted(b["Name"] for b in lab.client("s3").list_buckets()["Buckets"]) == buckets
