"""What a node that answers AWS-StartSSHSession has on its disk, as an AMI with sshd and EC2 Instance Connect has.

- ``/etc/ssh/sshd_config``: key authentication only, no root login, and EC2 Instance Connect's
  ``AuthorizedKeysCommand`` (keys pushed with SendSSHPublicKey, for 60 seconds). sshd runs only in inetd mode
  (``sshd -i``), started by the agent for each session: no sshd ever listens on a port.
- A host key of the node's own (the machine's would be the same on every node).
- ``/opt/aws/bin/eic_run_authorized_keys``: asks the control plane for the keys pushed for a user, as the real
  script reads them from the instance metadata.
- The platform's default user (``ec2-user``, ``ubuntu``, ``admin``) with password-less sudo, no password and
  no authorized key.
- ``/run/sshd``, sshd's privilege separation directory.
"""

from __future__ import annotations

import os
import subprocess

from .sandbox import SAFE_PATH, Sandbox, SandboxError

MARKER = ".lab-sshd-prepared"
KEYS_COMMAND = "/opt/aws/bin/eic_run_authorized_keys"
DEFAULT_USERS = {"al2023": "ec2-user", "ubuntu2404": "ubuntu", "debian12": "admin"}
SUDOERS = "/etc/sudoers.d/90-cloud-init-users"

SSHD_CONFIG = f"""\
# sshd of this lab node (ssm-lab). The SSM Agent starts it in inetd mode (sshd -i) for each
# AWS-StartSSHSession session: it never listens on a port, and port 22 stays closed.
Include /etc/ssh/sshd_config.d/*.conf
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
UsePAM no
AuthorizedKeysFile .ssh/authorized_keys
# EC2 Instance Connect: keys pushed with SendSSHPublicKey, valid 60 seconds, for that OS user only.
AuthorizedKeysCommand {KEYS_COMMAND} %u %f
AuthorizedKeysCommandUser nobody
X11Forwarding no
PrintMotd no
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
"""

KEYS_SCRIPT = """\
#!/usr/bin/python3
# EC2 Instance Connect's eic_run_authorized_keys, as the lab plays it: print the public keys pushed with
# SendSSHPublicKey for this node and user that have not expired (AWS serves them from the instance metadata).
import json
import sys
import urllib.parse
import urllib.request

if len(sys.argv) < 2:
    sys.exit(0)
with open("/etc/ssm-lab/node.json", encoding="utf-8") as handle:
    node = json.load(handle)
url = "%s/_lab/nodes/%s/instance-connect-keys/%s" % (node["endpoint"], node["id"], urllib.parse.quote(sys.argv[1]))
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(url, timeout=5) as response:
        keys = json.load(response).get("keys") or []
except (OSError, ValueError):
    sys.exit(0)
for key in keys:
    print(key)
"""


def default_user(platform: str) -> str:
    return DEFAULT_USERS.get(platform, "ec2-user")


def prepare(sandbox: Sandbox) -> None:
    """Make the node ready for ``sshd -i``; the files are written once, /run/sshd at every call."""
    sandbox.ensure()
    run_dir = sandbox.path("/run/sshd")
    os.makedirs(run_dir, mode=0o755, exist_ok=True)
    os.chmod(run_dir, 0o755)
    marker = os.path.join(sandbox.upper, MARKER)
    if os.path.exists(marker):
        return
    if not os.path.exists("/usr/sbin/sshd"):
        raise SandboxError("/usr/sbin/sshd is not installed on this machine (apt-get install openssh-server)")
    _write(sandbox.path("/etc/ssh/sshd_config"), SSHD_CONFIG, 0o644)
    _write(sandbox.path(KEYS_COMMAND), KEYS_SCRIPT, 0o755)
    for directory in ("/opt", "/opt/aws", "/opt/aws/bin"):  # sshd wants root-owned, not group/world-writable
        os.chmod(sandbox.path(directory), 0o755)
    host_key = sandbox.path("/etc/ssh/ssh_host_ed25519_key")
    for path in (host_key, host_key + ".pub"):
        if os.path.lexists(path):
            os.unlink(path)
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{sandbox.hostname}", "-f", host_key])
    user = default_user(sandbox.platform)
    if sandbox.user(user) is None:
        # '*': no password, and not locked ('!'), which sshd without PAM would refuse even for a key.
        _run(["chroot", sandbox.root, "/usr/bin/env", "-i", f"PATH={SAFE_PATH}", "useradd", "-m", "-s", "/bin/bash",
              "-p", "*", user])
    _write(sandbox.path(SUDOERS), f"# Created by cloud-init\n{user} ALL=(ALL) NOPASSWD:ALL\n", 0o440)
    open(marker, "w").close()


def _write(path: str, content: str, mode: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.lexists(path):
        os.unlink(path)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(content)
    os.chmod(path, mode)


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SandboxError(f"{' '.join(argv[:6])}: {result.stderr.strip()}")
