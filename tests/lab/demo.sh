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
# An operator of the account: site.yml's operator_access maps her to the OS user alice (Run As).
python3 -c 'import boto3; boto3.client("iam").create_user(UserName="alice")' >/dev/null
# The identity of the lab's default credentials (STS calls it user/moto), which runs site.yml: operator_access
# maps it to ssm-user, the account with sudo, so that operators nobody mapped land on session-user, without sudo.
python3 -c 'import boto3; boto3.client("iam").create_user(UserName="moto")' >/dev/null
started=$(date +%s)

say "ansible-playbook -i $inventory playbooks/site.yml"
ansible-playbook -i "$inventory" playbooks/site.yml | tee "$SSM_LAB_STATE_DIR/site.log"

say "ssm-lab status (after site.yml)"
ssm-lab status

say "ansible -i $inventory all -m ansible.builtin.command -a 'uptime' (ad-hoc, over Session Manager)"
ansible -i "$inventory" all -m ansible.builtin.command -a 'uptime'

say "alice, with the operator policy site.yml attached to her (the lab enforces IAM for her keys)"
python3 - <<'PY'
import boto3
from botocore.exceptions import ClientError
key = boto3.client("iam").create_access_key(UserName="alice")["AccessKey"]
alice = boto3.client("ssm", aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
node = sorted(n["InstanceId"] for n in boto3.client("ssm").describe_instance_information()["InstanceInformationList"])[0]
session = alice.start_session(Target=node, DocumentName="SSM-SessionManagerRunShell")["SessionId"]
print(f"StartSession on {node} (tagged ssm-lab=node): allowed, session {session}")
alice.terminate_session(SessionId=session)
print("TerminateSession of her own session: allowed")
try:
    alice.send_command(InstanceIds=[node], DocumentName="AWS-RunShellScript", Parameters={"commands": ["id"]})
    raise SystemExit("SendCommand was allowed to alice: the lab did not enforce her policy")
except ClientError as error:
    print(f"SendCommand: {error.response['Error']['Code']}: {error.response['Error']['Message']}")
PY

say "Summary"
python3 - "$started" "$SSM_LAB_STATE_DIR/site.log" <<'PY'
import re, sys, time
import boto3
ssm, s3, logs = boto3.client("ssm"), boto3.client("s3"), boto3.client("logs")
nodes = ssm.describe_instance_information()["InstanceInformationList"]
print(f"nodes Online in SSM: {sum(n['PingStatus'] == 'Online' for n in nodes)} of {len(nodes)}")
for n in nodes:
    print(f"  {n['InstanceId']}  {n['ComputerName']:<28} {n['PlatformName']} {n['PlatformVersion']}  "
          f"agent {n['AgentVersion']}  {n['PingStatus']}")
recap = re.findall(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                   open(sys.argv[2], encoding="utf-8").read(), re.M)
print("site.yml changed: " + ", ".join(f"{host} {changed}" for host, _ok, changed, _u, _f in recap))
history = [s for page in ssm.get_paginator("describe_sessions").paginate(State="History") for s in page["Sessions"]]
print(f"Session Manager sessions so far: {len(history)}, owners: " + ", ".join(sorted({s['Owner'] for s in history})))
prefs = __import__("json").loads(ssm.get_document(Name="SSM-SessionManagerRunShell")["Content"])["inputs"]
keys = s3.list_objects_v2(Bucket=prefs["s3BucketName"], Prefix=prefs.get("s3KeyPrefix", "")).get("KeyCount", 0)
streams = [s for page in logs.get_paginator("describe_log_streams").paginate(logGroupName=prefs["cloudWatchLogGroupName"])
           for s in page["logStreams"]]
print(f"transcripts: s3://{prefs['s3BucketName']}/{prefs.get('s3KeyPrefix', '')} ({keys} objects), "
      f"CloudWatch Logs {prefs['cloudWatchLogGroupName']} ({len(streams)} streams)")
print(f"SSH used: none. Port 22: closed; the nodes listen on no port at all. Took {time.time() - float(sys.argv[1]):.0f} s.")
PY
