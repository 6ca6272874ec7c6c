"""The collection in an execution environment, without Docker: meta/execution-environment.yml declares the
controller's Python dependencies (boto3, botocore, websockets) and no system package; ansible-builder's own
introspection finds exactly those in the installed collection (what it runs inside the image while building); and
``ansible-builder create`` on the EE definition that docs/awx.md gives writes a build context that installs the
collection and no session-manager-plugin."""

import os
import re
import subprocess
import sys

import yaml
from ansible_cli import ROOT

BUILDER = os.path.join(os.path.dirname(sys.executable), "ansible-builder")
EXAMPLE = os.path.join(ROOT, "docs", "examples", "execution-environment.yml")


def installed_collections() -> str:
    """The collections path the tests run against (make collection installs it there)."""
    for path in (os.environ.get("ANSIBLE_COLLECTIONS_PATH") or "").split(os.pathsep) + [
            os.path.join(ROOT, ".venv", "collections")]:
        if path and os.path.isdir(os.path.join(path, "ansible_collections", "bastionless", "ssm")):
            return path
    raise AssertionError("bastionless.ssm is not installed: run make collection")


def names(lines) -> set:
    return {re.split(r"[<>=!~ \[;#]", line.strip(), maxsplit=1)[0].lower() for line in lines
            if line.strip() and not line.strip().startswith("#")}


def test_the_collection_declares_its_controller_dependencies():
    with open(os.path.join(ROOT, "meta", "execution-environment.yml"), encoding="utf-8") as handle:
        meta = yaml.safe_load(handle)
    assert meta == {"version": 1, "dependencies": {"python": "requirements.txt"}}  # no system: nothing beyond Python
    with open(os.path.join(ROOT, "requirements.txt"), encoding="utf-8") as handle:
        assert {"boto3", "botocore", "websockets"} <= names(handle)


def test_ansible_builder_finds_them_in_the_installed_collection(tmp_path):
    done = subprocess.run([BUILDER, "introspect", "--sanitize", "--write-pip", str(tmp_path / "pip.txt"),
                           "--write-bindep", str(tmp_path / "bindep.txt"), installed_collections()],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    report = yaml.safe_load(done.stdout.split("\n", 1)[1])  # after its "# Dependency data for ..." line
    ours = [line for line in report["python"] if line.endswith("from collection bastionless.ssm")]
    assert {"boto3", "botocore", "websockets"} <= names(ours), report
    assert not [line for line in report["system"] if "bastionless.ssm" in line], report
    assert "websockets" in names((tmp_path / "pip.txt").read_text().splitlines())


def test_ansible_builder_create_writes_a_context_without_the_plugin(tmp_path):
    context = tmp_path / "context"
    done = subprocess.run([BUILDER, "create", "-f", EXAMPLE, "--context", str(context), "--output-filename",
                           "Containerfile"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    containerfile = (context / "Containerfile").read_text()
    assert 'ARG EE_BASE_IMAGE="quay.io/centos/centos:stream9"' in containerfile
    assert "ansible-galaxy collection install" in containerfile
    assert "introspect" in containerfile  # the collections' meta/execution-environment.yml is read in the build
    with open(context / "_build" / "requirements.yml", encoding="utf-8") as handle:
        collections = yaml.safe_load(handle)["collections"]
    assert "bastionless.ssm" in [c["name"] for c in collections]
    everything = containerfile + "".join(p.read_text(errors="replace") for p in (context / "_build").rglob("*")
                                         if p.is_file() and p.suffix in ("", ".yml", ".txt", ".sh"))
    assert "session-manager-plugin" not in everything
