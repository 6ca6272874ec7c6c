#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: ssm_pull_bundle
version_added: 0.1.0
short_description: Bundle a playbook with its collections and upload it for AWS-ApplyAnsiblePlaybooks
description:
  - Builds a zip of a playbook, the files it needs beside it (roles, variables, C(ansible.cfg)) and the collections
    it uses, as AWS's C(AWS-ApplyAnsiblePlaybooks) document runs it on each node (C(SourceType) V(S3)), and uploads
    it to an S3 bucket. The collections go under C(collections/ansible_collections/) in the zip, where
    C(ansible-playbook) finds a playbook's collections first; of each, what C(ansible-playbook) loads goes in
    (C(plugins), C(roles), C(playbooks), C(meta) and its manifest), not its docs, tests or changelog.
  - The zip's bytes depend only on the files' names, contents and modes, and its key ends with the start of a
    SHA-256 digest of those (each file's name, mode and content digest), so the same content is the same object.
    The module builds the zip only to upload it, when that object is missing (not in check mode), and a change of
    content is a new key (and, in the association, a new C(SourceInfo)), never an overwrite.
  - The bucket must exist, encrypt by default (SSE-S3 or SSE-KMS), block all public access, and have no lifecycle
    rule that expires objects under O(key_prefix), or moves them to C(GLACIER) or C(DEEP_ARCHIVE), since a bundle
    that expires, or is archived (the agent cannot fetch it until it is restored), makes every later run of the
    association fail; both are refused. The transfer bucket of the C(transfer_bucket) role expires everything it
    holds, so it does not fit.
  - Every check runs before the upload, so a bad input uploads nothing.
  - This is the first half of pull mode; C(bastionless.ssm.pull_association) (and C(playbooks/pull.yml)) then
    point an association at RV(source_info). See docs/state-manager.md.
author:
  - bastionless.ssm maintainers (@bastionless)
options:
  playbook:
    description:
      - The playbook to bundle, a file on the controller. It lands at the top of the zip under its own name, the
        C(PlaybookFile) of the association.
    type: path
    required: true
  files:
    description:
      - More files or directories to put at the top of the zip beside the playbook, each under its own name (a
        directory with everything in it), for example C(roles), C(group_vars) or C(ansible.cfg).
    type: list
    elements: path
    default: []
  collections:
    description:
      - The collections the playbook uses that the nodes do not have, by name (V(namespace.name)). Each is copied
        from the first of O(collections_paths) that holds it.
    type: list
    elements: str
    default: []
  collections_paths:
    description:
      - Where to look for O(collections) on the controller, each a directory that holds C(ansible_collections).
        The role C(bastionless.ssm.pull_association) passes Ansible's own C(COLLECTIONS_PATHS).
    type: list
    elements: path
    default: []
  bucket:
    description:
      - The bucket the bundle is uploaded to. It must exist (it is not created here).
    type: str
    required: true
  key_prefix:
    description:
      - The start of the bundle's key, for example V(pull/) or V(pull/web/).
    type: str
    default: pull/
  variable_names:
    description:
      - How the caller names this module's inputs in its error messages, by option (V(playbook), V(files),
        V(collections), V(collections_paths), V(bucket), V(key_prefix)); an option not given keeps its own name.
        The role C(bastionless.ssm.pull_association) names its variables here, so that an error names the variable
        its user set (V(pull_association_key_prefix), not V(key_prefix)).
    type: dict
    default: {}
attributes:
  check_mode:
    description: Reads the files to find the bundle's key and reports whether it would be uploaded; builds no zip and uploads nothing.
    support: full
  diff_mode:
    description: Not supported.
    support: none
notes:
  - Needs C(s3:ListBucket) (to look the bucket up), C(s3:GetObject) (HeadObject, to look the key up), C(s3:GetEncryptionConfiguration),
    C(s3:GetBucketPublicAccessBlock), C(s3:GetLifecycleConfiguration) and C(s3:PutObject) on the bucket, and
    C(kms:GenerateDataKey) on its key when the bucket uses SSE-KMS.
  - The nodes' instance profile needs C(s3:GetObject) on the bundle (and C(kms:Decrypt) for SSE-KMS) to fetch it.
seealso:
  - module: bastionless.ssm.ssm_association
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Bundle the baseline playbook with its roles and this collection, and upload it
  bastionless.ssm.ssm_pull_bundle:
    playbook: "{{ playbook_dir }}/baseline.yml"
    files:
      - "{{ playbook_dir }}/roles"
    collections:
      - bastionless.ssm
    collections_paths: "{{ lookup('ansible.builtin.config', 'COLLECTIONS_PATHS') }}"
    bucket: example-pull-bundles
    key_prefix: pull/baseline/
  register: __bundle

- name: Apply it on every production node, nightly
  bastionless.ssm.ssm_association:
    name: baseline-pull
    document_name: AWS-ApplyAnsiblePlaybooks
    parameters:
      SourceType: S3
      SourceInfo: "{{ __bundle.source_info }}"
      InstallDependencies: "False"
      PlaybookFile: "{{ __bundle.playbook_file }}"
    targets:
      - key: tag:Environment
        values: [production]
    schedule_expression: cron(0 2 ? * * *)
    max_concurrency: 5%
    max_errors: 1%
"""

RETURN = r"""
bucket:
  description: The bucket.
  returned: always
  type: str
  sample: example-pull-bundles
key:
  description: The bundle's key, its digest in the name.
  returned: always
  type: str
  sample: pull/baseline/baseline-3f1c0a9e2b7d4c5e6f70.zip
present:
  description: Whether the bundle was in the bucket already (then nothing is uploaded).
  returned: always
  type: bool
  sample: false
sha256:
  description:
    - The SHA-256 digest of the bundle's content (each file's name in the zip, mode and SHA-256), which names the
      key; the uploaded object carries it in its C(sha256) metadata.
  returned: always
  type: str
  sample: 3f1c0a9e2b7d4c5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6
size:
  description: The zip's size in bytes.
  returned: when the zip was built and uploaded
  type: int
  sample: 482113
members:
  description: How many files the zip holds.
  returned: always
  type: int
  sample: 311
playbook_file:
  description: The playbook's name in the zip, for the association's C(PlaybookFile).
  returned: always
  type: str
  sample: baseline.yml
source_path:
  description: The object's URL, under the DNS suffix of the region's partition (C(amazonaws.com.cn) in China).
  returned: always
  type: str
  sample: https://s3.eu-west-1.amazonaws.com/example-pull-bundles/pull/baseline/baseline-3f1c0a9e2b7d4c5e6f70.zip
node_read_policy:
  description:
    - The IAM policy the targeted nodes' role needs to fetch the bundles under O(key_prefix) - C(s3:GetObject) on
      them, and C(kms:Decrypt) through S3 when the bucket encrypts with a KMS key of its own. The role
      C(bastionless.ssm.pull_association) attaches it to C(pull_association_node_role).
  returned: always
  type: dict
  sample:
    Version: "2012-10-17"
    Statement:
      - Sid: ReadPullBundles
        Effect: Allow
        Action: s3:GetObject
        Resource: arn:aws:s3:::example-pull-bundles/pull/*
source_info:
  description: The C(SourceInfo) parameter of C(AWS-ApplyAnsiblePlaybooks) for it, a JSON object as a string.
  returned: always
  type: str
  sample: '{"path": "https://s3.eu-west-1.amazonaws.com/example-pull-bundles/pull/baseline/baseline-3f1c0a9e2b7d4c5e6f70.zip"}'
"""

import os
from typing import Any
from typing import Dict
from typing import List
from typing import Optional

try:
    import botocore.loaders
except ImportError:
    pass  # AnsibleAWSModule reports a missing botocore

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.errors import AWSErrorHandler
from ansible_collections.amazon.aws.plugins.module_utils.exceptions import AnsibleAWSError
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

from ansible_collections.bastionless.ssm.plugins.module_utils import _pull_bundle as bundle


class AnsiblePullBundleError(AnsibleAWSError):
    pass


class PullBundleErrorHandler(AWSErrorHandler):
    _CUSTOM_EXCEPTION = AnsiblePullBundleError

    @classmethod
    def _is_missing(cls):
        return is_boto3_error_code(["404", "NoSuchBucket", "NoSuchKey", "NotFound", "NoSuchLifecycleConfiguration",
                                    "ServerSideEncryptionConfigurationNotFoundError", "NoSuchPublicAccessBlockConfiguration"])


@PullBundleErrorHandler.list_error_handler("look up the bucket", default_value=False)
@AWSRetry.jittered_backoff()
def bucket_exists(s3, bucket: str) -> bool:
    s3.head_bucket(Bucket=bucket)
    return True


@PullBundleErrorHandler.list_error_handler("read the bucket's encryption", default_value=None)
@AWSRetry.jittered_backoff()
def bucket_encryption(s3, bucket: str) -> Optional[Dict[str, Any]]:
    return s3.get_bucket_encryption(Bucket=bucket).get("ServerSideEncryptionConfiguration")


@PullBundleErrorHandler.list_error_handler("read the bucket's public access block", default_value=None)
@AWSRetry.jittered_backoff()
def public_access_block(s3, bucket: str) -> Optional[Dict[str, Any]]:
    return s3.get_public_access_block(Bucket=bucket).get("PublicAccessBlockConfiguration")


@PullBundleErrorHandler.list_error_handler("read the bucket's lifecycle", default_value=[])
@AWSRetry.jittered_backoff()
def lifecycle_rules(s3, bucket: str) -> List[Dict[str, Any]]:
    return s3.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules") or []


@PullBundleErrorHandler.list_error_handler("look up the bundle", default_value=None)
@AWSRetry.jittered_backoff()
def head_object(s3, bucket: str, key: str) -> Optional[Dict[str, Any]]:
    return s3.head_object(Bucket=bucket, Key=key)


@PullBundleErrorHandler.common_error_handler("upload the bundle")
@AWSRetry.jittered_backoff()
def put_object(s3, bucket: str, key: str, data: bytes, sha256: str) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType="application/zip", Metadata={"sha256": sha256})


def local_problem(params: Dict[str, Any], names: Dict[str, str]) -> Optional[str]:
    if not os.path.isfile(params["playbook"]):
        return (f"{bundle.named('playbook', names)} {params['playbook']!r} is not a file on the controller; give the "
                "path of the playbook to bundle.")
    for path in params["files"]:
        if not os.path.exists(path):
            return (f"{bundle.named('files', names)} entry {path!r} does not exist on the controller; remove it or "
                    "correct the path.")
    return None


def region_partition(region: str) -> dict:
    """The region's partition (its ``partition`` name and ``dnsSuffix``), as the installed botocore knows them."""
    return bundle.partition_of(region, botocore.loaders.create_loader().load_data("endpoints")["partitions"])


def run(module: AnsibleAWSModule) -> None:
    params = module.params
    names = params["variable_names"]
    problem = bundle.names_problem(names) or bundle.validate(params, names) or local_problem(params, names)
    if problem:
        module.fail_json(msg=problem)
    found = {name: bundle.find_collection(name, params["collections_paths"]) for name in params["collections"]}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        where = ", ".join(params["collections_paths"]) or "none given"
        module.fail_json(msg=(
            f"{bundle.named('collections', names)}: {', '.join(missing)} not found in "
            f"{bundle.named('collections_paths', names)} ({where}); install them (ansible-galaxy collection install) "
            "or correct the names."))
    entries = bundle.members(params["playbook"], params["files"], found)
    twice = bundle.duplicates(entries)
    if twice:
        module.fail_json(msg=(f"the bundle would hold {', '.join(twice)} twice (a name in "
                              f"{bundle.named('files', names)} is also the playbook's or another entry's); rename or "
                              "drop one."))
    bucket = params["bucket"]
    s3 = module.client("s3", retry_decorator=AWSRetry.jittered_backoff())
    if not bucket_exists(s3, bucket):
        module.fail_json(msg=(
            f"bucket {bucket!r} does not exist or cannot be read; create it first (private, encrypted, with no "
            "lifecycle rule that expires the bundles or archives them; docs/state-manager.md shows one) or correct "
            f"{bundle.named('bucket', names)}."))
    encryption = bucket_encryption(s3, bucket)
    problems = bundle.bucket_problems(bucket, encryption, public_access_block(s3, bucket),
                                      lifecycle_rules(s3, bucket), params["key_prefix"], names)
    if problems:
        module.fail_json(msg=" ".join(problems))

    # The key comes from the files' digests: the zip is built only when it is to be uploaded (not in check mode,
    # not when the bucket has it already), so a run builds it once at most.
    sha256 = bundle.content_digest(entries)
    key = bundle.object_key(params["key_prefix"], params["playbook"], sha256)
    present = head_object(s3, bucket, key) is not None
    result = {}
    if not present and not module.check_mode:
        data = bundle.build(entries)
        put_object(s3, bucket, key, data, sha256)
        result["size"] = len(data)
    partition = region_partition(module.region)
    suffix = partition.get("dnsSuffix") or bundle.DEFAULT_DNS_SUFFIX
    policy = bundle.node_read_policy(bucket, params["key_prefix"], module.region, encryption,
                                     partition.get("partition") or "aws", suffix)
    module.exit_json(changed=not present, present=present, bucket=bucket, key=key, sha256=sha256, members=len(entries),
                     playbook_file=os.path.basename(params["playbook"]),
                     source_path=bundle.source_path(bucket, key, module.region, suffix),
                     source_info=bundle.source_info(bucket, key, module.region, suffix), node_read_policy=policy,
                     **result)


def main() -> None:
    argument_spec = dict(
        playbook=dict(type="path", required=True),
        files=dict(type="list", elements="path", default=[]),
        collections=dict(type="list", elements="str", default=[]),
        collections_paths=dict(type="list", elements="path", default=[]),
        bucket=dict(type="str", required=True),
        key_prefix=dict(type="str", default="pull/", no_log=False),
        variable_names=dict(type="dict", default={}),
    )
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True)
    try:
        run(module)
    except AnsibleAWSError as e:
        module.fail_json_aws_error(e)


if __name__ == "__main__":
    main()
