"""What starts, provisions and drives a lab: the ``ssm-lab`` command, what ``ssm-lab up`` builds in the lab's AWS,
and the helpers test suites run labs with."""
