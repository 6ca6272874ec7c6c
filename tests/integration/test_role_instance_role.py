"""bastionless.ssm.instance_role against the lab (which has a NAT path, so credentials are all that is missing):
the profile on running instances, replacement only when allowed, the logging statements, Default Host
Management with its IMDSv2 check, and bad input."""

import json
import re

import pytest
from ansible_cli import run_cases
from roles_helpers import ping_status, provision, wait_for
from ssm_lab.harness.testing import running_lab

CORE = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
TRUST_EC2 = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})


def _profile_of(lab, node):
    instance = lab.client("ec2").describe_instances(InstanceIds=[node])["Reservations"][0]["Instances"][0]
    return instance.get("IamInstanceProfile", {}).get("Arn", "").rsplit("/", 1)[-1]


def _listed(output, prefix):
    """The instance ids listed after ``prefix`` in the output, up to the next ; or ."""
    text = " ".join(output.split())
    assert prefix in text, output
    return set(re.split(r"[;.]", text.split(prefix, 1)[1], maxsplit=1)[0].split(", "))


def _role_only(lab, **extra):
    return provision(lab, with_vpc_endpoints=False, **extra)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Three nodes with a NAT path and no profile; the third gets someone else's profile, whose role lacks the
    SSM policy, so it stays offline until ours replaces it."""
    with running_lab(tmp_path_factory.mktemp("lab"), "--nodes", "3", "--nat") as lab:
        iam = lab.client("iam")
        iam.create_role(RoleName="someone-else", AssumeRolePolicyDocument=TRUST_EC2)
        iam.create_instance_profile(InstanceProfileName="someone-else")
        iam.add_role_to_instance_profile(InstanceProfileName="someone-else", RoleName="someone-else")
        lab.client("ec2").associate_iam_instance_profile(
            InstanceId=lab.network["nodes"][2], IamInstanceProfile={"Name": "someone-else"})
        yield lab


class TestInstanceProfile:
    def test_check_mode_predicts_and_changes_nothing(self, lab):
        output, recap = _role_only(lab, check_mode=True)
        assert recap["failed"] == 0 and recap["changed"] >= 1, output
        first, second, third = lab.network["nodes"]
        assert _listed(output, "Would create the instance profile bastionless-ssm-instance and attach it to ") == {first, second}
        assert "bastionless-ssm-instance" not in [r["RoleName"] for r in lab.client("iam").list_roles()["Roles"]]
        assert _profile_of(lab, first) == ""

    def test_the_profile_brings_running_instances_online_and_leaves_a_different_one(self, lab):
        output, recap = _role_only(lab)
        assert recap["failed"] == 0, output
        first, second, third = lab.network["nodes"]
        flat = " ".join(output.split())
        assert _listed(flat, "Attached bastionless-ssm-instance to ") == {first, second}
        assert _listed(flat, "left alone (a different profile, instance_role_replace_profile is false): ") == {third}
        wait_for(lab, "Online", [first, second])
        assert _profile_of(lab, third) == "someone-else"
        assert ping_status(lab)[third] != "Online"

    def test_replacement_when_allowed(self, lab):
        output, recap = _role_only(lab, instance_role_replace_profile=True)
        assert recap["failed"] == 0 and recap["changed"] >= 1, output
        third = lab.network["nodes"][2]
        assert f"Attached bastionless-ssm-instance to {third}" in " ".join(output.split())
        assert _profile_of(lab, third) == "bastionless-ssm-instance"
        wait_for(lab, "Online")

    def test_logging_statements_boundary_and_extra_policies(self, lab):
        iam = lab.client("iam")
        boundary = iam.create_policy(PolicyName="ssm-boundary", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        boundary = boundary["Policy"]["Arn"]
        key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
        output, recap = _role_only(lab, instance_role_log_bucket="audit-logs", instance_role_log_prefix="sessions/",
                                   instance_role_log_group="/ssm/sessions", instance_role_kms_key_arn=key,
                                   instance_role_permissions_boundary=boundary,
                                   instance_role_managed_policies=[boundary])
        assert recap["failed"] == 0 and recap["changed"] >= 1, output
        role = iam.get_role(RoleName="bastionless-ssm-instance")["Role"]
        assert role["PermissionsBoundary"]["PermissionsBoundaryArn"] == boundary
        attached = {p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=role["RoleName"])["AttachedPolicies"]}
        assert attached == {CORE, boundary}
        policy = iam.get_role_policy(RoleName=role["RoleName"], PolicyName="bastionless-ssm-session-logging")
        statements = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
        assert statements["SessionTranscriptsToS3"]["Resource"] == ["arn:aws:s3:::audit-logs/sessions/*"]
        assert statements["SessionLogsToCloudWatch"]["Resource"] == [
            "arn:aws:logs:us-east-1:123456789012:log-group:/ssm/sessions:*"]
        assert statements["SessionEncryptionKey"]["Action"] == ["kms:Decrypt"]  # session streams, their context only
        assert statements["SessionEncryptionKeyThroughS3"]["Condition"]["StringEquals"] == {
            "kms:ViaService": "s3.us-east-1.amazonaws.com"}
        output, recap = _role_only(lab, instance_role_log_bucket="audit-logs", instance_role_log_prefix="sessions/",
                                   instance_role_log_group="/ssm/sessions", instance_role_kms_key_arn=key,
                                   instance_role_permissions_boundary=boundary,
                                   instance_role_managed_policies=[boundary])
        assert recap["changed"] == 0, output
        # Without the logging inputs the statements go; the extra policy goes with purge.
        output, recap = _role_only(lab, instance_role_permissions_boundary=boundary)
        assert recap["failed"] == 0, output
        assert iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"] == []
        wait_for(lab, "Online")

    # The bad inputs, all in one run (each case a host of its own).
    BAD_INPUT = {
        "role-name": ({"instance_role_name": "no spaces allowed"},
                      "instance_role_name: no spaces allowed is not a valid IAM role name"),
        "key-arn": ({"instance_role_kms_key_arn": "alias/ssm"}, "instance_role_kms_key_arn: alias/ssm is not a KMS key ARN"),
        "path": ({"instance_role_path": "ssm"}, "instance_role_path: ssm must start and end with /"),
        "unknown-instance": ({"instance_role_instance_ids": ["i-0123456789abcdef0"], "instance_role_name": "never-made"},
                             "instance_role_instance_ids: i-0123456789abcdef0 is not a pending, running or stopped "
                             "instance"),
        "mode": ({"instance_role_mode": "keys", "instance_role_name": "never-made"}, "instance_role_mode"),
    }

    def test_bad_input_one_clear_error_and_nothing_made(self, lab, tmp_path):
        roles_before = {r["RoleName"] for r in lab.client("iam").list_roles()["Roles"]}
        cases = run_cases(lab, tmp_path, "bastionless.ssm.instance_role",
                          {name: extra for name, (extra, _message) in self.BAD_INPUT.items()},
                          role_vars={"instance_role_instance_filters": {"tag:ssm-lab": "node"}})
        for name, (_extra, message) in self.BAD_INPUT.items():
            assert message in cases.only_failure(name), (name, cases.failures.get(name))
        assert {r["RoleName"] for r in lab.client("iam").list_roles()["Roles"]} == roles_before


@pytest.fixture(scope="module")
def dhmc_lab(tmp_path_factory):
    with running_lab(tmp_path_factory.mktemp("lab"), "--nodes", "2", "--nat") as lab:
        yield lab


class TestDefaultHostManagement:
    SETTING = "/ssm/managed-instance/default-ec2-instance-management-role"

    def _setting(self, lab):
        arn = f"arn:aws:ssm:us-east-1:123456789012:servicesetting{self.SETTING}"
        return lab.client("ssm").get_service_setting(SettingId=arn)["ServiceSetting"]

    def test_instances_without_imdsv2_fail_with_the_fix_and_nothing_made(self, dhmc_lab):
        output, recap = _role_only(dhmc_lab, check=False, instance_role_mode="default_host_management")
        assert recap.get("failed") == 1, output
        flat = " ".join(output.split())
        first, second = dhmc_lab.network["nodes"]
        assert f"Default Host Management only manages instances that require IMDSv2, and {first}, {second} do not" in flat
        assert "set instance_role_dhmc_require_imdsv2 to true" in flat
        assert f"aws ec2 modify-instance-metadata-options --instance-id {first} --http-tokens required" in flat
        assert self._setting(dhmc_lab)["Status"] == "Default"
        roles = [r["RoleName"] for r in dhmc_lab.client("iam").list_roles()["Roles"]]
        assert "AWSSystemsManagerDefaultEC2InstanceManagementRole" not in roles

    def test_check_mode_changes_nothing(self, dhmc_lab):
        output, recap = _role_only(dhmc_lab, check_mode=True, instance_role_mode="default_host_management",
                                   instance_role_dhmc_require_imdsv2=True)
        assert recap["failed"] == 0 and recap["changed"] >= 2, output
        assert self._setting(dhmc_lab)["Status"] == "Default"

    def test_dhmc_brings_the_nodes_online_without_a_profile(self, dhmc_lab):
        output, recap = _role_only(dhmc_lab, instance_role_mode="default_host_management",
                                   instance_role_dhmc_require_imdsv2=True)
        assert recap["failed"] == 0, output
        setting = self._setting(dhmc_lab)
        assert setting["SettingValue"] == "service-role/AWSSystemsManagerDefaultEC2InstanceManagementRole"
        wait_for(dhmc_lab, "Online")
        assert all(_profile_of(dhmc_lab, node) == "" for node in dhmc_lab.network["nodes"])
        output, recap = _role_only(dhmc_lab, instance_role_mode="default_host_management",
                                   instance_role_dhmc_require_imdsv2=True)
        assert recap["changed"] == 0, output
