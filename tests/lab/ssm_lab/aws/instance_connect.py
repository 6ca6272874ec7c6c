"""EC2 Instance Connect's SendSSHPublicKey, which moto answers without doing anything.

AWS keeps a pushed public key for 60 seconds, for one OS user of one instance, and the instance's sshd asks
for it through an ``AuthorizedKeysCommand`` (``eic_run_authorized_keys``, which reads the instance metadata).
Here the control plane keeps the keys, and the lab node's sshd asks for them at
``/_lab/nodes/<id>/instance-connect-keys/<user>`` (see ``nodes/sshd.py``). The validity is a lab setting
(``/_lab/instance-connect``, ``key_seconds``) so that tests need not wait a minute.
"""

from __future__ import annotations

import re
import threading
import time
import uuid

from moto.backends import get_backend

from .ssmapi import ApiError, request_region

KEY_SECONDS = 60.0
INSTANCE_ID = re.compile(r"^i-[a-f0-9]+$")
OS_USER = re.compile(r"(^[A-Za-z_][A-Za-z0-9@._-]{0,30}[A-Za-z0-9$_-]?$)|"
                     r"(^(?=.{2,32}$)[0-9]{1,32}[A-Za-z@._-][A-Za-z0-9@._-]*[A-Za-z0-9$_-]?$)")
AVAILABILITY_ZONE = re.compile(r"^(\w+-){2,3}\d+\w+$")
KEY_TYPES = ("ssh-rsa", "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")


class InstanceConnect:
    """The keys pushed with SendSSHPublicKey, each for one (instance, OS user), until it expires."""

    def __init__(self, account_id: str, default_region: str) -> None:
        self.account_id = account_id
        self.default_region = default_region
        self.key_seconds = KEY_SECONDS
        self.lock = threading.Lock()
        self.keys: dict[tuple[str, str], list[tuple[str, float]]] = {}
        self.pushes = 0

    # --- the API ---------------------------------------------------------------------------------------
    def send_ssh_public_key(self, body: dict, authorization: str) -> dict:
        instance_id = body.get("InstanceId")
        os_user = body.get("InstanceOSUser")
        key = body.get("SSHPublicKey")
        zone = body.get("AvailabilityZone")
        missing = [n for n, v in (("InstanceId", instance_id), ("InstanceOSUser", os_user), ("SSHPublicKey", key))
                   if not v]
        if missing:
            raise ApiError("InvalidArgsException", f"Missing required parameter: {missing[0]}")
        if not isinstance(instance_id, str) or not 10 <= len(instance_id) <= 32 or not INSTANCE_ID.match(instance_id):
            raise ApiError("InvalidArgsException", f"Instance ID {instance_id} is not valid: it must look like "
                                                   "i-0123456789abcdef0.")
        if not isinstance(os_user, str) or len(os_user) > 32 or not OS_USER.match(os_user):
            raise ApiError("InvalidArgsException", f"InstanceOSUser {os_user} is not a valid OS user name.")
        if not isinstance(key, str) or not 80 <= len(key) <= 4096:
            raise ApiError("InvalidArgsException", "SSHPublicKey must be 80 to 4096 characters long.")
        parts = key.strip().split()
        if len(parts) < 2 or parts[0] not in KEY_TYPES:
            raise ApiError("InvalidArgsException", "Unsupported key type or malformed key: expected an OpenSSH "
                                                   "public key line (ssh-rsa, ssh-ed25519 or ecdsa).")
        if zone is not None and (not isinstance(zone, str) or not AVAILABILITY_ZONE.match(zone)):
            raise ApiError("InvalidArgsException", f"AvailabilityZone {zone} is not valid.")
        region = request_region(authorization, self.default_region)
        instance = self._instance(region, instance_id)
        if instance is None:
            raise ApiError("EC2InstanceNotFoundException", f"Instance {instance_id} not found in {region}.")
        if zone is not None and zone != instance.availability_zone:
            raise ApiError("InvalidArgsException", f"Instance {instance_id} is not in availability zone {zone}.")
        if instance.state != "running":
            raise ApiError("EC2InstanceStateInvalidException",
                           f"Instance {instance_id} is {instance.state}: it must be running.")
        line = " ".join(parts[:3])
        expires = time.time() + self.key_seconds
        with self.lock:
            held = [(k, t) for k, t in self.keys.get((instance_id, os_user), []) if t > time.time() and k != line]
            self.keys[(instance_id, os_user)] = held + [(line, expires)]
            self.pushes += 1
        return {"RequestId": str(uuid.uuid4()), "Success": True}

    def _instance(self, region: str, instance_id: str):
        try:
            backend = get_backend("ec2")[self.account_id][region]
        except KeyError:
            return None
        for instance in backend.all_instances():
            if instance.id == instance_id:
                return instance
        return None

    # --- what the node's sshd reads, and the lab's settings -----------------------------------------------
    def active_keys(self, instance_id: str, os_user: str) -> list[str]:
        stamp = time.time()
        with self.lock:
            return [k for k, t in self.keys.get((instance_id, os_user), []) if t > stamp]

    def settings(self) -> dict:
        stamp = time.time()
        with self.lock:
            active = [{"instance_id": i, "os_user": u, "expires_in": round(t - stamp, 1)}
                      for (i, u), held in self.keys.items() for _k, t in held if t > stamp]
        return {"key_seconds": self.key_seconds, "pushes": self.pushes, "active": active}

    def update(self, values: dict) -> dict:
        for name, value in values.items():
            if name != "key_seconds":
                raise ValueError(f"unknown instance-connect setting {name!r}; known: key_seconds")
            value = float(value)
            if value <= 0:
                raise ValueError(f"key_seconds must be more than 0, not {value}")
            self.key_seconds = value
        return self.settings()
