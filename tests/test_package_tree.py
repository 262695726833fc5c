"""The image's copy of the aicert package holds every module of the source tree."""

from __future__ import annotations

from pathlib import Path

from aicert.builder.mkosi import PACKAGE_DIRS, REPO_ROOT, SITE_PACKAGES, write_package_tree


def test_every_module_reaches_the_image(tmp_path: Path) -> None:
    write_package_tree(tmp_path, 1_700_000_000)
    site = tmp_path / SITE_PACKAGES
    copied = {p.relative_to(site).as_posix() for p in site.rglob("*.py")}
    expected = set()
    for source in ("aicert", "verifier", "builder", "agent"):
        target = PACKAGE_DIRS[source]
        for path in (REPO_ROOT / source).rglob("*.py"):
            if "__pycache__" not in path.parts:
                expected.add(f"{target}/{path.relative_to(REPO_ROOT / source).as_posix()}")
    assert expected - copied == set()
    assert "aicert/agent/oci/unpack.py" in copied
