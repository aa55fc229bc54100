"""Stand-in for the get-pip.py script that ansible-test downloads to bootstrap pip into its sanity virtualenvs.

ansible-test fetches https://ci-files.testing.ansible.com/ansible-test/get-pip-<version>.py, which this machine
cannot reach (only PyPI is). Its error message says the script may be saved by hand to
~/.ansible/test/cache/get_pip_<version>.py; scripts/sanity.sh puts this file there when it is missing.

It does what get-pip.py does for ansible-test: ansible-test runs it as __main__ with pip-install arguments
(for example `--disable-pip-version-check pip==24.2 --no-setuptools --no-wheel`). It installs the pip bundled
with Python (ensurepip), then `pip install`s the requested packages from the configured index (PyPI), and
removes setuptools/wheel again unless they were wanted.
"""

from __future__ import annotations

import subprocess
import sys


def main(argv: list[str]) -> int:
    unwanted = {"--no-setuptools": "setuptools", "--no-wheel": "wheel"}
    remove = [pkg for flag, pkg in unwanted.items() if flag in argv]
    args = [a for a in argv if a not in unwanted and a != "--no-pip"]
    python = sys.executable
    subprocess.run([python, "-m", "ensurepip", "--upgrade", "--default-pip"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([python, "-m", "pip", "install", "-q", *args], check=True)
    if remove:
        subprocess.run([python, "-m", "pip", "uninstall", "-y", "-q", *remove], check=False, stderr=subprocess.DEVNULL)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
