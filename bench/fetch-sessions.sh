#!/usr/bin/env bash
# Fetch sessions (KIP-227) benchmark: broker CPU of one Java consumer on a topic with many
# partitions, with incremental fetch sessions on (the default) and off
# (max.incremental.fetch.session.cache.slots=0), on Strand and on Apache Kafka.
#
# Per system and mode, on a fresh single broker (loopback):
#   1. TopicCommand creates a topic with $FS_PARTITIONS partitions (RF 1);
#   2. ProducerPerformance fills it ($FS_MB MB plus 10%, 1 KiB records, acks=all);
#   3. strand.bench.FetchSessionsBench (bench/java) assign()s every partition, reads $FS_MB MB
#      from the beginning (broker CPU per MB read), then seeks to the end and polls
#      $FS_IDLE_S seconds with nothing to read (broker CPU per second: where sessions matter
#      most, as each fetch names every partition without them).
# Broker CPU = utime+stime of the broker process (/proc/PID/stat), sampled by the client
# around each phase. Prints a markdown table (Strand, Kafka, Strand/Kafka) and every command;
# logs and results.md go to $STRAND_CACHE/bench-runs/fetch-sessions-<time>/ (or $FS_OUT).
#
# Env (all optional):
#   BROKER_BIN      Strand binary (default <repo>/target/release/broker)
#   FS_PARTITIONS   partitions of the topic (default 1000)
#   FS_MB           MB the consumer reads (default 100)
#   FS_IDLE_S       seconds of idle polling (default 20)
#   FS_TARGETS      systems, in order (default "strand kafka")
#   FS_MODES        session modes, in order (default "on off")
#   FS_STRAND_PORT / FS_STRAND_HTTP_PORT / FS_KAFKA_PORT   default 25092 / 25080 / 26092
#   FS_OUT          output directory
#   STRAND_CACHE, KAFKA_VERSION, JAVA: as in e2e/kafka/kafka.sh
# Exit status: 0 when every run completed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${STRAND_CACHE:-$HOME/.cache/strand}"
KAFKA_SH="$ROOT/e2e/kafka/kafka.sh"
INTEROP_JAVA="$ROOT/e2e/interop/java"
BENCH_JAVA="$ROOT/bench/java"
JAVA="${JAVA:-java}"

BROKER_BIN="${BROKER_BIN:-$ROOT/target/release/broker}"
PARTITIONS="${FS_PARTITIONS:-1000}"
MB="${FS_MB:-100}"
IDLE_S="${FS_IDLE_S:-20}"
TARGETS="${FS_TARGETS:-strand kafka}"
MODES="${FS_MODES:-on off}"
STRAND_PORT="${FS_STRAND_PORT:-25092}"
STRAND_HTTP_PORT="${FS_STRAND_HTTP_PORT:-25080}"
KAFKA_PORT="${FS_KAFKA_PORT:-26092}"
OUT="${FS_OUT:-$CACHE/bench-runs/fetch-sessions-$(date +%Y%m%d-%H%M%S)}"
RECORD_SIZE=1024
RECORDS=$((MB * 1024 * 1024 / RECORD_SIZE * 11 / 10))
CLIENT_JVM=(-Xmx512m -XX:+UseG1GC)
TICKS="$(getconf CLK_TCK)"

die() { echo "bench/fetch-sessions.sh: error: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }
show_cmd() { printf '+'; printf ' %q' "$@"; printf '\n'; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

command -v "$JAVA" >/dev/null || die "java not found (need Java 17+)"
if [[ " $TARGETS " == *" strand "* && ! -x "$BROKER_BIN" ]]; then
    die "Strand broker binary not found: $BROKER_BIN (cargo build --release -p broker, or set BROKER_BIN)"
fi
for p in "$STRAND_PORT" "$STRAND_HTTP_PORT" "$KAFKA_PORT" "$((KAFKA_PORT + 1))"; do
    port_open "$p" && die "port $p is already in use on 127.0.0.1 (set FS_*_PORT)"
done
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
log "output, logs and results in $OUT"

"$KAFKA_SH" fetch >/dev/null
KAFKA_CP="$("$KAFKA_SH" classpath)"
"$INTEROP_JAVA/run.sh" --build-only
INTEROP_CP="$INTEROP_JAVA/target/classes:$INTEROP_JAVA/target/lib/*"

build_bench_java() {
    local stamp="$BENCH_JAVA/target/.build-stamp"
    if [[ -f "$stamp" && -d "$BENCH_JAVA/target/lib" && -z "$(find "$BENCH_JAVA/src" "$BENCH_JAVA/pom.xml" -newer "$stamp" | head -n1)" ]]; then
        return 0
    fi
    command -v mvn >/dev/null || die "mvn not found (needed to build bench/java)"
    mkdir -p "$BENCH_JAVA/target"
    local args=(-B -q -Dstyle.color=never -Dmaven.repo.local="$CACHE/m2" -f "$BENCH_JAVA/pom.xml" package -DskipTests)
    if ! mvn -o "${args[@]}" >"$BENCH_JAVA/target/mvn.log" 2>&1; then
        mvn "${args[@]}" >"$BENCH_JAVA/target/mvn.log" 2>&1 || { cat "$BENCH_JAVA/target/mvn.log" >&2; die "bench/java build failed"; }
    fi
    touch "$stamp"
}
build_bench_java
BENCH_CP="$BENCH_JAVA/target/classes:$BENCH_JAVA/target/lib/*"

cat >"$OUT/log4j2-tools.properties" <<'EOF'
status = error
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
EOF

STRAND_PID=""
KAFKA_DIR=""

start_strand() { # DIR MODE
    local dir="$1" mode="$2" slots=1000 i
    [[ "$mode" == off ]] && slots=0
    mkdir -p "$dir"
    local cmd=("$BROKER_BIN" --data-dir "$dir/data" --listen "127.0.0.1:$STRAND_PORT"
        --http "127.0.0.1:$STRAND_HTTP_PORT" --max-incremental-fetch-session-cache-slots "$slots")
    show_cmd "${cmd[@]}"
    "${cmd[@]}" >"$dir/broker.log" 2>&1 &
    STRAND_PID=$!
    for ((i = 0; i < 300; i++)); do
        kill -0 "$STRAND_PID" 2>/dev/null || { tail -n 20 "$dir/broker.log" >&2; STRAND_PID=""; return 1; }
        port_open "$STRAND_PORT" && return 0
        sleep 0.1
    done
    return 1
}

stop_strand() {
    [[ -n "$STRAND_PID" ]] || return 0
    kill -TERM "$STRAND_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 300; i++)); do
        kill -0 "$STRAND_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$STRAND_PID" 2>/dev/null || true
    wait "$STRAND_PID" 2>/dev/null || true
    STRAND_PID=""
}

start_kafka() { # DIR MODE
    KAFKA_DIR="$1"
    local props=""
    [[ "$2" == off ]] && props="max.incremental.fetch.session.cache.slots=0"
    echo "+ KAFKA_EXTRA_PROPS=\"$props\" $KAFKA_SH start $KAFKA_DIR $KAFKA_PORT"
    KAFKA_EXTRA_PROPS="$props" "$KAFKA_SH" start "$KAFKA_DIR" "$KAFKA_PORT" >/dev/null
}

stop_kafka() {
    [[ -n "$KAFKA_DIR" ]] || return 0
    "$KAFKA_SH" stop "$KAFKA_DIR" 2>/dev/null || true
    KAFKA_DIR=""
}

cleanup() { stop_strand; stop_kafka; }
trap cleanup EXIT
trap 'exit 130' INT TERM

declare -A R # R[target,mode,metric]
FAILED=0

run_one() { # TARGET MODE DIR
    local t="$1" mode="$2" dir="$3" bootstrap pid topic line
    case "$t" in
        strand) bootstrap="127.0.0.1:$STRAND_PORT"; pid="$STRAND_PID" ;;
        kafka) bootstrap="127.0.0.1:$KAFKA_PORT"; pid="$(cat "$KAFKA_DIR/kafka.pid")" ;;
    esac
    topic="sessions-$(date +%s)"
    local create=("$JAVA" "${CLIENT_JVM[@]}" -cp "$KAFKA_CP" -Dlog4j2.configurationFile="$OUT/log4j2-tools.properties"
        org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" --create --topic "$topic"
        --partitions "$PARTITIONS" --replication-factor 1)
    show_cmd "${create[@]}"
    timeout 300 "${create[@]}" >"$dir/create-topic.log" 2>&1 || { cat "$dir/create-topic.log" >&2; return 1; }
    local ready=("$JAVA" "${CLIENT_JVM[@]}" -cp "$INTEROP_CP" strand.interop.TopicReady "$bootstrap" "$topic" "$PARTITIONS" 120)
    show_cmd "${ready[@]}"
    timeout 300 "${ready[@]}" >>"$dir/create-topic.log" 2>&1 || { cat "$dir/create-topic.log" >&2; return 1; }

    local produce=("$JAVA" "${CLIENT_JVM[@]}" -cp "$KAFKA_CP" -Dlog4j2.configurationFile="$OUT/log4j2-tools.properties"
        org.apache.kafka.tools.ProducerPerformance --topic "$topic" --num-records "$RECORDS"
        --record-size "$RECORD_SIZE" --throughput -1 --bootstrap-server "$bootstrap"
        --command-property acks=all)
    show_cmd "${produce[@]}"
    timeout 900 "${produce[@]}" >"$dir/producer.log" 2>&1 || { tail -n 20 "$dir/producer.log" >&2; return 1; }
    line="$(grep -E 'records sent' "$dir/producer.log" | tail -n1)"
    echo "  $line"
    [[ "$(awk '{print $1}' <<<"$line")" == "$RECORDS" ]] || { log "$t: not every record was acknowledged"; return 1; }

    local consume=("$JAVA" "${CLIENT_JVM[@]}" -cp "$BENCH_CP" -Dorg.slf4j.simpleLogger.defaultLogLevel=warn
        strand.bench.FetchSessionsBench "$bootstrap" "$topic" "$MB" "$IDLE_S" "$pid" "$TICKS")
    show_cmd "${consume[@]}"
    timeout 900 "${consume[@]}" >"$dir/consumer.log" 2>&1 || { tail -n 20 "$dir/consumer.log" >&2; return 1; }
    local read idle
    read="$(grep '^read ' "$dir/consumer.log")"
    idle="$(grep '^idle ' "$dir/consumer.log")"
    echo "  $read"
    echo "  $idle"
    local field
    field() { sed -E "s/.* $1=([0-9.]+).*/\\1/" <<<"$2"; }
    local bytes secs cpu isecs icpu
    bytes="$(field bytes "$read")"; secs="$(field seconds "$read")"; cpu="$(field broker_cpu_s "$read")"
    isecs="$(field seconds "$idle")"; icpu="$(field broker_cpu_s "$idle")"
    R[$t,$mode,mbps]="$(awk -v b="$bytes" -v s="$secs" 'BEGIN {printf "%.1f", b / 1048576 / s}')"
    R[$t,$mode,cpu_mb]="$(awk -v b="$bytes" -v c="$cpu" 'BEGIN {printf "%.4f", c / (b / 1048576)}')"
    R[$t,$mode,idle]="$(awk -v s="$isecs" -v c="$icpu" 'BEGIN {printf "%.4f", c / s}')"
    if [[ "$t" == strand ]]; then
        local inc
        inc="$(curl -fsS "http://127.0.0.1:$STRAND_HTTP_PORT/metrics" | awk '$1 == "strand_incremental_fetches_total" {print $2}')"
        echo "  Strand incremental fetches served: $inc"
        R[$t,$mode,inc]="$inc"
        if [[ "$mode" == on && "${inc:-0}" == 0 ]]; then
            log "strand: sessions on, but no incremental fetch was served"
            return 1
        fi
    fi
}

echo "## Fetch sessions benchmark"
echo
echo "command: FS_PARTITIONS=$PARTITIONS FS_MB=$MB FS_IDLE_S=$IDLE_S FS_TARGETS=\"$TARGETS\"" \
    "FS_MODES=\"$MODES\" BROKER_BIN=$BROKER_BIN $0"
echo "machine: $(nproc) cores, $("$JAVA" -version 2>&1 | head -n1), Apache Kafka $("$KAFKA_SH" version)"
read -r load1 _ </proc/loadavg
echo "load average before: $load1"
echo

for mode in $MODES; do
    for t in $TARGETS; do
        dir="$OUT/$t-sessions-$mode"
        mkdir -p "$dir"
        echo "### $t, sessions $mode"
        ok=1
        case "$t" in
            strand) start_strand "$dir" "$mode" || ok=0 ;;
            kafka) start_kafka "$dir" "$mode" || ok=0 ;;
        esac
        if [[ $ok == 1 ]] && run_one "$t" "$mode" "$dir"; then :; else R[$t,$mode,fail]=1; FAILED=1; fi
        case "$t" in strand) stop_strand ;; kafka) stop_kafka ;; esac
        rm -rf "$dir/data"
        read -r load1 _ </proc/loadavg
        echo "  load average after: $load1"
        echo
    done
done

cell() {
    local v="${R[$1,$2,$3]:-}"
    if [[ -n "$v" ]]; then echo "$v"
    elif [[ -n "${R[$1,$2,fail]:-}" ]]; then echo "FAIL"
    else echo "-"; fi
}
{
    echo "| metric ($PARTITIONS partitions, one assign() consumer) | sessions | Strand | Kafka | Strand/Kafka |"
    echo "|---|---|---:|---:|---:|"
    for m in cpu_mb mbps idle inc; do
        for mode in $MODES; do
            case "$m" in
                cpu_mb) name="broker CPU s per MB read ($MB MB, lower is better)" ;;
                mbps) name="consumer MB/s" ;;
                idle) name="broker CPU s per s, consumer caught up (${IDLE_S} s, lower is better)" ;;
                inc) name="incremental fetches served (Strand metric)" ;;
            esac
            a="$(cell strand "$mode" "$m")"; b="$(cell kafka "$mode" "$m")"
            ratio="$(awk -v a="$a" -v b="$b" 'BEGIN {
                if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b + 0 > 0) printf "%.2f", a / b; else print "-" }')"
            echo "| $name | $mode | $a | $b | $ratio |"
        done
    done
} >"$OUT/results.md"

echo "## Results"
echo
cat "$OUT/results.md"
echo
echo "results: $OUT/results.md, logs: $OUT/<system>-sessions-<mode>/"
[[ $FAILED == 0 ]] || { echo "bench/fetch-sessions.sh: some runs FAILED" >&2; exit 1; }
