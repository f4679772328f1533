#!/usr/bin/env bash
# Hostile and broken clients against Strand and Apache Kafka 4.x, one broker at a time, fresh
# for each attack (a measurement harness, not a test: it prints figures, it checks nothing).
#
# Each attack runs for $ABUSE_SECONDS while a well-behaved client (ApiVersions, and a produce
# followed by a fetch of that record, every 20 ms) is timed and the broker's resident set is
# sampled every 100 ms; see broker/examples/abuse.rs for each attack. Prints a markdown table:
# per attack and broker, starting and peak RSS (MiB), and p50/p99/max in ms of the client's
# ApiVersions and produce+fetch, and probes that failed.
#
#   bench/abuse.sh                                  # every attack, Strand then Kafka
#   ABUSE_ATTACKS="half-sent zstd-bomb" ABUSE_TARGETS=strand bench/abuse.sh
#
# Env: BROKER_BIN (default target/release/broker), ABUSE_BIN (default
# target/release/examples/abuse; both built when missing), ABUSE_SECONDS (20),
# ABUSE_ATTACKS (none half-sent pipelined-fetch parked-fetch zstd-bomb wide-topic greedy
# greedy-quota),
# ABUSE_TARGETS (strand kafka), ABUSE_OUT (logs; default $STRAND_CACHE/bench-runs/abuse-<time>),
# ports ABUSE_STRAND_PORT (25092, http +1) and ABUSE_KAFKA_PORT (26092, controller +1).
# Kafka runs with its defaults (kafka.sh: -Xmx1g), Strand with its own.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${STRAND_CACHE:-$HOME/.cache/strand}"
KAFKA_SH="$ROOT/e2e/kafka/kafka.sh"
BROKER_BIN="${BROKER_BIN:-$ROOT/target/release/broker}"
ABUSE_BIN="${ABUSE_BIN:-$ROOT/target/release/examples/abuse}"
SECONDS_PER="${ABUSE_SECONDS:-20}"
ATTACKS="${ABUSE_ATTACKS:-none half-sent pipelined-fetch parked-fetch zstd-bomb wide-topic greedy greedy-quota}"
TARGETS="${ABUSE_TARGETS:-strand kafka}"
STRAND_PORT="${ABUSE_STRAND_PORT:-25092}"
KAFKA_PORT="${ABUSE_KAFKA_PORT:-26092}"
OUT="${ABUSE_OUT:-$CACHE/bench-runs/abuse-$(date +%Y%m%d-%H%M%S)}"

log() { echo "abuse: $*" >&2; }
mkdir -p "$OUT"
if [ ! -x "$BROKER_BIN" ] || [ ! -x "$ABUSE_BIN" ]; then
    log "building the release broker and the abuse client"
    (cd "$ROOT" && cargo build --release -p broker --bin broker --example abuse)
fi

PID="" DIR=""
start() {
    local target="$1"
    DIR="$(mktemp -d "$OUT/$target.XXXX")"
    case "$target" in
        strand)
            "$BROKER_BIN" --data-dir "$DIR/data" --listen "127.0.0.1:$STRAND_PORT" \
                --http "127.0.0.1:$((STRAND_PORT + 1))" >"$DIR/broker.log" 2>&1 &
            PID=$!
            for _ in $(seq 100); do
                curl -sf "http://127.0.0.1:$((STRAND_PORT + 1))/readyz" >/dev/null && return 0
                sleep 0.1
            done
            log "Strand did not start (log $DIR/broker.log)"; return 1
            ;;
        kafka)
            "$KAFKA_SH" start "$DIR" "$KAFKA_PORT" >/dev/null
            PID="$(cat "$DIR/kafka.pid")"
            ;;
    esac
}
stop() {
    local target="$1"
    case "$target" in
        strand) kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true ;;
        kafka) "$KAFKA_SH" stop "$DIR" >/dev/null 2>&1 || true ;;
    esac
    PID=""
}
trap '[ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null; true' EXIT

RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
for attack in $ATTACKS; do
    for target in $TARGETS; do
        port=$STRAND_PORT; [ "$target" = kafka ] && port=$KAFKA_PORT
        log "$target: $attack for ${SECONDS_PER}s"
        start "$target"
        line="$("$ABUSE_BIN" "127.0.0.1:$port" "$PID" "$attack" "$SECONDS_PER" 2>>"$DIR/abuse.log" || true)"
        alive=yes; kill -0 "$PID" 2>/dev/null || alive=no
        stop "$target"
        echo "{\"target\":\"$target\",\"alive\":\"$alive\",\"result\":${line:-null}}" >>"$RESULTS"
    done
done

python3 - "$RESULTS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| attack | broker | RSS start / peak MiB | ApiVersions p50 / p99 / max ms | produce+fetch p50 / p99 / max ms | failed probes | alive after | attacker MiB/s written |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    res = r["result"] or {}
    a = res.get("api_versions_ms", ["-"] * 3)
    f = res.get("produce_fetch_ms", ["-"] * 3)
    print(f"| {res.get('attack', '?')} | {r['target']} | {res.get('rss_start_mib', '-')} / {res.get('rss_peak_mib', '-')} "
          f"| {a[0]} / {a[1]} / {a[2]} | {f[0]} / {f[1]} / {f[2]} | {res.get('probe_failures', '-')} | {r['alive']} "
          f"| {res.get('attacker_mib_per_s', '-') if res.get('attack', '').startswith('greedy') else '-'} |")
PY
log "logs and results.jsonl in $OUT"
