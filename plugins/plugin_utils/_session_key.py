# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The conditions under which a node may use the session key, shared by the instance role's policy (the
instance_role filters) and the key's policy (the session_logging filters), so that both say the same."""

from __future__ import annotations


# The key's two uses on a node. Transcripts: the agent's PutObject to the SSE-KMS bucket, for which S3 asks KMS on
# the node's behalf (kms:ViaService s3.REGION.amazonaws.com) with the encryption context aws:s3:arn, the bucket's
# ARN when the bucket uses an S3 Bucket Key (the role's buckets do) and the object's otherwise. Session streams
# (kmsKeyId in the preferences): the agent calls kms:Decrypt itself on the data key the client generated, with the
# encryption context aws:ssm:SessionId and aws:ssm:TargetId (the node's id). CloudWatch Logs encrypts the log group
# under its own service principal (the key policy's grant); PutLogEvents needs no KMS permission of the node.
SESSION_STREAM_CONTEXT = {"Null": {"kms:EncryptionContext:aws:ssm:SessionId": "false"},
                          "StringLike": {"kms:EncryptionContext:aws:ssm:TargetId": ["i-*", "mi-*"]}}


def s3_key_condition(partition: str, region: str, bucket: str, prefix: str = "") -> dict:
    """The condition on the session key when S3 uses it for the node's transcript uploads."""
    bucket_arn = f"arn:{partition}:s3:::{bucket}"
    under = f"{prefix.rstrip('/')}/" if prefix else ""
    return {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"},
            "StringLike": {"kms:EncryptionContext:aws:s3:arn": [bucket_arn, f"{bucket_arn}/{under}*"]}}
