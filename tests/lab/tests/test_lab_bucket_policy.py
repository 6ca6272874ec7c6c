"""Bucket policies as AWS applies them to TLS requests: moto ignores Bool conditions, so the lab decides
``aws:SecureTransport`` itself (every AWS SDK call is over TLS; the lab's are HTTP only because it is local)."""

import pytest
from ssm_lab.aws.controlplane import _as_over_tls

DENY = {"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": "*"}


@pytest.mark.parametrize("condition, expected", [
    (None, DENY),
    ({"Bool": {"aws:SecureTransport": "false"}}, None),
    ({"Bool": {"aws:SecureTransport": False}}, None),
    ({"Bool": {"aws:SecureTransport": "true"}}, DENY),
    ({"Bool": {"aws:SecureTransport": "false", "aws:MultiFactorAuthPresent": "false"}}, None),
    ({"Bool": {"aws:SecureTransport": "true"}, "StringEquals": {"aws:PrincipalAccount": "1"}},
     {**DENY, "Condition": {"StringEquals": {"aws:PrincipalAccount": "1"}}}),
    ({"StringEquals": {"aws:PrincipalAccount": "1"}}, {**DENY, "Condition": {"StringEquals": {"aws:PrincipalAccount": "1"}}}),
])
def test_secure_transport_is_decided_as_true(condition, expected):
    statement = {**DENY, "Condition": condition} if condition is not None else dict(DENY)
    assert _as_over_tls(statement) == expected


def test_a_tls_only_bucket_accepts_sdk_requests(main_lab):
    s3 = main_lab.client("s3")
    s3.create_bucket(Bucket="tls-only-bucket")
    s3.put_bucket_policy(Bucket="tls-only-bucket", Policy=(
        '{"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:*",'
        ' "Resource": ["arn:aws:s3:::tls-only-bucket", "arn:aws:s3:::tls-only-bucket/*"],'
        ' "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}'))
    s3.put_object(Bucket="tls-only-bucket", Key="k", Body=b"v")
    assert s3.get_object(Bucket="tls-only-bucket", Key="k")["Body"].read() == b"v"
    s3.put_bucket_policy(Bucket="tls-only-bucket", Policy=(
        '{"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject",'
        ' "Resource": "arn:aws:s3:::tls-only-bucket/*"}]}'))
    with pytest.raises(Exception, match="403|Forbidden|AccessDenied"):
        s3.get_object(Bucket="tls-only-bucket", Key="k")
