"""ssm_lab: an offline AWS Session Manager lab on moto, for testing bastionless.ssm.

Split by what each part plays (docs/lab.md, "How it works inside", has the map):

- ``aws``: the AWS side: the control plane process (moto and the APIs moto lacks), SimulatePrincipalPolicy, the
  Online prerequisites, the message port and the session data channel as the service speaks them;
- ``nodes``: the managed nodes: the agent host that plays every node's SSM Agent, the sandboxes, and what a node
  has on its disk (the agent's package, sshd, systemctl);
- ``client``: the stand-in for AWS's session-manager-plugin (``ssm-lab-plugin``);
- ``harness``: what starts, provisions and drives a lab: the ``ssm-lab`` command and the helpers of test suites;
- ``common`` (what every part agrees on), ``collection`` (loads the collection's own code from the repository:
  the IAM policy evaluator, the data channel codec) and ``codec`` (that codec, which the service and the client
  share).
"""
