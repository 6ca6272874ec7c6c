# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""version_added and author of every plugin and role: the collection's own release (galaxy.yml), never another
project's version, and one author form. antsibull-changelog lists new plugins and roles from version_added."""

import ast
import glob
import os

import pytest
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
AUTHOR = "bastionless.ssm maintainers (@bastionless)"
with open(os.path.join(ROOT, "galaxy.yml"), encoding="utf-8") as galaxy:
    VERSION = yaml.safe_load(galaxy)["version"]


def plugin_docs():
    """(path, DOCUMENTATION) of each plugin with documentation: Python plugins and the filters' YAML files."""
    for path in sorted(glob.glob(os.path.join(ROOT, "plugins", "*", "*.py"))):
        if "/doc_fragments/" in path or "_utils/" in path or path.endswith("__init__.py"):
            continue
        for node in ast.parse(open(path, encoding="utf-8").read(), path).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "DOCUMENTATION" for t in node.targets):
                yield os.path.relpath(path, ROOT), yaml.safe_load(node.value.value)
    for path in sorted(glob.glob(os.path.join(ROOT, "plugins", "filter", "*.yml"))):
        with open(path, encoding="utf-8") as doc:
            yield os.path.relpath(path, ROOT), yaml.safe_load(doc)["DOCUMENTATION"]


def role_entry_points():
    for path in sorted(glob.glob(os.path.join(ROOT, "roles", "*", "meta", "argument_specs.yml"))):
        with open(path, encoding="utf-8") as specs:
            for name, entry in yaml.safe_load(specs)["argument_specs"].items():
                yield f"{os.path.relpath(path, ROOT)}:{name}", entry


DOCS = dict(plugin_docs())
ENTRY_POINTS = dict(role_entry_points())


def option_versions(options, where=""):
    """(option path, version_added) of every option and suboption that has one."""
    for name, spec in (options or {}).items():
        if "version_added" in spec:
            yield where + name, str(spec["version_added"])
        yield from option_versions(spec.get("suboptions") or spec.get("options"), f"{where}{name}.")


def test_every_kind_of_plugin_and_every_role_is_looked_at():
    kinds = {path.split(os.sep)[1] for path in DOCS}
    assert {"modules", "inventory", "lookup", "connection", "filter"} <= kinds
    assert len(ENTRY_POINTS) >= 8


@pytest.mark.parametrize("path", sorted(DOCS))
def test_a_plugin_was_added_in_this_collection_release_by_its_maintainers(path):
    doc = DOCS[path]
    assert str(doc.get("version_added")) == VERSION
    assert doc.get("author") in ([AUTHOR], AUTHOR)


@pytest.mark.parametrize("path", sorted(DOCS))
def test_an_option_names_no_other_release(path):
    assert [(option, v) for option, v in option_versions(DOCS[path].get("options")) if v != VERSION] == []


@pytest.mark.parametrize("entry_point", sorted(ENTRY_POINTS))
def test_a_role_entry_point_was_added_in_this_collection_release_by_its_maintainers(entry_point):
    spec = ENTRY_POINTS[entry_point]
    assert str(spec.get("version_added")) == VERSION
    assert spec.get("author") in ([AUTHOR], AUTHOR)
    assert [(option, v) for option, v in option_versions(spec.get("options")) if v != VERSION] == []
