#!/bin/bash -eu
# EC2 user data for golden AMIs that lack the SSM Agent (bastionless.ssm, roles/agent/files/user-data.sh).
# Installs AWS's published agent for this region and architecture, enables it at boot and starts it, so that
# Session Manager reaches the instance on its first boot. It needs an S3 path (a NAT route or an S3 gateway
# endpoint); set SSM_AGENT_BASE_URL to a mirror otherwise.
set -o pipefail
token=$(curl -sS -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 60" http://169.254.169.254/latest/api/token)
region=$(curl -sS -H "X-aws-ec2-metadata-token: $token" http://169.254.169.254/latest/meta-data/placement/region)
base=${SSM_AGENT_BASE_URL:-https://s3.$region.amazonaws.com/amazon-ssm-$region}
case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) echo "user-data: no SSM Agent package for $(uname -m)" >&2; exit 1 ;;
esac
if command -v amazon-ssm-agent >/dev/null 2>&1 || [ -x /snap/bin/amazon-ssm-agent ]; then
  echo "user-data: the SSM Agent is already installed"
elif command -v dnf >/dev/null 2>&1; then
  dnf install -y "$base/latest/linux_$arch/amazon-ssm-agent.rpm"
elif command -v yum >/dev/null 2>&1; then
  yum install -y "$base/latest/linux_$arch/amazon-ssm-agent.rpm"
elif command -v dpkg >/dev/null 2>&1; then
  curl -sSfo /tmp/amazon-ssm-agent.deb "$base/latest/debian_$arch/amazon-ssm-agent.deb"
  dpkg -i /tmp/amazon-ssm-agent.deb
  rm -f /tmp/amazon-ssm-agent.deb
else
  echo "user-data: neither dnf, yum nor dpkg found; install the SSM Agent by hand" >&2; exit 1
fi
if [ -x /snap/bin/amazon-ssm-agent ]; then
  systemctl enable --now snap.amazon-ssm-agent.amazon-ssm-agent.service
else
  systemctl enable --now amazon-ssm-agent.service
fi
