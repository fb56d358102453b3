"""Stand-in for the pip bootstrap script ansible-test downloads from ci-files.testing.ansible.com.

That host is out of reach here (only PyPI is). ansible-test runs this file inside each fresh
sanity virtual environment with the pip arguments it would give the downloaded script, e.g.
``--disable-pip-version-check pip==24.2 --no-setuptools --no-wheel``. We put the interpreter's
own bundled pip in place with ensurepip, then let that pip install what was asked from PyPI.
"""

import subprocess
import sys

BOOTSTRAP_ONLY = {"--no-setuptools", "--no-wheel"}


def main(argv):
    # ensurepip in its own process: in this one it would point PIP_CONFIG_FILE at /dev/null,
    # hiding the host's pip configuration (index, CA bundle) from the install below.
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"])
    args = [a for a in argv if a not in BOOTSTRAP_ONLY]
    return subprocess.call([sys.executable, "-m", "pip", "install", *args])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
