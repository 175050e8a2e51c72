"""The Redmine launcher's decisions when Redmine cannot be installed (package repository unreachable)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ledgerbridge.testing import redmine_server as launcher


def test_unreachable_repository_is_reported_as_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "redmine"
    script.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        "  status) echo 'installed: no'; echo 'bootstrapped: no'; echo 'running: no' ;;\n"
        "  install) echo 'Temporary failure resolving deb.debian.org' >&2; exit 75 ;;\n"
        "  *) exit 1 ;;\n"
        "esac\n"
    )
    script.chmod(0o755)
    monkeypatch.setattr(launcher, "SCRIPT", script)
    with pytest.raises(launcher.RedmineUnavailable) as exc:
        launcher._bring_up("t")  # what running_redmine() does first (a session server may already be shared)
    if os.geteuid() == 0:
        assert "unreachable" in str(exc.value) and "Temporary failure resolving" in str(exc.value)
    else:
        assert "root" in str(exc.value)


def test_a_broken_install_is_an_error_not_a_skip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0:
        pytest.skip("the launcher checks for root before installing")
    script = tmp_path / "redmine"
    script.write_text("#!/bin/sh\n[ \"$1\" = status ] && { echo 'installed: no'; exit 0; }\n"
                      "echo 'database.yml is missing' >&2; exit 1\n")
    script.chmod(0o755)
    monkeypatch.setattr(launcher, "SCRIPT", script)
    with pytest.raises(RuntimeError, match=r"install failed \(exit 1\).*database\.yml is missing") as exc:
        launcher._bring_up("t")
    assert not isinstance(exc.value, launcher.RedmineUnavailable)  # a real failure must not become a skip
