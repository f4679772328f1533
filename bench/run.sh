#!/usr/bin/env bash
# Strand vs Apache Kafka throughput benchmark (a measurement harness, not a test).
#
# For each broker and each partition count it starts the broker fresh on
# loopback, creates the topic, then runs:
#   * Kafka's own ProducerPerformance (kafka-tools): 1 KiB records, acks=all,
#     unthrottled -> records/s, MB/s, p50/p99 latency
#   * ConsumerPerf (e2e/interop/java): assign()+seekToBeginning read of the
#     whole topic -> consumer MB/s (Kafka's ConsumerPerformance needs consumer
#     groups, which Strand does not have yet)
#   * broker peak RSS (VmHWM from /proc/PID/status) and broker CPU seconds
# and prints a markdown table: Strand, Kafka and the ratio Strand/Kafka.
#
# Nothing is built in Rust here: the Strand binary comes from $BROKER_BIN.
#
# Env (all optional):
#   BROKER_BIN          Strand binary (default <repo>/target/release/broker)
#   BENCH_RECORDS       records per producer run (default 1000000 = ~1 GiB;
#                       the whole bench then takes a few minutes on 2 cores)
#   BENCH_RECORD_SIZE   bytes per record (default 1024)
#   BENCH_PARTITIONS    partition counts to run (default "1 6")
#   BENCH_TARGETS       brokers to run, in order (default "strand kafka")
#   BENCH_MODE          sequential (default): one broker up at a time, fresh per run;
#                       side-by-side: both started once and left up for all runs
#                       (peak RSS is then the peak since that start)
#   BENCH_STRAND_PORT / BENCH_STRAND_HTTP_PORT   default 23092 / 23080
#   BENCH_KAFKA_PORT    default 24092 (controller on +1); defaults sit below
#                       the ephemeral range (32768+), where client sockets could hold them
#   BENCH_STEP_TIMEOUT  seconds per producer/consumer run (default 900)
#   BENCH_OUT           output dir for logs and results (default $CACHE/bench-runs/<time>)
#   BENCH_KEEP_DATA=1   keep broker data dirs after each run
#   STRAND_CACHE, KAFKA_VERSION, JAVA: as in e2e/kafka/kafka.sh
# Exit status: 0 when every requested broker ran every step; 1 otherwise
# (including a missing Strand binary while "strand" is in BENCH_TARGETS).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${STRAND_CACHE:-$HOME/.cache/strand}"
KAFKA_SH="$ROOT/e2e/kafka/kafka.sh"
JAVA_PROJECT="$ROOT/e2e/interop/java"
JAVA="${JAVA:-java}"

BROKER_BIN="${BROKER_BIN:-$ROOT/target/release/broker}"
N="${BENCH_RECORDS:-1000000}"
RECORD_SIZE="${BENCH_RECORD_SIZE:-1024}"
PARTITIONS="${BENCH_PARTITIONS:-1 6}"
TARGETS="${BENCH_TARGETS:-strand kafka}"
MODE="${BENCH_MODE:-sequential}"
STRAND_PORT="${BENCH_STRAND_PORT:-23092}"
STRAND_HTTP_PORT="${BENCH_STRAND_HTTP_PORT:-23080}"
KAFKA_PORT="${BENCH_KAFKA_PORT:-24092}"
STEP_TIMEOUT="${BENCH_STEP_TIMEOUT:-900}"
OUT="${BENCH_OUT:-$CACHE/bench-runs/$(date +%Y%m%d-%H%M%S)}"
# Same client heap as Kafka's kafka-producer-perf-test.sh.
CLIENT_JVM=(-Xmx512m -XX:+UseG1GC)

die() { echo "bench/run.sh: error: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

# ------------------------------------------------------------------ checks

[[ "$N" =~ ^[0-9]+$ && "$N" -gt 0 ]] || die "BENCH_RECORDS must be a positive integer, got '$N'"
[[ "$MODE" == sequential || "$MODE" == side-by-side ]] || die "BENCH_MODE must be sequential or side-by-side"
command -v "$JAVA" >/dev/null || die "java not found (need Java 17+)"
for t in $TARGETS; do
    [[ "$t" == strand || "$t" == kafka ]] || die "unknown target '$t' in BENCH_TARGETS (use strand and/or kafka)"
done

STRAND_MISSING=0
if [[ " $TARGETS " == *" strand "* && ! -x "$BROKER_BIN" ]]; then
    cat >&2 <<EOF
bench/run.sh: ERROR: Strand broker binary not found or not executable: $BROKER_BIN
  Build it first (cargo build --release -p broker) or point BROKER_BIN at it.
  Continuing with Kafka only; the Strand column will read "missing" and the exit status will be 1.
EOF
    STRAND_MISSING=1
    TARGETS="$(tr ' ' '\n' <<<"$TARGETS" | grep -vx strand | tr '\n' ' ')"
fi
[[ -n "${TARGETS// /}" ]] || die "nothing to benchmark"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for t in $TARGETS; do
    case "$t" in
        strand) ports="$STRAND_PORT $STRAND_HTTP_PORT" ;;
        kafka) ports="$KAFKA_PORT $((KAFKA_PORT + 1))" ;;
    esac
    for p in $ports; do
        port_open "$p" && die "port $p is already in use on 127.0.0.1 (set BENCH_*_PORT to free ports)"
    done
done

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
log "output, logs and results in $OUT"

# Kafka jars (broker + ProducerPerformance) and our Java tools, both cached.
"$KAFKA_SH" fetch >/dev/null
KAFKA_CP="$("$KAFKA_SH" classpath)"
"$JAVA_PROJECT/run.sh" --build-only
TOOLS_CP="$JAVA_PROJECT/target/classes:$JAVA_PROJECT/target/lib/*"

# Client tools log WARN+ to stderr only, so stdout has just the results.
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

# ----------------------------------------------------------- broker control

STRAND_PID=""
KAFKA_DIR=""

start_strand() {
    local dir="$1"
    mkdir -p "$dir"
    "$BROKER_BIN" --data-dir "$dir/data" --listen "127.0.0.1:$STRAND_PORT" \
        --http "127.0.0.1:$STRAND_HTTP_PORT" >"$dir/broker.log" 2>&1 &
    STRAND_PID=$!
    local i
    for ((i = 0; i < 300; i++)); do
        if ! kill -0 "$STRAND_PID" 2>/dev/null; then
            tail -n 20 "$dir/broker.log" >&2
            STRAND_PID=""
            log "Strand exited during startup (log: $dir/broker.log)"
            return 1
        fi
        port_open "$STRAND_PORT" && return 0
        sleep 0.1
    done
    log "Strand did not open port $STRAND_PORT within 30s (log: $dir/broker.log)"
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
    if kill -0 "$STRAND_PID" 2>/dev/null; then
        log "Strand (pid $STRAND_PID) ignored SIGTERM for 30s; killing"
        kill -KILL "$STRAND_PID" 2>/dev/null || true
    fi
    wait "$STRAND_PID" 2>/dev/null || true
    STRAND_PID=""
}

start_kafka() {
    KAFKA_DIR="$1"
    "$KAFKA_SH" start "$KAFKA_DIR" "$KAFKA_PORT" >/dev/null
}

stop_kafka() {
    [[ -n "$KAFKA_DIR" ]] || return 0
    "$KAFKA_SH" stop "$KAFKA_DIR" 2>/dev/null || true
    KAFKA_DIR=""
}

broker_pid() {
    case "$1" in
        strand) echo "$STRAND_PID" ;;
        kafka) cat "$KAFKA_DIR/kafka.pid" ;;
    esac
}

bootstrap_of() {
    case "$1" in
        strand) echo "127.0.0.1:$STRAND_PORT" ;;
        kafka) echo "127.0.0.1:$KAFKA_PORT" ;;
    esac
}

start_target() {
    local t="$1" dir="$2"
    case "$t" in
        strand) start_strand "$dir" ;;
        kafka) start_kafka "$dir" ;;
    esac
}

stop_target() {
    case "$1" in
        strand) stop_strand ;;
        kafka) stop_kafka ;;
    esac
}

cleanup() {
    stop_strand
    stop_kafka
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Peak RSS (VmHWM) in MiB and CPU seconds (utime+stime) of a live process.
peak_rss_mib() { awk '/^VmHWM:/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
cpu_seconds() {
    # Fields 14/15 of /proc/PID/stat, after the ")" that ends the command name.
    local ticks; ticks="$(getconf CLK_TCK)"
    sed 's/.*) //' "/proc/$1/stat" | awk -v t="$ticks" '{printf "%.2f", ($12 + $13) / t}'
}

# ------------------------------------------------------------------ runs

declare -A R      # R[target,partitions,metric] = value
FAILED=0

show_cmd() { printf '+'; printf ' %q' "$@"; printf '\n'; }

# run_one TARGET PARTITIONS DIR: topic creation, producer, consumer, on a running broker.
run_one() {
    local t="$1" p="$2" dir="$3" bootstrap pid topic cpu0 line
    bootstrap="$(bootstrap_of "$t")"
    pid="$(broker_pid "$t")"
    topic="bench-p$p-$(date +%s)"
    local key="$t,$p"
    cpu0="$(cpu_seconds "$pid")"

    local create=("$JAVA" "${CLIENT_JVM[@]}" -cp "$KAFKA_CP" -Dlog4j2.configurationFile="$OUT/log4j2-tools.properties"
        org.apache.kafka.tools.TopicCommand --bootstrap-server "$bootstrap" --create --topic "$topic"
        --partitions "$p" --replication-factor 1)
    show_cmd "${create[@]}"
    if ! timeout 120 "${create[@]}" >"$dir/create-topic.log" 2>&1; then
        cat "$dir/create-topic.log" >&2
        log "$t: creating topic $topic failed"
        return 1
    fi

    # Barrier: real Kafka can list a new topic a moment before its partitions
    # take writes (see TopicReady.java); wait until all answer ListOffsets.
    local ready=("$JAVA" "${CLIENT_JVM[@]}" -cp "$TOOLS_CP" strand.interop.TopicReady "$bootstrap" "$topic" "$p" 60)
    show_cmd "${ready[@]}"
    if ! timeout 120 "${ready[@]}" >>"$dir/create-topic.log" 2>&1; then
        cat "$dir/create-topic.log" >&2
        log "$t: topic $topic not ready"
        return 1
    fi

    local produce=("$JAVA" "${CLIENT_JVM[@]}" -cp "$KAFKA_CP" -Dlog4j2.configurationFile="$OUT/log4j2-tools.properties"
        org.apache.kafka.tools.ProducerPerformance --topic "$topic" --num-records "$N"
        --record-size "$RECORD_SIZE" --throughput -1 --bootstrap-server "$bootstrap"
        --command-property acks=all)
    show_cmd "${produce[@]}"
    if ! timeout --kill-after=10 "$STEP_TIMEOUT" "${produce[@]}" >"$dir/producer.log" 2>&1; then
        tail -n 20 "$dir/producer.log" >&2
        log "$t: ProducerPerformance failed or timed out (log: $dir/producer.log)"
        return 1
    fi
    # Final summary line, e.g.:
    # 1000000 records sent, 44875.2 records/sec (43.82 MB/sec), 635.41 ms avg latency,
    #   2302.00 ms max latency, 514 ms 50th, 1878 ms 95th, 2184 ms 99th, 2252 ms 99.9th.
    line="$(grep -E 'records sent.* ms 50th' "$dir/producer.log" | tail -n1 || true)"
    [[ -n "$line" ]] || { tail -n 20 "$dir/producer.log" >&2; log "$t: no ProducerPerformance summary"; return 1; }
    echo "  $line"
    local sent; sent="$(awk '{print $1}' <<<"$line")"
    if [[ "$sent" != "$N" ]]; then
        log "$t: ProducerPerformance acknowledged $sent of $N records (log: $dir/producer.log)"
        return 1
    fi
    R[$key,prod_rps]="$(sed -E 's/.* ([0-9.]+) records\/sec.*/\1/' <<<"$line" | awk '{printf "%.0f", $1}')"
    R[$key,prod_mbps]="$(sed -E 's/.*\(([0-9.]+) MB\/sec\).*/\1/' <<<"$line")"
    R[$key,prod_p50]="$(sed -E 's/.* ([0-9.]+) ms 50th.*/\1/' <<<"$line")"
    R[$key,prod_p99]="$(sed -E 's/.* ([0-9.]+) ms 99th.*/\1/' <<<"$line")"

    local consume=("$JAVA" "${CLIENT_JVM[@]}" -cp "$TOOLS_CP" -Dorg.slf4j.simpleLogger.defaultLogLevel=warn
        strand.interop.ConsumerPerf "$bootstrap" "$topic" "$STEP_TIMEOUT")
    show_cmd "${consume[@]}"
    if ! timeout --kill-after=10 "$((STEP_TIMEOUT + 30))" "${consume[@]}" >"$dir/consumer.log" 2>&1; then
        tail -n 20 "$dir/consumer.log" >&2
        log "$t: ConsumerPerf failed or timed out (log: $dir/consumer.log)"
        return 1
    fi
    line="$(grep '^consumer-perf ' "$dir/consumer.log" | tail -n1)"
    echo "  $line"
    local got; got="$(sed -E 's/.*records=([0-9]+).*/\1/' <<<"$line")"
    if [[ "$got" != "$N" ]]; then
        log "$t: ConsumerPerf read $got records, expected $N"
        return 1
    fi
    R[$key,cons_mbps]="$(sed -E 's/.*mb_per_sec=([0-9.]+).*/\1/' <<<"$line")"
    R[$key,cons_rps]="$(sed -E 's/.*records_per_sec=([0-9.]+).*/\1/' <<<"$line" | awk '{printf "%.0f", $1}')"

    R[$key,rss]="$(peak_rss_mib "$pid")"
    R[$key,cpu]="$(awk -v a="$cpu0" -v b="$(cpu_seconds "$pid")" 'BEGIN {printf "%.1f", b - a}')"
    echo "  broker peak RSS ${R[$key,rss]} MiB, broker CPU ${R[$key,cpu]} s (create+produce+consume)"
}

echo "## Strand vs Apache Kafka benchmark"
echo
echo "command: BENCH_RECORDS=$N BENCH_RECORD_SIZE=$RECORD_SIZE BENCH_PARTITIONS=\"$PARTITIONS\"" \
    "BENCH_TARGETS=\"${BENCH_TARGETS:-strand kafka}\" BENCH_MODE=$MODE BROKER_BIN=$BROKER_BIN $0"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)," \
    "$("$JAVA" -version 2>&1 | head -n1), Apache Kafka $("$KAFKA_SH" version)"
# Other load (e.g. a cargo build) on 2 cores skews every number below.
read -r load1 _ </proc/loadavg
if awk -v l="$load1" 'BEGIN {exit !(l > 1.0)}'; then
    echo "WARNING: 1-minute load average is $load1 before starting; results will be noisy"
fi
echo

if [[ "$MODE" == side-by-side ]]; then
    for t in $TARGETS; do
        start_target "$t" "$OUT/$t-shared" || die "$t failed to start"
    done
fi

for p in $PARTITIONS; do
    for t in $TARGETS; do
        dir="$OUT/$t-p$p"
        mkdir -p "$dir"
        echo "### $t, $p partition(s), $N x $RECORD_SIZE B records, acks=all"
        if [[ "$MODE" == sequential ]]; then
            if ! start_target "$t" "$dir"; then
                R[$t,$p,fail]=1; FAILED=1; continue
            fi
        fi
        if ! run_one "$t" "$p" "$dir"; then
            R[$t,$p,fail]=1; FAILED=1
        fi
        if [[ "$MODE" == sequential ]]; then
            stop_target "$t"
            [[ "${BENCH_KEEP_DATA:-0}" == 1 ]] || rm -rf "$dir/data"
        fi
        echo
    done
done

if [[ "$MODE" == side-by-side ]]; then
    for t in $TARGETS; do stop_target "$t"; done
    [[ "${BENCH_KEEP_DATA:-0}" == 1 ]] || rm -rf "$OUT"/*-shared/data
fi

# ------------------------------------------------------------------ report

cell() { # cell TARGET P METRIC
    local t="$1" p="$2" m="$3"
    if [[ "$t" == strand && $STRAND_MISSING == 1 ]]; then echo "missing"
    elif [[ " $TARGETS " != *" $t "* ]]; then echo "-"
    elif [[ -n "${R[$t,$p,$m]:-}" ]]; then echo "${R[$t,$p,$m]}"
    elif [[ -n "${R[$t,$p,fail]:-}" ]]; then echo "FAIL"
    else echo "-"
    fi
}

{
    echo "| metric | partitions | Strand | Kafka | Strand/Kafka |"
    echo "|---|---:|---:|---:|---:|"
    for p in $PARTITIONS; do
        for m in prod_rps prod_mbps prod_p50 prod_p99 cons_mbps cons_rps rss cpu; do
            case "$m" in
                prod_rps) name="producer records/s (higher is better)" ;;
                prod_mbps) name="producer MB/s (higher is better)" ;;
                prod_p50) name="producer p50 latency ms (lower is better)" ;;
                prod_p99) name="producer p99 latency ms (lower is better)" ;;
                cons_mbps) name="consumer MB/s (higher is better)" ;;
                cons_rps) name="consumer records/s (higher is better)" ;;
                rss) name="broker peak RSS MiB (lower is better)" ;;
                cpu) name="broker CPU s (lower is better)" ;;
            esac
            a="$(cell strand "$p" "$m")"
            b="$(cell kafka "$p" "$m")"
            ratio="$(awk -v a="$a" -v b="$b" 'BEGIN {
                if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b + 0 > 0) printf "%.2f", a / b; else print "-" }')"
            echo "| $name | $p | $a | $b | $ratio |"
        done
    done
} >"$OUT/results.md"

echo "## Results"
echo
cat "$OUT/results.md"
echo
echo "Notes: ProducerPerformance = org.apache.kafka.tools.ProducerPerformance (Kafka tools," \
    "unkeyed random 1 KiB payloads, default producer settings + acks=all); consumer = strand.interop.ConsumerPerf" \
    "(assign(), default consumer settings, key+value bytes, MB = 2^20 bytes). Kafka: single KRaft node," \
    "-Xmx1g, default flush policy (no fsync per write). Broker CPU = utime+stime during the run." \
    "Client and broker share the same $(nproc) cores."
echo "results: $OUT/results.md, logs: $OUT/<broker>-p<N>/"

if [[ $STRAND_MISSING == 1 ]]; then
    echo "bench/run.sh: Strand was NOT benchmarked: $BROKER_BIN is missing" >&2
    exit 1
fi
if [[ $FAILED == 1 ]]; then
    echo "bench/run.sh: some runs FAILED (see FAIL cells and logs above)" >&2
    exit 1
fi
