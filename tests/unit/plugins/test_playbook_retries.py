"""Every AWS call the playbooks make retries as the inventory says (docs/reliability.md): each play that runs on the
controller carries the retry module_defaults for the three action groups, and every AWS module the playbooks and
roles call belongs to one of those groups, so that the defaults reach it. Read from the files, no AWS."""

from __future__ import annotations

import glob
import os
import re

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
GROUPS = {"group/amazon.aws.aws", "group/community.aws.aws", "group/bastionless.ssm.ssm"}
AWS_MODULE = re.compile(r"^\s*-?\s*((amazon\.aws|community\.aws|bastionless\.ssm)\.[a-z0-9_]+):", re.MULTILINE)
# bastionless.ssm.iam_quiet runs the amazon.aws module its `module:` names, with that module's module_defaults.
QUIET_MODULE = re.compile(r"^\s*bastionless\.ssm\.iam_quiet:\s*\n\s*module:\s*((amazon\.aws)\.[a-z0-9_]+)\s*$",
                          re.MULTILINE)
QUIET = "bastionless.ssm.iam_quiet"


def _collection_dir(namespace: str, name: str) -> str:
    """This working tree for bastionless.ssm; the others from the ``ansible`` package they come with."""
    if (namespace, name) == ("bastionless", "ssm"):
        return ROOT
    import ansible_collections  # pylint: disable=import-outside-toplevel

    for base in ansible_collections.__path__:
        path = os.path.join(base, namespace, name)
        if os.path.isdir(path):
            return path
    raise AssertionError(f"{namespace}.{name} is not installed beside the tests (the ansible package has it)")


def _group(namespace: str, name: str, group: str) -> set:
    with open(os.path.join(_collection_dir(namespace, name), "meta", "runtime.yml"), encoding="utf-8") as handle:
        runtime = yaml.safe_load(handle)
    return {entry.split(".")[-1] for entry in runtime["action_groups"][group] if isinstance(entry, str)}


def test_each_controller_play_retries_every_aws_call_as_the_inventory_says():
    plays = []
    for path in sorted(glob.glob(os.path.join(ROOT, "playbooks", "*.yml"))):
        with open(path, encoding="utf-8") as handle:
            for play in yaml.safe_load(handle) or []:
                if isinstance(play, dict) and play.get("hosts") == "localhost":
                    plays.append((os.path.basename(path), play.get("name"), set(play.get("module_defaults") or {})))
    assert plays, "no play on localhost in playbooks/"
    missing = [(path, name, sorted(GROUPS - groups)) for path, name, groups in plays if not GROUPS <= groups]
    assert missing == []


def test_every_aws_module_the_collection_calls_is_in_a_group_the_defaults_reach():
    groups = {"amazon.aws": _group("amazon", "aws", "aws"), "community.aws": _group("community", "aws", "aws"),
              "bastionless.ssm": _group("bastionless", "ssm", "ssm")}
    outside = set()
    for path in glob.glob(os.path.join(ROOT, "playbooks", "*.yml")) + glob.glob(
            os.path.join(ROOT, "roles", "*", "tasks", "*.yml")):
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
            calls = [call for call in AWS_MODULE.findall(text) if call[0] != QUIET] + QUIET_MODULE.findall(text)
            assert text.count(QUIET + ":") == len(QUIET_MODULE.findall(text)), (path, "module: first under " + QUIET)
            for module, collection in calls:
                if module.split(".")[-1] not in groups[collection]:
                    outside.add((os.path.relpath(path, ROOT), module))
    # bastionless.ssm's filter and lookup plugins are not modules: only names the action group could hold count.
    outside = {(path, module) for path, module in outside if not module.startswith("bastionless.ssm.")
               or os.path.exists(os.path.join(ROOT, "plugins", "modules", module.split(".")[-1] + ".py"))}
    assert sorted(outside) == []
