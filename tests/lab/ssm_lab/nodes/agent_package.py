"""What a lab node has of the SSM Agent on disk: the program, its systemd unit, its configuration template,
and the Debian package that carries them (built here, in pure Python, as ``dpkg-deb`` would).

The agent's process is the lab's (the agent host runs it outside the node); what is on the node's disk says
which version is installed, whether the unit is enabled at boot, and lets ``apt``, ``dpkg`` and
``systemctl`` in the node act on it as they would on EC2. The control plane serves the package at the path
AWS publishes it (``amazon-ssm-<region>/latest/debian_amd64/amazon-ssm-agent.deb``).
"""

from __future__ import annotations

import gzip
import io
import os
import re
import tarfile
import time

from .. import common

AGENT_LATEST = "3.3.1957.0"  # what the lab's distribution bucket serves as latest
AGENT_BINARY = "/usr/bin/amazon-ssm-agent"
AGENT_UNIT = "amazon-ssm-agent.service"
CONFIG_DIR = "/etc/amazon/ssm"
DEB_PATH = "latest/debian_amd64/amazon-ssm-agent.deb"
VERSION_PATH = "latest/VERSION"

UNIT = """[Unit]
Description=amazon-ssm-agent
After=network-online.target

[Service]
Type=simple
WorkingDirectory=/usr/bin/
ExecStart=/usr/bin/amazon-ssm-agent
KillMode=process
Restart=on-failure
RestartForceExitStatus=SIGPIPE
RestartSec=15min

[Install]
WantedBy=multi-user.target
"""

CONFIG_TEMPLATE = """{
    "Profile": {"ShareCreds": true, "ShareProfile": "", "ForceUpdateCreds": false, "KeyAutoRotateDays": 0},
    "Mds": {"CommandWorkersLimit": 5, "StopTimeoutMillis": 20000},
    "Agent": {"Region": "", "OrchestrationRootDir": "", "ContainerMode": false}
}
"""


def agent_program(version: str) -> str:
    return f"""#!/bin/sh
# ssm-lab: the SSM Agent's program as installed on a lab node. The agent itself runs in the lab's agent host;
# manage it with systemctl (amazon-ssm-agent.service) as on EC2.
VERSION={version}
case "$1" in
  --version|-version|version) echo "SSM Agent version: $VERSION" ;;
  *) echo "amazon-ssm-agent $VERSION: in the ssm-lab the agent runs outside the node; use systemctl" >&2; exit 1 ;;
esac
"""


def installed_version(program_text: str) -> str | None:
    found = re.search(r"^VERSION=(\S+)$", program_text, re.M)
    return found.group(1) if found else None


def preinstalled_files(unit_dir: str = "/usr/lib/systemd/system", version: str = common.AGENT_VERSION) -> dict:
    """The agent as an AMI ships it (Amazon Linux 2023): path -> (content or link target, mode)."""
    return {
        AGENT_BINARY: (agent_program(version), 0o755),
        f"{unit_dir}/{AGENT_UNIT}": (UNIT, 0o644),
        f"{CONFIG_DIR}/amazon-ssm-agent.json.template": (CONFIG_TEMPLATE, 0o644),
        f"/etc/systemd/system/multi-user.target.wants/{AGENT_UNIT}": ("->" + f"{unit_dir}/{AGENT_UNIT}", 0o777),
    }


# --- a .deb, built without dpkg-deb ------------------------------------------------------------------------
_POSTINST = """#!/bin/sh
set -e
if [ "$1" = configure ]; then
  systemctl daemon-reload || true
  systemctl enable amazon-ssm-agent || true
  systemctl restart amazon-ssm-agent || true
fi
"""
_PRERM = """#!/bin/sh
set -e
if [ "$1" = remove ]; then
  systemctl stop amazon-ssm-agent || true
fi
"""


def _tar(members: dict[str, tuple[str, int]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        folders = sorted({os.path.dirname(p) for p in members} - {"", "."})
        made = set()
        for folder in folders:
            parts = folder.split("/")
            for depth in range(1, len(parts) + 1):
                path = "/".join(parts[:depth])
                if path in made:
                    continue
                made.add(path)
                info = tarfile.TarInfo("./" + path)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
                tar.addfile(info)
        for path, (content, mode) in sorted(members.items()):
            data = content.encode()
            info = tarfile.TarInfo("./" + path)
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue(), mtime=0)


def _ar(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    out.write(b"!<arch>\n")
    for name, data in members:
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
        out.write(header + data + (b"\n" if len(data) % 2 else b""))
    return out.getvalue()


def deb(version: str = AGENT_LATEST) -> bytes:
    """amazon-ssm-agent_<version>-1_amd64.deb: the program, the unit and the configuration template."""
    data = {
        AGENT_BINARY.lstrip("/"): (agent_program(version), 0o755),
        f"lib/systemd/system/{AGENT_UNIT}": (UNIT, 0o644),
        f"{CONFIG_DIR.lstrip('/')}/amazon-ssm-agent.json.template": (CONFIG_TEMPLATE, 0o644),
    }
    control = (f"Package: amazon-ssm-agent\nVersion: {version}-1\nArchitecture: amd64\n"
               "Maintainer: ssm-lab <lab@example.invalid>\nSection: admin\nPriority: optional\n"
               "Description: Amazon SSM Agent (ssm-lab build)\n The agent's files as a lab node sees them.\n")
    control_tar = _tar({"control": (control, 0o644), "postinst": (_POSTINST, 0o755), "prerm": (_PRERM, 0o755)})
    return _ar([("debian-binary", b"2.0\n"), ("control.tar.gz", control_tar), ("data.tar.gz", _tar(data))])
