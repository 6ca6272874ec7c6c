"""The lab's managed nodes: the agent host (one process playing every node's SSM Agent), each node's sandbox (an
overlay over ``/``, chroot and namespaces), and what a node has on its disk: the agent's package, sshd for
AWS-StartSSHSession, and the lab's systemctl."""
