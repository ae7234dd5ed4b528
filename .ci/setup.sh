#!/usr/bin/env bash
# Installs what Conveyor needs on a Debian machine (as root) and the project into .venv.
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || need_apt+=(redis-sentinel)   # tests/test_sentinel.py: failover
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v tmux >/dev/null 2>&1 || need_apt+=(tmux)   # tests/test_top.py drives `conveyor top` in it
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need_apt[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need_apt[@]}" fonts-liberation
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.conveyor-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ examples/pyproject.toml -nt "$stamp" ] \
   || [ clients/python/pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # The Python SDK and the conveyor.v1 stubs (conveyor-client, which the service depends
  # on) first. Compat mode puts clients/python on sys.path: `conveyor_client` from the
  # work tree, and no second `conveyor` package shadowing the service's.
  .venv/bin/python -m pip install -q -e ./clients/python --config-settings editable_mode=compat
  .venv/bin/python -m pip install -q -e '.[dev]'
  # The example job kinds, installed as a user installs theirs: executors find them
  # through their `conveyor.kinds` entry points.
  .venv/bin/python -m pip install -q --no-build-isolation -e examples/
  touch "$stamp"
fi

# The TypeScript SDK's packages (clients/ts), from its committed package-lock.json,
# when Node is here: its tests and protos/generate.py's TypeScript need them.
if command -v npm >/dev/null 2>&1; then
  ts_stamp=clients/ts/node_modules/.conveyor-installed
  if [ ! -f "$ts_stamp" ] || [ clients/ts/package-lock.json -nt "$ts_stamp" ]; then
    (cd clients/ts && npm ci --no-audit --no-fund --loglevel=error)
    # The SDK's own dependencies, at their locked versions, with their registry metadata
    # in the npm cache: tests/test_ts_sdk.py installs the packed SDK --offline (no test
    # reaches beyond loopback), and `npm ci` alone caches the tarballs, not always that.
    (cd clients/ts && node -e '
      const p = require("./package.json"), l = require("./package-lock.json");
      for (const d of Object.keys(p.dependencies || {})) console.log(d + "@" + l.packages["node_modules/" + d].version);
    ' | xargs npm cache add --loglevel=error)
    touch "$ts_stamp"
  fi
fi
