# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The operator_access role's computations: its inputs checked, operator groups compiled into IAM managed
policies and attachments, and the IAM users and roles to change. The role's templates only render what these
return. Each filter's documentation is in the .yml file of its name beside this one."""

from __future__ import annotations

import json
import re

from ansible_collections.bastionless.ssm.plugins.plugin_utils._names import IAM_NAME, LINUX_NAME, LINUX_NAME_RULE

# The session documents an operator group may be given, by kind. SSM-SessionManagerRunShell is the account's own
# Session document (the preferences, one per region); the others are owned by AWS, whose documents have no
# account in their ARN (arn:aws:ssm:REGION::document/AWS-...).
SESSION_DOCUMENTS = {
    "shell": ("SSM-SessionManagerRunShell", False),
    "ssh": ("AWS-StartSSHSession", True),
    "port_forwarding": ("AWS-StartPortForwardingSession", True),
    "port_forwarding_remote_host": ("AWS-StartPortForwardingSessionToRemoteHost", True),
}

# The tag Session Manager reads on the calling IAM user or role to choose the OS account of a shell session.
RUN_AS_TAG = "SSMSessionRunAs"

# Managed policy names (1-128 characters), and what a prefix of one may hold.
POLICY_NAME = re.compile(r"^[\w+=,.@-]{1,128}$")
POLICY_PREFIX = re.compile(r"^[\w+=,.@-]*$")

GROUP_DEFAULTS = {"state": "present", "documents": [], "resource_tags": {}, "iam_groups": [], "iam_users": [],
                  "iam_roles": []}
PRINCIPAL_KINDS = ("iam_groups", "iam_users", "iam_roles")

# Own sessions, exactly: Session Manager tags every session it starts with aws:ssmmessages:session-id, the
# aws:userid of the principal that started it (an IAM user's unique id, AIDA...; a role session's
# AROA...:SESSION-NAME), and AWS's sample policies for users and federated users alike match it against the
# caller's ${aws:userid}. The session id itself only starts with a name (an IAM user's name, a role session's
# name), so session/${aws:username}-* would also match the sessions of alice-admin for alice, and matches nothing
# for a role.
_OWN_SESSION = {"StringEquals": {"ssm:resourceTag/aws:ssmmessages:session-id": "${aws:userid}"}}

# The data channel of a session (ssmmessages:OpenDataChannel on its session ARN), opened with the token that only
# StartSession and ResumeSession hand out, so only to the session's starter or to whoever may resume it. AWS's
# sample grants session/${aws:userid}-*, which matches no session id (those start with a name, never with a
# unique id); the statement here names every session and asks for the same owner tag as above. IfExists: AWS's
# service reference lists no condition key for this action, so where the tag is not in the request context the
# token alone decides, as it does in the sample; where it is, only the owner's channel opens.
_OWN_DATA_CHANNEL = {"StringEqualsIfExists": {"ssm:resourceTag/aws:ssmmessages:session-id": "${aws:userid}"}}

# On every statement that allows ssm:StartSession, as AWS asks: a session that names no document would otherwise
# get the default shell document on any node the first statement allows.
_DOCUMENT_CHECK = {"BoolIfExists": {"ssm:SessionDocumentAccessCheck": "true"}}


def groups(operator_groups: list) -> list:
    """``operator_access_groups`` with every option present. ansible-core checks nested options against
    meta/argument_specs.yml but does not fill in their defaults; null counts as unset."""
    return [{**GROUP_DEFAULTS, **{key: value for key, value in group.items() if value is not None}}
            for group in operator_groups or []]


def _unique(items) -> list:
    return list(dict.fromkeys(items))


def _tag_values(value) -> list:
    return [value] if isinstance(value, str) else list(value)


def _bad_tag(key, value) -> bool:
    if not key or isinstance(value, dict) or isinstance(value, (bool, int, float)) or value is None:
        return True
    values = _tag_values(value)
    return not values or any(not isinstance(item, str) or not item for item in values)


def _os_user_example(os_user) -> str:
    """A Linux user name close to what was given: for the error's example."""
    name = re.sub(r"[^a-z0-9_-]", "", str(os_user).lower())
    name = re.sub(r"^([0-9-])", r"_\1", name)
    return name[:32] or "ops"


def problems(operator_groups: list, prefix: str = "bastionless-ssm-", region: str = "", run_as=None) -> list:
    """Every input problem that needs no AWS call, one sentence each naming the variable and the fix (empty when
    there is none). Types and document kinds are checked before this by the role's meta/argument_specs.yml."""
    found = []
    if not region:
        found.append("operator_access_region: no region given and none in AWS_REGION, AWS_DEFAULT_REGION or the AWS "
                     "profile configuration; set operator_access_region (or bastionless_region in the inventory).")
    if not POLICY_PREFIX.match(prefix):
        found.append(f"operator_access_policy_prefix: '{prefix}' has characters IAM does not allow in a policy name; "
                     "use letters, digits and +=,.@_- only.")
    full = groups(operator_groups)
    names = [group["name"] for group in full]
    for name in _unique(names):
        if names.count(name) > 1:
            found.append(f"operator_access_groups: '{name}' is listed {names.count(name)} times; give each group a "
                         "unique name (each is one policy).")
    kinds = ", ".join(sorted(SESSION_DOCUMENTS))
    for group in full:
        policy = f"{prefix}{group['name']}"
        if not POLICY_NAME.match(policy):
            found.append(f"operator_access_groups: '{group['name']}' makes the policy name '{policy}', which IAM does "
                         "not accept (1-128 letters, digits and +=,.@_-); rename the group or shorten "
                         "operator_access_policy_prefix.")
        if group["state"] != "absent" and not group["documents"]:
            found.append(f"operator_access_groups: '{group['name']}' has no documents; list at least one of {kinds} "
                         "(or set its state to absent to remove its policy).")
        for key, value in group["resource_tags"].items():
            if _bad_tag(key, value):
                found.append(f"operator_access_groups: '{group['name']}' has resource_tags.{key} = "
                             f"{json.dumps(value)}; a tag key must be a non-empty string and its value a non-empty "
                             'string or list of them (quote numbers and yes/no, e.g. "1").')
        for kind in PRINCIPAL_KINDS:
            bad = [name for name in group[kind] if not IAM_NAME.match(str(name))]
            if bad:
                which = "is not a valid IAM name" if len(bad) == 1 else "are not valid IAM names"
                found.append(f"operator_access_groups: '{group['name']}' has {kind} "
                             f"{', '.join(json.dumps(name) for name in bad)}, which {which} (1-64 letters, digits "
                             "and +=,.@_-); give the name, not the ARN.")
    for principal, os_user in (run_as or {}).items():
        if not IAM_NAME.match(str(principal)):
            found.append(f"operator_access_run_as: '{principal}' is not a valid IAM user or role name (1-64 letters, "
                         "digits and +=,.@_-); give the name, not the ARN.")
        if not isinstance(os_user, str) or not LINUX_NAME.match(os_user):
            found.append(f"operator_access_run_as: '{principal}' maps to {json.dumps(os_user)}, which is not a Linux "
                         f"user name; use {LINUX_NAME_RULE} (for example '{_os_user_example(os_user)}').")
    return found


def _node_condition(resource_tags: dict) -> dict:
    """The condition on the nodes a group may reach: its tags, exact (StringEquals) or with wildcards
    (StringLike, when any value of a key has * or ?)."""
    equals, like = {}, {}
    for key, value in resource_tags.items():
        values = _tag_values(value)
        (like if any(re.search(r"[*?]", item) for item in values) else equals)[f"ssm:resourceTag/{key}"] = values
    condition = dict(_DOCUMENT_CHECK)
    if equals:
        condition["StringEquals"] = equals
    if like:
        condition["StringLike"] = like
    return condition


def _ssh_key_condition(resource_tags: dict) -> dict:
    """The condition on pushing an SSH key with EC2 Instance Connect: to the nodes the group may reach (their tags as
    aws:ResourceTag/KEY, the condition keys SendSSHPublicKey supports), for the OS user the caller's Run As tag
    names (ec2:osuser against ${aws:PrincipalTag/SSMSessionRunAs}): a caller without that tag may push none."""
    equals, like = {"ec2:osuser": "${aws:PrincipalTag/%s}" % RUN_AS_TAG}, {}
    for key, value in resource_tags.items():
        values = _tag_values(value)
        (like if any(re.search(r"[*?]", item) for item in values) else equals)[f"aws:ResourceTag/{key}"] = values
    return {"StringEquals": equals, **({"StringLike": like} if like else {})}


def policy_document(group: dict, partition: str, account: str, region: str) -> dict:
    """The managed policy of one operator group, after AWS's sample end user policies for Session Manager
    (docs/operator-access.md explains each statement). A group given the ssh document may also push an SSH key
    with EC2 Instance Connect (SendSSHPublicKey) to the same nodes, as its Run As user only."""
    documents = []
    for kind in _unique(group["documents"]):
        name, aws_owned = SESSION_DOCUMENTS[kind]
        documents.append(f"arn:{partition}:ssm:{region}:{'' if aws_owned else account}:document/{name}")
    ssh_keys = []
    if "ssh" in group["documents"]:
        ssh_keys.append({"Sid": "SendSSHPublicKeyAsRunAsUser", "Effect": "Allow",
                         "Action": ["ec2-instance-connect:SendSSHPublicKey"],
                         "Resource": [f"arn:{partition}:ec2:{region}:{account}:instance/*"],
                         "Condition": _ssh_key_condition(group["resource_tags"])})
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "StartSessionOnNodes", "Effect": "Allow", "Action": ["ssm:StartSession"],
             "Resource": [f"arn:{partition}:ec2:{region}:{account}:instance/*",
                          f"arn:{partition}:ssm:{region}:{account}:managed-instance/*"],
             "Condition": _node_condition(group["resource_tags"])},
            {"Sid": "StartSessionWithDocuments", "Effect": "Allow", "Action": ["ssm:StartSession"],
             "Resource": documents, "Condition": dict(_DOCUMENT_CHECK)},
            {"Sid": "SeeNodesAndSessions", "Effect": "Allow",
             "Action": ["ec2:DescribeInstances", "ssm:DescribeInstanceInformation", "ssm:DescribeInstanceProperties",
                        "ssm:DescribeSessions", "ssm:GetConnectionStatus", "tag:GetResources"],
             "Resource": ["*"]},
            {"Sid": "ResumeAndEndOwnSessions", "Effect": "Allow",
             "Action": ["ssm:ResumeSession", "ssm:TerminateSession"],
             "Resource": [f"arn:{partition}:ssm:*:{account}:session/*"],
             "Condition": dict(_OWN_SESSION)},
            {"Sid": "OpenOwnDataChannels", "Effect": "Allow", "Action": ["ssmmessages:OpenDataChannel"],
             "Resource": [f"arn:{partition}:ssm:*:{account}:session/*"], "Condition": dict(_OWN_DATA_CHANNEL)},
        ] + ssh_keys,
    }


def plan(operator_groups: list, partition: str, account: str, region: str, prefix: str = "bastionless-ssm-") -> dict:
    """The operator groups as managed policies and attachments: ``policies`` (group, name, arn, state, document:
    null for an absent group) and, for each of ``iam_groups``, ``iam_users`` and ``iam_roles``, the policy ARNs
    to attach by principal name."""
    result = {"policies": [], "iam_groups": {}, "iam_users": {}, "iam_roles": {}}
    for group in groups(operator_groups):
        name = f"{prefix}{group['name']}"
        arn = f"arn:{partition}:iam::{account}:policy/{name}"
        if group["state"] == "absent":
            result["policies"].append({"group": group["name"], "name": name, "arn": arn, "state": "absent",
                                       "document": None})
            continue
        result["policies"].append({"group": group["name"], "name": name, "arn": arn, "state": "present",
                                   "document": policy_document(group, partition, account, region)})
        for kind in PRINCIPAL_KINDS:
            for principal in group[kind]:
                result[kind].setdefault(principal, []).append(arn)
    return result


def missing(compiled: dict, run_as, groups_found, users_found, roles_found) -> list:
    """The principals named in the inputs that IAM does not have, as "IAM group NAME", "IAM user NAME", "IAM role
    NAME" and, for a Run As mapping, "IAM user or role NAME"."""
    run_as = run_as or {}
    found = [f"IAM group {name}" for name in compiled["iam_groups"] if name not in groups_found]
    found += [f"IAM user {name}" for name in compiled["iam_users"] if name not in users_found]
    found += [f"IAM role {name}" for name in compiled["iam_roles"] if name not in roles_found]
    found += [f"IAM user or role {name}" for name in run_as if name not in users_found and name not in roles_found]
    return found


def principals(compiled: dict, run_as, users_found, trust: dict, tag: str = RUN_AS_TAG) -> dict:
    """The IAM users and roles to change: ``users`` [{name, managed_policies, tags}] and ``roles`` (the same and
    ``trust``, the role's own trust policy, which amazon.aws.iam_role needs to change a role and so never
    rewrites). ``managed_policies`` is null for a principal that gets no policy of ours (it is only tagged) and
    ``tags`` null for one with no Run As mapping: the IAM modules leave what is null alone. A Run As name that is
    both a user and a role tags both."""
    run_as = run_as or {}

    def entry(name: str, attached: dict) -> dict:
        return {"name": name, "managed_policies": attached.get(name),
                "tags": {tag: run_as[name]} if name in run_as else None}

    users = sorted(set(compiled["iam_users"]) | {name for name in run_as if name in users_found})
    roles = sorted(set(compiled["iam_roles"]) | {name for name in run_as if name in trust})
    return {"users": [entry(name, compiled["iam_users"]) for name in users],
            "roles": [{**entry(name, compiled["iam_roles"]), "trust": trust[name]} for name in roles]}


class FilterModule:
    """The operator_access filters."""

    def filters(self):
        return {
            "operator_access_problems": problems,
            "operator_access_plan": plan,
            "operator_access_missing": missing,
            "operator_access_principals": principals,
        }
