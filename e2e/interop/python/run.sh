#!/usr/bin/env bash
# Run the kafka-python interop tests against a running broker.
#
#   e2e/interop/python/run.sh [BOOTSTRAP] [extra pytest args...]
#
# Runs test_interop.py (kafka-python), or the test files named among the extra args, e.g.
#   run.sh BOOTSTRAP test_admin.py                  confluent-kafka AdminClient tests
#   run.sh BOOTSTRAP test_interop.py test_admin.py  both
# BOOTSTRAP (host:port, or a comma-separated list) defaults to $BOOTSTRAP, then 127.0.0.1:9092. Sets up the
# venv (setup.sh, cached under ${STRAND_CACHE:-$HOME/.cache/strand}) and exits
# with pytest's status: 0 all passed, 1 some failed, 2+ usage/connection/internal
# errors (2 also when nothing accepts connections at BOOTSTRAP).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [ $# -ge 1 ] && [ "${1#-}" = "$1" ]; then
    BOOTSTRAP="$1"
    shift
fi
BOOTSTRAP="${BOOTSTRAP:-127.0.0.1:9092}"
export BOOTSTRAP
export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ in the source tree

case "$BOOTSTRAP" in
    *:*) ;;
    *) echo "run.sh: error: BOOTSTRAP must be host:port, got '$BOOTSTRAP'" >&2; exit 2 ;;
esac

VENV="$("$HERE/setup.sh" | tail -n 1)"
[ -x "$VENV/bin/python" ] || { echo "run.sh: error: setup.sh did not produce a venv (got '$VENV')" >&2; exit 2; }

# Fail fast with a clear message when nothing listens (kafka-python would
# otherwise spend ~30s per test retrying the bootstrap connection).
"$VENV/bin/python" -c '
import socket, sys, time
addr = sys.argv[1]
# A bootstrap list (a,b,c): the first address must answer.
host, _, port = addr.split(",")[0].rpartition(":")
deadline = time.monotonic() + 10
while True:
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=2).close()
        break
    except OSError as e:
        if time.monotonic() > deadline:
            sys.exit("run.sh: error: no broker accepting connections at %s (%s)" % (addr, e))
        time.sleep(0.5)
' "$BOOTSTRAP" || exit 2

echo "run.sh: kafka-python interop against $BOOTSTRAP" >&2
cd "$HERE"
# -p no:cacheprovider: leave no .pytest_cache in the source tree.
# kafka-python 3.0 triggers stdlib importlib.resources DeprecationWarnings (noise).
files=(test_interop.py)
for arg in "$@"; do
    case "$arg" in
        *.py | *.py::*) files=() ;; # test files given: run those
    esac
done
exec "$VENV/bin/python" -m pytest -v -p no:cacheprovider -rfE \
    -W "ignore::DeprecationWarning" "$@" "${files[@]}"
