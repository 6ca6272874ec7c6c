# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Which form a KMS key reference has, for the roles that take a key (transfer_bucket, session_logging,
instance_role). The rules are in plugin_utils/_names.py; the filter's documentation is in kms_key_form.yml beside this
one."""

from __future__ import annotations

from ansible_collections.bastionless.ssm.plugins.plugin_utils._names import kms_key_form


class FilterModule:
    """The KMS filters."""

    def filters(self):
        return {"kms_key_form": kms_key_form}
