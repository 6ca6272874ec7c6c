"""The client's side: ``ssm-lab-plugin``, a stand-in for AWS's session-manager-plugin over the collection's own data
channel client."""
