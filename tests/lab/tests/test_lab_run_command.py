"""Run Command (AWS-RunShellScript): real processes on the nodes, real output, exit codes and statuses."""

from __future__ import annotations

import secrets

import pytest
from botocore.exceptions import ClientError


def test_failure_keeps_exit_code_stdout_and_stderr(main_lab):
    invocation = main_lab.run(main_lab.ec2_ids[0], "echo out; echo err >&2; exit 3")
    assert invocation["Status"] == "Failed"
    assert invocation["StatusDetails"] == "Failed"
    assert invocation["ResponseCode"] == 3
    assert invocation["StandardOutputContent"] == "out\n"
    assert invocation["StandardErrorContent"] == "err\n"
    assert invocation["PluginName"] == "aws:runShellScript"


def test_success(main_lab):
    invocation = main_lab.run(main_lab.ec2_ids[0], "echo fine")
    assert invocation["Status"] == "Success"
    assert invocation["StatusDetails"] == "Success"
    assert invocation["ResponseCode"] == 0
    assert invocation["StandardOutputContent"] == "fine\n"
    assert invocation["StandardErrorContent"] == ""


def test_long_stdout_is_truncated_to_24000_characters(main_lab):
    invocation = main_lab.run(main_lab.ec2_ids[0], "head -c 30000 /dev/zero | tr '\\0' x")
    assert invocation["Status"] == "Success", invocation
    assert invocation["StandardOutputContent"] == "x" * 24000


def test_targets_by_name_tag(main_lab):
    node = main_lab.ec2_ids[2]
    name = {t["Key"]: t["Value"] for t in main_lab.instance(node)["Tags"]}["Name"]
    assert name == "lab-node-3"
    command_id = main_lab.send(None, ["hostname"], Targets=[{"Key": "tag:Name", "Values": [name]}])
    command = main_lab.wait_command(command_id)
    assert command["Status"] == "Success"
    assert command["TargetCount"] == 1
    invocations = main_lab.ssm.list_command_invocations(CommandId=command_id)["CommandInvocations"]
    assert [i["InstanceId"] for i in invocations] == [node]
    expected = "ip-" + main_lab.instance(node)["PrivateIpAddress"].replace(".", "-") + ".ec2.internal\n"
    assert main_lab.wait_invocation(command_id, node)["StandardOutputContent"] == expected


def test_max_errors_zero_stops_after_the_first_failure(main_lab):
    nodes = main_lab.ec2_ids[:3]
    command_id = main_lab.send(nodes, ["exit 1"], MaxConcurrency="1", MaxErrors="0")
    command = main_lab.wait_command(command_id)
    assert command["Status"] == "Failed"
    assert command["TargetCount"] == 3
    statuses = [main_lab.wait_invocation(command_id, node)["Status"] for node in nodes]
    assert statuses.count("Failed") >= 1
    assert "Cancelled" in statuses
    assert set(statuses) <= {"Failed", "Cancelled"}


def test_unknown_instance_id(main_lab):
    with pytest.raises(ClientError) as raised:
        main_lab.send(["i-0123456789abcdef0"], ["true"])
    assert raised.value.response["Error"]["Code"] == "InvalidInstanceId"


def test_unknown_document(main_lab):
    with pytest.raises(ClientError) as raised:
        main_lab.ssm.send_command(DocumentName="Lab-NoSuchDocument", InstanceIds=[main_lab.ec2_ids[0]],
                                  Parameters={"commands": ["true"]})
    assert raised.value.response["Error"]["Code"] == "InvalidDocument"


def test_list_commands_and_invocations_with_details(main_lab):
    node = main_lab.ec2_ids[1]
    token = secrets.token_hex(6)
    command_id = main_lab.send([node], [f"echo listed-{token}"], Comment=f"lab {token}")
    main_lab.wait_invocation(command_id, node)

    commands = main_lab.ssm.list_commands(CommandId=command_id)["Commands"]
    assert len(commands) == 1
    assert commands[0]["CommandId"] == command_id
    assert commands[0]["DocumentName"] == "AWS-RunShellScript"
    assert commands[0]["Comment"] == f"lab {token}"
    assert commands[0]["Status"] == "Success"
    assert commands[0]["Parameters"]["commands"] == [f"echo listed-{token}"]
    assert command_id in {c["CommandId"] for c in main_lab.ssm.list_commands(InstanceId=node)["Commands"]}

    invocations = main_lab.ssm.list_command_invocations(CommandId=command_id, Details=True)["CommandInvocations"]
    assert len(invocations) == 1
    invocation = invocations[0]
    assert invocation["InstanceId"] == node
    assert invocation["Status"] == "Success"
    [plugin] = invocation["CommandPlugins"]
    assert plugin["Name"] == "aws:runShellScript"
    assert plugin["Status"] == "Success"
    assert plugin["ResponseCode"] == 0
    assert plugin["Output"] == f"listed-{token}\n"

    brief = main_lab.ssm.list_command_invocations(CommandId=command_id)["CommandInvocations"]
    assert brief[0]["CommandPlugins"] == []


def test_execution_timeout(main_lab):
    node = main_lab.ec2_ids[2]
    command_id = main_lab.send([node], ["sleep 30"], extra_parameters={"executionTimeout": ["2"]})
    invocation = main_lab.wait_invocation(command_id, node, timeout=20)
    assert invocation["Status"] == "TimedOut"
    assert invocation["StatusDetails"] == "ExecutionTimedOut"
    assert main_lab.wait_command(command_id)["Status"] == "Failed"


def test_output_goes_to_s3_under_the_documented_keys(main_lab):
    s3 = main_lab.client("s3")
    bucket = f"lab-run-output-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=bucket)
    node = main_lab.ec2_ids[0]
    command_id = main_lab.send([node], ["echo to-s3; echo also-err >&2"], OutputS3BucketName=bucket,
                               OutputS3KeyPrefix="runs")
    invocation = main_lab.wait_invocation(command_id, node)
    assert invocation["Status"] == "Success"
    base = f"runs/{command_id}/{node}/awsrunShellScript/0.awsrunShellScript"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {f"{base}/stdout", f"{base}/stderr"}
    assert s3.get_object(Bucket=bucket, Key=f"{base}/stdout")["Body"].read() == b"to-s3\n"
    assert s3.get_object(Bucket=bucket, Key=f"{base}/stderr")["Body"].read() == b"also-err\n"
    assert invocation["StandardOutputUrl"].endswith(f"/{bucket}/{base}/stdout")
    assert invocation["StandardErrorUrl"].endswith(f"/{bucket}/{base}/stderr")
