#!/usr/bin/env bash
# make demo: the README's lab blocks ("Use it against the lab"), command by command, as a new user types them in one
# shell: three private lab instances that Session Manager cannot reach, provisioned and configured by
# playbooks/site.yml over Session Manager, with no SSH and no AWS account; then the README's last block stops the lab.
# The commands are read from README.md (python3 tests/unit/docs_blocks.py demo README.md), and the docs runner
# (tests/integration/test_docs_pages.py) runs the README through make demo: what it tests is what make demo runs.
#
#   --keep-lab        leave the lab running: the README's teardown block (ssm-lab down) is not run
#   --env-file FILE   at the end, write the variables the commands exported (export -p, less what this script was
#                     started with) to FILE, for a shell that goes on where the README stops (source FILE): the docs
#                     runner's, for the pages under docs/
set -eo pipefail
cd "$(dirname "$0")/../.."

__demo_keep=0 __demo_env_file=
while [ $# -gt 0 ]; do
  case $1 in
    --keep-lab) __demo_keep=1 ;;
    --env-file) __demo_env_file=${2:?--env-file needs a FILE}; shift ;;
    *) echo "demo.sh: unknown argument $1 (known: --keep-lab, --env-file FILE)" >&2; exit 2 ;;
  esac
  shift
done

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

__demo_started=$(date +%s) __demo_where= __demo_command= __demo_records=()
__demo_before=$(mktemp)
export -p > "$__demo_before"

# The names below start with __demo_: the README's commands run in this shell, and may set variables of their own.
__demo_run() {  # KIND: the commands of that kind, each block headed by its place (docs_blocks.BEGIN), each command by say
  local __demo_i __demo_last=
  for ((__demo_i = 0; __demo_i < ${#__demo_records[@]}; __demo_i += 3)); do
    [ "${__demo_records[__demo_i]}" = "$1" ] || continue
    __demo_where=${__demo_records[__demo_i + 1]} __demo_command=${__demo_records[__demo_i + 2]}
    [ "$__demo_where" = "$__demo_last" ] || echo "### lab block: $__demo_where"
    __demo_last=$__demo_where
    say "$__demo_command"
    eval "$__demo_command"
  done
}

__demo_end() {
  local rc=$?
  if [ "$rc" != 0 ] && [ -n "$__demo_command" ]; then
    echo "make demo: $__demo_where: '$__demo_command' failed with exit code $rc" >&2
  fi
  if [ -n "$__demo_env_file" ]; then
    export -p | grep -Fxv -f "$__demo_before" > "$__demo_env_file" || true
  fi
  rm -f "$__demo_before"
  if [ "$__demo_keep" = 0 ]; then
    # The README's commands put .venv/bin on PATH; when one failed before that, ssm-lab is still found.
    PATH=$PATH:$PWD/.venv/bin
    __demo_run teardown || rc=$?
  else
    say "The lab keeps running (--keep-lab); stop it with: ssm-lab down"
  fi
  echo "Took $(($(date +%s) - __demo_started)) s."
  exit "$rc"
}
trap __demo_end EXIT

# Each command as three fields ended by NUL bytes: its block's kind (run, teardown), the block's place, the command.
__demo_list=$(mktemp)
python3 tests/unit/docs_blocks.py demo README.md > "$__demo_list" || { rm -f "$__demo_list"; exit 1; }
mapfile -d '' __demo_records < "$__demo_list"
rm -f "$__demo_list"

say "make demo: the README's lab blocks (README.md, \"Use it against the lab\"), each command as typed"
__demo_run run
