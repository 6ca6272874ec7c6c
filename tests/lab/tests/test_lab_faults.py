"""The fault model through the CLI: throttling, and an agent that drops away and comes back."""

from __future__ import annotations

import json

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from labhelpers import wait_until

NO_RETRIES = Config(retries={"max_attempts": 1, "mode": "standard"})


def test_throttle_rate_one_throttles_every_call_and_zero_restores(main_lab):
    ssm = main_lab.client("ssm", config=NO_RETRIES)
    ssm.describe_instance_information()
    try:
        shown = json.loads(main_lab.cli("faults", "--throttle-rate", "1").stdout)
        assert shown["throttle_rate"] == 1.0
        for _ in range(3):
            with pytest.raises(ClientError) as raised:
                ssm.describe_instance_information()
            assert raised.value.response["Error"]["Code"] == "ThrottlingException"
        with pytest.raises(ClientError) as raised:
            ssm.get_connection_status(Target=main_lab.ec2_ids[0])
        assert raised.value.response["Error"]["Code"] == "ThrottlingException"
    finally:
        shown = json.loads(main_lab.cli("faults", "--throttle-rate", "0").stdout)
    assert shown["throttle_rate"] == 0.0
    assert json.loads(main_lab.cli("faults").stdout)["throttle_rate"] == 0.0
    assert len(ssm.describe_instance_information()["InstanceInformationList"]) == 8


def test_agent_drop_takes_the_node_away_and_back(main_lab):
    node = main_lab.ec2_ids[5]
    main_lab.wait_online(node)
    assert main_lab.ssm.get_connection_status(Target=node)["Status"] == "connected"

    dropped = json.loads(main_lab.cli("agent", "drop", node, "--seconds", "3").stdout)
    assert dropped["id"] == node
    assert main_lab.wait_not_online(node) == "ConnectionLost"
    assert main_lab.ssm.get_connection_status(Target=node)["Status"] == "notconnected"
    assert "AGENT_NOT_CONNECTED" in main_lab.problem_codes(node)
    with pytest.raises(ClientError) as raised:
        main_lab.ssm.start_session(Target=node)
    assert raised.value.response["Error"]["Code"] == "TargetNotConnected"

    main_lab.wait_online(node)
    assert main_lab.ssm.get_connection_status(Target=node)["Status"] == "connected"
    assert main_lab.problem_codes(node) == set()
    assert main_lab.run_ok(node, "echo back") == "back\n"


def test_agent_drop_of_an_unknown_node(main_lab):
    result = main_lab.cli("agent", "drop", "i-0123456789abcdef0", check=False)
    assert result.returncode == 2
    assert "no such node" in result.stderr


def test_connection_status_of_an_unknown_target(main_lab):
    status = main_lab.ssm.get_connection_status(Target="i-0123456789abcdef0")
    assert status["Status"] == "notconnected"
    wait_until(lambda: main_lab.ssm.get_connection_status(Target=main_lab.ec2_ids[0])["Status"] == "connected",
               what="a healthy node to be connected")


def test_a_lab_started_with_every_call_throttled_provisions_anyway(start_lab):
    # The lab's own set-up (ssm-lab up: network, role, nodes) is not subject to the faults it injects: with every
    # call of its clients throttled, it still starts a provisioned node, and a client that does not retry meets the
    # throttling from the first call.
    with start_lab("throttled", "--nodes", "1", "--provisioned", "--faults", '{"throttle_rate": 1.0}') as lab:
        [node] = lab.ec2_ids
        assert json.loads(lab.cli("faults").stdout)["throttle_rate"] == 1.0
        with pytest.raises(ClientError) as raised:
            lab.client("ec2", config=NO_RETRIES).describe_instances(InstanceIds=[node])
        assert raised.value.response["Error"]["Code"] == "RequestLimitExceeded"
        lab.cli("faults", "--throttle-rate", "0")
        lab.wait_online(node)
        assert lab.instance(node)["IamInstanceProfile"]["Arn"].endswith("/ssm-lab-node")
        assert lab.run_ok(node, "echo provisioned") == "provisioned\n"
