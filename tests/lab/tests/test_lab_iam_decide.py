"""The lab's IAM policy evaluation (ssm_lab.aws.iamsim.decide), which SimulatePrincipalPolicy and the role tests
(operator_access, transfer_bucket) judge policies with: a table of requests against policies, those that must be
denied as much as those that must be allowed; and, in strict mode, what it refuses to guess."""

import json
from urllib.parse import quote

import pytest
from ssm_lab.aws.iamsim import ALLOWED as ALLOW
from ssm_lab.aws.iamsim import EXPLICIT_DENY, IMPLICIT_DENY, UnsupportedPolicy
from ssm_lab.aws.iamsim import decide as evaluate

INSTANCE = "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0"


def policy(*statements):
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(action, resource, condition=None, **extra):
    statement = {"Effect": "Allow", "Action": action, "Resource": resource, **extra}
    if condition:
        statement["Condition"] = condition
    return statement


TAGGED = policy(allow("ssm:StartSession", "arn:aws:ec2:*:*:instance/*",
                      {"StringEquals": {"ssm:resourceTag/Env": ["dev", "test"]}}))
LIKE = policy(allow("ssm:StartSession", "*", {"StringLike": {"ssm:resourceTag/Team": "web-*"}}))
TWO_KEYS = policy(allow("ssm:StartSession", "*",
                        {"StringEquals": {"ssm:resourceTag/Env": "dev", "ssm:resourceTag/Team": "web"}}))
DOC_CHECK = policy(allow("ssm:StartSession", "*", {"BoolIfExists": {"ssm:SessionDocumentAccessCheck": "true"}}))
BOOL = policy(allow("s3:GetObject", "*", {"Bool": {"aws:SecureTransport": "true"}}))
NOT_EQUALS = policy(allow("ssm:StartSession", "*", {"StringNotEquals": {"ssm:resourceTag/Env": "prod"}}))
OWN = policy(allow(["ssm:TerminateSession", "ssm:ResumeSession"],
                   "arn:aws:ssm:*:123456789012:session/${aws:username}-*"))
USERID = policy(allow("ssmmessages:OpenDataChannel", "arn:aws:ssm:*:*:session/${aws:userid}-*"))
WITH_DENY = policy(allow("ssm:*", "*"),
                   {"Effect": "Deny", "Action": "ssm:StartSession", "Resource": "*",
                    "Condition": {"StringEquals": {"ssm:resourceTag/Env": "prod"}}})
NOT_ACTION = policy({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"})
NOT_RESOURCE = policy({"Effect": "Allow", "Action": "s3:GetObject", "NotResource": "arn:aws:s3:::secret/*"})
QUESTION = policy(allow("ssm:Get?onnectionStatus", "arn:aws:ec2:us-east-1:123456789012:instance/i-0?"))
ESCAPE = policy(allow("s3:GetObject", "arn:aws:s3:::bucket/${*}"))
VARIABLE_IN_CONDITION = policy(allow("ssm:StartSession", "*",
                                     {"StringEquals": {"ssm:resourceTag/Owner": "${aws:username}"}}))


@pytest.mark.parametrize("policies, action, resource, context, expected", [
    # tag conditions: exact, any of several values, wildcards, several keys ANDed
    ([TAGGED], "ssm:StartSession", INSTANCE, {"ssm:resourceTag/Env": "dev"}, ALLOW),
    ([TAGGED], "ssm:StartSession", INSTANCE, {"ssm:resourceTag/Env": "test"}, ALLOW),
    ([TAGGED], "ssm:StartSession", INSTANCE, {"ssm:resourceTag/Env": "prod"}, IMPLICIT_DENY),
    ([TAGGED], "ssm:StartSession", INSTANCE, {"ssm:resourceTag/Env": "Dev"}, IMPLICIT_DENY),
    ([TAGGED], "ssm:StartSession", INSTANCE, {}, IMPLICIT_DENY),
    ([TAGGED], "ssm:StartSession", INSTANCE, {"SSM:RESOURCETAG/ENV": "dev"}, ALLOW),
    ([TAGGED], "ssm:startsession", INSTANCE, {"ssm:resourceTag/Env": "dev"}, ALLOW),
    ([TAGGED], "ssm:StartSession", "arn:aws:ssm:us-east-1:123456789012:managed-instance/mi-0123456789abcdef0",
     {"ssm:resourceTag/Env": "dev"}, IMPLICIT_DENY),
    ([TAGGED], "ssm:SendCommand", INSTANCE, {"ssm:resourceTag/Env": "dev"}, IMPLICIT_DENY),
    ([LIKE], "ssm:StartSession", INSTANCE, {"ssm:resourceTag/Team": "web-frontend"}, ALLOW),
    ([LIKE], "ssm:StartSession", INSTANCE, {"ssm:resourceTag/Team": "db-web-x"}, IMPLICIT_DENY),
    ([TWO_KEYS], "ssm:StartSession", INSTANCE, {"ssm:resourceTag/Env": "dev", "ssm:resourceTag/Team": "web"}, ALLOW),
    ([TWO_KEYS], "ssm:StartSession", INSTANCE, {"ssm:resourceTag/Env": "dev", "ssm:resourceTag/Team": "db"},
     IMPLICIT_DENY),
    ([TWO_KEYS], "ssm:StartSession", INSTANCE, {"ssm:resourceTag/Env": "dev"}, IMPLICIT_DENY),
    # ...IfExists: a missing key passes, a present one must match
    ([DOC_CHECK], "ssm:StartSession", INSTANCE, {}, ALLOW),
    ([DOC_CHECK], "ssm:StartSession", INSTANCE, {"ssm:SessionDocumentAccessCheck": "true"}, ALLOW),
    ([DOC_CHECK], "ssm:StartSession", INSTANCE, {"ssm:SessionDocumentAccessCheck": True}, ALLOW),
    ([DOC_CHECK], "ssm:StartSession", INSTANCE, {"ssm:SessionDocumentAccessCheck": "false"}, IMPLICIT_DENY),
    # Bool without IfExists: a missing key fails
    ([BOOL], "s3:GetObject", "arn:aws:s3:::b/k", {"aws:SecureTransport": "true"}, ALLOW),
    ([BOOL], "s3:GetObject", "arn:aws:s3:::b/k", {}, IMPLICIT_DENY),
    # negated operators: a missing key passes
    ([NOT_EQUALS], "ssm:StartSession", INSTANCE, {"ssm:resourceTag/Env": "dev"}, ALLOW),
    ([NOT_EQUALS], "ssm:StartSession", INSTANCE, {"ssm:resourceTag/Env": "prod"}, IMPLICIT_DENY),
    ([NOT_EQUALS], "ssm:StartSession", INSTANCE, {}, ALLOW),
    # policy variables in resources: own sessions only, and none at all without a user name (a role)
    ([OWN], "ssm:TerminateSession", "arn:aws:ssm:us-east-1:123456789012:session/alice-0123",
     {"aws:username": "alice"}, ALLOW),
    ([OWN], "ssm:ResumeSession", "arn:aws:ssm:eu-west-1:123456789012:session/alice-0123",
     {"aws:username": "alice"}, ALLOW),
    ([OWN], "ssm:TerminateSession", "arn:aws:ssm:us-east-1:123456789012:session/bob-0123",
     {"aws:username": "alice"}, IMPLICIT_DENY),
    ([OWN], "ssm:TerminateSession", "arn:aws:ssm:us-east-1:123456789012:session/alice-0123", {}, IMPLICIT_DENY),
    ([OWN], "ssm:TerminateSession", "arn:aws:ssm:us-east-1:210987654321:session/alice-0123",
     {"aws:username": "alice"}, IMPLICIT_DENY),
    # a variable's value is literal: a user named "a*" does not get everyone's sessions
    ([OWN], "ssm:TerminateSession", "arn:aws:ssm:us-east-1:123456789012:session/alice-0123",
     {"aws:username": "a*"}, IMPLICIT_DENY),
    ([USERID], "ssmmessages:OpenDataChannel", "arn:aws:ssm:us-east-1:123456789012:session/AIDAEXAMPLE-0123",
     {"aws:userid": "AIDAEXAMPLE"}, ALLOW),
    ([VARIABLE_IN_CONDITION], "ssm:StartSession", INSTANCE, {"ssm:resourceTag/Owner": "alice", "aws:username": "alice"},
     ALLOW),
    ([VARIABLE_IN_CONDITION], "ssm:StartSession", INSTANCE, {"ssm:resourceTag/Owner": "alice", "aws:username": "bob"},
     IMPLICIT_DENY),
    ([VARIABLE_IN_CONDITION], "ssm:StartSession", INSTANCE, {"ssm:resourceTag/Owner": "alice"}, IMPLICIT_DENY),
    # an explicit Deny wins over any Allow, in the same or another policy
    ([WITH_DENY], "ssm:StartSession", INSTANCE, {"ssm:resourceTag/Env": "prod"}, EXPLICIT_DENY),
    ([WITH_DENY], "ssm:StartSession", INSTANCE, {"ssm:resourceTag/Env": "dev"}, ALLOW),
    ([TAGGED, policy({"Effect": "Deny", "Action": "*", "Resource": "*"})], "ssm:StartSession", INSTANCE,
     {"ssm:resourceTag/Env": "dev"}, EXPLICIT_DENY),
    # nothing allows: implicit deny
    ([], "ssm:StartSession", INSTANCE, {}, IMPLICIT_DENY),
    # NotAction, NotResource, ? and the ${*} escape
    ([NOT_ACTION], "ssm:StartSession", INSTANCE, {}, ALLOW),
    ([NOT_ACTION], "iam:CreateUser", "*", {}, IMPLICIT_DENY),
    ([NOT_RESOURCE], "s3:GetObject", "arn:aws:s3:::public/a", {}, ALLOW),
    ([NOT_RESOURCE], "s3:GetObject", "arn:aws:s3:::secret/a", {}, IMPLICIT_DENY),
    ([QUESTION], "ssm:GetConnectionStatus", "arn:aws:ec2:us-east-1:123456789012:instance/i-01", {}, ALLOW),
    ([QUESTION], "ssm:GetConnectionStatus", "arn:aws:ec2:us-east-1:123456789012:instance/i-012", {}, IMPLICIT_DENY),
    ([ESCAPE], "s3:GetObject", "arn:aws:s3:::bucket/*", {}, ALLOW),
    ([ESCAPE], "s3:GetObject", "arn:aws:s3:::bucket/anything", {}, IMPLICIT_DENY),
])
def test_decisions(policies, action, resource, context, expected):
    assert evaluate(policies, action, resource, context) == expected


@pytest.mark.parametrize("condition, context, expected", [
    ({"NumericLessThan": {"aws:MultiFactorAuthAge": "3600"}}, {"aws:MultiFactorAuthAge": "100"}, ALLOW),
    ({"NumericLessThan": {"aws:MultiFactorAuthAge": "3600"}}, {"aws:MultiFactorAuthAge": "7200"}, IMPLICIT_DENY),
    ({"ForAnyValue:StringEquals": {"aws:TagKeys": ["a"]}}, {"aws:TagKeys": ["b", "a"]}, ALLOW),
    ({"ForAllValues:StringEquals": {"aws:TagKeys": ["a"]}}, {"aws:TagKeys": ["b", "a"]}, IMPLICIT_DENY),
    ({"Null": {"aws:TokenIssueTime": "true"}}, {}, ALLOW),
    ({"ArnLike": {"aws:SourceArn": "arn:aws:ec2:*:*:instance/*"}},
     {"aws:SourceArn": "arn:aws:ec2:us-east-1:1:instance/i-1"}, ALLOW),
])
def test_numeric_set_null_and_arn_operators(condition, context, expected):
    assert evaluate([policy(allow("ssm:StartSession", "*", condition))], "ssm:StartSession", INSTANCE,
                    context) == expected


def test_a_variable_value_is_matched_literally():
    """A user named a*b does not get the sessions of every user whose name starts with a and ends with b."""
    assert evaluate([OWN], "ssm:TerminateSession", "arn:aws:ssm:us-east-1:123456789012:session/axxb-0123",
                    {"aws:username": "a*b"}) == IMPLICIT_DENY
    assert evaluate([OWN], "ssm:TerminateSession", "arn:aws:ssm:us-east-1:123456789012:session/a*b-0123",
                    {"aws:username": "a*b"}) == ALLOW


@pytest.mark.parametrize("statement, message", [
    (allow("ssm:StartSession", "*", {"DateGreaterThan": {"aws:CurrentTime": "2026-01-01T00:00:00Z"}}),
     "DateGreaterThan"),
    (allow("ssm:StartSession", "*", {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}), "IpAddress"),
    ({"Effect": "Allow", "Principal": "*", "Action": "s3:*", "Resource": "*"}, "Principal"),
    ({"Effect": "Allow", "Action": "s3:*"}, "Resource"),
    (allow("ssm:StartSession", "arn:aws:ec2:*:*:instance/${aws:username, 'x'}"), "default value"),
])
def test_what_it_does_not_understand_raises(statement, message):
    with pytest.raises(UnsupportedPolicy, match=message):
        evaluate([policy(statement)], "ssm:StartSession", INSTANCE, {"aws:username": "alice"})


def test_policy_variables_need_the_2012_version():
    with pytest.raises(UnsupportedPolicy, match="2012-10-17"):
        evaluate([{"Version": "2008-10-17", "Statement": [allow("*", "*")]}], "s3:GetObject", "arn:aws:s3:::b")


def test_json_strings_are_read():
    assert evaluate(['{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}'],
                    "s3:GetObject", "arn:aws:s3:::b") == ALLOW


@pytest.mark.parametrize("patterns, action, expected", [
    ("ssm:*", "ssm:UpdateInstanceInformation", ALLOW),
    ("SSM:updateinstanceinformation", "ssm:UpdateInstanceInformation", ALLOW),
    ("ssm:Update*Information", "ssm:UpdateInstanceInformation", ALLOW),
    ("ssm:UpdateInstanceInformatio?", "ssm:UpdateInstanceInformation", ALLOW),
    ("ssm:UpdateInstance?", "ssm:UpdateInstanceInformation", IMPLICIT_DENY),
    (["s3:*", "ssmmessages:Open*"], "ssmmessages:OpenDataChannel", ALLOW),
    ("ssm*", "ssmmessages:OpenDataChannel", ALLOW),
    ("ssm:*", "ssmmessages:OpenDataChannel", IMPLICIT_DENY),
    ("ssm.:*", "ssm:GetDocument", IMPLICIT_DENY),
])
def test_action_wildcards(patterns, action, expected):
    assert evaluate([policy(allow(patterns, "*"))], action, "*") == expected


def test_documents_in_any_encoding():
    """Dicts, JSON text and URL-encoded JSON text (as moto keeps some documents): the lab's reachability passes
    the documents of a node's role as moto stores them."""
    document = {"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "ssm:*", "Resource": "*"}}
    text = json.dumps(document)
    for form in (document, text, quote(text), text.encode()):
        assert evaluate([form], "ssm:GetDocument", "*") == ALLOW
        assert evaluate([form], "s3:GetObject", "*") == IMPLICIT_DENY


TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


def test_a_request_without_resource_matches_on_its_action():
    """A trust policy has no Resource element: sts:AssumeRole is judged on its action alone (not strict: Principal
    is the caller's to match), while a request naming a resource finds no statement covering it."""
    assert evaluate([TRUST], "sts:AssumeRole", None, strict=False) == ALLOW
    assert evaluate([TRUST], "sts:TagSession", None, strict=False) == IMPLICIT_DENY
    assert evaluate([TRUST], "sts:AssumeRole", "*", strict=False) == IMPLICIT_DENY


def test_assumed_conditions_count_as_satisfied():
    """For a caller that knows no request context (the lab's reachability), a conditional Deny denies and a
    conditional Allow allows; evaluated, the same conditions fail for want of their keys."""
    conditional = policy(allow("ssm:*", "*"),
                         {"Effect": "Deny", "Action": "*", "Resource": "*",
                          "Condition": {"Bool": {"aws:SecureTransport": "false"}}})
    assert evaluate([conditional], "ssm:UpdateInstanceInformation", "*") == ALLOW
    assert evaluate([conditional], "ssm:UpdateInstanceInformation", "*", assume_conditions=True) == EXPLICIT_DENY
    assert evaluate([TAGGED], "ssm:StartSession", INSTANCE, assume_conditions=True) == ALLOW
    assert evaluate([TAGGED], "ssm:StartSession", INSTANCE) == IMPLICIT_DENY
