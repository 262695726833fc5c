#!/usr/bin/env bash
# mypy --strict over the trust core and the shared layer, under the names they are
# installed as. aicert.verifier lives in the folder verifier/ (pyproject's package-dir),
# which mypy cannot map, so a tree of links gives it the installed layout.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mypy=${MYPY:-$root/.venv/bin/mypy}
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir "$tree/aicert"
ln -s "$root"/aicert/*.py "$tree/aicert/"
ln -s "$root/verifier" "$tree/aicert/verifier"
cd "$tree"
"$mypy" --config-file "$root/pyproject.toml" --cache-dir "$root/.mypy_cache" -p aicert
