# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What the action plugins of controller-only modules (ssm_tunnel, instance_connect_key) share."""

LOCAL_TRANSPORTS = ("local", "ansible.builtin.local", "ansible.legacy.local")


def not_on_controller(connection, what):
    """The error for a module that must run on the controller but got another connection; None on the controller.

    what says what the module does there, e.g. "bastionless.ssm.ssm_tunnel runs on the controller".
    """
    transport = getattr(connection, "transport", "")
    if transport in LOCAL_TRANSPORTS:
        return None
    return f"{what}, not over the {transport} connection: use hosts: localhost, or delegate_to: localhost on the task."
