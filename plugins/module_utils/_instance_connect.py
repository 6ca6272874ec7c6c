# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Helpers of bastionless.ssm.instance_connect_key: the run's key pair and EC2 Instance Connect's SendSSHPublicKey.

Private to the collection: no stability promise.
"""

import os
import re
from typing import Any
from typing import Dict
from typing import List
from typing import Optional

PRIVATE_KEY = "id_{0}"
KEY_COMMENT = "bastionless-ssm-ephemeral"
KEY_TYPES = ("ed25519", "rsa")
VALID_SECONDS = 60
# SendSSHPublicKey's own rules (the API model), checked here for one clear error before any call.
OS_USER = re.compile(r"(^[A-Za-z_][A-Za-z0-9@._-]{0,30}[A-Za-z0-9$_-]?$)|"
                     r"(^(?=.{2,32}$)[0-9]{1,32}[A-Za-z@._-][A-Za-z0-9@._-]*[A-Za-z0-9$_-]?$)")
INSTANCE_ID = re.compile(r"^i-[a-f0-9]{8,30}$")


def validate(params: Dict[str, Any]) -> Optional[str]:
    """The first problem with the input, as a message naming the option and the fix; None when all is well."""
    if params["state"] == "absent":
        if not params.get("key_dir"):
            return "state=absent needs key_dir: the directory a state=present task returned (key_dir)."
        if params.get("instance_ids"):
            return "instance_ids pushes a key; it is only for state=present."
        return None
    ids = params.get("instance_ids") or []
    if ids and not params.get("os_user"):
        return "instance_ids needs os_user: the OS user on the instances the key is valid for (for example ec2-user)."
    if params.get("os_user") and (len(params["os_user"]) > 32 or not OS_USER.match(params["os_user"])):
        return (f"os_user {params['os_user']!r} is not an OS user name EC2 Instance Connect accepts: up to 32 "
                "letters, digits, '.', '_', '-' and '@', starting with a letter or '_'.")
    bad = [i for i in ids if not INSTANCE_ID.match(str(i))]
    if bad:
        return (f"instance_ids: {', '.join(map(str, bad))} not an EC2 instance id (i-0123456789abcdef0); EC2 Instance "
                "Connect has no hybrid (mi-) nodes.")
    return None


def key_paths(key_dir: str, key_type: str) -> Dict[str, str]:
    private = os.path.join(key_dir, PRIVATE_KEY.format(key_type))
    return {"private_key_file": private, "public_key_file": private + ".pub"}


def keygen_argv(private_key_file: str, key_type: str) -> List[str]:
    argv = ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", KEY_COMMENT, "-f", private_key_file]
    if key_type == "rsa":
        argv[4:4] = ["-b", "4096"]
    return argv


def read_public_key(path: str) -> Optional[str]:
    """The OpenSSH public key line in ``path``, or None when there is none."""
    try:
        with open(path, encoding="utf-8") as handle:
            line = handle.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    parts = line.split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-")):
        return None
    return line


def key_pair_present(key_dir: str, key_type: str) -> bool:
    paths = key_paths(key_dir, key_type)
    return os.path.isfile(paths["private_key_file"]) and read_public_key(paths["public_key_file"]) is not None


def send_ssh_public_key(client, instance_id: str, os_user: str, public_key: str) -> Dict[str, Any]:
    """One SendSSHPublicKey call: the key is valid for ``os_user`` on ``instance_id`` for 60 seconds."""
    return client.send_ssh_public_key(aws_retry=True, InstanceId=instance_id, InstanceOSUser=os_user,
                                      SSHPublicKey=public_key)
