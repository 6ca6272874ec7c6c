"""Pure helpers of bastionless.ssm.ssm_service_setting: setting ids and the plan."""

import datetime

import pytest

from ansible_collections.bastionless.ssm.plugins.modules import ssm_service_setting as sss

DHMC = "/ssm/managed-instance/default-ec2-instance-management-role"
DHMC_ARN = f"arn:aws:ssm:us-east-1:123456789012:servicesetting{DHMC}"
ROLE = "service-role/AWSSystemsManagerDefaultEC2InstanceManagementRole"


@pytest.mark.parametrize(
    "setting_id, region, account, partition, expected",
    [
        (DHMC, "us-east-1", "123456789012", "aws", DHMC_ARN),
        ("/ssm/parameter-store/high-throughput-enabled", "eu-west-1", "210987654321", "aws",
         "arn:aws:ssm:eu-west-1:210987654321:servicesetting/ssm/parameter-store/high-throughput-enabled"),
        (DHMC, "cn-north-1", "123456789012", "aws-cn",
         f"arn:aws-cn:ssm:cn-north-1:123456789012:servicesetting{DHMC}"),
        # an ARN is used as it is
        (DHMC_ARN, "eu-west-1", "999999999999", "aws", DHMC_ARN),
    ],
)
def test_setting_arn(setting_id, region, account, partition, expected):
    assert sss.setting_arn(setting_id, region, account, partition) == expected


@pytest.mark.parametrize(
    "setting_id, valid",
    [
        (DHMC, True),
        (DHMC_ARN, True),
        ("/ssm/", False),
        ("ssm/managed-instance/default-ec2-instance-management-role", False),
        ("/other/setting", False),
        ("", False),
    ],
)
def test_valid_setting_id(setting_id, valid):
    assert sss.valid_setting_id(setting_id) is valid


@pytest.mark.parametrize(
    "arn, partition",
    [
        ("arn:aws:sts::123456789012:assumed-role/admin/me", "aws"),
        ("arn:aws-us-gov:iam::123456789012:user/me", "aws-us-gov"),
        ("arn:aws-cn:iam::123456789012:root", "aws-cn"),
        ("", "aws"),
    ],
)
def test_partition_of(arn, partition):
    assert sss.partition_of(arn) == partition


def _setting(value, status):
    return {"setting_id": DHMC, "setting_value": value, "status": status, "arn": DHMC_ARN,
            "last_modified_user": "System", "last_modified_date": datetime.datetime(1970, 1, 1)}


@pytest.mark.parametrize(
    "current, state, value, changed, value_after, status_after",
    [
        (_setting("$None", "Default"), "present", ROLE, True, ROLE, "Customized"),
        (_setting(ROLE, "Customized"), "present", ROLE, False, ROLE, "Customized"),
        (_setting("service-role/Other", "Customized"), "present", ROLE, True, ROLE, "Customized"),
        # the default value asked for: nothing to do
        (_setting("$None", "Default"), "present", "$None", False, "$None", "Default"),
        # absent: a reset only when customized; AWS's default is not known before it
        (_setting(ROLE, "Customized"), "absent", None, True, None, "Default"),
        (_setting("$None", "Default"), "absent", None, False, "$None", "Default"),
        (_setting(ROLE, "PendingUpdate"), "absent", None, False, ROLE, "PendingUpdate"),
    ],
)
def test_plan_setting(current, state, value, changed, value_after, status_after):
    original = dict(current)
    got_changed, after = sss.plan_setting(current, state, value)
    assert got_changed is changed
    assert after["setting_value"] == value_after
    assert after["status"] == status_after
    assert after["arn"] == DHMC_ARN
    assert current == original  # the prediction is made on a copy


def test_normalise_setting_is_snake_case():
    raw = {"SettingId": DHMC, "SettingValue": "$None", "Status": "Default", "ARN": DHMC_ARN,
           "LastModifiedDate": datetime.datetime(1970, 1, 1), "LastModifiedUser": "System"}
    assert sorted(sss.normalise_setting(raw)) == [
        "arn", "last_modified_date", "last_modified_user", "setting_id", "setting_value", "status"]


def test_setting_diff_shows_value_and_status():
    diff = sss.setting_diff(_setting("$None", "Default"), _setting(ROLE, "Customized"))
    assert diff == {"before": {"setting_value": "$None", "status": "Default"},
                    "after": {"setting_value": ROLE, "status": "Customized"}}
