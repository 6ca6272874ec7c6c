# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The pure helpers of bastionless.ssm.ssm_command: validation, SendCommand arguments, target look-up filters,
output splitting and truncation, per-node results and the summary."""

import datetime

import botocore.exceptions
import pytest

from ansible_collections.bastionless.ssm.plugins.modules import ssm_command as sc

NODE = "i-0123456789abcdef0"
HYBRID = "mi-0123456789abcdef0"


def params(**overrides):
    base = {
        "document_name": "AWS-RunShellScript",
        "commands": ["uptime"],
        "instance_ids": None,
        "targets": [{"key": "tag:Role", "values": ["web"]}],
        "max_concurrency": None,
        "max_errors": None,
        "execution_timeout": None,
        "timeout": None,
        "working_directory": None,
        "comment": None,
        "output_s3_bucket": None,
        "output_s3_key_prefix": None,
        "cloudwatch_output": False,
        "cloudwatch_log_group": None,
        "wait": True,
        "wait_timeout": 600,
        "fail_on_error": True,
    }
    base.update(overrides)
    return base


# --- validation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"instance_ids": [NODE, HYBRID], "targets": None},
        {"instance_ids": [f"i-{n:017x}" for n in range(50)], "targets": None},
        {"max_concurrency": "1", "max_errors": "0"},
        {"max_concurrency": "100%", "max_errors": "100%"},
        {"max_concurrency": "7%", "max_errors": "5%"},
        {"execution_timeout": 1, "timeout": 30},
        {"execution_timeout": 172800, "timeout": 2592000},
        {"comment": "x" * 100},
        {"targets": [{"key": "tag-key", "values": ["Role"]}, {"key": "InstanceIds", "values": [NODE]}]},
        {"targets": [{"key": "resource-groups:Name", "values": ["web"]}]},
    ],
)
def test_valid_input(overrides):
    assert sc.validate(params(**overrides)) is None


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"commands": []}, "commands is empty"),
        ({"commands": ["  ", ""]}, "commands is empty"),
        ({"instance_ids": [], "targets": None}, "instance_ids is empty"),
        ({"instance_ids": [f"i-{n:017x}" for n in range(51)], "targets": None},
         "instance_ids has 51 IDs; SendCommand takes at most 50. Target the fleet by tag with targets"),
        ({"instance_ids": ["web1", NODE], "targets": None}, "not managed node IDs (i-... or mi-...): web1"),
        ({"targets": []}, "targets is empty"),
        ({"targets": [{"key": "tag:A", "values": ["1"]}] * 6}, "targets has 6 entries; SendCommand takes at most 5"),
        ({"targets": [{"key": "Name", "values": ["web"]}]}, "targets key 'Name' is not one Run Command knows"),
        ({"targets": [{"key": "tag:Role", "values": []}]}, "targets key tag:Role needs 1 to 50 values, not 0"),
        ({"max_concurrency": "0"}, "max_concurrency must be a number from 1"),
        ({"max_concurrency": "101%"}, "max_concurrency must be"),
        ({"max_concurrency": "ten"}, "max_concurrency must be"),
        ({"max_errors": "-1"}, "max_errors must be a number from 0"),
        ({"max_errors": "5 %"}, "max_errors must be"),
        ({"execution_timeout": 0}, "execution_timeout must be from 1 to 172800 seconds, not 0"),
        ({"execution_timeout": 172801}, "execution_timeout must be from 1 to 172800"),
        ({"timeout": 29}, "timeout (the delivery timeout) must be from 30 to 2592000 seconds, not 29"),
        ({"comment": "x" * 101}, "comment has 101 characters; AWS takes at most 100"),
        ({"wait_timeout": -1}, "wait_timeout must be 0 or more"),
    ],
)
def test_bad_input_is_named(overrides, message):
    assert message in sc.validate(params(**overrides))


# --- SendCommand arguments --------------------------------------------------------------------------------


def test_minimal_arguments_by_tag():
    assert sc.send_command_args(params()) == {
        "DocumentName": "AWS-RunShellScript",
        "Parameters": {"commands": ["uptime"]},
        "Targets": [{"Key": "tag:Role", "Values": ["web"]}],
    }


def test_every_option_maps_to_its_argument():
    args = sc.send_command_args(params(
        document_name="AWS-RunPowerShellScript",
        commands=["Get-Date", "hostname"],
        instance_ids=[NODE, HYBRID],
        targets=None,
        max_concurrency="10%",
        max_errors="0",
        execution_timeout=120,
        timeout=600,
        working_directory="/srv",
        comment="patch day",
        output_s3_bucket="out",
        output_s3_key_prefix="runs",
        cloudwatch_log_group="/fleet/commands",
    ))
    assert args == {
        "DocumentName": "AWS-RunPowerShellScript",
        "Parameters": {"commands": ["Get-Date", "hostname"], "executionTimeout": ["120"],
                       "workingDirectory": ["/srv"]},
        "InstanceIds": [NODE, HYBRID],
        "MaxConcurrency": "10%",
        "MaxErrors": "0",
        "TimeoutSeconds": 600,
        "Comment": "patch day",
        "OutputS3BucketName": "out",
        "OutputS3KeyPrefix": "runs",
        "CloudWatchOutputConfig": {"CloudWatchOutputEnabled": True, "CloudWatchLogGroupName": "/fleet/commands"},
    }


def test_cloudwatch_output_without_a_group_uses_aws_default():
    args = sc.send_command_args(params(cloudwatch_output=True))
    assert args["CloudWatchOutputConfig"] == {"CloudWatchOutputEnabled": True}


def test_max_errors_zero_is_sent_not_dropped():
    assert sc.send_command_args(params(max_errors="0"))["MaxErrors"] == "0"


# --- target look-up (check mode) --------------------------------------------------------------------------


def test_targets_become_instance_information_filters():
    targets = [{"key": "tag:Role", "values": ["web", "api"]}, {"key": "tag-key", "values": ["Team"]}]
    assert sc.target_filters(params(targets=targets)) == [
        {"Key": "tag:Role", "Values": ["web", "api"]},
        {"Key": "tag-key", "Values": ["Team"]},
    ]


def test_instance_ids_become_an_instance_ids_filter():
    assert sc.target_filters(params(instance_ids=[NODE], targets=None)) == [{"Key": "InstanceIds", "Values": [NODE]}]


def test_resource_groups_cannot_be_looked_up():
    targets = [{"key": "tag:Role", "values": ["web"]}, {"key": "resource-groups:Name", "values": ["g"]}]
    assert sc.target_filters(params(targets=targets)) is None


# --- output and truncation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "output, expected",
    [
        ("", ("", "")),
        ("out\n", ("out\n", "")),
        ("out\n\n----------ERROR-------\nerr\n", ("out\n", "err\n")),
        ("\n----------ERROR-------\nerr\n", ("", "err\n")),
        ("----------ERROR-------\nerr\n", ("", "err\n")),
        ("a\n----------ERROR-------\nb\n----------ERROR-------\nc", ("a", "b\n----------ERROR-------\nc")),
    ],
)
def test_split_output(output, expected):
    assert sc.split_output(output) == expected


@pytest.mark.parametrize("length, needed", [(0, False), (2499, False), (2500, True), (24000, True)])
def test_full_output_is_fetched_only_when_the_list_may_have_cut_it(length, needed):
    assert sc.needs_full_output("x" * length) is needed


def row(output="ok\n", status="Success", code=0, **extra):
    plugin = {"Name": "aws:runShellScript", "Status": status, "ResponseCode": code, "Output": output,
              "ResponseStartDateTime": datetime.datetime(2025, 1, 31, 8, 0, 0, tzinfo=datetime.timezone.utc),
              "ResponseFinishDateTime": datetime.datetime(2025, 1, 31, 8, 0, 2, tzinfo=datetime.timezone.utc)}
    base = {"InstanceId": NODE, "InstanceName": "ip-10-0-0-1.ec2.internal", "Status": status,
            "StatusDetails": status, "StandardOutputUrl": "", "StandardErrorUrl": "", "CommandPlugins": [plugin]}
    base.update(extra)
    return base


def test_result_from_the_list_alone():
    result = sc.invocation_result(row("hi\n\n----------ERROR-------\nwarn\n", "Failed", 2))
    assert result == {
        "instance_id": NODE,
        "instance_name": "ip-10-0-0-1.ec2.internal",
        "status": "Failed",
        "status_details": "Failed",
        "response_code": 2,
        "stdout": "hi\n",
        "stderr": "warn\n",
        "stdout_truncated": False,
        "stderr_truncated": False,
        "stdout_url": "",
        "stderr_url": "",
        "execution_start": "2025-01-31T08:00:00+00:00",
        "execution_end": "2025-01-31T08:00:02+00:00",
    }


def test_result_from_the_full_invocation_flags_aws_truncation():
    full = {"StandardOutputContent": "x" * 24000, "StandardErrorContent": "e" * 10, "ResponseCode": 0}
    url = "https://s3.eu-west-1.amazonaws.com/b/runs/c/i/awsrunShellScript/0.awsrunShellScript/stdout"
    result = sc.invocation_result(row("x" * 2500, StandardOutputUrl=url), full)
    assert result["stdout"] == "x" * 24000 and result["stdout_truncated"] is True
    assert result["stderr"] == "e" * 10 and result["stderr_truncated"] is False
    assert result["stdout_url"] == url


def test_stderr_at_its_limit_is_flagged():
    full = {"StandardOutputContent": "", "StandardErrorContent": "e" * 8000}
    assert sc.invocation_result(row("e" * 2500), full)["stderr_truncated"] is True


def test_a_node_that_never_ran_has_exit_code_minus_one():
    pending = row("", "Pending", None, CommandPlugins=[])
    result = sc.invocation_result(pending)
    assert (result["response_code"], result["stdout"], result["execution_start"]) == (-1, "", None)


# --- the summary ------------------------------------------------------------------------------------------


def node(status, details=None):
    return {"status": status, "status_details": details or status}


def test_summary_counts_by_status_and_details():
    invocations = [node("Success")] * 3 + [node("Failed"), node("TimedOut", "ExecutionTimedOut"),
                                           node("TimedOut", "DeliveryTimedOut"), node("Cancelled"),
                                           node("InProgress"), node("Delayed")]
    assert sc.summarise(invocations) == {
        "total": 9,
        "success": 3,
        "failed": 4,
        "running": 2,
        "by_status": {"Success": 3, "Failed": 1, "TimedOut": 2, "Cancelled": 1, "InProgress": 1, "Delayed": 1},
        "by_status_details": {"Success": 3, "Failed": 1, "ExecutionTimedOut": 1, "DeliveryTimedOut": 1,
                              "Cancelled": 1, "InProgress": 1, "Delayed": 1},
    }


def test_failure_message_names_what_went_wrong():
    summary = sc.summarise([node("Success"), node("Failed"), node("TimedOut", "DeliveryTimedOut")])
    message = sc.failure_message("cmd-1", summary)
    assert message.startswith("command cmd-1 did not succeed on 2 of 3 nodes (DeliveryTimedOut: 1, Failed: 1)")
    assert "fail_on_error: false" in message


def test_command_dates_become_iso():
    command = {"CommandId": "c", "RequestedDateTime": datetime.datetime(2025, 1, 31, tzinfo=datetime.timezone.utc),
               "TargetCount": 2}
    assert sc.command_result(command) == {"command_id": "c", "requested_date_time": "2025-01-31T00:00:00+00:00",
                                          "target_count": 2}


def test_polling_backs_off_to_ten_seconds():
    interval, seen = 1.0, []
    for _step in range(10):
        seen.append(interval)
        interval = sc.next_interval(interval)
    assert seen[:3] == [1.0, 1.5, 2.25] and max(seen) == 10.0


class ListingClient:
    """list_commands answering from a script of statuses; None: the command is not listed yet."""

    def __init__(self, statuses):
        self.statuses = list(statuses)
        self.calls = 0

    def list_commands(self, CommandId):  # pylint: disable=invalid-name
        self.calls += 1
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return {"Commands": [] if status is None else [{"CommandId": CommandId, "Status": status}]}


def test_waiting_tolerates_a_command_not_listed_yet(monkeypatch):
    monkeypatch.setattr(sc.time, "sleep", lambda seconds: None)
    client = ListingClient([None, "Pending", "InProgress", "Success"])
    command, done, late = sc.wait_for(client, {"CommandId": "c", "Status": "Pending"}, 600)
    assert done and not late and command == {"CommandId": "c", "Status": "Success"} and client.calls == 4


def test_waiting_gives_up_at_the_bound():
    client = ListingClient([None])
    command, done, late = sc.wait_for(client, {"CommandId": "c", "Status": "Pending"}, 0)
    assert not done and not late and command == {"CommandId": "c", "Status": "Pending"} and client.calls == 1


class LateClient(ListingClient):
    """list_commands as ListingClient, but a status "late" is a poll whose read timed out (botocore's error, as the
    client bounded by bounded_aws_config raises it), "unknown" AWS's InvalidCommandId just after SendCommand."""

    def list_commands(self, CommandId):  # pylint: disable=invalid-name
        answer = super().list_commands(CommandId)
        status = (answer["Commands"] or [{}])[0].get("Status")
        if status == "late":
            raise botocore.exceptions.ReadTimeoutError(endpoint_url="https://ssm.us-east-1.amazonaws.com/")
        if status == "unknown":
            raise botocore.exceptions.ClientError({"Error": {"Code": "InvalidCommandId", "Message": "x"}},
                                                  "ListCommands")
        return answer


def test_a_poll_that_times_out_is_followed_by_the_next_one(monkeypatch):
    monkeypatch.setattr(sc.time, "sleep", lambda seconds: None)
    client = LateClient(["unknown", "late", "InProgress", "late", "Success"])
    command, done, late = sc.wait_for(client, {"CommandId": "c", "Status": "Pending"}, 600)
    assert done and not late and command["Status"] == "Success" and client.calls == 5


def test_an_endpoint_that_stops_answering_ends_the_wait_at_the_bound():
    client = LateClient(["late"])
    command, done, late = sc.wait_for(client, {"CommandId": "c", "Status": "Pending"}, 0)
    assert not done and late and command == {"CommandId": "c", "Status": "Pending"} and client.calls == 1
    assert sc.unanswered_message("c", 5, "https://ssm.us-east-1.amazonaws.com") == (
        "command c was sent, but the Systems Manager endpoint https://ssm.us-east-1.amazonaws.com did not answer "
        "ListCommands within wait_timeout (5 s): it is slow or unreachable, and the command's state is unknown (it goes "
        "on running in Systems Manager). Check the network path to the endpoint (proxy, VPC endpoint) or raise "
        "wait_timeout, and follow the command by its command_id.")


@pytest.mark.parametrize("wait_timeout, seconds", [(0, 5), (5, 5), (12, 12), (600, 30)])
def test_each_aws_call_gets_wait_timeout_within_five_to_thirty_seconds(wait_timeout, seconds):
    assert sc.call_seconds(wait_timeout) == seconds


@pytest.mark.parametrize("code, fails", [("404", True), ("NoSuchBucket", True), ("NotFound", True),
                                         ("403", False), ("301", False), ("AccessDenied", False)])
def test_only_a_bucket_that_does_not_exist_stops_the_command(code, fails):
    problem = sc.output_bucket_problem("fleet-output", code)
    if fails:
        assert problem == ("output_s3_bucket: the bucket fleet-output does not exist, so the nodes could not upload "
                           "their output to it; create it first, name an existing bucket, or leave output_s3_bucket "
                           "unset. The command was not sent.")
    else:
        assert problem is None


def test_the_nodes_a_timed_out_command_still_waits_for_are_named_when_they_are_not_online():
    assert sc.offline_sentence({"i-1": "Online", "i-2": "Online"}) == ""
    assert sc.offline_sentence({}) == ""
    assert sc.offline_sentence({"i-2": "ConnectionLost", "i-1": "Online", "i-0": ""}) == (
        " Not Online, so their agents have not taken it: i-0 (not registered), i-2 (ConnectionLost); run "
        "playbooks/preflight.yml (bastionless.ssm.ssm_preflight) on them for the cause and the fix.")
    many = sc.offline_sentence({f"i-{n:02d}": "Inactive" for n in range(12)})
    assert "i-09 (Inactive) and 2 more;" in many and "i-10" not in many
