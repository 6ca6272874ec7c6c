# -*- coding: utf-8 -*-

# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Where AWS's session-manager-plugin is: one lookup for the whole collection (the session connection, ssm_tunnel,
ssm_preflight), in the order amazon.aws.aws_ssm looks.

Private to the collection: no stability promise.
"""

import os
import shutil
from typing import Mapping
from typing import Optional
from typing import Tuple

DEFAULT_PATH = "/usr/local/bin/session-manager-plugin"
NAME = "session-manager-plugin"
ENV = "AWS_SESSION_MANAGER_PLUGIN"
INSTALL_URL = "https://docs.aws.amazon.com/systems-manager/latest/userguide/session-manager-working-with-install-plugin.html"


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find(configured: Optional[str] = None, environ: Optional[Mapping[str, str]] = None) -> Tuple[Optional[str], str]:
    """(the plugin's path or None, where it was looked for).

    The configured path, else ``AWS_SESSION_MANAGER_PLUGIN``: either is taken as given (None when it is not an
    executable file, never a fallback to another plugin). Else /usr/local/bin's, else the first on ``PATH``."""
    environ = os.environ if environ is None else environ
    given, source = (configured, "the plugin option") if configured else (environ.get(ENV), ENV)
    if given:
        return (given if _executable(given) else None), f"{source}: {given}"
    search = environ.get("PATH", os.defpath)
    found = DEFAULT_PATH if _executable(DEFAULT_PATH) else shutil.which(NAME, path=search)
    return found, f"{DEFAULT_PATH}, then {NAME} on PATH ({search})"
