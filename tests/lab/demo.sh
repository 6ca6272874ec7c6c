#!/usr/bin/env bash
# make demo: three private lab instances that Session Manager cannot reach, provisioned and configured by
# playbooks/site.yml over Session Manager, with no SSH and no AWS account.
set -euo pipefail
cd "$(dirname "$0")/../.."

export SSM_LAB_STATE_DIR=${SSM_LAB_STATE_DIR:-$PWD/.lab}
inventory=inventories/lab
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Starting the offline SSM lab: 3 private instances with no instance profile and no route out, no sshd, no open port"
ssm-lab down >/dev/null 2>&1 || true
eval "$(ssm-lab up --nodes 3)"
trap 'say "Stopping the lab"; ssm-lab down' EXIT
ssm-lab status
started=$(date +%s)

say "ansible-playbook -i $inventory playbooks/site.yml"
ansible-playbook -i "$inventory" playbooks/site.yml | tee "$SSM_LAB_STATE_DIR/site.log"

say "ssm-lab status (after site.yml)"
ssm-lab status

say "ansible -i $inventory all -m ansible.builtin.command -a 'uptime' (ad-hoc, over Session Manager)"
ansible -i "$inventory" all -m ansible.builtin.command -a 'uptime'

say "ssm-lab check-operator alice (her own keys: the lab enforces the operator policy site.yml gave her)"
ssm-lab check-operator alice

say "ssm-lab summary"
ssm-lab summary --playbook-log "$SSM_LAB_STATE_DIR/site.log"
echo "Took $(($(date +%s) - started)) s."
