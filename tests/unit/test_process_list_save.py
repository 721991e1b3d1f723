"""The reload's `pm2 save` runs only when the saved process list may differ: the script is run
for real, with a stand-in `pm2` that records its calls and writes the dump as `pm2 save` does."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from operations import release as rel


@pytest.fixture
def pm2(tmp_path: Path) -> dict[str, Path]:
    bin_dir, home = tmp_path / "bin", tmp_path / "pm2home"
    bin_dir.mkdir()
    home.mkdir()
    fake = bin_dir / "pm2"
    fake.write_text('#!/bin/sh\necho "$*" >> "$PM2_HOME/calls"\n'
                    '[ "$1" = save ] && echo "[] $(date +%s%N)" > "$PM2_HOME/dump.pm2"\n'
                    '[ "$1" != fail ]\n')
    fake.chmod(0o755)
    ecosystem = tmp_path / "ecosystem.config.js"
    ecosystem.write_text("module.exports = {apps: []};\n")
    return {"bin": bin_dir, "home": home, "ecosystem": ecosystem}


def reload(pm2: dict[str, Path], first: str | None = None) -> subprocess.CompletedProcess:
    """The reload step's commands (`first` in place of `pm2 startOrReload`)."""
    commands = rel.reload_commands(str(pm2["ecosystem"]))
    script = " && ".join([first or commands[0], *commands[1:]])
    env = {**os.environ, "PM2_HOME": str(pm2["home"]),
           "PATH": f"{pm2['bin']}:{os.environ['PATH']}"}
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)


def calls(pm2: dict[str, Path]) -> list[str]:
    path = pm2["home"] / "calls"
    lines = path.read_text().splitlines() if path.exists() else []
    path.unlink(missing_ok=True)
    return [line.split()[0] for line in lines]


def test_first_reload_saves_and_the_next_one_does_not(pm2):
    assert reload(pm2).returncode == 0
    assert calls(pm2) == ["startOrReload", "save"]
    again = reload(pm2)
    assert again.returncode == 0
    assert calls(pm2) == ["startOrReload"]
    assert "already saved" in again.stdout


def test_a_changed_ecosystem_file_is_saved_again(pm2):
    reload(pm2)
    calls(pm2)
    pm2["ecosystem"].write_text("module.exports = {apps: [{name: 'x'}]};\n")
    assert reload(pm2).returncode == 0
    assert calls(pm2) == ["startOrReload", "save"]


def test_a_dump_written_since_by_someone_else_is_saved_again(pm2):
    """`pm2 save` by hand after a `pm2 delete`, or PM2 dumping as it stops."""
    reload(pm2)
    calls(pm2)
    time.sleep(0.01)
    (pm2["home"] / "dump.pm2").write_text("[]\n")
    assert reload(pm2).returncode == 0
    assert calls(pm2) == ["startOrReload", "save"]


def test_no_dump_is_saved_again(pm2):
    reload(pm2)
    calls(pm2)
    (pm2["home"] / "dump.pm2").unlink()
    assert reload(pm2).returncode == 0
    assert calls(pm2) == ["startOrReload", "save"]


def test_a_failed_reload_fails_the_step_and_saves_nothing(pm2):
    assert reload(pm2, first="pm2 fail").returncode != 0
    assert calls(pm2) == ["fail"]
