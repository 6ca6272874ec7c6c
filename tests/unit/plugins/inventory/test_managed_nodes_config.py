"""bastionless.ssm.managed_nodes reading its inventory file, loaded by Ansible's real plugin loader in a new
interpreter: a key that is no option is refused before any AWS call, and templated options are templated without
the deprecation amazon.aws's inventory base makes ansible-core 2.19 print (``disable_lookups``)."""

import json
import os
import subprocess
import sys

import botocore
import pytest

from ansible_collections.bastionless.ssm.plugins.plugin_utils import managed_nodes as mn

_READ = r"""
import json, sys
from ansible.errors import AnsibleParserError
from ansible.inventory.data import InventoryData
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.inventory import BaseInventoryPlugin
from ansible.plugins.loader import init_plugin_loader, inventory_loader
init_plugin_loader()
plugin = inventory_loader.get("bastionless.ssm.managed_nodes")
path = sys.argv[1]
BaseInventoryPlugin.parse(plugin, InventoryData(), DataLoader(), path)
try:
    plugin._read_config_data(path)
except AnsibleParserError as e:
    print(json.dumps({"error": str(e)}))
    sys.exit(0)
options = plugin.get_options()
print(json.dumps({"regions": plugin.get_option("regions"), "filters": plugin.get_option("filters"),
                  "profile": options["profile"], "node_group": options["node_group"]}))
"""


def _read(tmp_path, text: str) -> tuple:
    path = tmp_path / "fleet.managed_nodes.yml"
    path.write_text(text)
    collections = os.path.abspath(os.path.join(mn.__file__, *[".."] * 6))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections, ANSIBLE_NOCOLOR="1", ANSIBLE_DEPRECATION_WARNINGS="1")
    env.pop("AWS_PROFILE", None)
    done = subprocess.run([sys.executable, "-c", _READ, str(path)], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr, str(path)


def test_templated_options_are_templated_without_a_deprecation(tmp_path):
    got, stderr, _path = _read(tmp_path, "\n".join([
        "plugin: bastionless.ssm.managed_nodes",
        "regions: [\"{{ 'eu-' ~ 'west-1' }}\", us-east-1]",
        "filters:",
        "  tag:Env: \"{{ 'pr' ~ 'od' }}\"",
        "profile: \"{{ 'ops' | upper }}\"",
        "node_group: \"{{ 'not templated' }}\"",  # not one of the templatable options
        "",
    ]))
    assert got == {"regions": ["eu-west-1", "us-east-1"], "filters": {"tag:Env": "prod"}, "profile": "OPS",
                   "node_group": "{{ 'not templated' }}"}
    assert "DEPRECATION" not in stderr and "WARNING" not in stderr, stderr


@pytest.mark.parametrize("key, message", [
    ("regoins: [us-east-1]", "unknown key regoins (did you mean regions?): remove or rename it; the valid keys are "),
    ("pingstatus: all", "unknown key pingstatus (did you mean ping_status?): remove or rename it; the valid keys are "),
    ("colour: blue", "unknown key colour: remove or rename it; the valid keys are "),
])
def test_a_key_that_is_no_option_fails_the_inventory_naming_it(tmp_path, key, message):
    got, _stderr, path = _read(tmp_path, f"plugin: bastionless.ssm.managed_nodes\n{key}\n")
    assert got["error"].startswith(f"{path}: {message}"), got
    valid = got["error"].split("the valid keys are ", 1)[1].split(", ")
    # Our options and those of the fragments (the cache, constructed and amazon.aws's), none twice.
    assert {"plugin", "regions", "ping_status", "hostnames", "keyed_groups", "compose", "cache", "profile",
            "endpoint_url", "assume_role_arn"} <= set(valid) and len(valid) == len(set(valid)), valid


def test_aliases_of_options_are_valid_keys(tmp_path):
    got, _stderr, _path = _read(tmp_path, "plugin: bastionless.ssm.managed_nodes\naws_profile: ops\n")
    assert got["profile"] == "ops", got


def _shell_without_the_lab(tmp_path) -> tuple:
    """(the repository's root, the environment of a shell with no lab, AWS or ansible variables and no credentials),
    with the installed collection on ANSIBLE_COLLECTIONS_PATH."""
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("AWS_", "ANSIBLE_", "BOTO")) and name != "SSM_LAB_STATE_DIR"}
    env.update(HOME=str(tmp_path), AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
               AWS_EC2_METADATA_DISABLED="true", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_COLLECTIONS_PATH=os.path.abspath(os.path.join(mn.__file__, *[".."] * 6)))
    return root, env


def test_the_lab_inventory_without_the_labs_variables_fails_the_command_with_the_fix_first(tmp_path):
    """What a user gets who runs the README's ad-hoc command in a shell without the lab's variables: the repository's
    ansible.cfg makes the unparsed source fail the command (ansible-core alone exits 0 on an empty inventory), and the
    first line names the fix. No AWS call is made: boto3 finds no credentials first."""
    root, env = _shell_without_the_lab(tmp_path)
    ansible = os.path.join(os.path.dirname(sys.executable), "ansible")
    done = subprocess.run([ansible, "-i", "inventories/lab", "all", "-m", "ansible.builtin.ping"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert output.startswith("[WARNING]: Failed to parse inventory with 'auto' plugin: Cannot list the managed nodes "
                             "of us-east-1: no AWS credentials were found: "), output
    assert 'eval "$(ssm-lab up --nodes 3)"' in output.splitlines()[0], output
    assert output.rstrip().endswith("[ERROR]: Completely failed to parse inventory source "
                                    f"{root}/inventories/lab/lab.managed_nodes.yml"), output
    assert "DEPRECATION" not in output, output
    assert mn.UNPARSED_IS_IGNORED not in output, output  # ansible.cfg's any_unparsed_is_failed is on


def test_without_the_repositorys_ansible_cfg_the_inventorys_error_names_the_setting_that_fails_the_command(tmp_path):
    """A user of the collection from Galaxy has no repository ansible.cfg: ansible-core warns and goes on without the
    inventory (an ad-hoc command exits 0 with no host). The inventory's error, the first line, then ends with the
    setting to set; the collection's playbooks fail all the same, naming the cause (their first play asks AWS)."""
    root, env = _shell_without_the_lab(tmp_path)
    playbook = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    done = subprocess.run([playbook, "-i", os.path.join(root, "inventories", "lab"),
                           os.path.join(root, "playbooks", "configure.yml")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    output = done.stdout + done.stderr
    first = done.stderr.splitlines()[0]
    assert first.startswith("[WARNING]: Failed to parse inventory with 'auto' plugin: Cannot list the managed nodes "
                            "of us-east-1: no AWS credentials were found: "), output
    assert first.endswith("(Unable to locate credentials) (ansible-core goes on without this inventory source and may "
                          "exit 0 having run on no host: set any_unparsed_is_failed = True in the [inventory] section "
                          "of your ansible.cfg, or export ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED=True, to make it "
                          "fail the command)"), output
    assert "[WARNING]: No inventory was parsed, only implicit localhost is available" in output, output
    assert done.returncode == 2, output
    assert 'fatal: [localhost]: FAILED! => {"changed": false, "msg": "Could not tell whether the nodes are Online: ' \
           'Failed to describe instances: Unable to locate credentials"}' in done.stdout, output
    assert "DEPRECATION" not in output, output


def test_a_region_typo_and_a_profile_that_does_not_exist_are_named_with_the_fix_before_any_aws_call(tmp_path):
    """Two inventory files in one ansible-inventory run (each source fails on its own): a region botocore does not
    know, refused before any client is made; and a profile the AWS configuration files do not have, in a file whose
    region botocore does not know either but is behind an endpoint, so it is not refused (the endpoint decides) and
    the profile is what fails."""
    (tmp_path / "typo.managed_nodes.yml").write_text("plugin: bastionless.ssm.managed_nodes\nregions: [us-esat-1]\n")
    (tmp_path / "profile.managed_nodes.yml").write_text(
        "plugin: bastionless.ssm.managed_nodes\nregions: [ap-newplace-9]\nendpoint_url: http://127.0.0.1:9\n"
        "profile: no-such-profile\n")
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("AWS_", "ANSIBLE_", "BOTO")) and name != "SSM_LAB_STATE_DIR"}
    env.update(HOME=str(tmp_path), AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
               AWS_EC2_METADATA_DISABLED="true", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_COLLECTIONS_PATH=os.path.abspath(os.path.join(mn.__file__, *[".."] * 6)))
    inventory = os.path.join(os.path.dirname(sys.executable), "ansible-inventory")
    done = subprocess.run([inventory, "-i", "typo.managed_nodes.yml", "-i", "profile.managed_nodes.yml", "--list"],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120, check=False)
    output = " ".join((done.stdout + done.stderr).split())
    version = botocore.__version__
    assert (f"[WARNING]: Failed to parse inventory with 'auto' plugin: regions: 'us-esat-1' is not a region botocore "
            f"{version} knows (did you mean us-east-1?): fix the regions key of the inventory file; if us-esat-1 is a "
            "region newer than this botocore, upgrade it") in output, output
    assert "ap-newplace-9" not in output, output
    assert ("[WARNING]: Failed to parse inventory with 'auto' plugin: Cannot list the managed nodes: the AWS profile "
            "'no-such-profile' (the profile key, or AWS_PROFILE) is in neither ~/.aws/config nor ~/.aws/credentials (or "
            "the files AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE name): fix the name (aws configure "
            "list-profiles lists the profiles there), or unset it to use the credentials of the environment") in output, output


_PRELOAD = r"""
import json, os, sys
from ansible import constants as C
from ansible.plugins.loader import connection_loader, init_plugin_loader, inventory_loader
init_plugin_loader()
inventory = sys.modules[type(inventory_loader.get("bastionless.ssm.managed_nodes")).__module__]
name = "ansible_collections.bastionless.ssm.plugins.connection.session"
done = inventory.preload_connection(sys.argv[1])
reader, writer = os.pipe()
if os.fork() == 0:  # a task's worker: a fork of the process that parsed the inventory
    before = set(sys.modules)
    connection_loader.get("bastionless.ssm.session", class_only=True)
    os.write(writer, json.dumps(sorted(m for m in set(sys.modules) - before if "bastionless" in m)).encode())
    os._exit(0)
os.wait()
models = bool(getattr(sys.modules.get(name), "_DATA_LOADER", None))  # prepare_process read botocore's models
print(json.dumps({"preloaded": done, "models": models, "defined": C.config.has_configuration_definition("connection", name),
                  "worker_imported": json.loads(os.read(reader, 65536))}))
"""


@pytest.mark.parametrize("connection, preloaded", [
    ("bastionless.ssm.session", True),
    ("", True),  # group_vars choose the connection
    ("amazon.aws.aws_ssm", False),
    ("ansible.builtin.ssh", False),
])
def test_the_inventory_loads_the_session_connection_once_for_every_tasks_worker(connection, preloaded):
    collections = os.path.abspath(os.path.join(mn.__file__, *[".."] * 6))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections, ANSIBLE_NOCOLOR="1")
    done = subprocess.run([sys.executable, "-c", _PRELOAD, connection], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["preloaded"] is preloaded and got["defined"] is preloaded and got["models"] is preloaded, got
    # Preloaded, the worker imports nothing of the connection (no compiling, no documentation to parse).
    assert ("ansible_collections.bastionless.ssm.plugins.connection.session" in got["worker_imported"]) is not preloaded, got


def test_preloading_is_an_optimisation_whose_failure_is_left_to_the_task():
    class Broken:
        def get(self, name, class_only=False):
            raise ImportError(f"no {name}")

    inventory = pytest.importorskip("ansible_collections.bastionless.ssm.plugins.inventory.managed_nodes")
    assert inventory.preload_connection("bastionless.ssm.session", loader=Broken()) is False
