"""bastionless.ssm.ssm_service_setting against the lab, through ansible-playbook: Default Host Management
Configuration turned on and off. The tests build on each other in order, on a lab of their own (the setting
is account-wide)."""

import json

import pytest
from ansible_cli import call_module, call_module_cases, controller_play
from ssm_lab.harness.testing import running_lab

MODULE = "bastionless.ssm.ssm_service_setting"
DHMC = "/ssm/managed-instance/default-ec2-instance-management-role"
ROLE_NAME = "AWSSystemsManagerDefaultEC2InstanceManagementRole"
ROLE = f"service-role/{ROLE_NAME}"
DHMC_POLICY = "arn:aws:iam::aws:policy/AmazonSSMManagedEC2InstanceDefaultPolicy"


def play(lab, tmp_path, args: dict, *flags: str, fails: bool = False):
    """Run the module once with ``args``; return (result, output, recap)."""
    return call_module(lab, tmp_path, MODULE, args, *flags, fails=fails)


def current(lab) -> dict:
    return lab.client("ssm").get_service_setting(SettingId=DHMC)["ServiceSetting"]


@pytest.fixture(scope="module")
def setting_lab(tmp_path_factory):
    with running_lab(tmp_path_factory.mktemp("lab"), "--nodes", "1") as lab:
        yield lab


def test_the_setting_starts_at_the_default(setting_lab):
    setting = current(setting_lab)
    assert (setting["SettingValue"], setting["Status"]) == ("$None", "Default")


def test_check_mode_predicts_and_changes_nothing(setting_lab, tmp_path):
    result, output, recap = play(setting_lab, tmp_path, {"setting_id": DHMC, "value": ROLE}, "--check", "--diff")
    assert recap["localhost"]["changed"] == 1, output
    assert result["setting"]["setting_value"] == ROLE
    assert result["setting"]["status"] == "Customized"
    assert result["diff"] == {"before": {"setting_value": "$None", "status": "Default"},
                              "after": {"setting_value": ROLE, "status": "Customized"}}
    assert current(setting_lab)["Status"] == "Default"


def test_the_documented_example_turns_dhmc_on(setting_lab, tmp_path):
    output, recap = controller_play(setting_lab, tmp_path, [
        {"name": "Create the role that Default Host Management Configuration uses",
         "amazon.aws.iam_role": {
             "name": ROLE_NAME, "path": "/service-role/",
             "assume_role_policy_document": json.dumps({"Version": "2012-10-17", "Statement": [
                 {"Effect": "Allow", "Principal": {"Service": "ssm.amazonaws.com"}, "Action": "sts:AssumeRole"}]}),
             "managed_policies": [DHMC_POLICY]}},
        {"name": "Turn on Default Host Management Configuration", MODULE: {"setting_id": DHMC, "value": ROLE},
         "register": "__dhmc"},
        {"name": "Check the setting", "ansible.builtin.assert": {"that": [
            "__dhmc is changed",
            f"__dhmc.setting.setting_value == '{ROLE}'",
            "__dhmc.setting.status == 'Customized'",
            f"__dhmc.setting.setting_id == '{DHMC}'",
            "__dhmc.setting.arn.endswith(':servicesetting" + DHMC + "')",
            "__dhmc.setting.last_modified_user.startswith('arn:aws:')",
            "__dhmc.setting.last_modified_date is defined",
        ]}},
    ])
    assert recap["localhost"]["changed"] == 2 and recap["localhost"]["failed"] == 0, output
    setting = current(setting_lab)
    assert (setting["SettingValue"], setting["Status"]) == (ROLE, "Customized")
    role = setting_lab.client("iam").get_role(RoleName=ROLE_NAME)["Role"]
    assert role["Path"] == "/service-role/"


@pytest.mark.parametrize("setting_id", ["short", "arn"])
def test_setting_it_again_changes_nothing(setting_lab, tmp_path, setting_id):
    setting_id = DHMC if setting_id == "short" else current(setting_lab)["ARN"]
    result, output, recap = play(setting_lab, tmp_path, {"setting_id": setting_id, "value": ROLE}, "--diff")
    assert recap["localhost"]["changed"] == 0, output
    assert result["setting"]["setting_value"] == ROLE
    assert "diff" not in result or result["diff"]["before"] == result["diff"]["after"]


def test_absent_resets_it_to_the_default(setting_lab, tmp_path):
    args = {"setting_id": DHMC, "state": "absent"}
    result, output, recap = play(setting_lab, tmp_path, args, "--check")
    assert recap["localhost"]["changed"] == 1, output
    assert result["setting"]["status"] == "Default"
    assert current(setting_lab)["Status"] == "Customized"

    result, output, recap = play(setting_lab, tmp_path, args, "--diff")
    assert recap["localhost"]["changed"] == 1, output
    assert (result["setting"]["setting_value"], result["setting"]["status"]) == ("$None", "Default")
    assert result["diff"]["before"] == {"setting_value": ROLE, "status": "Customized"}
    assert (current(setting_lab)["SettingValue"], current(setting_lab)["Status"]) == ("$None", "Default")

    result, output, recap = play(setting_lab, tmp_path, args)
    assert recap["localhost"]["changed"] == 0, output


BAD_INPUT = [
    ({"setting_id": "managed-instance/default-ec2-instance-management-role", "value": ROLE},
     "setting_id must be a short ID starting with /ssm/ or a full ARN"),
    ({"setting_id": "/ssm/no/such/setting", "value": ROLE}, "Failed to get service setting"),
    ({"setting_id": DHMC}, "state is present but all of the following are missing: value"),
]


def test_errors_are_clear_and_change_nothing(setting_lab, tmp_path):
    cases = call_module_cases(setting_lab, tmp_path, MODULE, [args for args, _message in BAD_INPUT])
    for result, (args, message) in zip(cases.results, BAD_INPUT):
        assert result.get("failed") is True and message in result["msg"], (args, result)
    assert current(setting_lab)["Status"] == "Default"
