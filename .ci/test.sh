#!/usr/bin/env bash
# The whole check, as CI runs it: set-up, lint, types, contract, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh

echo "== ruff"
.venv/bin/ruff check .
echo "== mypy"
.venv/bin/mypy
echo "== buf lint"
(cd protos && ../.venv/bin/buf lint)
echo "== buf breaking (against the contract as last released: protos/baseline/, see README \"Contract\")"
.venv/bin/buf breaking protos --against protos/baseline/conveyor-v1.binpb
echo "== pytest"
# pytest exits 5 when it collected no test: that fails here like any other error.
# Two workers (pytest-xdist), each taking whole files, the slowest first
# (tests/conftest.py SLOWEST_FIRST): most tests wait on processes they started.
.venv/bin/pytest -p no:cacheprovider -n 2 --dist loadfile --durations=25 "$@"
