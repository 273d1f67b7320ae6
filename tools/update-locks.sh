#!/usr/bin/env bash
# Re-resolves the lock files constraints/py311.txt and constraints/py312.txt: the exact version
# of every package (the transitive stack included) that `pip install ".[dev,ray]"` picks today for
# that Python. make, CI and the Dockerfile install with `-c constraints/pyXY.txt`.
# Run from the repository root after changing dependencies in pyproject.toml:
#   bash tools/update-locks.sh            # both, with python3.11 and python3.12 on PATH
set -euo pipefail
cd "$(dirname "$0")/.."
for version in 3.11 3.12; do
    python="python${version}"
    command -v "$python" >/dev/null || { echo "skipping $version: no $python on PATH"; continue; }
    tmp=$(mktemp -d)
    "$python" -m venv "$tmp/venv"
    "$tmp/venv/bin/pip" install -q --upgrade "pip>=24"
    "$tmp/venv/bin/pip" install -q --dry-run --ignore-installed --report "$tmp/report.json" ".[dev,ray]" \
        2> >(grep -v "^WARNING: Location" >&2)
    out="constraints/py${version/./}.txt"
    "$tmp/venv/bin/python" - "$tmp/report.json" "$version" >"$out" <<'PY'
import json
import sys

report = json.load(open(sys.argv[1]))
pins = sorted(
    (item["metadata"]["name"].lower(), item["metadata"]["version"])
    for item in report["install"]
    if item["metadata"]["name"].lower() != "terralens"
)
print(f"# Lock for Python {sys.argv[2]}: written by tools/update-locks.sh from pip's resolution")
print("# of `.[dev,ray]`. Used as a constraints file (-c) by make, CI and the Dockerfile.")
for name, version in pins:
    print(f"{name}=={version}")
PY
    rm -rf "$tmp"
    echo "wrote $out ($(grep -vc '^#' "$out") packages)"
done
