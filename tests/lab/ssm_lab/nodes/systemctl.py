#!/usr/bin/python3
"""systemctl for a lab node: unit files and enablement are the node's own files, as systemd keeps them;
the one unit with a process behind it is amazon-ssm-agent.service, whose process is the lab's agent for
this node (run by the agent host, outside the node), so starting, stopping and restarting it are requests
to the lab's control plane.

Lab nodes boot no init system. This script is installed as /usr/bin/systemctl in every node (overlay upper
layer) so that ``ansible.builtin.systemd_service``, package scripts and people at a shell see a service
manager that behaves like systemd for what the lab runs. Other units can be enabled and disabled (files
only) but not started: the lab runs no process for them, and says so instead of pretending.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

NODE_FILE = "/etc/ssm-lab/node.json"
AGENT_UNIT = "amazon-ssm-agent.service"
UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")
WANTS = "/etc/systemd/system/{target}.wants"
IGNORED_FLAGS = {"--no-block", "--system", "-q", "--quiet", "--no-pager", "--no-legend", "--full", "-l",
                 "--no-ask-password", "--plain", "--force", "-f"}


def _err(message: str, code: int = 1) -> int:
    sys.stderr.write(message + "\n")
    return code


def _node() -> dict:
    try:
        with open(NODE_FILE, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def _lab(action: str, method: str = "GET") -> dict | None:
    """Ask the control plane about this node's agent (never through the node's egress proxy)."""
    node = _node()
    if not node:
        return None
    url = f"{node['endpoint']}/_lab/nodes/{node['id']}" + (f"/{action}" if action else "")
    request = urllib.request.Request(url, data=b"{}" if method == "POST" else None, method=method,
                                     headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return json.load(response)
    except (OSError, urllib.error.URLError, ValueError):
        return None


def unit_name(name: str) -> str:
    return name if "." in name else name + ".service"


def unit_path(unit: str) -> str | None:
    for folder in UNIT_DIRS:
        path = os.path.join(folder, unit)
        if os.path.exists(path):
            return path
    return None


def wanted_by(path: str) -> list[str]:
    targets = []
    section = ""
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            line = line.strip()
            if line.startswith("["):
                section = line
            elif section == "[Install]" and line.startswith("WantedBy="):
                targets += line.split("=", 1)[1].split()
    return targets


def description(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.strip().startswith("Description="):
                return line.split("=", 1)[1].strip()
    return ""


def links(unit: str) -> list[str]:
    found = []
    for folder in ("/etc/systemd/system",):
        if not os.path.isdir(folder):
            continue
        for entry in os.listdir(folder):
            if entry.endswith(".wants"):
                link = os.path.join(folder, entry, unit)
                if os.path.lexists(link):
                    found.append(link)
    return found


def file_state(unit: str) -> str:
    path = unit_path(unit)
    if path is None:
        return "not-found"
    if os.path.realpath(path) == "/dev/null":
        return "masked"
    if links(unit):
        return "enabled"
    return "disabled" if wanted_by(path) else "static"


def active_state(unit: str) -> str:
    if unit != AGENT_UNIT or unit_path(unit) is None:
        return "inactive"
    status = _lab("")
    if status is None:
        return "unknown"
    return "active" if status.get("agent_wanted") else "inactive"


def show(unit: str) -> str:
    path = unit_path(unit)
    state = active_state(unit)
    values = {
        "Id": unit, "Names": unit, "Description": description(path) if path else unit,
        "LoadState": "loaded" if path else "not-found", "ActiveState": state,
        "SubState": "running" if state == "active" else "dead", "UnitFileState": file_state(unit) if path else "",
        "FragmentPath": path or "", "MainPID": "1" if state == "active" else "0",
        "CanStart": "yes" if unit == AGENT_UNIT else "no", "CanStop": "yes" if unit == AGENT_UNIT else "no",
    }
    return "".join(f"{k}={v}\n" for k, v in values.items())


def enable(unit: str) -> int:
    path = unit_path(unit)
    if path is None:
        return _err(f"Failed to enable unit: Unit file {unit} does not exist.")
    for target in wanted_by(path):
        folder = WANTS.format(target=target)
        os.makedirs(folder, exist_ok=True)
        link = os.path.join(folder, unit)
        if not os.path.lexists(link):
            os.symlink(path, link)
            sys.stderr.write(f"Created symlink {link} \u2192 {path}.\n")
    return 0


def disable(unit: str) -> int:
    if unit_path(unit) is None:
        return _err(f"Failed to disable unit: Unit file {unit} does not exist.")
    for link in links(unit):
        os.unlink(link)
        sys.stderr.write(f"Removed \"{link}\".\n")
    return 0


def control(verb: str, unit: str) -> int:
    if unit_path(unit) is None:
        return _err(f"Failed to {verb} {unit}: Unit {unit} not found.", 5)
    if unit != AGENT_UNIT:
        return _err(f"Failed to {verb} {unit}: the ssm-lab node runs no process for {unit} "
                    f"(only {AGENT_UNIT} has one in the lab).")
    if os.geteuid() != 0:
        return _err(f"Failed to {verb} {unit}: Access denied", 4)
    action = {"start": "agent-start", "stop": "agent-stop"}.get(verb, "agent-restart")
    if verb in ("try-restart", "condrestart") and active_state(unit) != "active":
        return 0
    if _lab(action, "POST") is None:
        return _err(f"Failed to {verb} {unit}: the lab's control plane did not answer.")
    return 0


def reboot(command: str) -> int:
    """The node reboots as an EC2 instance does: the command returns, the machine goes down a moment later (its
    sessions and commands end), and it boots with a new boot id; its init starts the agent if the unit is enabled."""
    if os.geteuid() != 0:
        return _err(f"Failed to {command}: Access denied. (must be root)", 4)
    if _lab("reboot", "POST") is None:
        return _err(f"Failed to {command}: the lab's control plane did not answer.")
    return 0


def shutdown(name: str, args: list[str]) -> int:
    """shutdown(8) and reboot(8), which are links to systemctl on the machines the nodes copy: a reboot now (or at
    a time, which the lab takes as now) is modelled; halting and powering off are not (stop the instance instead)."""
    flags = [a for a in args if a.startswith("-")]
    if "-c" in flags:
        return 0  # nothing is scheduled: a reboot happens at once
    if name == "reboot" or "-r" in flags or "--reboot" in flags:
        return reboot(name)
    return _err(f"ssm-lab node: {name} {' '.join(args)} is not modelled in the lab; reboot with shutdown -r, "
                "or stop the instance through EC2")


def main(argv: list[str]) -> int:
    name = os.path.basename(sys.argv[0]) if sys.argv else "systemctl"
    if name in ("shutdown", "reboot"):
        return shutdown(name, argv)
    args = [a for a in argv if a not in IGNORED_FLAGS]
    now = "--now" in args
    args = [a for a in args if a != "--now"]
    if not args:
        return _err("ssm-lab node: 'systemctl' needs a verb (show, is-active, is-enabled, start, stop, ...)")
    verb, units = args[0], [unit_name(a.strip("'\"")) for a in args[1:] if not a.startswith("-")]
    if verb in ("daemon-reload", "daemon-reexec", "reset-failed"):
        return 0
    if verb == "reboot":
        return reboot("systemctl reboot")
    if verb == "is-system-running":
        print("running")
        return 0
    if verb == "show":
        sys.stdout.write("\n".join(show(u) for u in units))
        return 0
    if verb == "is-active":
        states = [active_state(u) for u in units]
        print("\n".join(states))
        return 0 if states and all(s == "active" for s in states) else 3
    if verb == "is-enabled":
        states = [file_state(u) for u in units]
        for unit, state in zip(units, states):
            if state == "not-found":
                return _err(f"Failed to get unit file state for {unit}: No such file or directory")
        print("\n".join(states))
        return 0 if all(s in ("enabled", "static") for s in states) else 1
    if verb == "list-unit-files":
        pattern = (units[0] if units else "*").rstrip("*").replace(".service", "")
        rows = [(u, file_state(u)) for u in _all_units() if u.startswith(pattern)]
        print("UNIT FILE STATE")
        for unit, state in rows:
            print(f"{unit} {state}")
        print(f"\n{len(rows)} unit files listed.")
        return 0 if rows else 1
    if verb in ("enable", "disable"):
        code = 0
        for unit in units:
            code = code or (enable(unit) if verb == "enable" else disable(unit))
            if now and not code:
                code = control("start" if verb == "enable" else "stop", unit)
        return code
    if verb in ("start", "stop", "restart", "reload", "try-restart", "reload-or-restart", "condrestart"):
        for unit in units:
            code = control(verb, unit)
            if code:
                return code
        return 0
    return _err(f"ssm-lab node: systemctl {verb} is not modelled in the lab")


def _all_units() -> list[str]:
    found = set()
    for folder in UNIT_DIRS:
        if os.path.isdir(folder):
            found.update(e for e in os.listdir(folder) if e.endswith((".service", ".timer", ".socket")))
    return sorted(found)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
