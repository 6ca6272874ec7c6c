"""bastionless.ssm.ssm_session_preferences against the lab, through ansible-playbook: the Session Manager
preferences document created, taken over, changed one input at a time, restored to AWS's defaults, and honoured
by real sessions. The tests build on each other in order, on a lab of their own (the document is account-wide).
"""

import ast
import json
import pathlib
import re
import time

import pytest
import yaml
from ansible_cli import call_module, call_module_cases, controller_play, run
from ssm_lab.harness.testing import running_lab
from ssm_lab.harness.testing import wait_until

MODULE = "bastionless.ssm.ssm_session_preferences"
MODULE_SOURCE = pathlib.Path(__file__).parents[2] / "plugins" / "modules" / "ssm_session_preferences.py"
NAME = "SSM-SessionManagerRunShell"
CUSTOM = "Lab-BreakGlass-Shell"
INVENTORY = "inventories/lab"
TRANSFER_BUCKET = "bastionless-lab-transfer"  # inventories/lab/group_vars/all.yml
RUN_AS_USER = "labops"
AWS_DEFAULTS = {
    "s3BucketName": "", "s3KeyPrefix": "", "s3EncryptionEnabled": True,
    "cloudWatchLogGroupName": "", "cloudWatchEncryptionEnabled": True, "cloudWatchStreamingEnabled": True,
    "idleSessionTimeout": "20", "maxSessionDuration": "", "kmsKeyId": "",
    "runAsEnabled": False, "runAsDefaultUser": "", "shellProfile": {"windows": "", "linux": ""},
}


def play(lab, tmp_path, args: dict, *flags: str, fails: bool | None = False):
    """Run the module once with ``args``; return (result, output, recap). ``fails=None``: either way."""
    return call_module(lab, tmp_path, MODULE, args, *flags, fails=fails)


def document(lab, name: str = NAME) -> dict | None:
    """The document as SSM has it: versions, and the default version's parsed content; None when missing."""
    ssm = lab.client("ssm")
    try:
        described = ssm.describe_document(Name=name)["Document"]
    except ssm.exceptions.InvalidDocument:
        return None
    got = ssm.get_document(Name=name, DocumentVersion=described["DefaultVersion"])
    return {"default": described["DefaultVersion"], "latest": described["LatestVersion"],
            "type": described["DocumentType"], "content": json.loads(got["Content"])}


def inputs(lab, name: str = NAME) -> dict:
    return document(lab, name)["content"]["inputs"]


def module_string(name: str) -> str:
    """A module-level string (EXAMPLES, ...) of the module's source, read without importing the module."""
    tree = ast.parse(MODULE_SOURCE.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{MODULE_SOURCE} has no {name}")


def with_defaults(**changes) -> dict:
    return {**AWS_DEFAULTS, **changes}


@pytest.fixture(scope="module")
def prefs_lab(tmp_path_factory):
    with running_lab(tmp_path_factory.mktemp("lab"), "--nodes", "1", "--provisioned") as lab:
        yield lab


# --- create, idempotency, takeover --------------------------------------------------------------------------


def test_check_mode_on_a_fresh_lab_creates_nothing(prefs_lab, tmp_path):
    assert document(prefs_lab) is None
    result, output, recap = play(prefs_lab, tmp_path, {"idle_session_timeout": 15}, "--check", "--diff")
    assert recap["localhost"]["changed"] == 1, output
    assert result["document"] == {"name": NAME, "default_version": "1", "latest_version": "1",
                                  "document_version": "1", "inputs": with_defaults(idleSessionTimeout="15")}
    assert result["diff"] == {"before": {}, "after": with_defaults(idleSessionTimeout="15")}
    assert document(prefs_lab) is None


def test_create_then_a_second_run_changes_nothing(prefs_lab, tmp_path):
    prefs_lab.client("s3").create_bucket(Bucket="lab-transcripts")
    args = {"idle_session_timeout": 15, "max_session_duration": 120, "s3_bucket_name": "lab-transcripts",
            "s3_key_prefix": "sessions"}
    result, output, recap = play(prefs_lab, tmp_path, args, "--diff")
    assert recap["localhost"]["changed"] == 1, output
    wanted = with_defaults(idleSessionTimeout="15", maxSessionDuration="120", s3BucketName="lab-transcripts",
                           s3KeyPrefix="sessions")
    doc = document(prefs_lab)
    assert doc["type"] == "Session" and (doc["default"], doc["latest"]) == ("1", "1")
    assert doc["content"] == {"schemaVersion": "1.0", "description": "Document to hold regional settings for "
                              "Session Manager", "sessionType": "Standard_Stream", "inputs": wanted}
    assert result["document"]["inputs"] == wanted

    result, output, recap = play(prefs_lab, tmp_path, args, "--diff")
    assert recap["localhost"]["changed"] == 0, output
    assert result["diff"]["before"] == result["diff"]["after"] == wanted
    assert document(prefs_lab)["latest"] == "1"


def test_an_existing_document_made_elsewhere_is_taken_over_one_input_at_a_time(prefs_lab, tmp_path):
    ssm = prefs_lab.client("ssm")
    ssm.delete_document(Name=NAME)
    theirs = {"s3BucketName": "existing-bucket", "s3EncryptionEnabled": False,
              "shellProfile": {"linux": "echo from-boto3", "windows": "Write-Host from-boto3"}}
    ssm.create_document(Name=NAME, DocumentType="Session", DocumentFormat="JSON", Content=json.dumps(
        {"schemaVersion": "1.0", "description": "made with boto3", "sessionType": "Standard_Stream",
         "inputs": theirs}))

    result, output, recap = play(prefs_lab, tmp_path, {"idle_session_timeout": 10}, "--diff")
    assert recap["localhost"]["changed"] == 1, output
    assert "DocumentAlreadyExists" not in output
    doc = document(prefs_lab)
    assert (doc["default"], doc["latest"]) == ("2", "2")
    assert doc["content"]["description"] == "made with boto3"
    assert doc["content"]["inputs"] == with_defaults(**theirs, idleSessionTimeout="10")
    assert result["diff"]["before"] == with_defaults(**theirs)
    assert result["diff"]["after"] == with_defaults(**theirs, idleSessionTimeout="10")

    _result, output, recap = play(prefs_lab, tmp_path, {"idle_session_timeout": 10})
    assert recap["localhost"]["changed"] == 0, output


def test_shell_profile_round_trips_and_one_platform_at_a_time(prefs_lab, tmp_path):
    profile = {"linux": "cd /tmp\nexport LAB_MARK=linux-profile", "windows": "Set-Location C:\\Temp"}
    result, output, recap = play(prefs_lab, tmp_path, {"shell_profile": profile})
    assert recap["localhost"]["changed"] == 1, output
    assert inputs(prefs_lab)["shellProfile"] == profile
    assert result["document"]["inputs"]["shellProfile"] == profile
    assert inputs(prefs_lab)["idleSessionTimeout"] == "10"  # left alone

    _result, output, recap = play(prefs_lab, tmp_path, {"shell_profile": profile})
    assert recap["localhost"]["changed"] == 0, output

    _result, output, recap = play(prefs_lab, tmp_path, {"shell_profile": {"linux": "export LAB_MARK=second"}})
    assert recap["localhost"]["changed"] == 1, output
    assert inputs(prefs_lab)["shellProfile"] == {"linux": "export LAB_MARK=second", "windows": profile["windows"]}


def test_a_custom_document_name_leaves_the_preferences_alone(prefs_lab, tmp_path):
    before = document(prefs_lab)
    args = {"name": CUSTOM, "idle_session_timeout": 5, "shell_profile": {"linux": "export LAB_MARK=custom"}}
    result, output, recap = play(prefs_lab, tmp_path, args)
    assert recap["localhost"]["changed"] == 1, output
    assert result["document"]["name"] == CUSTOM
    assert inputs(prefs_lab, CUSTOM) == with_defaults(idleSessionTimeout="5",
                                                      shellProfile={"windows": "", "linux": "export LAB_MARK=custom"})
    assert document(prefs_lab) == before
    _result, output, recap = play(prefs_lab, tmp_path, args)
    assert recap["localhost"]["changed"] == 0, output


def test_prune_versions_keeps_the_newest(prefs_lab, tmp_path):
    for minutes in (6, 7, 8):
        play(prefs_lab, tmp_path, {"name": CUSTOM, "idle_session_timeout": minutes})
    before = document(prefs_lab, CUSTOM)
    assert (before["default"], before["latest"]) == ("4", "4")

    result, output, _recap = play(prefs_lab, tmp_path, {"name": CUSTOM, "idle_session_timeout": 9,
                                                        "prune_versions": 2}, fails=None)
    assert not result.get("failed"), output
    assert result["changed"] is True and result["pruned_versions"] == ["1", "2", "3"]
    ssm = prefs_lab.client("ssm")
    listed = ssm.list_document_versions(Name=CUSTOM)["DocumentVersions"]
    assert sorted(v["DocumentVersion"] for v in listed) == ["4", "5"]
    assert document(prefs_lab, CUSTOM)["default"] == "5"


# --- validation -----------------------------------------------------------------------------------------


BAD_VALUES = [
    ({"idle_session_timeout": 0}, "idle_session_timeout must be from 1 to 60 minutes, the range AWS accepts, "
                                  "not 0"),
    ({"idle_session_timeout": 61}, "idle_session_timeout must be from 1 to 60 minutes, the range AWS accepts, "
                                   "not 61"),
    ({"max_session_duration": 1441}, "max_session_duration must be from 1 to 1440 minutes, the range AWS "
                                     "accepts, or 0 for no maximum, not 1441"),
    ({"kms_key_id": "alias/nope"}, "kms_key_id: alias/nope does not exist in us-east-1; create the key or fix "
                                   "the alias"),
    ({"kms_key_id": "my-key"}, "kms_key_id: 'my-key' is not a KMS key reference"),
    ({"s3_bucket_name": "Session_Logs"}, "s3_bucket_name: 'Session_Logs' is not a bucket name AWS accepts"),
    ({"s3_bucket_name": "logs..bucket"}, "s3_bucket_name: 'logs..bucket' is not a bucket name AWS accepts"),
    ({"run_as_default_user": "Ops User"}, "run_as_default_user: 'Ops User' is not a user name Linux accepts"),
    ({"s3_bucket_name": "no-such-transcripts"},
     "s3_bucket_name: the bucket no-such-transcripts does not exist, and every session would fail while the "
     "preferences name it; create it first (bastionless.ssm.session_logging does), fix the name, or set "
     's3_bucket_name to "" to turn that logging off. Nothing was changed.'),
    ({"cloudwatch_log_group_name": "/no/such/group"},
     "cloudwatch_log_group_name: the log group /no/such/group does not exist in us-east-1, and every session would "
     "fail while the preferences name it; create it first (bastionless.ssm.session_logging does), fix the name, or "
     'set cloudwatch_log_group_name to "" to turn that logging off. Nothing was changed.'),
]


@pytest.fixture(scope="module")
def bad_values(prefs_lab, tmp_path_factory):
    """Every case of BAD_VALUES, run once in one play, with the document before and after."""
    return call_module_cases(prefs_lab, tmp_path_factory.mktemp("bad_values"), MODULE,
                             [{"idle_session_timeout": 30, **args} for args, _m in BAD_VALUES],
                             observe=lambda: document(prefs_lab))


@pytest.mark.parametrize("case", range(len(BAD_VALUES)))
def test_each_bad_value_is_one_clear_error_and_changes_nothing(bad_values, case):
    result, message = bad_values.results[case], BAD_VALUES[case][1]
    assert result.get("failed") is True, bad_values.output
    assert result["msg"].startswith(message), bad_values.output
    assert result.get("errors", [result["msg"]]) == [result["msg"]]  # one problem, one message
    assert bad_values.after == bad_values.before


# --- sessions honour the preferences --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet(prefs_lab):
    """The transfer bucket the lab inventory's connection uses, and an OS user for Run As on the node."""
    prefs_lab.client("s3").create_bucket(Bucket=TRANSFER_BUCKET)
    ssm = prefs_lab.client("ssm")
    node = prefs_lab.network["nodes"][0]
    command = ssm.send_command(InstanceIds=[node], DocumentName="AWS-RunShellScript",
                               Parameters={"commands": [f"id -u {RUN_AS_USER} || useradd -m {RUN_AS_USER}"]})
    command_id = command["Command"]["CommandId"]
    deadline = time.monotonic() + 30
    while True:
        try:
            invocation = ssm.get_command_invocation(CommandId=command_id, InstanceId=node)
        except ssm.exceptions.InvocationDoesNotExist:
            invocation = {"Status": "Pending"}
        if invocation["Status"] not in ("Pending", "InProgress", "Delayed"):
            break
        assert time.monotonic() < deadline, f"useradd did not finish: {invocation}"
        time.sleep(0.3)
    assert invocation["Status"] == "Success", invocation
    return node


def _echo(lab, node, *extra):
    """user=<whoami> mark=<$LAB_MARK> as printed by a raw command over Session Manager."""
    output, recap = run(lab, "ansible", "-i", INVENTORY, node, "-m", "ansible.builtin.raw",
                        "-a", 'echo "user=$(whoami) mark=${LAB_MARK:-none}"', *extra)
    found = re.findall(r"^user=(\S+) mark=(\S+)\s*$", output, re.M)
    assert len(found) == 1, output
    return found[0]


def test_sessions_run_as_the_user_with_the_profile_and_limits_set_by_the_module(prefs_lab, fleet, tmp_path):
    args = {"run_as_enabled": True, "run_as_default_user": RUN_AS_USER, "max_session_duration": 30,
            "idle_session_timeout": 12, "shell_profile": {"linux": "export LAB_MARK=from-the-module"}}
    _result, output, recap = play(prefs_lab, tmp_path, args)
    assert recap["localhost"]["changed"] == 1, output

    assert _echo(prefs_lab, fleet) == (RUN_AS_USER, "from-the-module")
    ssm = prefs_lab.client("ssm")
    # TerminateSession returns before the session has ended (as on AWS): wait for it in the history.
    sessions = wait_until(lambda: ssm.describe_sessions(State="History", Filters=[
        {"key": "Target", "value": fleet}])["Sessions"], timeout=30, what="the session in the history")
    assert {s.get("MaxSessionDuration") for s in sessions} == {"30"}


def test_a_connection_that_selects_the_custom_document_gets_its_preferences(prefs_lab, fleet):
    assert _echo(prefs_lab, fleet, "-e", f"ansible_aws_ssm_document={CUSTOM}") == ("ssm-user", "custom")


# --- absent, and the documented examples ------------------------------------------------------------------------


def test_absent_restores_the_defaults_and_is_idempotent(prefs_lab, fleet, tmp_path):
    result, output, recap = play(prefs_lab, tmp_path, {"state": "absent"}, "--check")
    assert recap["localhost"]["changed"] == 1, output
    assert result["document"]["inputs"] == AWS_DEFAULTS
    assert inputs(prefs_lab)["runAsEnabled"] is True

    result, output, recap = play(prefs_lab, tmp_path, {"state": "absent"}, "--diff")
    assert recap["localhost"]["changed"] == 1, output
    assert result["diff"]["after"] == AWS_DEFAULTS and result["diff"]["before"]["runAsDefaultUser"] == RUN_AS_USER
    assert inputs(prefs_lab) == AWS_DEFAULTS
    assert document(prefs_lab)["content"]["description"] == "made with boto3"  # taken over, not replaced

    _result, output, recap = play(prefs_lab, tmp_path, {"state": "absent"})
    assert recap["localhost"]["changed"] == 0, output
    assert _echo(prefs_lab, fleet) == ("ssm-user", "none")


def test_the_documented_examples_run_against_the_lab(prefs_lab, tmp_path):
    tasks = yaml.safe_load(module_string("EXAMPLES"))
    output, recap = controller_play(prefs_lab, tmp_path, tasks)
    assert recap["localhost"]["failed"] == 0, output
    custom = inputs(prefs_lab, "BreakGlass-Shell")
    assert (custom["idleSessionTimeout"], custom["maxSessionDuration"]) == ("5", "60")
    assert inputs(prefs_lab) == AWS_DEFAULTS  # the last example restores them
