#!/usr/bin/env python
# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""An ssh ProxyCommand that carries ssh over AWS Systems Manager Session Manager (bastionless.ssm).

    ProxyCommand python3 ssm_ssh_proxy.py --target %h --port %p [--region R] [--profile P]
                 [--os-user %r --public-key ~/.ssh/key.pub]

1. With --public-key, pushes that public key to the instance with EC2 Instance Connect (SendSSHPublicKey) for
   the OS user --os-user; the instance's sshd accepts it for 60 seconds, and nothing is written on the node.
   Hybrid (mi-) nodes have no Instance Connect: for them the push is skipped.
2. Starts a session with the AWS-StartSSHSession document (StartSession) to the target's port.
3. Runs session-manager-plugin on it, with ssh's stdin and stdout, as `aws ssm start-session` does; the plugin
   is --plugin, else $AWS_SESSION_MANAGER_PLUGIN, else session-manager-plugin on PATH.
4. When the plugin exits, or ssh ends the proxy (SIGHUP), ends the session (TerminateSession), so the
   session history shows it Terminated.

Needs Python 3.6+ and boto3; credentials, region and endpoint come from the usual AWS environment, --profile
and --region. Nothing secret goes on the command line. Written to stderr only: errors.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys

DOCUMENT = "AWS-StartSSHSession"
PLUGIN = "session-manager-plugin"
PLUGIN_DEFAULT_PATH = "/usr/local/bin/session-manager-plugin"
PLUGIN_ENV = "AWS_SESSION_MANAGER_PLUGIN"


def parse(argv):
    parser = argparse.ArgumentParser(prog="ssm_ssh_proxy", description="ssh ProxyCommand over AWS SSM Session Manager")
    parser.add_argument("--target", required=True, help="the instance or managed node id (ssh's %%h)")
    parser.add_argument("--port", default="22", help="the port of sshd on the node (ssh's %%p)")
    parser.add_argument("--region", default="", help="the node's region; default: the AWS environment's")
    parser.add_argument("--profile", default="", help="the AWS profile; default: the AWS environment's")
    parser.add_argument("--document", default=DOCUMENT, help="the session document (default %(default)s)")
    parser.add_argument("--os-user", default="", help="the OS user the pushed key is for (ssh's %%r)")
    parser.add_argument("--public-key", default="", help="a public key file to push with EC2 Instance Connect")
    parser.add_argument("--plugin", default="", help="the session-manager-plugin program")
    parser.add_argument("--reason", default="", help="the session's reason, shown in the session history")
    return parser.parse_args(argv)


def fail(message):
    sys.stderr.write("ssm_ssh_proxy: %s\n" % message)
    return 255


def _executable(path):
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_plugin(explicit, environ=None):
    """(the plugin's path or None, where it was looked for), in the collection's one order (the session
    connection's, ssm_tunnel's and ssm_preflight's, module_utils/_plugin_path.py; this file runs alone under ssh, so
    it cannot import it): --plugin, else AWS_SESSION_MANAGER_PLUGIN, either taken as given; else /usr/local/bin's,
    else the first on PATH."""
    environ = os.environ if environ is None else environ
    given, source = (explicit, "--plugin") if explicit else (environ.get(PLUGIN_ENV), PLUGIN_ENV)
    if given:
        return (given if _executable(given) else None), "%s: %s" % (source, given)
    search = environ.get("PATH", os.defpath)
    found = PLUGIN_DEFAULT_PATH if _executable(PLUGIN_DEFAULT_PATH) else shutil.which(PLUGIN, path=search)
    return found, "%s, then %s on PATH (%s)" % (PLUGIN_DEFAULT_PATH, PLUGIN, search)


def read_public_key(path):
    with open(os.path.expanduser(path), encoding="utf-8") as handle:
        line = handle.read().strip()
    if not line or line.startswith("-----") or len(line.split()) < 2:
        raise ValueError("%s is not an OpenSSH public key line (give the .pub file, never the private key)" % path)
    return line


def push_key(session, region, args):
    if not args.target.startswith("i-"):
        return  # EC2 Instance Connect exists for EC2 instances only
    if not args.os_user:
        raise ValueError("--public-key needs --os-user (ssh's %r): the key is valid for that OS user only")
    client = session.client("ec2-instance-connect", region_name=region)
    client.send_ssh_public_key(InstanceId=args.target, InstanceOSUser=args.os_user,
                               SSHPublicKey=read_public_key(args.public_key))


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        import boto3
        import botocore.exceptions
    except ImportError:
        return fail("boto3 is not installed for %s: run the proxy with the Python that has it" % sys.executable)
    plugin, looked = find_plugin(args.plugin)
    if plugin is None:
        return fail("session-manager-plugin not found (looked at %s): install it (https://docs.aws.amazon.com/"
                    "systems-manager/latest/userguide/session-manager-working-with-install-plugin.html), or give "
                    "--plugin the path of an executable one" % looked)
    try:
        session = boto3.session.Session(profile_name=args.profile or None, region_name=args.region or None)
        region = session.region_name
        if not region:
            return fail("no region: give --region, or set AWS_REGION or a region in the profile")
        if args.public_key:
            push_key(session, region, args)
        ssm = session.client("ssm", region_name=region)
        request = {"Target": args.target, "DocumentName": args.document, "Parameters": {"portNumber": [str(args.port)]}}
        if args.reason:
            request["Reason"] = args.reason
        response = ssm.start_session(**request)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError, ValueError) as error:
        return fail("%s: %s" % (args.target, error))
    started = {k: response[k] for k in ("SessionId", "TokenValue", "StreamUrl")}
    command = [plugin, json.dumps(started), region, "StartSession", args.profile, json.dumps(request),
               ssm.meta.endpoint_url]
    child = subprocess.Popen(command)  # ssh's stdin and stdout are the session's

    def forward(signum, _frame):
        try:
            child.send_signal(signum)
        except OSError:
            pass

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for signum in (signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, forward)
    code = child.wait()
    try:
        ssm.terminate_session(SessionId=response["SessionId"])
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
        pass
    return code


if __name__ == "__main__":
    sys.exit(main())
