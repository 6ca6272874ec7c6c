"""bastionless.ssm.ssm_command against a lab of 200 nodes, through ansible-playbook: every node's output and exit
code, max_errors, check mode, full output and its truncation, S3 and CloudWatch output, the execution timeout
and the wait bound, bad input; the documented examples and playbooks/fleet-command.yml."""

import json
import os
import re
import secrets
import urllib.request

import pytest
from ansible_cli import ROOT, call_module, call_module_cases, controller_play, module_examples, run, save_task
from ssm_lab.harness.testing import running_lab, wait_until

MODULE = "bastionless.ssm.ssm_command"
NODES = 200
FLEET = [{"key": "tag:ssm-lab", "values": ["node"]}]
# Each node prints its host name and exits 3 when the last number of its IP is a multiple of 7.
BY_IP = 'n=$(hostname | sed "s/^ip-[0-9]*-[0-9]*-[0-9]*-\\([0-9]*\\).*/\\1/"); hostname; [ $((n % 7)) -ne 0 ] || exit 3'


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with running_lab(tmp_path_factory.mktemp("lab"), "--nodes", str(NODES), "--provisioned") as lab:
        yield lab


@pytest.fixture(scope="module")
def nodes(lab) -> dict:
    """Instance id -> private IP of every lab node."""
    found = {}
    for page in lab.client("ec2").get_paginator("describe_instances").paginate(
            Filters=[{"Name": "tag:ssm-lab", "Values": ["node"]}]):
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                found[instance["InstanceId"]] = instance["PrivateIpAddress"]
    assert len(found) == NODES
    return found


def hostname(ip: str) -> str:
    return "ip-" + ip.replace(".", "-") + ".ec2.internal"


def calls(lab, reset: bool = False) -> dict:
    request = urllib.request.Request(f"{lab.endpoint}/_lab/calls", method="DELETE" if reset else "GET")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["calls"]


def play(lab, tmp_path, args: dict, *flags: str, fails: bool = False):
    """Run the module once with ``args``; return (result, output)."""
    result, output, _recap = call_module(lab, tmp_path, MODULE, args, *flags, fails=fails)
    return result, output


def commands_sent(lab) -> int:
    return len(lab.client("ssm").list_commands()["Commands"])


def test_check_mode_lists_the_targets_and_sends_nothing(lab, nodes, tmp_path):
    before = commands_sent(lab)
    calls(lab, reset=True)
    result, output = play(lab, tmp_path, {"commands": ["touch /tmp/should-not-exist"], "targets": FLEET}, "--check")
    assert result["changed"] is True
    assert result["target_count"] == NODES
    assert sorted(t["instance_id"] for t in result["targets"]) == sorted(nodes)
    assert {t["ping_status"] for t in result["targets"]} == {"Online"}
    assert {t["computer_name"] for t in result["targets"]} == {hostname(ip) for ip in nodes.values()}
    assert "command_id" not in result
    assert commands_sent(lab) == before
    assert "ssm:SendCommand" not in calls(lab)


def test_every_node_returns_its_output_and_exit_code(lab, nodes, tmp_path):
    failing = {i for i, ip in nodes.items() if int(ip.rsplit(".", 1)[1]) % 7 == 0}
    assert 0 < len(failing) < NODES
    calls(lab, reset=True)
    # max_errors equal to the failures: the bound is reached, not passed, so no node is cancelled.
    result, output = play(lab, tmp_path, {"commands": [BY_IP], "targets": FLEET, "max_concurrency": "25%",
                                          "max_errors": str(len(failing)), "fail_on_error": False,
                                          "comment": "every node"})
    assert result["changed"] is True
    invocations = {i["instance_id"]: i for i in result["invocations"]}
    assert sorted(invocations) == sorted(nodes)
    for instance_id, ip in nodes.items():
        invocation = invocations[instance_id]
        assert invocation["stdout"] == hostname(ip) + "\n", invocation
        assert invocation["stderr"] == ""
        assert invocation["instance_name"] == hostname(ip)
        if instance_id in failing:
            assert (invocation["status"], invocation["response_code"]) == ("Failed", 3), invocation
        else:
            assert (invocation["status"], invocation["response_code"]) == ("Success", 0), invocation
        assert invocation["execution_start"] <= invocation["execution_end"]
    assert result["summary"] == {"total": NODES, "success": NODES - len(failing), "failed": len(failing),
                                 "running": 0, "by_status": {"Success": NODES - len(failing), "Failed": len(failing)},
                                 "by_status_details": {"Success": NODES - len(failing), "Failed": len(failing)}}
    command = result["command"]
    assert (command["status"], command["status_details"]) == ("Failed", "Incomplete")
    assert (command["target_count"], command["error_count"]) == (NODES, len(failing))
    assert command["comment"] == "every node" and command["max_concurrency"] == "25%"
    # One SendCommand, the results in pages of 50, no GetCommandInvocation for short output.
    seen = calls(lab)
    assert seen["ssm:SendCommand"] == 1
    assert seen["ssm:ListCommandInvocations"] == NODES // 50
    assert "ssm:GetCommandInvocation" not in seen


def test_failed_nodes_fail_the_task_by_default(lab, nodes, tmp_path):
    failing = sum(1 for ip in nodes.values() if int(ip.rsplit(".", 1)[1]) % 7 == 0)
    result, output = play(lab, tmp_path, {"commands": [BY_IP], "targets": FLEET, "max_concurrency": "100%",
                                          "max_errors": "100%"}, fails=True)
    assert result["msg"].startswith(f"command {result['command_id']} did not succeed on {failing} of {NODES} nodes "
                                    f"(Failed: {failing})"), result["msg"]
    assert len(result["invocations"]) == NODES
    assert result["summary"]["success"] == NODES - failing


def test_max_errors_stops_sending_to_the_rest(lab, tmp_path):
    result, output = play(lab, tmp_path, {"commands": ["echo no; exit 1"], "targets": FLEET,
                                          "max_concurrency": "10", "max_errors": "3", "fail_on_error": False})
    by_status = result["summary"]["by_status"]
    assert set(by_status) == {"Failed", "Cancelled"}, by_status
    # The fourth error stops it; nodes already running finish: at most max_errors + max_concurrency fail.
    assert 4 <= by_status["Failed"] <= 3 + 10, by_status
    assert by_status["Cancelled"] == NODES - by_status["Failed"]
    assert result["command"]["status"] == "Failed"
    cancelled = [i for i in result["invocations"] if i["status"] == "Cancelled"]
    assert all(i["response_code"] == -1 and i["stdout"] == "" for i in cancelled)


def test_long_output_is_fetched_in_full_and_cut_as_aws_cuts_it(lab, nodes, tmp_path):
    s3 = lab.client("s3")
    bucket = f"run-output-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=bucket)
    chosen = sorted(nodes)[:3]
    long_one = chosen[0]
    script = (f'if [ "$(hostname)" = "{hostname(nodes[long_one])}" ]; then '
              "head -c 30000 /dev/zero | tr '\\0' o; head -c 9000 /dev/zero | tr '\\0' e >&2; "
              "else echo short; echo warn >&2; fi")
    calls(lab, reset=True)
    result, output = play(lab, tmp_path, {"commands": [script], "instance_ids": chosen, "output_s3_bucket": bucket,
                                          "output_s3_key_prefix": "fleet"})
    invocations = {i["instance_id"]: i for i in result["invocations"]}
    long = invocations[long_one]
    assert long["stdout"] == "o" * 24000 and long["stdout_truncated"] is True
    assert long["stderr"] == "e" * 8000 and long["stderr_truncated"] is True
    key = f"fleet/{result['command_id']}/{long_one}/awsrunShellScript/0.awsrunShellScript/stdout"
    assert long["stdout_url"].endswith(f"/{bucket}/{key}")
    assert long["stderr_url"].endswith(f"/{bucket}/{key[:-len('stdout')]}stderr")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"o" * 30000
    for instance_id in chosen[1:]:
        short = invocations[instance_id]
        assert (short["stdout"], short["stderr"]) == ("short\n", "warn\n")
        assert not short["stdout_truncated"] and not short["stderr_truncated"]
        assert short["stdout_url"].endswith(f"/{instance_id}/awsrunShellScript/0.awsrunShellScript/stdout")
    # Only the node whose output the list cut was asked for it in full.
    assert calls(lab)["ssm:GetCommandInvocation"] == 1


def test_output_to_cloudwatch_logs(lab, nodes, tmp_path):
    node = sorted(nodes)[5]
    group = f"/bastionless/run-command/{secrets.token_hex(3)}"
    result, output = play(lab, tmp_path, {"commands": ["echo to-the-logs; echo oops >&2"], "instance_ids": [node],
                                          "cloudwatch_log_group": group})
    assert result["command"]["cloud_watch_output_config"] == {"cloud_watch_output_enabled": True,
                                                              "cloud_watch_log_group_name": group}
    logs = lab.client("logs")
    base = f"{result['command_id']}/{node}/aws-runShellScript"
    for stream, text in (("stdout", "to-the-logs\n"), ("stderr", "oops\n")):
        events = logs.get_log_events(logGroupName=group, logStreamName=f"{base}/{stream}")["events"]
        assert [e["message"] for e in events] == [text]


def test_working_directory_and_the_powershell_document(lab, nodes, tmp_path):
    node = sorted(nodes)[6]
    result, output = play(lab, tmp_path, {"commands": ["pwd"], "instance_ids": [node], "working_directory": "/tmp"})
    assert result["invocations"][0]["stdout"] == "/tmp\n"
    result, output = play(lab, tmp_path, {"document_name": "AWS-RunPowerShellScript", "commands": ["Get-Date"],
                                          "instance_ids": [node]}, fails=True)
    assert result["command"]["document_name"] == "AWS-RunPowerShellScript"
    assert result["invocations"][0]["status"] == "Failed"  # the lab's nodes are Linux


def test_execution_timeout_ends_the_script(lab, nodes, tmp_path):
    node = sorted(nodes)[7]
    result, output = play(lab, tmp_path, {"commands": ["sleep 60"], "instance_ids": [node], "execution_timeout": 2},
                          fails=True)
    [invocation] = result["invocations"]
    assert (invocation["status"], invocation["status_details"]) == ("TimedOut", "ExecutionTimedOut")
    assert "ExecutionTimedOut: 1" in result["msg"]


# The bound on a task whose AWS API stops answering (docs/reliability.md, "Bounded waits"): wait_timeout plus MARGIN
# (the task's overhead on a loaded machine, and one poll's bound past the deadline). Unbounded, each call would wait
# for the lab's delay (API_DELAY, longer than one call's 3.3 s read timeout under wait_timeout 5) and the task for
# four of them or more.
MARGIN = 15
API_DELAY = 4


def test_wait_timeout_bounds_the_task_and_the_command_goes_on(lab, nodes, tmp_path):
    """One play: two nodes, one runs past wait_timeout, the other's agent is stopped, and the message names that
    one; a command whose node makes the lab's API stop answering (api_delay) while the task polls; a SendCommand
    the API does not answer. Each task ends within wait_timeout plus MARGIN, naming wait_timeout."""
    node, offline, polled, sent, shell = (sorted(nodes)[i] for i in (8, 10, 11, 12, 13))
    bucket = f"bounded-{secrets.token_hex(4)}"
    lab.client("s3").create_bucket(Bucket=bucket)
    # amazon.aws.aws_ssm on a node while the API does not answer (its ansible_aws_ssm_timeout 3), without and with the
    # task's timeout keyword (2 s): a connection of amazon.aws, which bounds no AWS call (docs/reliability.md).
    aws_ssm = {"ansible_connection": "amazon.aws.aws_ssm", "ansible_aws_ssm_instance_id": shell,
               "ansible_aws_ssm_region": "us-east-1", "ansible_aws_ssm_bucket_name": bucket,
               "ansible_aws_ssm_timeout": 3}
    fault = (f"curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' {lab.endpoint}/_lab/faults "
             "-d '{\"api_delay\": %s}'")
    stamp = "; date +%s.%N"
    lab.cli("agent", "stop", offline)
    try:
        wait_until(lambda: lab.client("ssm").describe_instance_information(
            Filters=[{"Key": "InstanceIds", "Values": [offline]}])["InstanceInformationList"][0]["PingStatus"]
            != "Online", timeout=30, what=f"{offline} to go offline")
        output, recap = controller_play(lab, tmp_path, [
            {"name": "Past wait_timeout", MODULE: {"commands": ["sleep 8; echo late"], "instance_ids": [node, offline],
                                                   "wait_timeout": 2},
             "register": "__past", "ignore_errors": True},
            {"name": "Stamp", "ansible.builtin.set_fact": {"__s0": "{{ lookup('pipe', 'date +%s.%N') }}"}},
            {"name": "The node makes the API stop answering while the task polls",
             MODULE: {"commands": [fault % API_DELAY + "; sleep 10"], "instance_ids": [polled], "wait_timeout": 5},
             "register": "__polls", "ignore_errors": True},
            {"name": "Stamp (the API still does not answer)",
             "ansible.builtin.set_fact": {"__s1": "{{ lookup('pipe', cmd) }}"}, "vars": {"cmd": fault % API_DELAY + stamp}},
            {"name": "A SendCommand the API does not answer",
             MODULE: {"commands": ["true"], "instance_ids": [sent], "wait_timeout": 5, "comment": "bounded send"},
             "register": "__send", "ignore_errors": True},
            {"name": "Stamp", "ansible.builtin.set_fact": {"__s3": "{{ lookup('pipe', 'date +%s.%N') }}"}},
            {"name": "amazon.aws.aws_ssm while the API does not answer", "ansible.builtin.raw": "echo aws_ssm",
             "delegate_to": "aws-ssm-node", "vars": aws_ssm, "register": "__aws_ssm", "ignore_errors": True,
             "ignore_unreachable": True},
            {"name": "Stamp", "ansible.builtin.set_fact": {"__s4": "{{ lookup('pipe', 'date +%s.%N') }}"}},
            {"name": "amazon.aws.aws_ssm bounded by the task's timeout", "ansible.builtin.raw": "echo aws_ssm",
             "delegate_to": "aws-ssm-node", "vars": aws_ssm, "timeout": 2, "register": "__aws_ssm_timeout",
             "ignore_errors": True, "ignore_unreachable": True},
            {"name": "Stamp and the API answers again",
             "ansible.builtin.set_fact": {"__s2": "{{ lookup('pipe', cmd) }}"}, "vars": {"cmd": fault % 0 + stamp}},
            save_task("{'past': __past, 'polls': __polls, 'send': __send, 'aws_ssm': __aws_ssm, 'aws_ssm_timeout': "
                      "__aws_ssm_timeout, 'durations': [__s1 | float - __s0 | float, __s3 | float - __s1 | float], "
                      "'aws_ssm_durations': [__s4 | float - __s3 | float, __s2 | float - __s4 | float]}",
                      tmp_path / "results.json"),
        ])
    finally:
        lab.cli("faults", "--api-delay", "0")
        lab.cli("agent", "start", offline)
    assert recap["localhost"]["failed"] == 0, output
    results = json.loads((tmp_path / "results.json").read_text())
    result = results["past"]
    assert re.search(r"still InProgress on 2 of 2 nodes after wait_timeout \(2 s\); it goes on running", result["msg"])
    assert result["msg"].endswith(
        f"Not Online, so their agents have not taken it: {offline} (ConnectionLost); run playbooks/preflight.yml "
        "(bastionless.ssm.ssm_preflight) on them for the cause and the fix."), result["msg"]
    assert result["summary"]["running"] == 2
    invocation = wait_until(lambda: next(
        (i for i in [lab.client("ssm").get_command_invocation(CommandId=result["command_id"], InstanceId=node)]
         if i["Status"] == "Success"), None), timeout=30, what="the command to finish after the task gave up")
    assert invocation["StandardOutputContent"] == "late\n"

    polls, send = results["polls"], results["send"]
    assert all(seconds < 5 + MARGIN for seconds in results["durations"]), results["durations"]
    assert polls["failed"] and polls["msg"] == (
        f"command {polls['command_id']} was sent, but the Systems Manager endpoint {lab.endpoint} did not answer "
        "ListCommands within wait_timeout (5 s): it is slow or unreachable, and the command's state is unknown (it goes "
        "on running in Systems Manager). Check the network path to the endpoint (proxy, VPC endpoint) or raise "
        "wait_timeout, and follow the command by its command_id."), polls
    assert send["failed"] and send["msg"] == (
        f"SendCommand did not answer within 5 s (wait_timeout): the Systems Manager endpoint {lab.endpoint} is slow "
        "or unreachable. Check the network path to it (proxy, VPC endpoint) or raise wait_timeout. The command may "
        "have been sent all the same: ListCommands shows it."), send
    # As the message says: the lab sends the late command once its delay is over (waited for here, so that no later
    # test sees it arrive).
    wait_until(lambda: [c for c in lab.client("ssm").list_commands(InstanceId=sent)["Commands"]
                        if c["Comment"] == "bounded send"], timeout=30, what="the late SendCommand")

    # amazon.aws.aws_ssm waits for StartSession as long as botocore does (here the lab's 4 s, past its
    # ansible_aws_ssm_timeout of 3 s), then runs the command; the task's timeout keyword ends the task at 2 s.
    plain, bounded = results["aws_ssm_durations"]
    assert results["aws_ssm"].get("stdout", "").strip() == "aws_ssm" and plain >= API_DELAY, (plain, results["aws_ssm"])
    assert results["aws_ssm_timeout"]["failed"] and bounded < 2 + MARGIN, (bounded, results["aws_ssm_timeout"])
    assert results["aws_ssm_timeout"]["msg"] == "Task failed: Timed out after 2 second(s).", results["aws_ssm_timeout"]


def test_without_wait_only_the_command_id(lab, nodes, tmp_path):
    node = sorted(nodes)[9]
    result, output = play(lab, tmp_path, {"commands": ["echo later"], "instance_ids": [node], "wait": False})
    assert result["changed"] is True and result["invocations"] == []
    assert "summary" not in result
    finished = wait_until(lambda: lab.client("ssm").list_commands(CommandId=result["command_id"])["Commands"][0]
                          ["Status"] == "Success", what="the command to finish")
    assert finished


def test_a_tag_that_matches_nothing_warns(lab, tmp_path):
    result, output = play(lab, tmp_path, {"commands": ["true"], "targets": [{"key": "tag:Role", "values": ["none"]}]})
    assert result["invocations"] == [] and result["summary"]["total"] == 0
    assert "matched no managed node" in output


BAD_INPUT = [
    ({"commands": ["true"], "instance_ids": [f"i-{n:017x}" for n in range(51)]},
     "instance_ids has 51 IDs; SendCommand takes at most 50"),
    ({"commands": ["true"], "targets": FLEET, "max_errors": "lots"}, "max_errors must be a number from 0"),
    ({"commands": ["true"], "targets": [{"key": "Name", "values": ["x"]}]}, "targets key 'Name' is not one"),
    ({"commands": ["true"], "instance_ids": ["i-0123456789abcdef0"]}, "InvalidInstanceId"),
    ({"commands": ["true"]}, "one of the following is required: instance_ids, targets"),
    ({"commands": ["true"], "targets": FLEET, "document_name": "AWS-RunShellScrpt"},
     "value of document_name must be one of: AWS-RunShellScript, AWS-RunPowerShellScript, got: AWS-RunShellScrpt"),
    ({"targets": FLEET, "command": ["true"]}, "missing required arguments: commands"),
    ({"commands": ["true"], "targets": FLEET, "output_s3_key_prefix": "x"},
     "missing parameter(s) required by 'output_s3_key_prefix': output_s3_bucket"),
    ({"commands": ["true"], "targets": FLEET, "output_s3_bucket": "no-such-output-bucket"},
     "output_s3_bucket: the bucket no-such-output-bucket does not exist, so the nodes could not upload their output "
     "to it; create it first, name an existing bucket, or leave output_s3_bucket unset. The command was not sent."),
]


@pytest.fixture(scope="module")
def bad_input(lab, tmp_path_factory):
    """Every case of BAD_INPUT, run once in one play, with the SendCommand calls before and after."""
    return call_module_cases(lab, tmp_path_factory.mktemp("bad_input"), MODULE, [args for args, _m in BAD_INPUT],
                             observe=lambda: commands_sent(lab))


@pytest.mark.parametrize("case", range(len(BAD_INPUT)))
def test_bad_input_fails_clearly_and_sends_nothing(bad_input, case):
    result, message = bad_input.results[case], BAD_INPUT[case][1]
    assert result.get("failed") is True, bad_input.output
    assert message in result["msg"], result["msg"]
    assert bad_input.after == bad_input.before


def test_check_mode_names_unregistered_ids(lab, nodes, tmp_path):
    unknown = "i-0123456789abcdef0"
    result, output = play(lab, tmp_path, {"commands": ["true"], "instance_ids": [sorted(nodes)[0], unknown]},
                          "--check", fails=True)
    assert f"instance_ids not registered with Systems Manager in us-east-1: {unknown}" in result["msg"]


def test_the_documented_examples_run(lab, tmp_path):
    lab.client("s3").create_bucket(Bucket="bastionless-lab-transfer")  # the examples' output bucket
    tasks = module_examples("ssm_command")
    output, recap = controller_play(lab, tmp_path, tasks, "-i", os.path.join(ROOT, "inventories", "lab"), "-v")
    assert recap["localhost"]["failed"] == 0, output
    assert recap["localhost"]["ok"] == len(tasks), output


def test_the_fleet_command_playbook(lab, nodes, tmp_path):
    output, recap = run(lab, "ansible-playbook", "playbooks/fleet-command.yml", "-e",
                        json.dumps({"bastionless_fleet_commands": ["hostname"]}))
    assert recap["localhost"]["failed"] == 0, output
    for ip in list(nodes.values())[:20]:
        assert hostname(ip) in output
    assert f"{NODES} of {NODES} nodes succeeded" in output

    output, recap = run(lab, "ansible-playbook", "playbooks/fleet-command.yml", "-e",
                        json.dumps({"bastionless_fleet_commands": [BY_IP], "bastionless_fleet_max_errors": "100%"}),
                        check=False)
    assert recap["localhost"]["failed"] == 1, output
    failing = [i for i, ip in nodes.items() if int(ip.rsplit(".", 1)[1]) % 7 == 0]
    assert f"{len(failing)} of {NODES} nodes did not succeed" in output
    for instance_id in failing:
        assert instance_id in output

    before = commands_sent(lab)
    output, recap = run(lab, "ansible-playbook", "playbooks/fleet-command.yml", "--check")
    assert recap["localhost"]["failed"] == 0, output
    assert f"would run on {NODES} nodes" in output
    assert commands_sent(lab) == before
