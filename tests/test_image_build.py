"""System tests of the image build: two clean builds are bit-identical, and a failed
mkosi run leaves nothing that looks like a finished build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aicert.builder.cli import main
from aicert.builder.image import DEFAULT_CACHE, ImageRequest, build_image
from aicert.builder.reproducibility import check_reproducible
from aicert.verifier.errors import ToolError
from click.testing import CliRunner

pytestmark = pytest.mark.system


def test_two_clean_builds_are_identical(tmp_path: Path, built_image: Path) -> None:
    comparison, results = check_reproducible(
        "qemu",
        tmp_path,
        DEFAULT_CACHE / "packages",
        on_line=lambda _line: None,
        source=built_image.parent / "source",
    )
    assert comparison.reproducible, comparison.differences
    for result in results:
        print(f"clean build: {result.seconds:.0f} s")
    # The session's build (warm incremental cache, same sources) matches the clean ones.
    warm = json.loads((built_image / "recipe.json").read_text())["outputs"]
    assert warm["uki"]["sha256"] == results[0].recipe["outputs"]["uki"]["sha256"]
    assert warm["disk"]["sha256"] == results[0].recipe["outputs"]["disk"]["sha256"]


def test_failed_mkosi_run_leaves_no_output(tmp_path: Path) -> None:
    request = ImageRequest(
        output=tmp_path / "img",
        mirror="http://127.0.0.1:9/debian",
        package_cache=tmp_path / "packages",
        incremental_cache=None,
    )
    with pytest.raises(ToolError, match="failed with exit status") as info:
        build_image(request, on_line=lambda _line: None)
    assert "\n" not in info.value.message
    assert not (tmp_path / "img").exists()
    assert not list(tmp_path.glob("img.tmp-*"))


def test_measure_prints_the_recipe_prediction(built_image: Path) -> None:
    result = CliRunner().invoke(main, ["measure", str(built_image / "uki.efi"), "--json"])
    assert result.exit_code == 0, result.output
    recipe = json.loads((built_image / "recipe.json").read_text())
    assert json.loads(result.output) == recipe["expected_pcrs"]["pcrs"]
    assert recipe["inputs"]["profile"] == "qemu"
    assert recipe["outputs"]["uki"]["size"] <= 25_000_000
    assert recipe["outputs"]["disk"]["size"] <= 600 << 20
    assert set(recipe["inputs"]["packages"]) == {"image", "initrd", "tools"}
    assert "python3-tpm2-pytss" in recipe["inputs"]["packages"]["image"]
    assert "python3" not in recipe["inputs"]["packages"]["initrd"]
