"""The collection's one IAM policy evaluator (module_utils/_iam_policy.py), which ssm_preflight judges an instance
role with and the lab's SimulatePrincipalPolicy, reachability and role tests load: a table of requests against
policies, those that must be denied as much as those that must be allowed; in strict mode, what it refuses to
guess; and trust policies."""

import json
from urllib.parse import quote

import pytest

from ansible_collections.bastionless.ssm.plugins.module_utils import _iam_policy as iam
from ansible_collections.bastionless.ssm.plugins.module_utils._iam_policy import ALLOWED as ALLOW
from ansible_collections.bastionless.ssm.plugins.module_utils._iam_policy import EXPLICIT_DENY
from ansible_collections.bastionless.ssm.plugins.module_utils._iam_policy import IMPLICIT_DENY
from ansible_collections.bastionless.ssm.plugins.module_utils._iam_policy import UnsupportedPolicy
from ansible_collections.bastionless.ssm.plugins.module_utils._iam_policy import decide as evaluate

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
    the documents of a node's role as moto stores them, ssm_preflight as the IAM API returns them."""
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


@pytest.mark.parametrize("document", ["not json", b"{", "[1, 2]", 42, None])
def test_an_unreadable_document_allows_nothing_and_strict_mode_says_so(document):
    assert iam.policy_document(document) == {}
    assert iam.decide([document], "s3:GetObject", "*", strict=False) == IMPLICIT_DENY
    with pytest.raises(UnsupportedPolicy, match="JSON|Version"):
        iam.decide([document], "s3:GetObject", "*")


def test_a_statement_that_is_not_an_object_is_refused_in_strict_mode_and_skipped_otherwise():
    document = policy("not a statement", allow("s3:*", "*"))
    assert iam.decide([document], "s3:GetObject", "*", strict=False) == ALLOW
    with pytest.raises(UnsupportedPolicy, match="statement must be a JSON object"):
        iam.decide([document], "s3:GetObject", "*")


def test_evaluate_names_the_deciding_policies_and_the_missing_context_keys():
    missing = set()
    decision, matched = iam.evaluate([("dev", "user", TAGGED), ("docs", "group", DOC_CHECK), ("other", "user", BOOL)],
                                     "ssm:StartSession", INSTANCE, {"ssm:resourceTag/Env": "dev"}, missing)
    assert (decision, matched) == (ALLOW, [("dev", "user"), ("docs", "group")])
    # DOC_CHECK's key is missing (IfExists passes); BOOL does not match the action, so its key is not asked for
    assert missing == {"ssm:SessionDocumentAccessCheck"}
    denied = iam.evaluate([("dev", "user", TAGGED), ("deny", "user", WITH_DENY)], "ssm:StartSession", INSTANCE,
                          {"ssm:resourceTag/Env": "prod"})
    assert denied == (EXPLICIT_DENY, [("deny", "user")])


def test_every_missing_key_of_a_statement_is_reported_even_after_one_fails():
    missing = set()
    iam.evaluate([("two", "user", TWO_KEYS)], "ssm:StartSession", INSTANCE, {}, missing)
    assert missing == {"ssm:resourceTag/Env", "ssm:resourceTag/Team"}


@pytest.mark.parametrize("statement, action, resource, expected", [
    (allow("ssm:*", "arn:aws:ec2:*:*:instance/*"), "ssm:StartSession", INSTANCE, True),
    (allow("ssm:*", "arn:aws:ec2:*:*:instance/*"), "ssm:StartSession", INSTANCE.upper(), False),
    (allow("ssm:*", "arn:aws:ec2:*:*:instance/*"), "ssm:StartSession", None, True),
    ({"Effect": "Allow", "Resource": "*"}, "ssm:StartSession", "*", False),
    ({"Effect": "Allow", "Action": "*"}, "ssm:StartSession", "*", False),
])
def test_covers(statement, action, resource, expected):
    assert iam.covers(statement, action, resource) is expected


def test_allowed_counts_conditions_as_satisfied():
    assert iam.allowed([TAGGED], "ssm:StartSession", INSTANCE) is True
    assert iam.allowed([WITH_DENY], "ssm:StartSession", INSTANCE) is False
    assert iam.allowed([], "ssm:StartSession", INSTANCE) is False


EC2 = frozenset({"ec2.amazonaws.com"})


@pytest.mark.parametrize("trust, services, expected", [
    (TRUST, EC2, True),
    (TRUST, frozenset({"ssm.amazonaws.com"}), False),
    (json.dumps(TRUST), EC2, True),
    ({"Statement": [{"Effect": "Allow", "Principal": {"Service": ["lambda.amazonaws.com", "EC2.amazonaws.com"]},
                     "Action": "sts:*"}]}, EC2, True),
    ({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "sts:AssumeRole"}]}, EC2, True),
    ({"Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]}, EC2, True),
    ({"Statement": [{"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::1:root"}, "Action": "sts:AssumeRole"}]},
     EC2, False),
    ({"Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:TagSession"}]},
     EC2, False),
    # NotPrincipal: everyone but those listed
    ({"Statement": [{"Effect": "Allow", "NotPrincipal": {"Service": "ssm.amazonaws.com"}, "Action": "sts:AssumeRole"}]},
     EC2, True),
    ({"Statement": [{"Effect": "Allow", "NotPrincipal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]},
     EC2, False),
    # an explicit Deny wins, a conditional one too (conditions count as satisfied)
    ({"Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"},
                    {"Effect": "Deny", "Principal": "*", "Action": "sts:AssumeRole",
                     "Condition": {"StringEquals": {"aws:SourceAccount": "1"}}}]}, EC2, False),
    (None, EC2, False),
    ("not json", EC2, False),
])
def test_trusts(trust, services, expected):
    assert iam.trusts(trust, services) is expected
