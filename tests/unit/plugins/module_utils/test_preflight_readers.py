"""The readers of bastionless.ssm.ssm_preflight (module_utils/_preflight_readers.py): error texts, batching, and
what each reader makes of the AWS answers, with botocore's Stubber or small fake clients standing in for AWS."""

import pytest
from botocore.exceptions import ClientError

from ansible_collections.bastionless.ssm.plugins.module_utils import _preflight as pf
from ansible_collections.bastionless.ssm.plugins.module_utils import _preflight_readers as readers

@pytest.mark.parametrize("items, size, expected", [
    ([], 2, []),
    (["a", "b", "c"], 2, [["a", "b"], ["c"]]),
    (["a"] * 101, 100, [["a"] * 100, ["a"]]),
])
def test_chunks(items, size, expected):
    assert list(readers.chunks(items, size)) == expected


def test_error_text_and_code_of_aws_errors():
    error = ClientError({"Error": {"Code": "AccessDenied", "Message": "not you"}}, "SimulatePrincipalPolicy")
    wrapped = readers.PreflightError(message="Failed to simulate", exception=error)
    assert readers.error_text(error) == readers.error_text(wrapped) == "AccessDenied: not you"
    assert readers.error_code(wrapped) == "AccessDenied"
    assert readers.error_code(ValueError("x")) is None
    assert readers.error_text(ValueError("bad")) == "ValueError: bad"


class FakeIam:
    """An IAM client answering from dicts and counting calls (the reader's caching is what is tested)."""

    def __init__(self, profiles, roles, inline=None, attached=None, policies=None):
        self.profiles, self.roles = profiles, roles
        self.inline, self.attached, self.policies = inline or {}, attached or {}, policies or {}
        self.calls = []

    def _missing(self, operation):
        return ClientError({"Error": {"Code": "NoSuchEntity", "Message": "no"}}, operation)

    def get_instance_profile(self, InstanceProfileName):
        self.calls.append(("get_instance_profile", InstanceProfileName))
        if InstanceProfileName not in self.profiles:
            raise self._missing("GetInstanceProfile")
        return {"InstanceProfile": self.profiles[InstanceProfileName]}

    def get_role(self, RoleName):
        self.calls.append(("get_role", RoleName))
        if RoleName not in self.roles:
            raise self._missing("GetRole")
        return {"Role": self.roles[RoleName]}

    def get_role_policy(self, RoleName, PolicyName):
        self.calls.append(("get_role_policy", PolicyName))
        return {"PolicyDocument": self.inline[RoleName][PolicyName]}

    def get_policy(self, PolicyArn):
        self.calls.append(("get_policy", PolicyArn))
        return {"Policy": {"DefaultVersionId": "v1"}}

    def get_policy_version(self, PolicyArn, VersionId):
        return {"PolicyVersion": {"Document": self.policies[PolicyArn]}}

    def get_paginator(self, name):
        iam = self

        class Pages:
            def __init__(self, result):
                self.result = result

            def build_full_result(self):
                return self.result

        class Paginator:
            def paginate(self, RoleName):
                iam.calls.append((name, RoleName))
                if name == "list_role_policies":
                    return Pages({"PolicyNames": list(iam.inline.get(RoleName, {}))})
                return Pages({"AttachedPolicies": [{"PolicyArn": a} for a in iam.attached.get(RoleName, [])]})

        return Paginator()


PROFILE_ARN = "arn:aws:iam::123456789012:instance-profile/node"
CUSTOM = "arn:aws:iam::123456789012:policy/custom"


def reader():
    iam = FakeIam(
        profiles={"node": {"Arn": PROFILE_ARN, "InstanceProfileId": "AIPAOLD", "Roles": [{"RoleName": "node"}]}},
        roles={"node": {"RoleName": "node", "Arn": "arn:aws:iam::123456789012:role/node",
                        "AssumeRolePolicyDocument": {"Statement": []}}},
        inline={"node": {"extra": {"Statement": []}}},
        attached={"node": ["arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore", CUSTOM]},
        policies={CUSTOM: {"Statement": [{"Effect": "Deny", "Action": "*", "Resource": "*"}]}},
    )
    return iam, readers.IamReader(iam)


def test_each_profile_role_and_policy_is_read_once_for_any_number_of_nodes():
    iam, iam_reader = reader()
    for _attempt in range(3):
        profile = iam_reader.profile({"Arn": PROFILE_ARN, "Id": "iip-assoc-123"})
    assert profile["found"] is True and profile["role"]["name"] == "node"
    # the AWS managed core policy is known, not read; the customer one is read once
    assert [c for c in iam.calls if c[0] == "get_policy"] == [("get_policy", CUSTOM)]
    assert sorted(c[0] for c in iam.calls) == ["get_instance_profile", "get_policy", "get_role", "get_role_policy",
                                               "list_attached_role_policies", "list_role_policies"]
    assert len(profile["role"]["documents"]) == 3


def test_a_recreated_profile_is_not_the_attached_one():
    _iam, iam_reader = reader()
    assert iam_reader.profile({"Arn": PROFILE_ARN, "Id": "AIPAOLD"})["found"] is True
    assert iam_reader.profile({"Arn": PROFILE_ARN, "Id": "AIPANEW"})["found"] is False


def test_missing_profile_and_unreadable_role():
    iam, iam_reader = reader()
    gone = "arn:aws:iam::123456789012:instance-profile/gone"
    assert iam_reader.profile({"Arn": gone}) == {"arn": gone, "found": False}
    assert iam_reader.role("nobody") is None

    def denied(RoleName):
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetRole")

    iam.get_role = denied
    assert iam_reader.role("other") == {"name": "other", "error": "AccessDenied: no"}
