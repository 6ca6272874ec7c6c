"""What bastionless.ssm.session needs of ansible-core and amazon.aws (plugin_utils/_session_support.py): the version
ranges, that they agree with meta/runtime.yml and galaxy.yml, the decision to run modules in forks, and the errors
for an amazon.aws the Windows path cannot use."""

import importlib.util
import json
import os

import pytest
import yaml

from ansible.release import __version__ as ansible_core_version

from ansible_collections.bastionless.ssm.plugins.plugin_utils import _session_support as support

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
RANGE = ">=10.0.0,<11.0.0"


def _yaml(*path: str) -> dict:
    with open(os.path.join(ROOT, *path), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def test_the_ranges_are_the_ones_runtime_yml_and_galaxy_yml_state():
    assert support.range_text(support.CORE_RANGE) == ">=2.19.0,<2.20.0"
    assert _yaml("meta", "runtime.yml")["requires_ansible"] == support.range_text(support.CORE_RANGE)
    assert _yaml("galaxy.yml")["dependencies"]["amazon.aws"] == support.range_text(support.AMAZON_AWS_RANGE) == RANGE


def test_the_ansible_core_and_amazon_aws_of_this_venv_are_in_the_ranges():
    """What the tests here run on is what the ranges claim (a new release in the venv must move both)."""
    import ansible_collections.amazon.aws as amazon_aws  # pylint: disable=import-outside-toplevel

    assert support.in_range(ansible_core_version, support.CORE_RANGE), ansible_core_version
    version = support.collection_version(list(amazon_aws.__path__)[0])
    assert version and support.in_range(version, support.AMAZON_AWS_RANGE), version
    assert support.amazon_aws_problem(version) is None


@pytest.mark.parametrize("text, expected", [
    ("2.19.14", (2, 19, 14)),
    ("2.20.0rc1", (2, 20, 0)),
    ("2.19", (2, 19, 0)),
    ("10.1.2", (10, 1, 2)),
    (" v9.5.0 ", (9, 5, 0)),
    ("devel", None),
    ("", None),
    (None, None),
])
def test_version_tuple(text, expected):
    assert support.version_tuple(text) == expected


@pytest.mark.parametrize("version, inside", [
    ("2.18.12", False),
    ("2.19.0", True),
    ("2.19.0b1", True),
    ("2.19.14", True),
    ("2.20.0", False),
    ("2.21.5", False),
    ("3.0.0", False),
    ("unknown", False),
])
def test_ansible_core_range(version, inside):
    assert support.in_range(version, support.CORE_RANGE) is inside


@pytest.mark.parametrize("version, has_loader, forks, why", [
    ("2.19.14", True, True, ""),
    ("2.19.14", False, False, "ansible-core 2.19.14 has no ansible.module_utils._internal._ansiballz._loader"),
    ("2.18.12", False, False, "they know ansible-core >=2.19.0,<2.20.0 and this is 2.18.12"),
    ("2.17.14", False, False, "they know ansible-core >=2.19.0,<2.20.0 and this is 2.17.14"),
    ("2.21.5", True, False, "they know ansible-core >=2.19.0,<2.20.0 and this is 2.21.5"),
])
def test_modules_run_in_forks_only_with_the_ansible_core_they_know(version, has_loader, forks, why):
    on, reason = support.module_forks(version, has_loader)
    assert on is forks
    if forks:
        assert reason == ""
    else:
        assert why in reason and reason.startswith("module forks are off") and "plain commands" in reason


def test_this_ansible_core_has_the_loader_the_forks_preload():
    """The private module the resident Python imports from the payload is where the guard looks for it."""
    assert importlib.util.find_spec(support.CORE_LOADER) is not None
    assert support.module_forks(ansible_core_version, True) == (True, "")


def test_the_collection_version_comes_from_manifest_json_else_galaxy_yml(tmp_path):
    assert support.collection_version(str(tmp_path)) is None
    (tmp_path / "galaxy.yml").write_text("namespace: amazon\nname: aws\nversion: '10.2.0'  # released\n")
    assert support.collection_version(str(tmp_path)) == "10.2.0"
    (tmp_path / "MANIFEST.json").write_text(json.dumps({"collection_info": {"version": "10.1.2"}}))
    assert support.collection_version(str(tmp_path)) == "10.1.2"
    (tmp_path / "MANIFEST.json").write_text("{not json")
    assert support.collection_version(str(tmp_path)) == "10.2.0"


@pytest.mark.parametrize("version", ["10.0.0", "10.1.2", "10.99.1"])
def test_amazon_aws_10_is_accepted(version):
    assert support.amazon_aws_problem(version) is None


@pytest.mark.parametrize("version", ["9.5.0", "11.0.0", "5.0.0"])
def test_another_amazon_aws_is_refused_with_the_range_and_the_fix(version):
    message = support.amazon_aws_problem(version)
    assert message == (
        "bastionless.ssm.session runs Windows nodes through amazon.aws.aws_ssm and needs ansible-core 2.19 and "
        f"amazon.aws 10.x (amazon.aws {RANGE}); found amazon.aws {version}: install a release in that range "
        f"(ansible-galaxy collection install 'amazon.aws:{RANGE}'), or set ansible_connection to amazon.aws.aws_ssm "
        "for the Windows hosts")


def test_an_aws_ssm_without_an_option_is_refused_naming_it():
    message = support.amazon_aws_problem(None, ["bucket_endpoint_url", "plugin"])
    assert "the aws_ssm of amazon.aws (version unknown) has no option bucket_endpoint_url, plugin" in message
    assert f"(amazon.aws {RANGE})" in message
    assert support.amazon_aws_problem("10.1.2", ["plugin"]).count("amazon.aws 10.1.2 has no option plugin") == 1


def test_a_missing_aws_ssm_is_refused_with_the_install_command():
    message = support.amazon_aws_problem(None, found=False)
    assert message.endswith(f"amazon.aws.aws_ssm was not found: ansible-galaxy collection install 'amazon.aws:{RANGE}'")
    assert "needs ansible-core 2.19 and amazon.aws 10.x" in message


DEFINITIONS = {"transport": {"choices": ["native", "plugin"], "vars": [{"name": "ansible_aws_ssm_transport"}],
                             "env": [{"name": "ANSIBLE_AWS_SSM_TRANSPORT"}]},
               "region": {"vars": [{"name": "ansible_aws_ssm_region"}]}}


@pytest.mark.parametrize("var_options, direct, environ, expected", [
    ({"ansible_aws_ssm_transport": "native"}, {}, {}, None),
    ({}, {}, {}, None),
    ({"ansible_aws_ssm_transport": "web"}, {}, {},
     "transport (ansible_aws_ssm_transport) must be one of native, plugin, not 'web'"),
    ({}, {"transport": "web"}, {}, "transport must be one of native, plugin, not 'web'"),
    ({}, {}, {"ANSIBLE_AWS_SSM_TRANSPORT": "web"},
     "transport (ANSIBLE_AWS_SSM_TRANSPORT) must be one of native, plugin, not 'web'"),
])
def test_choice_problem_names_where_the_value_was_set_and_the_choices(var_options, direct, environ, expected):
    assert support.choice_problem(DEFINITIONS, var_options, direct, environ) == expected


def test_profile_problem_names_the_profile_where_it_was_set_and_the_fix():
    assert support.profile_problem("prod", "profile: AWS_PROFILE") == (
        "the AWS profile 'prod' (profile: AWS_PROFILE) is in neither ~/.aws/config nor ~/.aws/credentials (or the "
        "files AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE name): fix the name (aws configure list-profiles lists "
        "the profiles there), or unset it to use the credentials of the environment")
