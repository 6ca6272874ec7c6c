# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The operator_access filters: input problems, the policy compiler, missing principals, users and roles to change.
The role runs them against the lab in tests/integration/test_role_operator_access.py."""

import pytest

from ansible_collections.bastionless.ssm.plugins.filter import operator_access as oa
from ansible_collections.bastionless.ssm.plugins.module_utils._iam_policy import ALLOWED, IMPLICIT_DENY, decide

ACCOUNT = "123456789012"


def compile_one(**group):
    plan = oa.plan([{"name": "web", "documents": ["shell"], **group}], "aws", ACCOUNT, "eu-west-1")
    return plan, plan["policies"][0]["document"]


def statement(document: dict, sid: str) -> dict:
    [found] = [s for s in document["Statement"] if s["Sid"] == sid]
    return found


# --- the policy compiler ----------------------------------------------------------------------------------------


def test_a_group_becomes_one_policy_named_by_the_prefix_and_attached_to_its_principals():
    plan = oa.plan([{"name": "web", "documents": ["shell"], "iam_groups": ["ops"], "iam_users": ["alice"],
                     "iam_roles": ["oncall"]},
                    {"name": "db", "documents": ["port_forwarding"], "iam_groups": ["ops"]}],
                   "aws-cn", ACCOUNT, "cn-north-1", prefix="team-")
    arns = [f"arn:aws-cn:iam::{ACCOUNT}:policy/team-web", f"arn:aws-cn:iam::{ACCOUNT}:policy/team-db"]
    assert [(p["group"], p["name"], p["arn"], p["state"]) for p in plan["policies"]] == [
        ("web", "team-web", arns[0], "present"), ("db", "team-db", arns[1], "present")]
    assert plan["iam_groups"] == {"ops": arns}
    assert plan["iam_users"] == {"alice": arns[:1]} and plan["iam_roles"] == {"oncall": arns[:1]}


def test_an_absent_group_has_no_document_and_no_attachments():
    plan = oa.plan([{"name": "old", "state": "absent", "iam_users": ["alice"]}], "aws", ACCOUNT, "eu-west-1")
    assert plan["policies"] == [{"group": "old", "name": "bastionless-ssm-old", "state": "absent", "document": None,
                                 "arn": f"arn:aws:iam::{ACCOUNT}:policy/bastionless-ssm-old"}]
    assert plan["iam_users"] == {}


def test_tags_without_wildcards_are_exact_and_with_them_are_patterns():
    _plan, document = compile_one(resource_tags={"Team": "web", "Env": ["dev", "stag*"], "Tier": ["a", "b"]})
    condition = statement(document, "StartSessionOnNodes")["Condition"]
    assert condition == {
        "BoolIfExists": {"ssm:SessionDocumentAccessCheck": "true"},
        "StringEquals": {"ssm:resourceTag/Team": ["web"], "ssm:resourceTag/Tier": ["a", "b"]},
        "StringLike": {"ssm:resourceTag/Env": ["dev", "stag*"]},
    }


def test_no_tags_leave_only_the_document_check_on_the_nodes():
    _plan, document = compile_one()
    assert statement(document, "StartSessionOnNodes")["Condition"] == {
        "BoolIfExists": {"ssm:SessionDocumentAccessCheck": "true"}}
    assert statement(document, "StartSessionOnNodes")["Resource"] == [
        f"arn:aws:ec2:eu-west-1:{ACCOUNT}:instance/*", f"arn:aws:ssm:eu-west-1:{ACCOUNT}:managed-instance/*"]


def test_documents_once_each_with_the_account_only_on_the_accounts_own():
    _plan, document = compile_one(documents=["ssh", "shell", "ssh", "port_forwarding_remote_host"])
    started = statement(document, "StartSessionWithDocuments")
    assert started["Resource"] == [
        "arn:aws:ssm:eu-west-1::document/AWS-StartSSHSession",
        f"arn:aws:ssm:eu-west-1:{ACCOUNT}:document/SSM-SessionManagerRunShell",
        "arn:aws:ssm:eu-west-1::document/AWS-StartPortForwardingSessionToRemoteHost",
    ]
    assert started["Condition"] == {"BoolIfExists": {"ssm:SessionDocumentAccessCheck": "true"}}


def test_own_sessions_by_the_session_id_tag_session_manager_sets():
    _plan, document = compile_one()
    own = statement(document, "ResumeAndEndOwnSessions")
    assert own["Action"] == ["ssm:ResumeSession", "ssm:TerminateSession"]
    assert own["Resource"] == [f"arn:aws:ssm:*:{ACCOUNT}:session/*"]
    assert own["Condition"] == {"StringEquals": {"ssm:resourceTag/aws:ssmmessages:session-id": "${aws:userid}"}}
    assert statement(document, "OpenOwnDataChannels")["Action"] == ["ssmmessages:OpenDataChannel"]
    assert statement(document, "OpenOwnDataChannels")["Resource"] == [f"arn:aws:ssm:*:{ACCOUNT}:session/*"]
    assert statement(document, "OpenOwnDataChannels")["Condition"] == {
        "StringEqualsIfExists": {"ssm:resourceTag/aws:ssmmessages:session-id": "${aws:userid}"}}


def test_only_a_group_with_the_ssh_document_may_push_an_ssh_key():
    _plan, shell = compile_one()
    assert [s for s in shell["Statement"] if "ec2-instance-connect:SendSSHPublicKey" in s["Action"]] == []
    _plan, ssh = compile_one(documents=["ssh"], resource_tags={"Team": "web", "Env": ["dev", "stag*"]})
    assert statement(ssh, "SendSSHPublicKeyAsRunAsUser") == {
        "Sid": "SendSSHPublicKeyAsRunAsUser", "Effect": "Allow", "Action": ["ec2-instance-connect:SendSSHPublicKey"],
        "Resource": [f"arn:aws:ec2:eu-west-1:{ACCOUNT}:instance/*"],
        "Condition": {"StringEquals": {"ec2:osuser": "${aws:PrincipalTag/SSMSessionRunAs}",
                                       "aws:ResourceTag/Team": ["web"]},
                      "StringLike": {"aws:ResourceTag/Env": ["dev", "stag*"]}}}


@pytest.mark.parametrize("os_user, run_as, tags, allowed", [
    ("alice", "alice", {"Team": "web"}, True),
    ("root", "alice", {"Team": "web"}, False),  # another OS user than her Run As user
    ("alice", None, {"Team": "web"}, False),  # no Run As tag: no key at all
    ("alice", "alice", {"Team": "db"}, False),  # a node not tagged for the group
    ("alice", "alice", {}, False),
])
def test_an_ssh_key_only_for_the_run_as_user_on_the_groups_nodes(os_user, run_as, tags, allowed):
    _plan, document = compile_one(documents=["ssh"], resource_tags={"Team": "web"})
    context = {"ec2:osuser": [os_user], **{f"aws:resourcetag/{k}".lower(): [v] for k, v in tags.items()}}
    if run_as:
        context["aws:principaltag/ssmsessionrunas"] = [run_as]
    decision = decide([document], "ec2-instance-connect:SendSSHPublicKey",
                      f"arn:aws:ec2:eu-west-1:{ACCOUNT}:instance/i-0123456789abcdef0", context)
    assert decision == (ALLOWED if allowed else IMPLICIT_DENY)


ALICE = {"aws:username": "alice", "aws:userid": "AIDAALICEEXAMPLE0001"}
ALICE_ADMIN = {"aws:username": "alice-admin", "aws:userid": "AIDAALICEADMINEX0002"}
ROLE_SESSION = {"aws:userid": "AROAONCALLEXAMPLE003:alice"}  # a role assumed with the session name alice
FEDERATED = {"aws:userid": f"{ACCOUNT}:alice"}  # sts:GetFederationToken with the name alice


def _owned_by(starter: dict) -> dict:
    return {"ssm:resourceTag/aws:ssmmessages:session-id": starter["aws:userid"]}


@pytest.mark.parametrize("action", ["ssm:ResumeSession", "ssm:TerminateSession"])
@pytest.mark.parametrize("caller, session_id, starter, allowed", [
    (ALICE, "alice-0123456789abcdef0", ALICE, True),
    # alice-admin's session ids start with "alice-" too: session/${aws:username}-* allowed alice to end them.
    (ALICE, "alice-admin-0123456789abcdef0", ALICE_ADMIN, False),
    (ALICE_ADMIN, "alice-0123456789abcdef0", ALICE, False),
    # A role session's and a federated user's sessions are named by their session or user name, which any other
    # principal may share: only the unique id tells them apart.
    (ROLE_SESSION, "alice-0123456789abcdef0", ROLE_SESSION, True),
    (ALICE, "alice-0123456789abcdef0", ROLE_SESSION, False),
    (ROLE_SESSION, "alice-0123456789abcdef0", ALICE, False),
    (FEDERATED, "alice-0123456789abcdef0", FEDERATED, True),
    (FEDERATED, "alice-0123456789abcdef0", ALICE, False),
])
def test_own_sessions_only_exactly(action, caller, session_id, starter, allowed):
    _plan, document = compile_one()
    resource = f"arn:aws:ssm:eu-west-1:{ACCOUNT}:session/{session_id}"
    decision = decide([document], action, resource, {**caller, **_owned_by(starter)})
    assert decision == (ALLOWED if allowed else IMPLICIT_DENY)


@pytest.mark.parametrize("caller, session_id, starter, allowed", [
    (ALICE, "alice-0123456789abcdef0", ALICE, True),
    (ALICE, "alice-admin-0123456789abcdef0", ALICE_ADMIN, False),
    (ROLE_SESSION, "alice-0123456789abcdef0", ROLE_SESSION, True),
    (ROLE_SESSION, "alice-0123456789abcdef0", ALICE, False),
    (FEDERATED, "alice-0123456789abcdef0", FEDERATED, True),
    (FEDERATED, "alice-0123456789abcdef0", ROLE_SESSION, False),
])
def test_own_data_channels_only_where_the_owner_tag_is_known(caller, session_id, starter, allowed):
    _plan, document = compile_one()
    resource = f"arn:aws:ssm:eu-west-1:{ACCOUNT}:session/{session_id}"
    decision = decide([document], "ssmmessages:OpenDataChannel", resource, {**caller, **_owned_by(starter)})
    assert decision == (ALLOWED if allowed else IMPLICIT_DENY)


@pytest.mark.parametrize("caller", [ALICE, ROLE_SESSION, FEDERATED])
def test_the_samples_data_channel_resource_matches_no_session_id(caller):
    """AWS's sample grants OpenDataChannel on session/${aws:userid}-*: session ids start with a name (user, role
    session or federated user), never with the unique id, so that resource matches none of the caller's own."""
    sample = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ssmmessages:OpenDataChannel",
                                                      "Resource": "arn:aws:ssm:*:*:session/${aws:userid}-*"}]}
    resource = f"arn:aws:ssm:eu-west-1:{ACCOUNT}:session/alice-0123456789abcdef0"
    assert decide([sample], "ssmmessages:OpenDataChannel", resource, {**caller, **_owned_by(caller)}) \
        == IMPLICIT_DENY
    _plan, document = compile_one()
    assert decide([document], "ssmmessages:OpenDataChannel", resource, {**caller, **_owned_by(caller)}) == ALLOWED


def test_a_session_without_the_tag_is_nobodys():
    _plan, document = compile_one()
    resource = f"arn:aws:ssm:eu-west-1:{ACCOUNT}:session/alice-0123456789abcdef0"
    assert decide([document], "ssm:TerminateSession", resource, ALICE) == IMPLICIT_DENY


def test_null_options_count_as_unset():
    plan = oa.plan([{"name": "web", "documents": ["shell"], "resource_tags": None, "iam_users": None,
                     "state": None}], "aws", ACCOUNT, "eu-west-1")
    assert plan["policies"][0]["state"] == "present" and plan["iam_users"] == {}


# --- input problems ---------------------------------------------------------------------------------------------


def test_good_inputs_have_no_problem():
    assert oa.problems([{"name": "web", "documents": ["shell"], "resource_tags": {"Env": ["dev", "prod"]},
                         "iam_users": ["alice"]}], region="eu-west-1", run_as={"alice": "alice"}) == []


def test_no_region_names_both_variables():
    [problem] = oa.problems([], region="")
    assert problem.startswith("operator_access_region: no region given") and "bastionless_region" in problem


@pytest.mark.parametrize("prefix, expected", [
    ("ops team/", "operator_access_policy_prefix: 'ops team/' has characters IAM does not allow"),
    ("p" * 126, "operator_access_groups: 'web' makes the policy name"),
])
def test_a_prefix_iam_refuses(prefix, expected):
    found = oa.problems([{"name": "web", "documents": ["shell"]}], prefix=prefix, region="r")
    assert any(p.startswith(expected) for p in found), found


def test_a_group_listed_twice_is_named_once_with_its_count():
    found = oa.problems([{"name": "web", "documents": ["shell"]}] * 3, region="r")
    assert found == ["operator_access_groups: 'web' is listed 3 times; give each group a unique name "
                     "(each is one policy)."]


def test_a_present_group_without_documents_lists_the_kinds():
    [problem] = oa.problems([{"name": "web"}], region="r")
    assert "list at least one of port_forwarding, port_forwarding_remote_host, shell, ssh" in problem
    assert oa.problems([{"name": "web", "state": "absent"}], region="r") == []


@pytest.mark.parametrize("value, shown", [
    (1, "1"), (True, "true"), ([], "[]"), (["a", ""], '["a", ""]'), ({"a": "b"}, '{"a": "b"}'), (None, "null"),
    (["a", 2], '["a", 2]'),
])
def test_a_tag_value_that_is_not_strings(value, shown):
    [problem] = oa.problems([{"name": "web", "documents": ["shell"], "resource_tags": {"Env": value}}], region="r")
    assert problem.startswith(f"operator_access_groups: 'web' has resource_tags.Env = {shown}; a tag key")
    assert 'quote numbers and yes/no, e.g. "1"' in problem


def test_an_empty_tag_key():
    [problem] = oa.problems([{"name": "web", "documents": ["shell"], "resource_tags": {"": "x"}}], region="r")
    assert "has resource_tags. = \"x\"" in problem


def test_arns_instead_of_names_one_and_many():
    found = oa.problems([{"name": "web", "documents": ["shell"], "iam_users": ["arn:aws:iam::1:user/a", "ok"],
                          "iam_roles": ["role/a", "role/b"]}], region="r")
    assert found == [
        "operator_access_groups: 'web' has iam_users \"arn:aws:iam::1:user/a\", which is not a valid IAM name "
        "(1-64 letters, digits and +=,.@_-); give the name, not the ARN.",
        "operator_access_groups: 'web' has iam_roles \"role/a\", \"role/b\", which are not valid IAM names "
        "(1-64 letters, digits and +=,.@_-); give the name, not the ARN.",
    ]


@pytest.mark.parametrize("os_user, example", [
    ("Alice", "alice"), ("9lives", "_9lives"), ("-x", "_-x"), ("ÄÖ", "ops"), (True, "true"), ("a" * 40, "a" * 32),
])
def test_a_run_as_user_linux_refuses_gets_an_example(os_user, example):
    [problem] = oa.problems([], region="r", run_as={"alice": os_user})
    assert problem.startswith("operator_access_run_as: 'alice' maps to ")
    assert problem.endswith(f"(for example '{example}').")


def test_a_run_as_principal_given_as_an_arn():
    [problem] = oa.problems([], region="r", run_as={"arn:aws:iam::1:user/alice": "alice"})
    assert problem.startswith("operator_access_run_as: 'arn:aws:iam::1:user/alice' is not a valid IAM user or role")


# --- principals -------------------------------------------------------------------------------------------------

PLAN = {"policies": [], "iam_groups": {"ops": ["p1"]}, "iam_users": {"bob": ["p1"], "alice": ["p1", "p2"]},
        "iam_roles": {"oncall": ["p2"]}}


def test_missing_principals_by_kind_and_run_as_when_neither_user_nor_role():
    assert oa.missing(PLAN, {"carol": "carol", "alice": "alice", "deploy": "deploy"}, [], ["alice"], ["deploy"]) == [
        "IAM group ops", "IAM user bob", "IAM role oncall", "IAM user or role carol"]
    assert oa.missing(PLAN, {}, ["ops"], ["bob", "alice"], ["oncall"]) == []


def test_principals_get_policies_tags_or_both_sorted_and_roles_keep_their_trust():
    trust = {"oncall": {"Version": "2012-10-17"}, "deploy": {"Version": "2012-10-17", "Id": "x"}}
    changed = oa.principals(PLAN, {"alice": "alice", "carol": "carol", "deploy": "ci"}, ["alice", "bob", "carol"],
                            trust)
    assert changed["users"] == [
        {"name": "alice", "managed_policies": ["p1", "p2"], "tags": {"SSMSessionRunAs": "alice"}},
        {"name": "bob", "managed_policies": ["p1"], "tags": None},
        {"name": "carol", "managed_policies": None, "tags": {"SSMSessionRunAs": "carol"}},
    ]
    assert changed["roles"] == [
        {"name": "deploy", "managed_policies": None, "tags": {"SSMSessionRunAs": "ci"}, "trust": trust["deploy"]},
        {"name": "oncall", "managed_policies": ["p2"], "tags": None, "trust": trust["oncall"]},
    ]


def test_the_filters_ansible_sees():
    assert set(oa.FilterModule().filters()) == {"operator_access_problems", "operator_access_plan",
                                                "operator_access_missing", "operator_access_principals"}
