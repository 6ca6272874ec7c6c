# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The run_as_users role's computations: its inputs checked, the accounts and sudo rules planned, what a node does
not allow, which accounts the role manages (and may remove) on a node, and what is still wrong after the apply
phase. The role's tasks only render what these return. Each filter's documentation is in the .yml file of its name
beside this one."""

from __future__ import annotations

import base64
import binascii
import json
import os
import re

from ansible_collections.bastionless.ssm.plugins.plugin_utils._names import IAM_NAME, LINUX_NAME, LINUX_NAME_RULE

ABSOLUTE_PATH = re.compile(r"^/[^:\s]*$")
VISUDO_PATH = re.compile(r"^/[^\s]*$")
OPTION_KEYS = ("shell", "groups", "comment", "home")
SUDO_ALL = "ALL=(ALL) NOPASSWD: ALL"  # a rule given as true
# The SSM agent's own account: the agent creates it (with its sudo rule) the first time a session runs as it. A
# principal may be mapped to it (the identity that runs Ansible, say); the role never creates or changes it.
AGENT_USER = "ssm-user"
# What the command module answers for an executable it cannot run: "Error executing command." (ansible-core 2.19)
# or the errno's text (older cores).
_NOT_RUNNABLE = re.compile(r"No such file|Error executing command")


def _name(value) -> bool:
    return isinstance(value, str) and bool(LINUX_NAME.match(value))


def _int(value, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _them(items: list) -> tuple:
    return ("it", "does") if len(items) == 1 else ("them", "do")


def _option_problems(os_user: str, options) -> list:
    found = []
    if not isinstance(options, dict):
        return [f"run_as_users_options: '{os_user}' has {json.dumps(options)}; give a mapping of "
                f"{', '.join(OPTION_KEYS)}."]
    unknown = [key for key in options if key not in OPTION_KEYS]
    if unknown:
        found.append(f"run_as_users_options: '{os_user}' has {', '.join(map(str, unknown))}, which the role does not "
                     f"know; use {', '.join(OPTION_KEYS)}.")
    for key in ("shell", "home"):
        value = options.get(key)
        if value is not None and not (isinstance(value, str) and ABSOLUTE_PATH.match(value)):
            found.append(f"run_as_users_options: '{os_user}' has {key} {json.dumps(value)}, which is not an absolute "
                         "path.")
    comment = options.get("comment")
    if comment is not None and (not isinstance(comment, str) or re.search(r"[:\n]", comment)):
        found.append(f"run_as_users_options: '{os_user}' has a comment with a colon or a line break (or not a "
                     "string), which /etc/passwd cannot hold.")
    groups = options.get("groups")
    if groups is not None and (not isinstance(groups, list) or not all(_name(group) for group in groups)):
        found.append(f"run_as_users_options: '{os_user}' has groups {json.dumps(groups)}; give a list of Linux group "
                     f"names ({LINUX_NAME_RULE}).")
    return found


def _good_rules(rules) -> bool:
    if isinstance(rules, bool) or rules is None:
        return True
    return (isinstance(rules, list) and all(isinstance(rule, str) for rule in rules)
            and all(rule.strip() for rule in rules) and not any(re.search(r"[\n\r]", rule) for rule in rules))


def problems(run_as_map: dict, extra=(), options=None, shell: str = "/bin/bash", groups=(), comment: str = "",
             sudo=None, uid_min=1000, visudo: str = "/usr/sbin/visudo") -> list:
    """Every input problem that needs no node, one sentence each naming the variable and the fix (empty when there
    is none). Types are checked before this by the role's meta/argument_specs.yml."""
    run_as_map, options, sudo = run_as_map or {}, options or {}, sudo or {}
    names = set(run_as_map.values()) | set(extra or ())
    found = []
    for principal, os_user in run_as_map.items():
        if not IAM_NAME.match(str(principal)):
            found.append(f"run_as_users_map: '{principal}' is not an IAM user or role name (1-64 letters, digits and "
                         "+=,.@_-); give the name, not the ARN.")
        if not _name(os_user):
            found.append(f"run_as_users_map: '{principal}' maps to {json.dumps(os_user)}, which is not a Linux user "
                         f"name; use {LINUX_NAME_RULE}.")
    for os_user in extra or ():
        if not _name(os_user):
            found.append(f"run_as_users_extra: {json.dumps(os_user)} is not a Linux user name; use {LINUX_NAME_RULE}.")
    if not ABSOLUTE_PATH.match(str(shell)):
        found.append(f"run_as_users_shell: '{shell}' is not an absolute path; give the shell's path, e.g. /bin/bash.")
    for group in groups or ():
        if not _name(group):
            found.append(f"run_as_users_groups: {json.dumps(group)} is not a Linux group name; use {LINUX_NAME_RULE}.")
    if re.search(r"[:\n]", str(comment)):
        found.append("run_as_users_comment: has a colon or a line break, which /etc/passwd cannot hold; remove it.")
    for os_user, user_options in options.items():
        if os_user not in names:
            found.append(f"run_as_users_options: '{os_user}' is not one of the users (run_as_users_map's values and "
                         "run_as_users_extra); add it there or remove its options.")
        else:
            found += _option_problems(os_user, user_options)
    for os_user, rules in sudo.items():
        if os_user not in names:
            found.append(f"run_as_users_sudo: '{os_user}' is not one of the users (run_as_users_map's values and "
                         "run_as_users_extra); add it there or remove its rules.")
        elif not _good_rules(rules):
            found.append(f"run_as_users_sudo: '{os_user}' has {json.dumps(rules)}; give true ({SUDO_ALL}), false, or "
                         "a list of rules, each what follows the user name on a sudoers line, e.g. "
                         '"ALL=(root) NOPASSWD: /usr/bin/systemctl restart nginx".')
    if _int(uid_min) < 1:
        found.append(f"run_as_users_uid_min: {uid_min} would let the role touch root; give the first UID of ordinary "
                     "users (UID_MIN in /etc/login.defs, 1000 on most distributions).")
    if not VISUDO_PATH.match(str(visudo)):
        found.append(f"run_as_users_visudo: '{visudo}' is not an absolute path; give the path of visudo on the nodes.")
    return found


def plan(run_as_map: dict, extra=(), options=None, shell: str = "/bin/bash", groups=(),
         comment: str = "Session Manager Run As user", sudo=None) -> dict:
    """The accounts and sudo rules to make, from inputs that run_as_users_problems has passed: ``users`` (name,
    iam: the IAM principals mapped to it, shell, groups, comment, home: "" for useradd's default), sorted by name,
    and ``sudo``: user name to the sudoers lines of that user. A user's options fall back to the role-wide ones.
    ``ssm-user``, the agent's own account, is no account of the role's even when a principal is mapped to it."""
    run_as_map, options, sudo = run_as_map or {}, options or {}, sudo or {}
    users = []
    for name in sorted((set(run_as_map.values()) | set(extra or ())) - {AGENT_USER}):
        own = options.get(name) or {}
        users.append({
            "name": name,
            "iam": sorted(principal for principal, os_user in run_as_map.items() if os_user == name),
            "shell": own.get("shell") or shell,
            "groups": sorted(set(own["groups"] if own.get("groups") is not None else groups or ())),
            "comment": own.get("comment") or comment,
            "home": own.get("home") or "",
        })
    rules = {}
    for name, given in sudo.items():
        bodies = [SUDO_ALL] if given is True else [] if given is False or given is None else list(given)
        if bodies:
            rules[name] = [f"{name} {body.strip()}" for body in bodies]
    return {"users": users, "sudo": rules}


def _uid(passwd: dict, name: str) -> int:
    return _int(passwd[name][1], -1)


def node_problems(compiled: dict, passwd=None, group_db=None, visudo_checks=None, uid_min=1000,
                  visudo: str = "/usr/sbin/visudo", host: str = "the node") -> list:
    """What this node does not allow, one sentence each naming the variable and the fix: accounts that are system
    accounts here, groups that do not exist here, a visudo that is missing, rules that visudo rejects.

    ``passwd`` and ``group_db`` are getent's facts; ``visudo_checks`` the results of running visudo -c on each
    user's rules: one ansible.builtin.command result per item of the plan's ``sudo``, with that item as ``item``."""
    passwd, group_db = passwd or {}, group_db or {}
    found = []
    for user in compiled["users"]:
        name = user["name"]
        if name in passwd and _uid(passwd, name) < _int(uid_min):
            variable = "run_as_users_map" if user["iam"] else "run_as_users_extra"
            found.append(f"{variable}: '{name}' is a system account on {host} (uid {passwd[name][1]}, below "
                         f"run_as_users_uid_min {uid_min}); the role does not change system accounts: use an ordinary "
                         "user instead.")
        missing = [group for group in user["groups"] if group not in group_db]
        if missing:
            it, does = _them(missing)
            found.append(f"run_as_users_groups / run_as_users_options: '{name}' should join {', '.join(missing)}, "
                         f"which {does} not exist on {host}; create {it} first (ansible.builtin.group) or drop {it} "
                         "from the list.")
    checks = [check for check in visudo_checks or () if "skipped" not in check]
    if any(check.get("rc") is None or _NOT_RUNNABLE.search(str(check.get("msg", ""))) for check in checks):
        found.append(f"run_as_users_visudo: {visudo} is not on {host}, and sudo rules need it; install sudo on the "
                     "node (it brings visudo) or set run_as_users_visudo to its path.")
        return found
    for check in checks:
        if check["rc"] != 0:
            said = " ".join(f"{check.get('stderr', '')} {check.get('stdout', '')}".split())
            found.append(f"run_as_users_sudo: visudo rejects the rules of '{check['item']['key']}' ({said}); fix them: "
                         f'each rule is what follows the user name on a sudoers line, e.g. "{SUDO_ALL}".')
    return found


def _saved_users(state_content) -> list:
    """The users the role's state file lists (slurp's base64 content; None when there is no file). A file that
    cannot be read lists nobody: then nothing is removed."""
    if state_content is None:
        return []
    try:
        saved = json.loads(base64.b64decode(state_content))
    except (ValueError, TypeError, binascii.Error):
        return []
    users = saved.get("users") if isinstance(saved, dict) else None
    return sorted({name for name in users if isinstance(name, str)}) if isinstance(users, list) else []


def node_plan(compiled: dict, passwd=None, state_content=None, uid_min=1000, remove_absent: bool = False) -> dict:
    """This node's share of the plan: ``previous`` (the users the state file lists), ``removable`` (those no longer
    wanted that still exist as ordinary accounts) and ``state`` (what the state file should hold after this run).

    The state file lists only accounts the role created: an account that existed before is taken over but never
    removed. System accounts (uid below ``uid_min``) are never removable, whatever the file says."""
    passwd = passwd or {}
    wanted = [user["name"] for user in compiled["users"]]
    previous = _saved_users(state_content)
    existing = [name for name in previous if name in passwd and _uid(passwd, name) >= _int(uid_min)]
    removable = [name for name in existing if name not in wanted]
    kept = [name for name in existing if not (remove_absent and name in removable)]
    made_now = [name for name in wanted if name not in passwd]
    return {"previous": previous, "removable": removable, "state": sorted(set(kept + made_now))}


def verify_problems(compiled: dict, passwd=None, rule_files=(), prefix: str = "bastionless-run-as-",
                    node: dict | None = None, remove_absent: bool = False) -> list:
    """What is still not as asked after the apply phase, one clause each: accounts missing or with another shell or
    home, rule files for other users than the plan's, accounts still there that should have gone."""
    passwd = passwd or {}
    found = []
    for user in compiled["users"]:
        name = user["name"]
        if name not in passwd:
            found.append(f"the account {name} is missing;")
        elif passwd[name][5] != user["shell"] or (user["home"] and passwd[name][4] != user["home"]):
            found.append(f"the account {name} has shell {passwd[name][5]} and home {passwd[name][4]};")
    files = sorted(os.path.basename(path)[len(prefix):] if os.path.basename(path).startswith(prefix)
                   else os.path.basename(path) for path in rule_files or ())
    wanted = sorted(compiled["sudo"])
    if files != wanted:
        found.append(f"the role's sudo rule files are for {', '.join(files) or 'nobody'}, not for "
                     f"{', '.join(wanted) or 'nobody'};")
    if remove_absent:
        found += [f"the account {name} is still there;" for name in (node or {}).get("removable", ()) if name in passwd]
    return found


class FilterModule:
    """The run_as_users filters."""

    def filters(self):
        return {
            "run_as_users_problems": problems,
            "run_as_users_plan": plan,
            "run_as_users_node_problems": node_problems,
            "run_as_users_node_plan": node_plan,
            "run_as_users_verify_problems": verify_problems,
        }
