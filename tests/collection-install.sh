#!/usr/bin/env bash
# Build the collection tarball and install it the way a user would, without reaching Galaxy.
#
#   VENV=.venv tests/collection-install.sh
#
# Environment:
#   VENV                 virtualenv holding ansible (default: .venv, relative to the repo root)
#   KEEP_INSTALL_TMP     set to 1 to keep the build and install directories (path is printed)
#
# Steps: `ansible-galaxy collection build` into a temporary directory; check the tarball holds
# nothing that build_ignore should have kept out; `ansible-galaxy collection install --offline`
# into a temporary collections path. --offline never contacts Galaxy but still resolves the
# dependencies declared in galaxy.yml against the collections already installed (the venv's
# `ansible` package ships amazon.aws and community.aws), so an unsatisfied dependency fails
# at once instead of hanging. Then `collection verify --offline`, `collection list` and
# `ansible-doc -l`, whose plugins must match the files in the tarball.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

VENV=${VENV:-.venv}
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
for tool in python ansible-galaxy ansible-doc; do
    if [[ ! -x "$VENV/bin/$tool" ]]; then
        echo "collection-install: no $tool in $VENV (set VENV= or run 'make venv')" >&2
        exit 2
    fi
done
PY="$VENV/bin/python"
export PATH="$VENV/bin:$PATH"

read -r NAMESPACE NAME VERSION < <(cd "$ROOT" && "$PY" - <<'EOF'
import yaml
with open("galaxy.yml") as f:
    g = yaml.safe_load(f)
print(g["namespace"], g["name"], g["version"])
EOF
)
FQCN="$NAMESPACE.$NAME"

START=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/${NAMESPACE}-${NAME}-install.XXXXXX")
if [[ "${KEEP_INSTALL_TMP:-0}" == 1 ]]; then
    trap 'echo "collection-install: kept $WORK"' EXIT
else
    trap 'rm -rf "$WORK"' EXIT
fi
LOG="$WORK/log"
COLLECTIONS="$WORK/collections"
mkdir -p "$WORK/build" "$COLLECTIONS"

fail() {
    echo "collection-install: FAILED: $* ($(( $(date +%s) - START ))s)"
    exit 1
}

# Only our temporary path: a copy in ~/.ansible/collections must not mask the result. The
# venv's own ansible_collections (amazon.aws, community.aws, ...) stay visible via sys.path.
export ANSIBLE_COLLECTIONS_PATH="$COLLECTIONS"
export ANSIBLE_GALAXY_DISABLE_GPG_VERIFY=1
cd "$WORK"

# --- build ------------------------------------------------------------------------------------
timeout 300 ansible-galaxy collection build --output-path "$WORK/build" "$ROOT" >"$LOG" 2>&1 \
    || { cat "$LOG"; fail "ansible-galaxy collection build"; }
TARBALL="$WORK/build/$NAMESPACE-$NAME-$VERSION.tar.gz"
[[ -f "$TARBALL" ]] || { cat "$LOG"; fail "no $TARBALL"; }

# --- tarball contents -------------------------------------------------------------------------
BAD=$(tar -tzf "$TARBALL" | grep -E \
    '(^|/)(\.git|\.venv|\.lab|\.tox|\.pytest_cache|\.ansible|\.ci|__pycache__)(/|$)|\.pyc$|\.tar\.gz$|^tests/(output|benchmarks/results)(/|$)' \
    || true)
[[ -z "$BAD" ]] || { echo "$BAD"; fail "tarball holds files build_ignore should exclude"; }

# --- install offline, dependencies checked against the installed ones ---------------------------
if ! timeout 300 ansible-galaxy collection install --offline "$TARBALL" >"$LOG" 2>&1; then
    cat "$LOG"
    fail "ansible-galaxy collection install --offline (a declared dependency is missing or too old?)"
fi
DEPS=$(sed -n "s/^'\([^']*\)' is already installed, skipping.*/\1/p" "$LOG" | tr '\n' ' ' | sed 's/ $//')

# --- verify -----------------------------------------------------------------------------------
timeout 300 ansible-galaxy collection verify --offline "$FQCN" >"$LOG" 2>&1 \
    || { cat "$LOG"; fail "ansible-galaxy collection verify --offline"; }

ansible-galaxy collection list "$FQCN" -p "$COLLECTIONS" --format json >"$LOG" 2>"$LOG.err" \
    || { cat "$LOG.err"; fail "ansible-galaxy collection list"; }
"$PY" - "$LOG" "$FQCN" "$VERSION" <<'EOF' || fail "ansible-galaxy collection list does not show $FQCN $VERSION"
import json, sys
log, fqcn, version = sys.argv[1:]
with open(log) as f:
    listed = json.load(f)
found = [v["version"] for coll in listed.values() for name, v in coll.items() if name == fqcn]
sys.exit(0 if found == [version] else 1)
EOF

INSTALLED="$COLLECTIONS/ansible_collections/$NAMESPACE/$NAME"
PLUGINS=0
for type_dir in module:modules inventory:inventory connection:connection lookup:lookup callback:callback become:become; do
    type=${type_dir%%:*}
    dir="$INSTALLED/plugins/${type_dir#*:}"
    ansible-doc -t "$type" -l "$FQCN" -j >"$LOG" 2>"$LOG.err" \
        || { cat "$LOG.err"; fail "ansible-doc -t $type -l $FQCN"; }
    # each plugin file (any *.py but __init__.py) must be listed by ansible-doc
    expected=$(if [[ -d "$dir" ]]; then
        find "$dir" -name '*.py' ! -name '__init__.py' -printf '%f\n' | sed "s/\.py\$//; s/^/$FQCN./" | LC_ALL=C sort
    fi)
    listed=$("$PY" -c 'import json, sys; print("\n".join(sorted(json.load(open(sys.argv[1])))))' "$LOG")
    if [[ "$expected" != "$listed" ]]; then
        diff <(echo "$expected") <(echo "$listed") || true
        fail "ansible-doc -t $type -l does not list the $type plugins in the tarball"
    fi
    PLUGINS=$(( PLUGINS + $(grep -c . <<<"$listed" || true) ))
done
ansible-doc -l "$FQCN" >/dev/null 2>"$LOG.err" || { cat "$LOG.err"; fail "ansible-doc -l $FQCN"; }

echo "collection-install: PASSED: $FQCN $VERSION built, installed offline (dependencies satisfied by: ${DEPS:-none}), verified, $PLUGINS plugin(s) listed ($(( $(date +%s) - START ))s)"
