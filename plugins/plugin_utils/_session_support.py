# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What bastionless.ssm.session needs of ansible-core and amazon.aws, and the ranges it is tested with.

The connection uses public interfaces only, with two exceptions that are checked here rather than assumed:

- The resident Python's module forks (_session_helper) import ansible-core's AnsiballZ loader
  (``ansible.module_utils._internal._ansiballz._loader``, a private module) from the module's own payload, and
  recognise the wrapper of ansible-core 2.19. The payload is built by the controller's ansible-core, so the controller
  decides: forks are used only when its ansible-core is in CORE_RANGE and has that loader; otherwise every module
  runs as a plain command (the public path: ``python3`` with the wrapper on stdin), only slower.
- Windows nodes are handed to amazon.aws.aws_ssm, configured through the plugin API (set_options, has_option). That
  needs an amazon.aws in AMAZON_AWS_RANGE whose aws_ssm declares AWS_SSM_OPTIONS; anything else is refused with one
  error naming the range.

The ranges agree with meta/runtime.yml (requires_ansible) and galaxy.yml (dependencies); tests/unit checks it.
"""

import json
import os
import re

CORE_RANGE = ((2, 19), (2, 20))  # ansible-core: at least 2.19, below 2.20
AMAZON_AWS_RANGE = ((10, 0), (11, 0))  # amazon.aws: at least 10.0, below 11.0
SUPPORTED = "ansible-core 2.19 and amazon.aws 10.x"
CORE_LOADER = "ansible.module_utils._internal._ansiballz._loader"

# The options bastionless.ssm.session shares with amazon.aws.aws_ssm, same names, variables and defaults: all of them
# are handed to aws_ssm for Windows nodes.
AWS_SSM_OPTIONS = (
    "access_key_id", "secret_access_key", "session_token", "instance_id", "region", "bucket_name",
    "bucket_endpoint_url", "plugin", "profile", "reconnection_retries", "ssm_timeout", "bucket_sse_mode",
    "bucket_sse_kms_key_id", "ssm_document", "s3_addressing_style",
)

_VERSION = re.compile(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?")


def version_tuple(version):
    """(major, minor, patch) of a version string such as 2.19.14 or 2.20.0rc1; None when it is not one."""
    found = _VERSION.match(str(version or ""))
    if not found:
        return None
    return tuple(int(part or 0) for part in found.groups())


def in_range(version, bounds) -> bool:
    """Whether version (a string) is at least bounds[0] and below bounds[1] (each a (major, minor) tuple)."""
    parsed = version_tuple(version)
    return parsed is not None and tuple(bounds[0]) <= parsed[:2] < tuple(bounds[1])


def range_text(bounds) -> str:
    """bounds as a PEP 440 specifier, as galaxy.yml and meta/runtime.yml write it: >=2.19.0,<2.20.0."""
    return f">={bounds[0][0]}.{bounds[0][1]}.0,<{bounds[1][0]}.{bounds[1][1]}.0"


def module_forks(core_version, has_loader: bool) -> tuple:
    """(whether the resident Python may run modules in a fork, why not). core_version: the controller's ansible-core;
    has_loader: whether it has CORE_LOADER."""
    if not in_range(core_version, CORE_RANGE):
        return False, (f"module forks are off: they know ansible-core {range_text(CORE_RANGE)} and this is "
                       f"{core_version}; modules run as plain commands")
    if not has_loader:
        return False, (f"module forks are off: ansible-core {core_version} has no {CORE_LOADER}; modules run as plain "
                       "commands")
    return True, ""


def collection_version(collection_dir):
    """The version of the collection installed in collection_dir (its MANIFEST.json, or galaxy.yml for a source
    checkout); None when neither says."""
    try:
        with open(os.path.join(collection_dir, "MANIFEST.json"), encoding="utf-8") as handle:
            return str(json.load(handle)["collection_info"]["version"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        with open(os.path.join(collection_dir, "galaxy.yml"), encoding="utf-8") as handle:
            for line in handle:
                found = re.match(r"^version:\s*['\"]?([^'\"\s#]+)", line)
                if found:
                    return found.group(1)
    except OSError:
        pass
    return None


def amazon_aws_problem(version, missing_options=(), found=True):
    """The error for an amazon.aws that cannot run Windows nodes for bastionless.ssm.session, or None when it can.
    version: the installed amazon.aws (None when unknown); missing_options: AWS_SSM_OPTIONS its aws_ssm lacks;
    found: whether amazon.aws.aws_ssm was found at all."""
    wanted = range_text(AMAZON_AWS_RANGE)
    fix = (f"install a release in that range (ansible-galaxy collection install 'amazon.aws:{wanted}'), or set "
           "ansible_connection to amazon.aws.aws_ssm for the Windows hosts")
    if not found:
        return (f"bastionless.ssm.session runs Windows nodes through amazon.aws.aws_ssm and needs {SUPPORTED} "
                f"(amazon.aws {wanted}); amazon.aws.aws_ssm was not found: ansible-galaxy collection install "
                f"'amazon.aws:{wanted}'")
    if version is not None and not in_range(version, AMAZON_AWS_RANGE):
        return (f"bastionless.ssm.session runs Windows nodes through amazon.aws.aws_ssm and needs {SUPPORTED} "
                f"(amazon.aws {wanted}); found amazon.aws {version}: {fix}")
    if missing_options:
        return (f"bastionless.ssm.session runs Windows nodes through amazon.aws.aws_ssm and needs {SUPPORTED} "
                f"(amazon.aws {wanted}); the aws_ssm of amazon.aws {version or '(version unknown)'} has no option "
                f"{', '.join(missing_options)}: {fix}")
    return None


TRANSPORTS = ("native", "plugin")


def choice_problem(definitions: dict, var_options: dict, direct: dict, environ=None):
    """The sentence for the first option whose value is not one of its choices, naming where it was set (the direct
    option, the variable, or the environment variable) and the values it takes; None when every value is one."""
    environ = os.environ if environ is None else environ
    for name in sorted(definitions):
        definition = definitions[name] or {}
        choices = definition.get("choices")
        if not choices:
            continue
        given = []
        if direct.get(name) is not None:
            given.append((name, direct[name]))
        given += [(var["name"], var_options[var["name"]]) for var in reversed(definition.get("vars") or [])
                  if var_options.get(var["name"]) is not None]
        given += [(env["name"], environ[env["name"]]) for env in definition.get("env") or [] if env["name"] in environ]
        for source, value in given[:1]:
            if value not in choices:
                where = name if source == name else f"{name} ({source})"
                return f"{where} must be one of {', '.join(str(c) for c in choices)}, not {value!r}"
    return None


def profile_problem(profile: str, where: str) -> str:
    """The sentence for an AWS profile that the AWS configuration files do not have."""
    return (f"the AWS profile {profile!r} ({where}) is in neither ~/.aws/config nor ~/.aws/credentials (or the files "
            "AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE name): fix the name (aws configure list-profiles lists "
            "the profiles there), or unset it to use the credentials of the environment")


def choose_transport(option, has_websockets: bool, plugin_path, looked: str, install_url: str) -> str:
    """The transport a new session uses: the transport option when set, else ``native`` where the Python package
    websockets is importable and ``plugin`` where it is not. plugin_path: the session-manager-plugin found (None when
    not; looked says where it was looked for). ValueError naming the fix when the chosen transport cannot run."""
    if option not in (None, "") and option not in TRANSPORTS:
        raise ValueError(f"transport (ansible_aws_ssm_transport) must be one of {', '.join(TRANSPORTS)}, not {option!r}")
    no_websockets = ("the Python package websockets is not installed for the controller's Python "
                     "(pip install websockets, as the collection's requirements.txt lists it)")
    no_plugin = f"session-manager-plugin was not found ({looked})"
    plugin_fix = f"install it on the controller ({install_url}) or set ansible_aws_ssm_plugin to its path"
    if option == "native":
        if not has_websockets:
            raise ValueError("transport native needs the Python package websockets, which is not installed for the "
                             "controller's Python: pip install websockets (the collection's requirements.txt lists "
                             "it), or set ansible_aws_ssm_transport to plugin to use session-manager-plugin instead")
        return "native"
    if option == "plugin":
        if not plugin_path:
            raise ValueError(f"transport plugin needs session-manager-plugin, which was not found ({looked}): "
                             f"{plugin_fix}, or set ansible_aws_ssm_transport to native")
        return "plugin"
    if has_websockets:
        return "native"
    if plugin_path:
        return "plugin"
    raise ValueError(f"bastionless.ssm.session cannot reach Session Manager: {no_websockets}, and {no_plugin}. "
                     f"Install websockets (transport native, no binary needed), or {plugin_fix} (transport plugin)")
