"""bastionless.ssm.session's option checks, on the plugin as Ansible's real plugin loader gives it (in a new
interpreter): a value outside an option's range fails the task naming the option and the range, before any session
is started (no AWS call: the plugin, the region and the credentials are never looked at)."""

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.bastionless.ssm.plugins.plugin_utils import _session_protocol as protocol

_CONNECT = r"""
import json, sys
from ansible.errors import AnsibleError
from ansible.plugins.loader import connection_loader, init_plugin_loader
from ansible.playbook.play_context import PlayContext
init_plugin_loader()
results = []
for variables in json.loads(sys.argv[1]):
    pc = PlayContext()
    pc.remote_addr = "i-0123456789abcdef0"
    conn = connection_loader.get("bastionless.ssm.session", pc)
    try:
        conn.set_options(var_options={"ansible_aws_ssm_region": "eu-west-1", **variables})
        conn._connect()
        results.append({"error": None, "boto3": "boto3" in sys.modules})
    except AnsibleError as e:
        results.append({"error": e.message, "boto3": "boto3" in sys.modules})
print(json.dumps(results))
"""

# Every case of this file, run in one interpreter (a new one costs about 4 CPU-seconds of imports): the cases are
# independent, each with a connection of its own, and boto3 must stay unimported through all of them.
CASES = [
    *({"ansible_aws_ssm_persist_idle_timeout": value} for value in (0, -5, "0", 1, 3600)),
    {},
    *({"ansible_aws_ssm_command_timeout": value} for value in (0, -1, "0")),
    {"ansible_aws_ssm_timeout": 0},
    {"ansible_aws_ssm_transport": "nativ"},
    {"ansible_aws_ssm_s3_addressing_style": "host"},
]
_RESULTS = {}


def _connect(variables: dict) -> dict:
    if not _RESULTS:
        collections = os.path.abspath(os.path.join(protocol.__file__, *[".."] * 6))
        done = subprocess.run([sys.executable, "-c", _CONNECT, json.dumps(CASES)],
                              env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections), capture_output=True,
                              text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        for case, result in zip(CASES, json.loads(done.stdout.strip().splitlines()[-1])):
            _RESULTS[json.dumps(case, sort_keys=True)] = result
    return _RESULTS[json.dumps(variables, sort_keys=True)]


@pytest.mark.parametrize("value", [0, -5, "0"])
def test_a_persist_idle_timeout_below_one_second_is_refused_naming_the_option_and_the_range(value):
    got = _connect({"ansible_aws_ssm_persist_idle_timeout": value})
    assert got == {"error": "persist_idle_timeout (ansible_aws_ssm_persist_idle_timeout) must be a whole number of "
                            f"seconds of 1 or more, not {int(value)}", "boto3": False}


@pytest.mark.parametrize("variables", [{}, {"ansible_aws_ssm_persist_idle_timeout": 1},
                                       {"ansible_aws_ssm_persist_idle_timeout": 3600}])
def test_a_persist_idle_timeout_of_a_second_or_more_connects(variables):
    assert _connect(variables) == {"error": None, "boto3": False}


@pytest.mark.parametrize("value", [0, -1, "0"])
def test_a_command_timeout_below_one_second_is_refused_not_taken_as_unset(value):
    got = _connect({"ansible_aws_ssm_command_timeout": value})
    assert got == {"error": "command_timeout (ansible_aws_ssm_command_timeout) must be a whole number of seconds of 1 "
                            f"or more, not {int(value)}: it bounds every command, so 0 would fail each one at once",
                   "boto3": False}


def test_an_ssm_timeout_of_zero_is_refused_naming_it_when_command_timeout_is_unset():
    got = _connect({"ansible_aws_ssm_timeout": 0})
    assert got["error"].startswith("ssm_timeout (ansible_aws_ssm_timeout) must be a whole number of seconds of 1 or more")


@pytest.mark.parametrize("variable, value, message", [
    ("ansible_aws_ssm_transport", "nativ", "transport (ansible_aws_ssm_transport) must be one of native, plugin, not 'nativ'"),
    ("ansible_aws_ssm_s3_addressing_style", "host", "s3_addressing_style (ansible_aws_ssm_s3_addressing_style) must be one "
                                                    "of path, virtual, auto, not 'host'"),
])
def test_a_value_outside_the_choices_names_the_variable_and_the_choices(variable, value, message):
    assert _connect({variable: value}) == {"error": f"bastionless.ssm.session: {message}", "boto3": False}


def test_an_aws_call_is_bounded_as_a_whole():
    """_within: a call's result, its exception, or _Late once its bound passes (the call itself goes on in a daemon
    thread, as one hung in botocore's retries would)."""
    from ansible_collections.bastionless.ssm.plugins.connection import session

    assert session._within(5, lambda: "answer") == "answer"
    with pytest.raises(KeyError):
        session._within(5, lambda: {}["missing"])
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(session._Late):
        session._within(0.2, lambda: release.wait(30))
    assert time.monotonic() - started < 5
    release.set()
