#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: instance_connect_key
version_added: 0.1.0
short_description: A throw-away SSH key pair for this run, pushed with EC2 Instance Connect
description:
  - Creates an SSH key pair on the controller for one Ansible run, for ssh over Session Manager with no
    long-lived key installed anywhere. Without O(key_dir), the key pair goes in a new directory (mode C(0700))
    inside the run's own temporary directory, which C(ansible-playbook) deletes when it exits, even when the
    run fails.
  - With O(instance_ids), pushes the public key to those instances with EC2 Instance Connect
    (C(SendSSHPublicKey)). Their sshd accepts it for 60 seconds, for O(os_user) only, and nothing is written on
    the instance. A push is best made just before connecting; the proxy command of the role
    C(bastionless.ssm.ssh_over_ssm) does it for each new ssh connection (C(--public-key)), so the 60 seconds never run out between tasks.
  - The private key is never read into a result or logged; only its path is returned.
  - Runs on the controller (an action plugin makes sure of it). The nodes need sshd and EC2 Instance Connect
    (Amazon Linux 2023 and the Ubuntu AMIs have both); hybrid (C(mi-)) nodes have no Instance Connect.
author:
  - bastionless.ssm maintainers (@bastionless)
options:
  state:
    description:
      - V(present) makes sure a key pair exists (and pushes it with O(instance_ids)); V(absent) deletes
        O(key_dir) and the key pair in it.
    type: str
    choices: [present, absent]
    default: present
  key_dir:
    description:
      - The directory of the key pair. With V(present), a key pair already there is kept (so the task is
        idempotent), else one is made; the directory is created with mode C(0700).
      - Unset, each V(present) makes a new directory in the run's temporary directory, deleted at the end of the
        run. Required with V(absent).
    type: path
  key_type:
    description: The key's type. Both are accepted by EC2 Instance Connect.
    type: str
    choices: [ed25519, rsa]
    default: ed25519
  instance_ids:
    description:
      - EC2 instances to push the public key to with C(SendSSHPublicKey), in the connection's region.
    type: list
    elements: str
    default: []
  os_user:
    description:
      - The OS user on the instances the pushed key is valid for (V(ec2-user) on Amazon Linux, V(ubuntu) on
        Ubuntu). Required with O(instance_ids).
    type: str
  _key_parent:
    description:
      - Internal, set by the module's action plugin; do not set it. The run's own temporary directory, in which a
        key pair made without O(key_dir) is put.
    type: path
attributes:
  check_mode:
    description: Reports whether a key pair would be made or deleted; makes, pushes and deletes nothing.
    support: full
  diff_mode:
    description: Returns no diff.
    support: none
notes:
  - Pushing needs C(ec2-instance-connect:SendSSHPublicKey) on the instances, best limited to the OS user with
    the C(ec2:osuser) condition key. Generating needs C(ssh-keygen) on the controller.
  - Each push changes something on AWS for 60 seconds, so a task with O(instance_ids) always reports a change.
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
# Note: These examples do not set authentication details, see the AWS Guide for details.

- name: A key pair for this run only (deleted when ansible-playbook exits)
  bastionless.ssm.instance_connect_key:
  register: __run_key

- name: Push it to one instance for ec2-user, valid 60 seconds
  bastionless.ssm.instance_connect_key:
    key_dir: "{{ __run_key.key_dir }}"
    instance_ids:
      - "{{ groups['ssm_nodes'] | first }}"
    os_user: ec2-user

- name: Delete it now rather than at the end of the run
  bastionless.ssm.instance_connect_key:
    state: absent
    key_dir: "{{ __run_key.key_dir }}"
"""

RETURN = r"""
key_dir:
  description: The directory of the key pair (mode C(0700)); empty in check mode when none exists yet.
  returned: always
  type: str
  sample: /home/me/.ansible/tmp/ansible-local-12345abcd/bastionless-ssm-key-x1y2z3
private_key_file:
  description: The private key, for C(ansible_ssh_private_key_file) or ssh's C(-i). Never printed.
  returned: when state=present and the key pair exists
  type: str
  sample: /home/me/.ansible/tmp/ansible-local-12345abcd/bastionless-ssm-key-x1y2z3/id_ed25519
public_key_file:
  description: The public key, for the proxy command's C(--public-key).
  returned: when state=present and the key pair exists
  type: str
  sample: /home/me/.ansible/tmp/ansible-local-12345abcd/bastionless-ssm-key-x1y2z3/id_ed25519.pub
public_key:
  description: The OpenSSH public key line.
  returned: when state=present and the key pair exists
  type: str
  sample: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0... bastionless-ssm-ephemeral
pushed:
  description: The instances the key was pushed to, each accepting it for RV(valid_seconds).
  returned: always
  type: list
  elements: str
  sample: [i-0123456789abcdef0]
valid_seconds:
  description: How long a pushed key is accepted (EC2 Instance Connect's 60 seconds).
  returned: always
  type: int
  sample: 60
"""

import os
import shutil
import tempfile
from typing import Any
from typing import Dict

try:
    import botocore
except ImportError:
    pass  # AnsibleAWSModule reports a missing SDK

from ansible_collections.amazon.aws.plugins.module_utils.exceptions import AnsibleAWSError
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

from ansible_collections.bastionless.ssm.plugins.module_utils import _instance_connect as eic

KEY_DIR_PREFIX = "bastionless-ssm-key-"


def make_key_pair(module: AnsibleAWSModule, key_dir: str, key_type: str) -> None:
    os.makedirs(key_dir, mode=0o700, exist_ok=True)
    os.chmod(key_dir, 0o700)
    paths = eic.key_paths(key_dir, key_type)
    for path in paths.values():
        if os.path.lexists(path):
            os.unlink(path)
    rc, _out, err = module.run_command(eic.keygen_argv(paths["private_key_file"], key_type))
    if rc != 0:
        module.fail_json(msg=f"ssh-keygen could not make the key pair in {key_dir}: {err.strip()}")


def present(module: AnsibleAWSModule, params: Dict[str, Any]) -> Dict[str, Any]:
    key_type = params["key_type"]
    key_dir = params["key_dir"]
    changed = False
    if not key_dir:
        parent = params.get("_key_parent") or ""
        if not parent:
            module.fail_json(msg="Without key_dir this module needs its action plugin, which runs it on the controller: "
                                 "call it as bastionless.ssm.instance_connect_key, or give key_dir.")
        changed = True
        if not module.check_mode:
            key_dir = tempfile.mkdtemp(prefix=KEY_DIR_PREFIX, dir=parent)
    elif not eic.key_pair_present(key_dir, key_type):
        changed = True
    result: Dict[str, Any] = {"key_dir": key_dir or "", "pushed": [], "valid_seconds": eic.VALID_SECONDS}
    if module.check_mode:
        if key_dir and not changed:
            result.update(eic.key_paths(key_dir, key_type))
            result["public_key"] = eic.read_public_key(result["public_key_file"])
        return {"changed": changed or bool(params["instance_ids"]), **result}
    if changed:
        make_key_pair(module, key_dir, key_type)
    result.update(eic.key_paths(key_dir, key_type))
    result["public_key"] = eic.read_public_key(result["public_key_file"])
    if params["instance_ids"]:
        client = module.client("ec2-instance-connect", retry_decorator=AWSRetry.jittered_backoff())
        for instance_id in params["instance_ids"]:
            try:
                eic.send_ssh_public_key(client, instance_id, params["os_user"], result["public_key"])
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
                module.fail_json_aws(error, msg=f"EC2 Instance Connect did not take the key for {instance_id}",
                                     **result)
            result["pushed"].append(instance_id)
        changed = True
    return {"changed": changed, **result}


def absent(module: AnsibleAWSModule, params: Dict[str, Any]) -> Dict[str, Any]:
    key_dir = params["key_dir"]
    result = {"key_dir": key_dir, "pushed": [], "valid_seconds": eic.VALID_SECONDS}
    if not os.path.lexists(key_dir):
        return {"changed": False, **result}
    if os.path.isdir(key_dir) and not os.path.islink(key_dir):
        unknown = [n for n in os.listdir(key_dir) if not n.startswith("id_")]
        if unknown:
            module.fail_json(msg=f"key_dir {key_dir} holds more than a key pair ({', '.join(sorted(unknown)[:3])}); "
                                 "it is left alone. Give the key_dir a state=present task returned.", **result)
    if not module.check_mode:
        if os.path.isdir(key_dir) and not os.path.islink(key_dir):
            shutil.rmtree(key_dir)
        else:
            os.unlink(key_dir)
    return {"changed": True, **result}


def main() -> None:
    argument_spec = dict(
        state=dict(type="str", choices=["present", "absent"], default="present"),
        key_dir=dict(type="path"),
        key_type=dict(type="str", choices=list(eic.KEY_TYPES), default="ed25519"),
        instance_ids=dict(type="list", elements="str", default=[]),
        os_user=dict(type="str"),
        # Internal (as async_status's _async_dir): the action plugin sets it to the run's own temporary directory,
        # which ansible-playbook deletes when it exits.
        _key_parent=dict(type="path"),
    )
    module = AnsibleAWSModule(argument_spec=argument_spec, supports_check_mode=True)
    problem = eic.validate(module.params)
    if problem:
        module.fail_json(msg=problem)
    try:
        if module.params["state"] == "present":
            result = present(module, module.params)
        else:
            result = absent(module, module.params)
    except AnsibleAWSError as error:
        error.fail_json_aws_error(module)
    except OSError as error:
        module.fail_json(msg=f"Could not manage the key pair: {error}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
