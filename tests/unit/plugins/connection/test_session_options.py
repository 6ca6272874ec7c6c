"""bastionless.ssm.session's option checks, on the plugin as Ansible's real plugin loader gives it (in a new
interpreter): a value outside an option's range fails the task naming the option and the range, before any session
is started (no AWS call: the plugin, the region and the credentials are never looked at)."""

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.bastionless.ssm.plugins.plugin_utils import _session_protocol as protocol

_CONNECT = r"""
import json, sys
from ansible.errors import AnsibleError
from ansible.plugins.loader import connection_loader, init_plugin_loader
from ansible.playbook.play_context import PlayContext
init_plugin_loader()
pc = PlayContext()
pc.remote_addr = "i-0123456789abcdef0"
conn = connection_loader.get("bastionless.ssm.session", pc)
conn.set_options(var_options={"ansible_aws_ssm_region": "eu-west-1", **json.loads(sys.argv[1])})
try:
    conn._connect()
    print(json.dumps({"error": None, "boto3": "boto3" in sys.modules}))
except AnsibleError as e:
    print(json.dumps({"error": e.message, "boto3": "boto3" in sys.modules}))
"""


def _connect(variables: dict) -> dict:
    collections = os.path.abspath(os.path.join(protocol.__file__, *[".."] * 6))
    done = subprocess.run([sys.executable, "-c", _CONNECT, json.dumps(variables)],
                          env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections), capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("value", [0, -5, "0"])
def test_a_persist_idle_timeout_below_one_second_is_refused_naming_the_option_and_the_range(value):
    got = _connect({"ansible_aws_ssm_persist_idle_timeout": value})
    assert got == {"error": "persist_idle_timeout (ansible_aws_ssm_persist_idle_timeout) must be a whole number of "
                            f"seconds of 1 or more, not {int(value)}", "boto3": False}


@pytest.mark.parametrize("variables", [{}, {"ansible_aws_ssm_persist_idle_timeout": 1},
                                       {"ansible_aws_ssm_persist_idle_timeout": 3600}])
def test_a_persist_idle_timeout_of_a_second_or_more_connects(variables):
    assert _connect(variables) == {"error": None, "boto3": False}
