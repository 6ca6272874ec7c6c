"""Every page runs as written: the blocks of README.md and docs/*.md marked ``<!-- lab: run -->`` (and ``file``,
``teardown``; tests/unit/docs_blocks.py) run in a fresh copy of the repository, in one bash script, README.md first
and then docs/*.md in name order, each page's blocks in the order the page shows them, as a new user would type them
in one shell: from ``make venv collection`` (the shared .venv stands in for the one make venv would create; the
collection is built from the copy) through ``ssm-lab up`` and site.yml to ``ssm-lab down``. One lab, one site.yml
run; the later pages' blocks use what the README's made. The README's blocks run through ``make demo`` (tests/lab/demo.sh
reads them from README.md and runs them command by command), told to leave the lab up and to hand on what its commands
exported: what this runs is what make demo runs. Nothing make demo or the other blocks print may warn."""

import os
import shlex
import shutil
import subprocess
import sys
import tempfile

import pytest
from ansible_cli import ROOT, warnings_in
from ssm_lab.harness.testing import warm_environ

sys.path.insert(0, os.path.join(ROOT, "tests", "unit"))
import docs_blocks  # noqa: E402  pylint: disable=wrong-import-position

VENV_BIN = os.path.realpath(os.path.join(ROOT, ".venv", "bin"))
BEGIN = docs_blocks.BEGIN  # before each block's output: the runner's, and make demo's for the README's
DEMO_ENV = "$HOME/demo.env"  # what the README's commands exported, for the pages' blocks
TIMEOUT = 900


def _copy_of_the_repository(destination: str) -> None:
    """The files git lists, as they are in the working tree (what make collection builds from), in a git
    repository of their own, with a .venv whose bin is the shared one and whose make venv stamp is current."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for path in filter(None, listed.decode().split("\0")):
        source = os.path.join(ROOT, path)
        if os.path.isfile(source):
            target = os.path.join(destination, path)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(source, target)
    subprocess.run(["git", "init", "-q"], cwd=destination, check=True, capture_output=True)
    subprocess.run(["git", "add", "-A"], cwd=destination, check=True, capture_output=True)
    venv = os.path.join(destination, ".venv")
    os.makedirs(venv)
    os.symlink(VENV_BIN, os.path.join(venv, "bin"))
    with open(os.path.join(venv, ".installed"), "w", encoding="utf-8"):
        pass


def _script(blocks: list) -> str:
    """One bash script: make demo (the README's run blocks, each headed by a line naming it), then each page's
    blocks headed the same way, the teardown blocks last, stopping at the first command that fails."""
    parts = ["set -eo pipefail", "trap 'echo \"### failed: $BASH_COMMAND\"' ERR",
             f'make demo DEMO_ARGS="--keep-lab --env-file {DEMO_ENV}"', f"source {DEMO_ENV}"]
    ordered = [b for b in blocks if b.kind in ("run", "file") and b.page != "README.md"]
    ordered += [b for b in blocks if b.kind == "teardown"]
    for block in ordered:
        parts.append(f"echo {shlex.quote(f'{BEGIN} {block.where}')}")
        if block.kind == "file":
            parts.append(f"mkdir -p \"$(dirname {shlex.quote(block.argument)})\"")
            parts.append(f"cat > {shlex.quote(block.argument)} <<'DOCS_RUNNER_FILE'\n{block.text}DOCS_RUNNER_FILE")
        elif "typing" in block.options:
            # As a user types: the line, then exit, on an input that stays open until the block has read them (a
            # session-manager-plugin ends the session at the end of its input); then an empty line every half second,
            # until the block no longer reads.
            typing = shlex.quote(block.options["typing"])
            parts.append(f"{{ trap '' PIPE; sleep 1; printf '%s\\n' {typing} exit; "
                         f"while sleep 0.5; do printf '\\n' 2>/dev/null || break; done; }} | {{\n{block.text}}}")
        else:
            parts.append(block.text.rstrip("\n"))
    return "\n".join(parts) + "\n"


def _user_environ(home: str) -> dict:
    """A new user's shell: no lab, AWS, ansible or virtualenv settings, and no .venv on PATH. Only the module runs on
    the controller and the ansible commands go to the tests' warm interpreter (ssm_lab.harness.testing.warm_environ:
    the same modules, payloads and commands, in a fork of an interpreter that has imported what they import before
    reading any configuration, and that prints what those imports printed): the runner's budget is a few minutes of
    the suite."""
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("AWS_", "SSM_LAB_", "ANSIBLE_", "BASTIONLESS_", "PYTEST_", "MOLECULE_"))
            and k not in ("VIRTUAL_ENV", "PYTHONPATH", "MOTO_IAM_LOAD_MANAGED_POLICIES", "OLDPWD")}
    path = [p for p in keep.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(os.pathsep)
            if p and os.path.realpath(p) != VENV_BIN]
    return {**keep, **warm_environ(), "PATH": os.pathsep.join(path), "HOME": home, "TERM": "dumb"}


def _by_block(output: str) -> dict:
    """What each block printed, by its place (page:line)."""
    parts, where = {}, "setup"
    for line in output.splitlines():
        if line.startswith(BEGIN):
            where = line[len(BEGIN):].strip()
        parts.setdefault(where, []).append(line)
    return {where: "\n".join(lines) for where, lines in parts.items()}


@pytest.fixture(scope="module")
def pages_run():
    # Outside pytest's numbered temporary directories, which a later pytest session of the machine may clean up
    # while the lab of this one runs from there.
    top = tempfile.mkdtemp(prefix="bastionless-docs-pages-")
    checkout, home = os.path.join(top, "checkout"), os.path.join(top, "home")
    os.makedirs(checkout)
    os.makedirs(home)
    _copy_of_the_repository(checkout)
    blocks = docs_blocks.all_blocks()
    script = os.path.join(home, "docs-pages.sh")
    with open(script, "w", encoding="utf-8") as handle:
        handle.write(_script(blocks))
    log = os.path.join(home, "docs-pages.log")  # what the blocks print, as they print it
    try:
        with open(log, "w", encoding="utf-8") as output:
            returncode = subprocess.run(["bash", script], cwd=checkout, env=_user_environ(home),
                                        stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                        timeout=TIMEOUT, check=False).returncode
    except subprocess.TimeoutExpired:
        returncode = f"timed out after {TIMEOUT} s"
    finally:  # the lab of the pages, when a block failed before the README's ssm-lab down
        subprocess.run([os.path.join(VENV_BIN, "ssm-lab"), "--state-dir", os.path.join(checkout, ".lab"), "down"],
                       capture_output=True, env=_user_environ(home), timeout=60, check=False)
    with open(log, encoding="utf-8", errors="replace") as output:
        yield blocks, returncode, output.read()
    shutil.rmtree(top, ignore_errors=True)


def test_every_marked_block_runs_as_written(pages_run):  # pylint: disable=redefined-outer-name
    blocks, returncode, output = pages_run
    parts = _by_block(output)
    ran = [b.where for b in blocks if b.kind in ("run", "file")] + [b.where for b in blocks if b.kind == "teardown"]
    failed = next((where for where in reversed(list(parts)) if where != "setup"), "setup")
    assert returncode == 0, f"the block at {failed} failed:\n{parts.get(failed, output)[-8000:]}"
    assert [where for where in parts if where != "setup"] == ran, output


def test_what_a_block_expects_it_prints(pages_run):  # pylint: disable=redefined-outer-name
    blocks, _returncode, output = pages_run
    parts = _by_block(output)
    missing = [f"{b.where}: {b.options['expect']!r} not in:\n{parts[b.where][-2000:]}"  # (a block that did not
               for b in blocks  # run at all fails test_every_marked_block_runs_as_written)
               if "expect" in b.options and b.where in parts and b.options["expect"] not in parts[b.where]]
    assert missing == [], "\n".join(missing)


def test_the_pages_and_the_demo_print_no_warning(pages_run):  # pylint: disable=redefined-outer-name
    """No warning, deprecation or traceback but for those docs/troubleshooting.md names and explains."""
    _blocks, _returncode, output = pages_run
    found = {where: warnings_in(text) for where, text in _by_block(output).items() if warnings_in(text)}
    assert found == {}, found
