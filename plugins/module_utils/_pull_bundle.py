# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The pure part of bastionless.ssm.ssm_pull_bundle: which files go into a pull bundle, the digest of what it holds,
the bundle as a zip whose bytes depend only on the files' names, contents and modes, the object key named by that
digest, its URL in the region's partition, and what a bucket must be to hold it. No AWS call here."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import zipfile
from typing import Any
from typing import Dict
from typing import Iterable
from typing import List
from typing import Optional
from typing import Tuple

# Every member gets this time stamp (the earliest a zip can hold), so a rebuild of the same files is the same zip.
EPOCH = (1980, 1, 1, 0, 0, 0)
COLLECTION = re.compile(r"^[a-z0-9_]+\.[a-z0-9_]+$")
# What of a collection goes into a bundle: what ansible-playbook loads from it (its plugins, roles, playbooks, its
# meta/runtime.yml and manifest), not its docs, tests or changelog; and no compiled caches.
COLLECTION_TOP = frozenset({"MANIFEST.json", "FILES.json", "meta", "plugins", "roles", "playbooks"})
SKIPPED_DIRS = frozenset({"__pycache__", ".git"})
SKIPPED_SUFFIXES = (".pyc", ".pyo")
DIGEST_LENGTH = 20
# The module's options that a caller may name otherwise in the messages (variable_names): a role names its variables.
NAMED_OPTIONS = ("playbook", "files", "collections", "collections_paths", "bucket", "key_prefix")
# Storage classes the agent cannot GET an object from until it is restored: a bundle moved there fails every run.
ARCHIVE_CLASSES = ("GLACIER", "DEEP_ARCHIVE")
# The DNS suffix of AWS's own partition, for a region no partition's pattern matches.
DEFAULT_DNS_SUFFIX = "amazonaws.com"
PREFIX = re.compile(r"^([A-Za-z0-9!_.*'()/-]*)$")
STEM = re.compile(r"[^A-Za-z0-9_.-]+")


def _walk(root: str, arcbase: str, skip_dirs: Iterable[str] = ()) -> List[Tuple[str, str]]:
    """(archive name, path) of every regular file under ``root``, in a stable order, without the directories named
    in ``skip_dirs`` and compiled Python."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip_dirs)
        for name in sorted(files):
            if name.endswith(SKIPPED_SUFFIXES):
                continue
            path = os.path.join(folder, name)
            if not os.path.isfile(path):
                continue
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            found.append((f"{arcbase}/{rel}" if arcbase else rel, path))
    return found


def find_collection(name: str, paths: List[str]) -> Optional[str]:
    """The directory of collection ``name`` (namespace.name) in the first of ``paths`` that has it (each a
    collections path, holding ``ansible_collections/``, or an ``ansible_collections`` directory itself)."""
    namespace, collection = name.split(".", 1)
    for base in paths:
        for root in (os.path.join(base, "ansible_collections"), base):
            candidate = os.path.join(root, namespace, collection)
            if os.path.basename(root) == "ansible_collections" and os.path.isdir(candidate):
                return candidate
    return None


def members(playbook: str, files: List[str], collections: Dict[str, str]) -> List[Tuple[str, str]]:
    """(archive name, path) of everything the bundle holds: the playbook and each of ``files`` at its top (a
    directory with what it holds), and each collection under ``collections/ansible_collections/NS/NAME`` beside
    them (what ansible-playbook loads of each: COLLECTION_TOP), where ansible-playbook looks for the playbook's
    collections before any other place."""
    out = [(os.path.basename(playbook), playbook)]
    for path in files:
        name = os.path.basename(os.path.normpath(path))
        if os.path.isdir(path):
            out.extend(_walk(path, name, ("__pycache__", ".git")))
        else:
            out.append((name, path))
    for fqcn, directory in sorted(collections.items()):
        namespace, collection = fqcn.split(".", 1)
        base = f"collections/ansible_collections/{namespace}/{collection}"
        out.extend((name, path) for name, path in _walk(directory, base, SKIPPED_DIRS)
                   if name[len(base) + 1:].split("/", 1)[0] in COLLECTION_TOP)
    return out


def duplicates(entries: List[Tuple[str, str]]) -> List[str]:
    seen, twice = set(), []
    for name, _path in entries:
        if name in seen and name not in twice:
            twice.append(name)
        seen.add(name)
    return twice


def _mode(path: str) -> int:
    """The mode a member gets in the zip: 0755 or 0644, executable or not."""
    return 0o755 if os.stat(path).st_mode & stat.S_IXUSR else 0o644


def content_digest(entries: List[Tuple[str, str]]) -> str:
    """The SHA-256 of what the bundle holds: each member's name, mode (as the zip gets it) and the SHA-256 of its
    content, in the zip's order. The zip is a function of these alone (build), so this digest names it: the key is
    known, and a bundle already in the bucket found, without building the zip; it is built only to be uploaded."""
    outer = hashlib.sha256()
    for name, path in sorted(entries):
        inner = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                inner.update(block)
        outer.update(json.dumps([name, _mode(path), inner.hexdigest()]).encode() + b"\n")
    return outer.hexdigest()


def build(entries: List[Tuple[str, str]]) -> bytes:
    """The zip of ``entries``, sorted by name, each with the fixed time stamp and mode 0755 or 0644 (executable
    or not): the same files give the same bytes wherever and whenever it is built."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, path in sorted(entries):
            info = zipfile.ZipInfo(name, EPOCH)
            info.external_attr = (stat.S_IFREG | _mode(path)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as handle:
                archive.writestr(info, handle.read(), compresslevel=6)
    return buffer.getvalue()


def object_key(prefix: str, playbook: str, sha256: str) -> str:
    """``PREFIX`` + the playbook's name without its suffix + ``-`` + the start of the digest + ``.zip``: a new key
    for new content, the same key for the same content."""
    stem = STEM.sub("-", os.path.splitext(os.path.basename(playbook))[0]).strip("-.") or "playbook"
    return f"{prefix}{stem}-{sha256[:DIGEST_LENGTH]}.zip"


def dns_suffix(region: str, partitions: List[Dict[str, Any]]) -> str:
    """The DNS suffix of the AWS partition that holds ``region`` (amazonaws.com.cn for cn-north-1), from botocore's
    endpoints data (its ``partitions``): the partition that lists the region, else the first whose pattern matches
    it (a region newer than botocore), else AWS's own."""
    return partition_of(region, partitions).get("dnsSuffix") or DEFAULT_DNS_SUFFIX


def partition_of(region: str, partitions: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The AWS partition that holds ``region``, from botocore's endpoints data: the one that lists it, else the first
    whose pattern matches it, else AWS's own (``aws``)."""
    for partition in partitions:
        if region in (partition.get("regions") or {}):
            return partition
    for partition in partitions:
        if partition.get("regionRegex") and re.match(partition["regionRegex"], region or ""):
            return partition
    return {"partition": "aws", "dnsSuffix": DEFAULT_DNS_SUFFIX}


def node_read_policy(bucket: str, key_prefix: str, region: str, encryption: Optional[Dict[str, Any]],
                     partition: str = "aws", suffix: str = DEFAULT_DNS_SUFFIX) -> Dict[str, Any]:
    """The IAM policy the targeted nodes' role needs to fetch the bundles under ``key_prefix``: ``s3:GetObject`` on
    them and, when the bucket encrypts with a KMS key of its own (``encryption``: GetBucketEncryption's
    ServerSideEncryptionConfiguration), ``kms:Decrypt`` of that key by S3 on the nodes' behalf (``kms:ViaService``)
    for these objects only (S3's encryption context: the object's ARN, or the bucket's with S3 Bucket Keys). The AWS
    managed key ``aws/s3`` needs no grant: its key policy lets S3 use it for whoever may read the object."""
    objects = f"arn:{partition}:s3:::{bucket}/{key_prefix}*"
    statements: List[Dict[str, Any]] = [
        {"Sid": "ReadPullBundles", "Effect": "Allow", "Action": "s3:GetObject", "Resource": objects}]
    keys = []
    for rule in (encryption or {}).get("Rules") or []:
        default = rule.get("ApplyServerSideEncryptionByDefault") or {}
        key = default.get("KMSMasterKeyID")
        if str(default.get("SSEAlgorithm", "")).startswith("aws:kms") and key and not _aws_managed_s3_key(key):
            keys.append(key)
    if keys:
        # A key ARN names the key; a key id or an alias (the bucket's setting may be either) cannot be turned into
        # the key's ARN without the account, so the conditions alone keep the grant to these objects through S3.
        resources = sorted({k for k in keys if k.startswith("arn:") and ":key/" in k}) or ["*"]
        statements.append({
            "Sid": "DecryptPullBundlesThroughS3", "Effect": "Allow", "Action": "kms:Decrypt",
            "Resource": resources[0] if len(resources) == 1 else resources,
            "Condition": {
                "StringEquals": {"kms:ViaService": f"s3.{region}.{suffix}"},
                "StringLike": {"kms:EncryptionContext:aws:s3:arn": [objects, f"arn:{partition}:s3:::{bucket}"]}}})
    return {"Version": "2012-10-17", "Statement": statements}


def _aws_managed_s3_key(key: str) -> bool:
    return key in ("alias/aws/s3",) or key.endswith(":alias/aws/s3")


def source_path(bucket: str, key: str, region: str, suffix: str = DEFAULT_DNS_SUFFIX) -> str:
    """The object's URL as AWS-ApplyAnsiblePlaybooks' SourceInfo ``path`` takes it; ``suffix``: the DNS suffix of
    the region's partition (dns_suffix)."""
    host = f"s3.{suffix}" if region in ("", "us-east-1") else f"s3.{region}.{suffix}"
    return f"https://{host}/{bucket}/{key}"


def source_info(bucket: str, key: str, region: str, suffix: str = DEFAULT_DNS_SUFFIX) -> str:
    return json.dumps({"path": source_path(bucket, key, region, suffix)})


def named(option: str, names: Optional[Dict[str, str]] = None) -> str:
    """How the caller names ``option`` in its messages (``names``: the module's variable_names); the option's own
    name when it gives none."""
    return (names or {}).get(option) or option


def names_problem(names: Optional[Dict[str, Any]]) -> Optional[str]:
    """A message when variable_names names an option this module does not have; None if none."""
    unknown = sorted(str(key) for key in (names or {}) if key not in NAMED_OPTIONS)
    if unknown:
        return (f"variable_names has {', '.join(unknown)}, which is no option it names; give only "
                f"{', '.join(NAMED_OPTIONS)}.")
    return None


def validate(params: Dict[str, Any], names: Optional[Dict[str, str]] = None) -> Optional[str]:
    """The first problem of the module's input that needs no AWS call and no file, as one message naming the input
    as the caller does (``names``); None if none."""
    for name in params.get("collections") or []:
        if not COLLECTION.match(name):
            return (f"{named('collections', names)} entry {name!r} is not a collection name (namespace.name), for "
                    "example bastionless.ssm.")
    prefix = params.get("key_prefix") or ""
    if prefix.startswith("/") or not PREFIX.match(prefix):
        return (f"{named('key_prefix', names)} {prefix!r} is not an S3 key prefix this module takes: letters, digits "
                "and ! _ . * ' ( ) - /, not starting with /, for example 'pull/'.")
    return None


def _rule_prefix(rule: Dict[str, Any]) -> str:
    """The key prefix a lifecycle rule applies to; "" (every key) for a tag or size filter, which may reach any."""
    rule_prefix = rule.get("Prefix")
    if rule_prefix is None:
        rule_prefix = (rule.get("Filter") or {}).get("Prefix", "")
        if rule_prefix is None or set(rule.get("Filter") or {}) - {"Prefix"}:
            rule_prefix = ""
    return rule_prefix


def bucket_problems(bucket: str, encryption: Optional[Dict[str, Any]], public_block: Optional[Dict[str, Any]],
                    lifecycle: List[Dict[str, Any]], key_prefix: str, names: Optional[Dict[str, str]] = None) -> List[str]:
    """Why ``bucket`` is not one to keep bundles in: not encrypted by default, public access not fully blocked,
    a lifecycle rule that would delete the bundle while the association still runs it, or one that would move it to
    an archive storage class (GLACIER, DEEP_ARCHIVE), from which the agent cannot fetch it: both refused. Empty if
    none. ``names``: how the caller names the inputs."""
    problems = []
    rules = (encryption or {}).get("Rules") or []
    algorithms = [((r.get("ApplyServerSideEncryptionByDefault") or {}).get("SSEAlgorithm")) for r in rules]
    if not any(algorithms):
        problems.append(f"bucket {bucket!r} has no default encryption; turn on SSE-S3 or SSE-KMS (the "
                        "transfer_bucket role's settings) or give another bucket.")
    flags = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
    open_flags = [f for f in flags if not (public_block or {}).get(f)]
    if open_flags:
        problems.append(f"bucket {bucket!r} does not block public access ({', '.join(open_flags)} off); block all "
                        "four settings or give another bucket.")
    where = f"{named('bucket', names)} or {named('key_prefix', names)}"
    for rule in lifecycle:
        if rule.get("Status") != "Enabled":
            continue
        rule_prefix = _rule_prefix(rule)
        if not (key_prefix.startswith(rule_prefix) or rule_prefix.startswith(key_prefix)):
            continue
        if rule.get("Expiration"):
            problems.append(
                f"bucket {bucket!r} has lifecycle rule {rule.get('ID', '')!r} expiring objects under "
                f"{rule_prefix or '(every key)'!r}: it would delete the bundle while the association still runs it. "
                f"Give a {where} that no expiration rule covers (the transfer bucket expires everything it holds).")
        archived = sorted({t.get("StorageClass") for t in rule.get("Transitions") or []} & set(ARCHIVE_CLASSES))
        if archived:
            problems.append(
                f"bucket {bucket!r} has lifecycle rule {rule.get('ID', '')!r} moving objects under "
                f"{rule_prefix or '(every key)'!r} to {' and '.join(archived)}: the agent cannot fetch an archived "
                "bundle (it must be restored first), so every later run of the association would fail. Give a "
                f"{where} that no such transition covers, or make the rule's transition GLACIER_IR (instant "
                "retrieval) or a non-archive class.")
    return problems
