#!/usr/bin/env bash
# Consumer-group benchmark: Strand vs Apache Kafka 4.x, same machine, same run, same client
# (GroupBench from e2e/interop/java):
#   * rebalance time 3 -> 2 -> 3 members on a six-partition topic (a member leaves with
#     LeaveGroup, then a new one joins), median and max over BENCH_ROUNDS rounds;
#   * offset commit throughput: BENCH_COMMIT_THREADS clients doing commitSync of six
#     partitions in a loop for BENCH_COMMIT_SECONDS; commits/s and median latency.
# Both brokers run single-node on loopback with the offsets topic at one partition and no
# initial rebalance delay (e2e/kafka/kafka.sh's Kafka settings, mirrored for Strand).
# Prints a markdown table with the ratio Strand/Kafka.
#
# Env: BROKER_BIN (default <repo>/target/release/broker), BENCH_ROUNDS (5),
#      BENCH_COMMIT_SECONDS (10), BENCH_COMMIT_THREADS (4), BENCH_STRAND_PORT (23192),
#      BENCH_KAFKA_PORT (24192), BENCH_OUT, STRAND_CACHE, JAVA.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${STRAND_CACHE:-$HOME/.cache/strand}"
KAFKA_SH="$ROOT/e2e/kafka/kafka.sh"
JAVA_PROJECT="$ROOT/e2e/interop/java"
JAVA="${JAVA:-java}"
BROKER_BIN="${BROKER_BIN:-$ROOT/target/release/broker}"
ROUNDS="${BENCH_ROUNDS:-5}"
SECONDS_="${BENCH_COMMIT_SECONDS:-10}"
THREADS="${BENCH_COMMIT_THREADS:-4}"
STRAND_PORT="${BENCH_STRAND_PORT:-23192}"
KAFKA_PORT="${BENCH_KAFKA_PORT:-24192}"
OUT="${BENCH_OUT:-$CACHE/bench-runs/groups-$(date +%Y%m%d-%H%M%S)}"

die() { echo "bench/groups.sh: error: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

[[ -x "$BROKER_BIN" ]] || die "Strand binary $BROKER_BIN missing (cargo build --release -p broker)"
mkdir -p "$OUT"
"$KAFKA_SH" fetch >/dev/null
"$JAVA_PROJECT/run.sh" --build-only
TOOLS_CP="$JAVA_PROJECT/target/classes:$JAVA_PROJECT/target/lib/*"

STRAND_PID=""
KAFKA_DIR=""
cleanup() {
    [[ -n "$STRAND_PID" ]] && kill -TERM "$STRAND_PID" 2>/dev/null && wait "$STRAND_PID" 2>/dev/null
    [[ -n "$KAFKA_DIR" ]] && "$KAFKA_SH" stop "$KAFKA_DIR" >/dev/null 2>&1
    true
}
trap cleanup EXIT

bench() {
    "$JAVA" -Xmx512m -cp "$TOOLS_CP" -Dorg.slf4j.simpleLogger.defaultLogLevel=warn \
        strand.interop.GroupBench "$1" "$ROUNDS" "$SECONDS_" "$THREADS"
}

log "Strand ($BROKER_BIN) on 127.0.0.1:$STRAND_PORT"
"$BROKER_BIN" --data-dir "$OUT/strand/data" --listen "127.0.0.1:$STRAND_PORT" \
    --http "127.0.0.1:$((STRAND_PORT + 1))" --offsets-topic-partitions 1 \
    --group-initial-rebalance-delay-ms 0 >"$OUT/strand.log" 2>&1 &
STRAND_PID=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$STRAND_PORT") 2>/dev/null && break; sleep 0.1; done
bench "127.0.0.1:$STRAND_PORT" | tee "$OUT/strand.txt"
kill -TERM "$STRAND_PID"; wait "$STRAND_PID" || true; STRAND_PID=""

log "Apache Kafka on 127.0.0.1:$KAFKA_PORT"
KAFKA_DIR="$OUT/kafka"
BOOT="$("$KAFKA_SH" start "$KAFKA_DIR" "$KAFKA_PORT")"
bench "$BOOT" | tee "$OUT/kafka.txt"
"$KAFKA_SH" stop "$KAFKA_DIR" >/dev/null; KAFKA_DIR=""

value() { awk -v k="$2" '$1 == "RESULT" && $2 == k { print $3 }' "$1"; }
echo
echo "| metric | Strand | Kafka | Strand/Kafka |"
echo "| --- | --- | --- | --- |"
for k in rebalance_3to2_median_ms rebalance_3to2_max_ms rebalance_2to3_median_ms rebalance_2to3_max_ms commits_per_s commit_p50_ms; do
    s="$(value "$OUT/strand.txt" "$k")"; f="$(value "$OUT/kafka.txt" "$k")"
    r="$(awk -v s="$s" -v f="$f" 'BEGIN { if (f > 0) printf "%.2f", s / f; else print "-" }')"
    echo "| $k | $s | $f | $r |"
done
echo
echo "(ms: lower is better; commits/s: higher is better. Logs and raw results in $OUT)"
