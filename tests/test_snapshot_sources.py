"""The build's source snapshot holds every package directory, nested ones included."""

from __future__ import annotations

from pathlib import Path

from aicert.builder.mkosi import snapshot_sources


def test_a_nested_package_is_copied_with_its_parent(tmp_path: Path) -> None:
    dest = snapshot_sources(tmp_path / "source")
    assert (dest / "agent" / "oci" / "environment.py").is_file()
    assert (dest / "agent" / "job.py").is_file()
    assert not list(dest.rglob("__pycache__"))
