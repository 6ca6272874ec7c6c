"""The command documents the lab runs, their parameters as AWS declares them, and what each runs on a node.

``AWS-RunShellScript`` runs its ``commands``. ``AWS-ApplyAnsiblePlaybooks`` becomes a shell script of the lab's own
that does what AWS's document does on a Linux node: fetch the bundle named by ``SourceInfo`` (``SourceType: S3``)
into the command's directory on the node, unzip it, and run ``PlaybookFile`` with ``ansible-playbook`` against
``localhost`` with ``ExtraVariables``, ``Check`` and ``Verbose``, for at most ``TimeoutSeconds``. The node fetches
the object itself through a URL the lab presigns (standing in for the agent's download with the instance profile's
credentials), so it needs an S3 path as on AWS; the lab first judges that download with the node's role session
(s3:GetObject, and kms:Decrypt through S3 for an SSE-KMS bucket), and a refusal fails the node's run with AWS's
error, as the agent's download step does. The nodes are overlays of the machine's ``/``: the Ansible that runs
the lab (its interpreter's ``bin``) is on the node, and is put on the script's PATH. ``InstallDependencies: True``
installs Ansible from the node's package repositories on AWS; the lab's nodes reach none, so the node refuses it
and says to set it ``False``. ``SourceType: GitHub`` is refused the same way (the nodes do not reach GitHub).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import urllib.parse

# The plugin (step) each document runs, as GetCommandInvocation and the output's S3 keys name it.
PLUGINS = {"AWS-RunShellScript": "aws:runShellScript", "AWS-RunPowerShellScript": "aws:runPowerShellScript",
           "AWS-ApplyAnsiblePlaybooks": "runShellScript"}
ANSIBLE = "AWS-ApplyAnsiblePlaybooks"
# AWS-ApplyAnsiblePlaybooks' parameters and their defaults as AWS's document declares them (AWS fills in those a
# request leaves out). SourceType has none, so it is required, as every document parameter without a default is;
# SourceInfo is a StringMap whose default is {}.
ANSIBLE_DEFAULTS = {
    "SourceInfo": "{}", "InstallDependencies": "True", "PlaybookFile": "hello-world-playbook.yml",
    "ExtraVariables": "SSM=True", "Check": "False", "Verbose": "-v", "TimeoutSeconds": "3600",
}
ANSIBLE_REQUIRED = ("SourceType",)
ANSIBLE_PARAMETERS = ANSIBLE_REQUIRED + tuple(ANSIBLE_DEFAULTS)
ANSIBLE_ALLOWED = {"SourceType": ("GitHub", "S3"), "InstallDependencies": ("True", "False"),
                   "Check": ("True", "False"), "Verbose": ("-v", "-vv", "-vvv", "-vvvv")}
SHELL_PARAMETERS = ("commands", "workingDirectory", "executionTimeout")
TIMEOUT = re.compile(r"^[0-9]{1,6}$")
# s3.amazonaws.com/BUCKET/KEY, s3.REGION.amazonaws.com/BUCKET/KEY, s3-REGION.amazonaws.com/BUCKET/KEY,
# BUCKET.s3[.REGION].amazonaws.com/KEY (amazonaws.com.cn in China)
PATH_STYLE = re.compile(r"^s3([.-][a-z0-9-]+)?\.amazonaws\.com(\.cn)?$")
VIRTUAL_STYLE = re.compile(r"^(?P<bucket>.+)\.s3([.-][a-z0-9-]+)?\.amazonaws\.com(\.cn)?$")


class ParameterError(Exception):
    """A request whose parameters the document does not accept (``InvalidParameters``)."""


def _one(parameters: dict, name: str) -> str:
    value = parameters.get(name)
    if isinstance(value, list):
        return str(value[0]) if value else ""
    return "" if value is None else str(value)


def check(document: str, parameters: dict) -> None:
    """Raise ParameterError when ``parameters`` are not ones ``document`` takes, as SendCommand and
    CreateAssociation refuse them."""
    if document != ANSIBLE:
        if not parameters.get("commands"):
            raise ParameterError("Parameter commands is required.")
        unknown = sorted(set(parameters) - set(SHELL_PARAMETERS))
        if unknown:
            raise ParameterError(f"Parameter {unknown[0]} is not defined in the document {document}.")
        return
    unknown = sorted(set(parameters) - set(ANSIBLE_PARAMETERS))
    if unknown:
        raise ParameterError(f"Parameter {unknown[0]} is not defined in the document {document}.")
    for name, allowed in ANSIBLE_ALLOWED.items():
        if name in parameters and _one(parameters, name) not in allowed:
            raise ParameterError(f"Parameter {name} value {_one(parameters, name)} is not one of the allowed values "
                                 f"{', '.join(allowed)}.")
    if "TimeoutSeconds" in parameters and not TIMEOUT.match(_one(parameters, "TimeoutSeconds")):
        raise ParameterError(f"Parameter TimeoutSeconds value {_one(parameters, 'TimeoutSeconds')} is not a number.")
    if "SourceInfo" in parameters:
        try:
            info = json.loads(_one(parameters, "SourceInfo") or "{}")
        except ValueError:
            raise ParameterError("Parameter SourceInfo is not a JSON object.")
        if not isinstance(info, dict):
            raise ParameterError("Parameter SourceInfo is not a JSON object.")
    for name in ANSIBLE_REQUIRED:
        if not _one(parameters, name):
            raise ParameterError(f"Parameter {name} is required.")


def filled(document: str, parameters: dict) -> dict:
    """The parameters as the command holds them: AWS-ApplyAnsiblePlaybooks' defaults for those left out."""
    if document != ANSIBLE:
        return parameters
    out = {name: [value] for name, value in ANSIBLE_DEFAULTS.items()}
    out.update({name: list(value) if isinstance(value, list) else [str(value)] for name, value in parameters.items()})
    return out


def s3_object(path: str) -> tuple[str, str] | None:
    """(bucket, key) of an S3 object URL as SourceInfo's ``path`` gives it; None when it is not one."""
    url = urllib.parse.urlsplit(path)
    if url.scheme != "https" or not url.hostname:
        return None
    virtual = VIRTUAL_STYLE.match(url.hostname)
    if virtual:
        bucket, key = virtual.group("bucket"), url.path.lstrip("/")
    elif PATH_STYLE.match(url.hostname):
        bucket, _sep, key = url.path.lstrip("/").partition("/")
    else:
        return None
    if not bucket or not key:
        return None
    return bucket, urllib.parse.unquote(key)


def ansible_bin() -> str:
    """Where the lab's own ansible-playbook is (beside the interpreter that runs the lab)."""
    return os.path.dirname(os.path.abspath(sys.executable))


class DownloadDenied(Exception):
    """The node's role may not download the object (its text: AWS's error code and message)."""


def ansible_script(parameters: dict, presign) -> tuple[list[str], int]:
    """The shell script (its lines) that runs AWS-ApplyAnsiblePlaybooks on a node, and its timeout in seconds.
    ``presign(bucket, key)`` gives the URL the node fetches the bundle from, or raises DownloadDenied."""
    value = {name: _one(parameters, name) for name in ANSIBLE_PARAMETERS}
    timeout = int(value["TimeoutSeconds"] or "3600")
    fail = []
    if value["SourceType"] != "S3":
        fail.append(f"SourceType {value['SourceType'] or '(none)'} cannot be fetched by the lab's nodes: they reach "
                    "S3 only. Give SourceType S3 with the bundle's object URL in SourceInfo's path.")
    if value["InstallDependencies"] == "True":
        fail.append("InstallDependencies True installs Ansible from the node's package repositories, which the lab's "
                    "nodes cannot reach; they have Ansible already: set InstallDependencies to False.")
    try:
        path = json.loads(value["SourceInfo"] or "{}").get("path", "")
    except (ValueError, AttributeError):
        path = ""
    found = s3_object(path) if not fail else None
    if not fail and found is None:
        fail.append(f"SourceInfo path {path!r} is not the URL of an S3 object (https://s3.amazonaws.com/BUCKET/KEY); "
                    "the lab fetches one object: a playbook or a .zip bundle.")
    if fail:
        return [f"echo {shlex.quote(line)} >&2" for line in fail] + ["exit 1"], timeout
    bucket, key = found
    try:
        url = presign(bucket, key)
    except DownloadDenied as denied:  # the agent's download with the instance profile: refused, the script fails
        return [f"echo {shlex.quote(f'Failed downloading s3://{bucket}/{key} err:{denied}')} >&2", "exit 1"], timeout
    name = os.path.basename(key)
    playbook = value["PlaybookFile"]
    argv = ["ansible-playbook", "-i", "localhost,", "-c", "local"]
    if value["ExtraVariables"].strip():
        argv += ["-e", value["ExtraVariables"]]
    if value["Check"] == "True":
        argv.append("--check")
    argv += [value["Verbose"], playbook]
    return [
        "set -u",
        f"PATH=\"$PATH:{ansible_bin()}\"; export PATH",
        # The URL on curl's stdin (printf is sh's own): a presigned URL in argv is for every local user to read.
        f"printf 'url = \"%s\"\\n' {shlex.quote(url)} | curl -fsS --retry 2 -K - -o {shlex.quote(name)} || "
        f"{{ echo {shlex.quote(f'could not download s3://{bucket}/{key}')} >&2; exit 1; }}",
        f"case {shlex.quote(name)} in *.zip) unzip -o -q {shlex.quote(name)} || exit 1 ;; esac",
        f"[ -f {shlex.quote(playbook)} ] || {{ echo "
        + shlex.quote(f"PlaybookFile {playbook} is not in s3://{bucket}/{key}.") + " >&2; exit 1; }",
        "command -v ansible-playbook >/dev/null || { echo 'ansible-playbook is not installed on this node; set "
        "InstallDependencies to True or install Ansible in its image.' >&2; exit 1; }",
        shlex.join(argv),
    ], timeout
