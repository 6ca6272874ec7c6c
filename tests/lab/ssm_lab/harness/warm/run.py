"""Run a command with the module runs of the ansible it starts handed to the warm interpreter (see zygote.py):

    python tests/lab/ssm_lab/harness/warm/run.py molecule test --all

The command's exit status is this script's. BASTIONLESS_WARM=0 runs the command as it is."""

import os
import subprocess
import sys

from ssm_lab.harness.testing import warm_environ


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    os.environ.setdefault("BASTIONLESS_WARM", "1")  # warm_environ is for tests, and this script is their runner
    return subprocess.call(sys.argv[1:], env={**os.environ, **warm_environ()})


if __name__ == "__main__":
    sys.exit(main())
