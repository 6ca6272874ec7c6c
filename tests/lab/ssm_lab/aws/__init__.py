"""The AWS side of the lab: one control plane process serving moto plus the APIs moto lacks (SSM,
SimulatePrincipalPolicy, EC2 Instance Connect), its own state and whether each node is Online, and the message port
where agents connect out and clients open Session Manager's data channel."""
