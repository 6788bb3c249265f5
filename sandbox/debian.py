"""Debian packages the project needs at run time and installs itself when missing (as root, with
apt-get): the Celery cluster's Redis server, the browser test's Chromium, a PostgreSQL with pgcrypto."""

from __future__ import annotations

import os
import shutil
import subprocess


def apt_install(packages: list[str], needed: list[str]) -> str | None:
    """Install Debian ``packages`` unless every path in ``needed`` exists; the reason they cannot be
    installed here, or None."""
    if needed and all(os.path.exists(path) for path in needed):
        return None
    apt = shutil.which("apt-get")
    if not apt:
        return f"{', '.join(packages)}: not installed, and this machine has no apt-get to install them"
    if os.geteuid() != 0:
        return f"{', '.join(packages)}: not installed, and installing Debian packages needs root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["update", "-qq"], ["install", "-y", "-qq", *packages]):
        done = subprocess.run([apt, *args], env=env, capture_output=True, text=True, timeout=900)
        if done.returncode:
            return f"apt-get {' '.join(args)} failed: {done.stderr.strip()[-500:]}"
    return None
