#!/usr/bin/env bash
# Create (or reuse) the Python venv for the kafka-python interop tests.
#
#   e2e/interop/python/setup.sh
#
# The venv lives at $CACHE/venv-python-interop, CACHE="${STRAND_CACHE:-$HOME/.cache/strand}".
# Packages come from requirements.txt beside this script (all pinned). The venv is
# (re)populated only when requirements.txt changes: a stamp file inside the venv
# records the sha256 of the requirements it was built from. Prints the venv path
# as the last line of stdout.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${STRAND_CACHE:-$HOME/.cache/strand}"
VENV="$CACHE/venv-python-interop"
REQS="$HERE/requirements.txt"
STAMP="$VENV/.strand-requirements.sha256"
PYTHON="${PYTHON:-python3}"

die() { echo "setup.sh: error: $*" >&2; exit 1; }
log() { echo "setup.sh: $*" >&2; }

command -v "$PYTHON" >/dev/null 2>&1 || die "'$PYTHON' not found; install Python 3.8+ (e.g. apt-get install python3 python3-venv)"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 8) else 1)' \
    || die "$PYTHON is $("$PYTHON" -V 2>&1); kafka-python 3.x needs Python >= 3.8"
[ -f "$REQS" ] || die "missing $REQS"

want="$( (sha256sum "$REQS" 2>/dev/null || shasum -a 256 "$REQS") | cut -d' ' -f1)"
have=""
[ -f "$STAMP" ] && have="$(cat "$STAMP")"

if [ -x "$VENV/bin/python" ] && [ "$want" = "$have" ] \
    && "$VENV/bin/python" -c 'import kafka, confluent_kafka, snappy, lz4.frame, zstandard, pytest' >/dev/null 2>&1; then
    log "reusing $VENV (requirements unchanged)"
    echo "$VENV"
    exit 0
fi

mkdir -p "$CACHE"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "creating venv at $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" \
        || die "could not create a venv with '$PYTHON -m venv' (on Debian/Ubuntu: apt-get install python3-venv)"
fi

# Invalidate the stamp first so an interrupted install is redone next time.
rm -f "$STAMP"
log "installing $(grep -cvE '^\s*(#|$)' "$REQS") pinned packages into $VENV"
"$VENV/bin/python" -m pip install --disable-pip-version-check --quiet -r "$REQS" >&2 \
    || die "pip install -r $REQS failed"

# Sanity check: every codec kafka-python needs must be importable and usable.
"$VENV/bin/python" - >&2 <<'EOF' || die "codec self-check failed (see above)"
from kafka import codec
missing = [name for name, ok in (
    ("snappy", codec.has_snappy()), ("lz4", codec.has_lz4()), ("zstd", codec.has_zstd()),
) if not ok]
if missing:
    raise SystemExit("kafka-python cannot use codecs: %s" % ", ".join(missing))
data = b"strand interop " * 64
assert codec.gzip_decode(codec.gzip_encode(data)) == data
assert codec.snappy_decode(codec.snappy_encode(data)) == data
assert codec.lz4_decode(codec.lz4_encode(data)) == data
assert codec.zstd_decode(codec.zstd_encode(data)) == data
import kafka
print("setup.sh: kafka-python %s with gzip/snappy/lz4/zstd OK" % kafka.__version__)
import confluent_kafka
print("setup.sh: confluent-kafka %s (librdkafka %s)" % (confluent_kafka.__version__, confluent_kafka.libversion()[0]))
EOF

echo "$want" > "$STAMP"
echo "$VENV"
