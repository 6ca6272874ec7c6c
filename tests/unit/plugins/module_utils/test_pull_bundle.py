"""The pure part of bastionless.ssm.ssm_pull_bundle (module_utils/_pull_bundle.py): what a bundle holds, a zip
whose bytes depend only on the files, the key named by its digest, and the bucket checks."""

import io
import json
import os
import zipfile

import botocore.loaders
import pytest

from ansible_collections.bastionless.ssm.plugins.module_utils import _pull_bundle as bundle


@pytest.fixture
def tree(tmp_path):
    playbook = tmp_path / "site.yml"
    playbook.write_text("- hosts: localhost\n")
    roles = tmp_path / "roles" / "web" / "tasks"
    roles.mkdir(parents=True)
    (roles / "main.yml").write_text("---\n")
    (tmp_path / "roles" / "__pycache__").mkdir()
    (tmp_path / "roles" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    collection = tmp_path / "paths" / "ansible_collections" / "acme" / "web"
    for rel in ("MANIFEST.json", "plugins/modules/thing.py", "tests/unit/test_thing.py", "docs/guide.md", "README.md",
                "plugins/modules/__pycache__/thing.cpython-311.pyc"):
        (collection / rel).parent.mkdir(parents=True, exist_ok=True)
        (collection / rel).write_text(rel)
    os.chmod(collection / "plugins/modules/thing.py", 0o755)
    return tmp_path


def test_members_put_the_playbook_and_files_on_top_and_collections_where_ansible_looks(tree):
    found = bundle.find_collection("acme.web", [str(tree / "nowhere"), str(tree / "paths")])
    assert found == str(tree / "paths" / "ansible_collections" / "acme" / "web")
    names = [name for name, _path in bundle.members(str(tree / "site.yml"), [str(tree / "roles")], {"acme.web": found})]
    assert names == ["site.yml", "roles/web/tasks/main.yml", "collections/ansible_collections/acme/web/MANIFEST.json",
                     "collections/ansible_collections/acme/web/plugins/modules/thing.py"]


def test_find_collection_takes_an_ansible_collections_directory_too_and_says_none(tree):
    assert bundle.find_collection("acme.web", [str(tree / "paths" / "ansible_collections")]).endswith("acme/web")
    assert bundle.find_collection("acme.db", [str(tree / "paths")]) is None
    assert bundle.find_collection("acme.web", []) is None


def test_same_files_same_bytes_and_digest_whatever_the_time_stamps(tree):
    entries = bundle.members(str(tree / "site.yml"), [str(tree / "roles")], {})
    first, first_digest = bundle.build(entries), bundle.content_digest(entries)
    os.utime(tree / "site.yml", (1, 1))
    assert bundle.build(list(reversed(entries))) == first
    assert bundle.content_digest(list(reversed(entries))) == first_digest
    (tree / "site.yml").write_text("- hosts: localhost\n  gather_facts: false\n")
    assert bundle.build(entries) != first and bundle.content_digest(entries) != first_digest


def test_the_digest_follows_every_name_mode_and_byte_the_zip_holds(tree):
    """The key is named by content_digest without a zip being built: whatever changes the zip changes the digest."""
    entries = bundle.members(str(tree / "site.yml"), [str(tree / "roles")], {})
    seen = {bundle.content_digest(entries)}
    zips = {bundle.build(entries)}
    os.chmod(tree / "site.yml", 0o755)  # a mode
    seen.add(bundle.content_digest(entries))
    zips.add(bundle.build(entries))
    renamed = [("roles/web/tasks/other.yml" if name.endswith("main.yml") else name, path) for name, path in entries]
    seen.add(bundle.content_digest(renamed))  # a name
    zips.add(bundle.build(renamed))
    (tree / "roles" / "web" / "tasks" / "main.yml").write_text("--- \n")  # a byte
    seen.add(bundle.content_digest(entries))
    zips.add(bundle.build(entries))
    assert len(seen) == len(zips) == 4


def test_zip_holds_the_files_with_their_modes(tree):
    found = bundle.find_collection("acme.web", [str(tree / "paths")])
    archive = zipfile.ZipFile(io.BytesIO(bundle.build(bundle.members(str(tree / "site.yml"), [], {"acme.web": found}))))
    modes = {info.filename: (info.external_attr >> 16) & 0o777 for info in archive.infolist()}
    assert modes["collections/ansible_collections/acme/web/plugins/modules/thing.py"] == 0o755
    assert modes["site.yml"] == 0o644
    assert archive.read("site.yml") == b"- hosts: localhost\n"
    assert {info.date_time for info in archive.infolist()} == {bundle.EPOCH}


def test_duplicates_name_what_would_be_there_twice(tree):
    entries = bundle.members(str(tree / "site.yml"), [str(tree / "site.yml")], {})
    assert bundle.duplicates(entries) == ["site.yml"]


@pytest.mark.parametrize("prefix, playbook, expected", [
    ("pull/", "/x/site.yml", "pull/site-0123456789abcdef0123.zip"),
    ("", "/x/my play!.yaml", "my-play-0123456789abcdef0123.zip"),
    ("a/b/", "/x/+++.yml", "a/b/playbook-0123456789abcdef0123.zip"),
])
def test_object_key_is_named_by_the_digest(prefix, playbook, expected):
    assert bundle.object_key(prefix, playbook, "0123456789abcdef0123456789") == expected


def test_source_info_is_the_object_url_as_the_document_takes_it():
    assert bundle.source_path("b", "pull/k.zip", "us-east-1") == "https://s3.amazonaws.com/b/pull/k.zip"
    assert json.loads(bundle.source_info("b", "k.zip", "eu-west-1")) == {"path": "https://s3.eu-west-1.amazonaws.com/b/k.zip"}
    assert bundle.source_path("b", "k.zip", "cn-north-1", "amazonaws.com.cn") == (
        "https://s3.cn-north-1.amazonaws.com.cn/b/k.zip")


@pytest.mark.parametrize("region, suffix", [
    ("us-east-1", "amazonaws.com"), ("cn-north-1", "amazonaws.com.cn"), ("cn-northwest-1", "amazonaws.com.cn"),
    ("us-gov-west-1", "amazonaws.com"), ("eu-newplace-9", "amazonaws.com"),  # newer than botocore: its pattern
    ("cn-newplace-9", "amazonaws.com.cn"), ("", "amazonaws.com"),
])
def test_the_dns_suffix_is_the_partitions_as_botocore_knows_it(region, suffix):
    partitions = botocore.loaders.create_loader().load_data("endpoints")["partitions"]
    assert bundle.dns_suffix(region, partitions) == suffix


@pytest.mark.parametrize("params, expected", [
    ({"collections": ["bastionless.ssm"], "key_prefix": "pull/"}, None),
    ({"collections": ["bastionless"], "key_prefix": "pull/"}, "collections entry 'bastionless' is not a collection name"),
    ({"collections": [], "key_prefix": "/pull/"}, "key_prefix '/pull/' is not an S3 key prefix"),
    ({"collections": [], "key_prefix": "pull dir/"}, "key_prefix 'pull dir/' is not an S3 key prefix"),
])
def test_validate(params, expected):
    problem = bundle.validate(params)
    assert (problem is None) if expected is None else problem.startswith(expected)


ROLE_NAMES = {"playbook": "pull_association_playbook", "files": "pull_association_files",
              "collections": "pull_association_collections", "bucket": "pull_association_bucket",
              "key_prefix": "pull_association_key_prefix"}


def test_messages_name_the_inputs_as_the_caller_does():
    assert bundle.validate({"collections": ["x"], "key_prefix": ""}, ROLE_NAMES).startswith(
        "pull_association_collections entry 'x' is not a collection name")
    assert bundle.validate({"collections": [], "key_prefix": "/p"}, ROLE_NAMES).startswith(
        "pull_association_key_prefix '/p' is not an S3 key prefix")
    rule = {"ID": "r", "Status": "Enabled", "Prefix": "", "Expiration": {"Days": 1}}
    [problem] = bundle.bucket_problems("b", ENCRYPTED, BLOCKED, [rule], "pull/", ROLE_NAMES)
    assert "Give a pull_association_bucket or pull_association_key_prefix that no expiration rule covers" in problem
    assert bundle.names_problem(ROLE_NAMES) is None and bundle.names_problem({}) is None
    assert bundle.names_problem({"prefix": "x", "bucket": "y"}) == (
        "variable_names has prefix, which is no option it names; give only playbook, files, collections, "
        "collections_paths, bucket, key_prefix.")


ENCRYPTED = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]}
BLOCKED = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}


def test_a_private_encrypted_bucket_without_expiry_fits():
    other_prefix = [{"ID": "logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 3}},
                    {"ID": "off", "Status": "Disabled", "Prefix": "", "Expiration": {"Days": 1}},
                    {"ID": "uploads", "Status": "Enabled", "Prefix": "", "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}]
    assert bundle.bucket_problems("b", ENCRYPTED, BLOCKED, other_prefix, "pull/") == []


def test_bucket_problems_name_each_one():
    problems = bundle.bucket_problems("b", None, {**BLOCKED, "BlockPublicPolicy": False}, [], "pull/")
    assert problems[0].startswith("bucket 'b' has no default encryption")
    assert problems[1].startswith("bucket 'b' does not block public access (BlockPublicPolicy off)")


@pytest.mark.parametrize("rule", [
    {"ID": "r", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 1}},
    {"ID": "r", "Status": "Enabled", "Prefix": "pu", "Expiration": {"Days": 1}},
    {"ID": "r", "Status": "Enabled", "Filter": {"Prefix": "pull/web/"}, "Expiration": {"Days": 1}},
    {"ID": "r", "Status": "Enabled", "Filter": {"Tag": {"Key": "k", "Value": "v"}}, "Expiration": {"Days": 1}},
])
def test_an_expiry_rule_that_may_reach_the_bundle_is_refused(rule):
    problems = bundle.bucket_problems("b", ENCRYPTED, BLOCKED, [rule], "pull/")
    assert len(problems) == 1 and "lifecycle rule 'r' expiring objects" in problems[0]


@pytest.mark.parametrize("storage_class", ["GLACIER", "DEEP_ARCHIVE"])
def test_a_rule_that_archives_the_bundle_is_refused_with_the_fix(storage_class):
    rule = {"ID": "cold", "Status": "Enabled", "Filter": {"Prefix": "pull/"},
            "Transitions": [{"Days": 30, "StorageClass": "STANDARD_IA"}, {"Days": 90, "StorageClass": storage_class}]}
    assert bundle.bucket_problems("b", ENCRYPTED, BLOCKED, [rule], "pull/") == [
        f"bucket 'b' has lifecycle rule 'cold' moving objects under 'pull/' to {storage_class}: the agent cannot fetch "
        "an archived bundle (it must be restored first), so every later run of the association would fail. Give a "
        "bucket or key_prefix that no such transition covers, or make the rule's transition GLACIER_IR (instant "
        "retrieval) or a non-archive class."]


def test_transitions_the_agent_can_still_fetch_from_or_elsewhere_fit():
    instant = {"ID": "ia", "Status": "Enabled", "Prefix": "",
               "Transitions": [{"Days": 30, "StorageClass": "STANDARD_IA"}, {"Days": 60, "StorageClass": "GLACIER_IR"}]}
    elsewhere = {"ID": "logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"},
                 "Transitions": [{"Days": 1, "StorageClass": "DEEP_ARCHIVE"}]}
    disabled = {"ID": "off", "Status": "Disabled", "Prefix": "", "Transitions": [{"Days": 1, "StorageClass": "GLACIER"}]}
    rules = [instant, elsewhere, disabled]
    assert bundle.bucket_problems("b", ENCRYPTED, BLOCKED, rules, "pull/") == []


@pytest.mark.parametrize("region, partition", [("us-east-1", "aws"), ("cn-north-1", "aws-cn"),
                                               ("us-gov-west-1", "aws-us-gov"), ("eu-west-9", "aws")])
def test_the_partition_is_the_one_botocore_puts_the_region_in(region, partition):
    partitions = botocore.loaders.create_loader().load_data("endpoints")["partitions"]
    assert bundle.partition_of(region, partitions)["partition"] == partition


def _sse(algorithm, key=None, bucket_key=False):
    default = {"SSEAlgorithm": algorithm, **({"KMSMasterKeyID": key} if key else {})}
    return {"Rules": [{"ApplyServerSideEncryptionByDefault": default, "BucketKeyEnabled": bucket_key}]}


def test_nodes_may_read_the_bundles_under_the_prefix_only():
    policy = bundle.node_read_policy("pulls", "pull/web/", "eu-west-1", _sse("AES256"))
    assert policy == {"Version": "2012-10-17", "Statement": [
        {"Sid": "ReadPullBundles", "Effect": "Allow", "Action": "s3:GetObject",
         "Resource": "arn:aws:s3:::pulls/pull/web/*"}]}


@pytest.mark.parametrize("key, resource", [
    ("arn:aws-cn:kms:cn-north-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
     "arn:aws-cn:kms:cn-north-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"),
    ("1234abcd-12ab-34cd-56ef-1234567890ab", "*"),  # a key id or an alias: the conditions keep it to S3 and the bundles
    ("alias/pull-bundles", "*"),
])
def test_a_bucket_key_of_its_own_is_granted_for_decrypting_the_bundles_through_s3(key, resource):
    policy = bundle.node_read_policy("pulls", "pull/", "cn-north-1", _sse("aws:kms", key), "aws-cn",
                                     "amazonaws.com.cn")
    read, decrypt = policy["Statement"]
    assert read["Resource"] == "arn:aws-cn:s3:::pulls/pull/*"
    assert decrypt == {
        "Sid": "DecryptPullBundlesThroughS3", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": resource,
        "Condition": {"StringEquals": {"kms:ViaService": "s3.cn-north-1.amazonaws.com.cn"},
                      "StringLike": {"kms:EncryptionContext:aws:s3:arn": ["arn:aws-cn:s3:::pulls/pull/*",
                                                                          "arn:aws-cn:s3:::pulls"]}}}


@pytest.mark.parametrize("encryption", [_sse("aws:kms"), _sse("aws:kms", "alias/aws/s3"),
                                        _sse("aws:kms", "arn:aws:kms:us-east-1:111122223333:alias/aws/s3"), None])
def test_the_aws_managed_s3_key_or_no_encryption_needs_no_kms_grant(encryption):
    policy = bundle.node_read_policy("pulls", "pull/", "us-east-1", encryption)
    assert [s["Sid"] for s in policy["Statement"]] == ["ReadPullBundles"]
