# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The collection's doc fragments: each is shared, each one named exists, and no plugin repeats a fragment's text.

That the merged documentation matches each module's argument spec is ansible-test sanity's (validate-modules)."""

import ast
import glob
import os

import pytest
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
PREFIX = "bastionless.ssm."


def docstring_constant(path, name):
    """The string a module-level (or class-level) assignment NAME = "..." in PATH holds, parsed as YAML."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return yaml.safe_load(node.value.value)
    return None


FRAGMENTS = {
    os.path.basename(path)[:-3]: docstring_constant(path, "DOCUMENTATION")
    for path in sorted(glob.glob(os.path.join(ROOT, "plugins", "doc_fragments", "*.py")))
    if not path.endswith("__init__.py")
}
PLUGINS = {
    os.path.relpath(path, ROOT): docstring_constant(path, "DOCUMENTATION")
    for path in sorted(glob.glob(os.path.join(ROOT, "plugins", "*", "*.py")))
    if "/doc_fragments/" not in path and not path.endswith("__init__.py")
}
PLUGINS = {path: doc for path, doc in PLUGINS.items() if doc}


def extended(doc):
    return [name[len(PREFIX):] for name in doc.get("extends_documentation_fragment") or [] if name.startswith(PREFIX)]


def as_lines(description):
    return [description] if isinstance(description, str) else list(description or [])


def test_there_are_fragments():
    assert {"ec2_instances", "session_manager_plugin", "wait"} <= set(FRAGMENTS)


@pytest.mark.parametrize("name", sorted(FRAGMENTS))
def test_a_fragment_documents_options_with_a_type_and_a_description(name):
    options = FRAGMENTS[name]["options"]
    assert options
    for option, spec in options.items():
        assert spec.get("type") and as_lines(spec.get("description")), f"{name}: option {option}"


@pytest.mark.parametrize("name", sorted(FRAGMENTS))
def test_a_fragment_is_shared_by_two_plugins_at_least(name):
    users = [path for path, doc in PLUGINS.items() if name in extended(doc)]
    assert len(users) >= 2, f"{name} is extended by {users} only; fold it back into that plugin or share it"


@pytest.mark.parametrize("path", sorted(PLUGINS))
def test_every_fragment_a_plugin_names_exists(path):
    missing = [name for name in extended(PLUGINS[path]) if name not in FRAGMENTS]
    assert not missing, f"{path} extends {missing}, which plugins/doc_fragments does not have"


@pytest.mark.parametrize("path", sorted(PLUGINS))
def test_a_plugin_does_not_repeat_the_text_of_a_fragment_it_extends(path):
    own = PLUGINS[path].get("options") or {}
    for name in extended(PLUGINS[path]):
        for option, spec in FRAGMENTS[name]["options"].items():
            repeated = set(as_lines(spec["description"])) & set(as_lines((own.get(option) or {}).get("description")))
            assert not repeated, f"{path} repeats {name}'s description of {option}: {repeated}"
