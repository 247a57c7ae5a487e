"""scripts/install, the installer that scripts/run and scripts/test call first."""

from __future__ import annotations

import shutil
import subprocess

from tests.server import REPO


def test_a_first_install_on_a_disk_too_small_stops_at_once_and_leaves_nothing(tmp_path):
    """A checkout on a real 64 MB filesystem (tmpfs, in a mount namespace of its own): the
    installer says how little is free before apt or pip touch anything, and makes no venv."""
    checkout = tmp_path / "small-disk"
    checkout.mkdir()
    (tmp_path / "scripts").mkdir()
    shutil.copy2(REPO / "scripts" / "install", tmp_path / "scripts" / "install")
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         'mount -t tmpfs -o size=64m tmpfs "$1" && cp -r "$2" "$1/" && exec bash "$1/scripts/install" --test',
         "sh", str(checkout), str(tmp_path / "scripts")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "MB free on the disk of" in result.stderr and "needs about 4 GB" in result.stderr
    assert "==>" not in result.stderr  # no step began: no apt-get, no virtual environment
    # The filesystem went with its namespace: nothing was written to the real disk either.
    assert list(checkout.iterdir()) == []
