# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The plugin option of the modules that run session-manager-plugin on the controller (ssm_tunnel) or check
    # for it there (ssm_preflight). Both look it up with module_utils/_plugin_path.py, as the session connection does.
    DOCUMENTATION = r"""
options:
  plugin:
    description:
      - The C(session-manager-plugin) executable on the controller, used as given.
      - When not set, the path in E(AWS_SESSION_MANAGER_PLUGIN), else C(/usr/local/bin/session-manager-plugin), else the
        first C(session-manager-plugin) on E(PATH). The P(bastionless.ssm.session#connection) connection looks it up
        the same way.
      - A path that is set, here or in E(AWS_SESSION_MANAGER_PLUGIN), but is not an executable file is reported as
        such; another plugin is never used in its place.
    type: path
"""
