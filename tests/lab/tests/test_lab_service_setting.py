"""The Default Host Management Configuration service setting, and what it does for a node with no profile.

Runs in its own unprovisioned one-node lab: the setting is account-wide, and the node must start without an
instance profile."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from labhelpers import build_nat_path, trust_policy, wait_until

SETTING = "/ssm/managed-instance/default-ec2-instance-management-role"
DHMC_POLICY = "arn:aws:iam::aws:policy/AmazonSSMManagedEC2InstanceDefaultPolicy"
DHMC_ROLE = "AWSSystemsManagerDefaultEC2InstanceManagementRole"


@pytest.fixture(scope="module")
def dhmc_lab(start_lab):
    with start_lab("dhmc-lab", "--nodes", "1") as lab:
        yield lab


def _setting(lab) -> dict:
    return lab.ssm.get_service_setting(SettingId=SETTING)["ServiceSetting"]


def test_default_update_and_reset(dhmc_lab):
    ssm = dhmc_lab.ssm
    default = _setting(dhmc_lab)
    assert default["SettingId"] == SETTING
    assert default["SettingValue"] == "$None"
    assert default["Status"] == "Default"
    assert default["ARN"] == f"arn:aws:ssm:us-east-1:123456789012:servicesetting{SETTING}"

    ssm.update_service_setting(SettingId=SETTING, SettingValue="service-role/SomeRole")
    customized = _setting(dhmc_lab)
    assert customized["SettingValue"] == "service-role/SomeRole"
    assert customized["Status"] == "Customized"
    assert customized["LastModifiedUser"].startswith("arn:aws:")
    by_arn = ssm.get_service_setting(SettingId=default["ARN"])["ServiceSetting"]
    assert by_arn["SettingValue"] == "service-role/SomeRole"

    reset = ssm.reset_service_setting(SettingId=SETTING)["ServiceSetting"]
    assert reset["SettingValue"] == "$None"
    assert reset["Status"] == "Default"
    assert _setting(dhmc_lab)["SettingValue"] == "$None"


@pytest.mark.parametrize("call", ["get", "update", "reset"])
def test_unknown_setting(dhmc_lab, call):
    ssm = dhmc_lab.ssm
    with pytest.raises(ClientError) as raised:
        if call == "get":
            ssm.get_service_setting(SettingId="/ssm/no/such/setting")
        elif call == "update":
            ssm.update_service_setting(SettingId="/ssm/no/such/setting", SettingValue="x")
        else:
            ssm.reset_service_setting(SettingId="/ssm/no/such/setting")
    assert raised.value.response["Error"]["Code"] == "ServiceSettingNotFound"


def test_dhmc_brings_a_node_without_profile_online_only_with_imdsv2(dhmc_lab):
    lab, ec2 = dhmc_lab, dhmc_lab.ec2
    [node] = lab.ec2_ids
    assert "IamInstanceProfile" not in lab.instance(node)
    build_nat_path(lab)
    wait_until(lambda: lab.problem_codes(node) == {"NO_INSTANCE_PROFILE"},
               what=f"only NO_INSTANCE_PROFILE left for {node}")
    assert lab.ping_status(node) is None

    iam = lab.client("iam")
    iam.create_role(RoleName=DHMC_ROLE, Path="/service-role/",
                    AssumeRolePolicyDocument=trust_policy("ssm.amazonaws.com"))
    iam.attach_role_policy(RoleName=DHMC_ROLE, PolicyArn=DHMC_POLICY)
    lab.ssm.update_service_setting(SettingId=SETTING, SettingValue=f"service-role/{DHMC_ROLE}")
    try:
        # HttpTokens optional (the default): DHMC skips the node.
        assert lab.instance(node)["MetadataOptions"]["HttpTokens"] == "optional"
        wait_until(lambda: lab.problem_codes(node) == {"DHMC_IMDSV2_NOT_REQUIRED"},
                   what="the DHMC IMDSv2 problem")
        assert lab.ping_status(node) is None

        ec2.modify_instance_metadata_options(InstanceId=node, HttpTokens="required", HttpEndpoint="enabled")
        lab.wait_online(node)
        assert "IamInstanceProfile" not in lab.instance(node)
        assert lab.ssm.get_connection_status(Target=node)["Status"] == "connected"
        assert lab.run_ok(node, "echo via-dhmc") == "via-dhmc\n"

        ec2.modify_instance_metadata_options(InstanceId=node, HttpTokens="optional")
        assert lab.wait_not_online(node) == "ConnectionLost"
        assert lab.problem_codes(node) == {"DHMC_IMDSV2_NOT_REQUIRED"}

        ec2.modify_instance_metadata_options(InstanceId=node, HttpTokens="required")
        lab.wait_online(node)
    finally:
        lab.ssm.reset_service_setting(SettingId=SETTING)
    # Without the setting, the profile-less node has no credentials again.
    assert lab.wait_not_online(node) == "ConnectionLost"
    assert lab.problem_codes(node) == {"NO_INSTANCE_PROFILE"}
