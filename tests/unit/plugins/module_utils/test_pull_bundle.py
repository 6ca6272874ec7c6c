"""The pure part of bastionless.ssm.ssm_pull_bundle (module_utils/_pull_bundle.py): what a bundle holds, a zip
whose bytes depend only on the files, the key named by its digest, and the bucket checks."""

import io
import json
import os
import zipfile

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


def test_same_files_same_bytes_whatever_the_time_stamps(tree):
    entries = bundle.members(str(tree / "site.yml"), [str(tree / "roles")], {})
    first = bundle.build(entries)
    os.utime(tree / "site.yml", (1, 1))
    assert bundle.build(list(reversed(entries))) == first
    (tree / "site.yml").write_text("- hosts: localhost\n  gather_facts: false\n")
    assert bundle.digest(bundle.build(entries)) != bundle.digest(first)


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


@pytest.mark.parametrize("params, expected", [
    ({"collections": ["bastionless.ssm"], "key_prefix": "pull/"}, None),
    ({"collections": ["bastionless"], "key_prefix": "pull/"}, "collections entry 'bastionless' is not a collection name"),
    ({"collections": [], "key_prefix": "/pull/"}, "key_prefix '/pull/' is not an S3 key prefix"),
    ({"collections": [], "key_prefix": "pull dir/"}, "key_prefix 'pull dir/' is not an S3 key prefix"),
])
def test_validate(params, expected):
    problem = bundle.validate(params)
    assert (problem is None) if expected is None else problem.startswith(expected)


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
