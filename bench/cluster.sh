#!/usr/bin/env bash
# 3-broker benchmark: a Strand cluster (e2e/local-cluster: `operator local`
# controller + brokers 0..2) vs an Apache Kafka KRaft cluster (e2e/kafka/kafka.sh
# start-cluster: one dedicated controller + brokers 0..2), one system at a time,
# same machine, same run. A measurement harness, not a test.
#
# Per system, on a fresh cluster:
#   topic: 6 partitions, replication factor 3, min.insync.replicas=2
#   1. ProducerPerformance (kafka-tools): 1 KiB records, acks=all, unthrottled
#      -> records/s, MB/s, p50/p99 latency
#   2. bench/java E2eLatency: the method of Kafka's EndToEndLatency (one record
#      in flight, acks=all, send -> ack -> consumer sees it) but with no consumer
#      group (Kafka's tool sets group.id and calls FindCoordinator when it
#      finishes, which Strand does not implement yet) -> avg/p50/p99
#   3. failover: bench/java FailoverProbe produces to partition 0 at a fixed
#      rate (acks=all) on a fresh topic and logs every ack with its wall-clock
#      time; after a warm-up the leader of partition 0 (from the producer's
#      metadata) is kill -9'd; failover = time from the kill to the first
#      acknowledged write on partition 0 (necessarily from a new leader).
#      Repeated $CLUSTER_FAILOVER_KILLS times (default 5; the killed broker is
#      started again between kills): median and max. Then once more with
#      SIGTERM instead (a planned restart: controlled shutdown moves leadership).
#   4. peak RSS (VmHWM) of every broker and the controller, read just before the kill
# Prints a markdown table (Strand, Kafka, Strand/Kafka) and every command run.
#
# Nothing is built in Rust here: the binaries come from $STRAND_BIN_DIR.
#
# Env (all optional):
#   STRAND_BIN_DIR        dir with broker + operator (default <repo>/target/release)
#   CLUSTER_BROKER_BIN / CLUSTER_OPERATOR_BIN   override one binary each (symlinked into
#                         $OUT/bin, which then becomes STRAND_BIN_DIR)
#   CLUSTER_LOCAL_CLUSTER script used to run Strand (default <repo>/e2e/local-cluster)
#   CLUSTER_RECORDS       ProducerPerformance records (default 100000 = ~100 MiB)
#   CLUSTER_RECORD_SIZE   bytes per record (default 1024)
#   CLUSTER_E2E_RECORDS   E2eLatency round trips (default 200)
#   CLUSTER_FAILOVER_SECONDS  probe run time (default 35); kill after CLUSTER_KILL_AFTER (default 8) s
#   CLUSTER_FAILOVER_RATE records/s of the probe (default 500)
#   CLUSTER_FAILOVER_KILLS  kill -9 repetitions (default 5)
#   CLUSTER_SESSION_TIMEOUT_MS  Strand controller --session-timeout-ms (default 9000,
#                         same as Kafka's broker.session.timeout.ms default, which is left as is)
#   CLUSTER_CRASH_FENCE_GRACE_MS  Strand controller --crash-fence-grace-ms (default 300; 0: off)
#   CLUSTER_TARGETS       systems to run, in order (default "strand kafka")
#   CLUSTER_STRAND_BASE   Strand controller port (default 26190; brokers +10..12, HTTP +50..52)
#   CLUSTER_KAFKA_BASE    Kafka broker ports BASE..BASE+2 (default 27092; controller BASE+9)
#   CLUSTER_STEP_TIMEOUT  seconds per step (default 600)
#   BENCH_OUT             output dir (default $CACHE/bench-runs/cluster-<time>)
#   BENCH_KEEP_DATA=1     keep data dirs
#   STRAND_CACHE, KAFKA_VERSION, JAVA, KAFKA_HEAP_OPTS (default -Xmx512m -Xms512m per
#   Kafka node): as in e2e/kafka/kafka.sh
# Exit status: 0 when every requested system ran every step, 1 otherwise.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${STRAND_CACHE:-$HOME/.cache/strand}"
KAFKA_SH="$ROOT/e2e/kafka/kafka.sh"
LOCAL_CLUSTER="${CLUSTER_LOCAL_CLUSTER:-$ROOT/e2e/local-cluster}"
INTEROP_JAVA="$ROOT/e2e/interop/java"
BENCH_JAVA="$ROOT/bench/java"
JAVA="${JAVA:-java}"

BIN_DIR="${STRAND_BIN_DIR:-$ROOT/target/release}"
N="${CLUSTER_RECORDS:-100000}"
RECORD_SIZE="${CLUSTER_RECORD_SIZE:-1024}"
E2E_N="${CLUSTER_E2E_RECORDS:-200}"
FO_SECONDS="${CLUSTER_FAILOVER_SECONDS:-35}"
KILL_AFTER="${CLUSTER_KILL_AFTER:-8}"
FO_RATE="${CLUSTER_FAILOVER_RATE:-500}"
FO_KILLS="${CLUSTER_FAILOVER_KILLS:-5}"
SESSION_MS="${CLUSTER_SESSION_TIMEOUT_MS:-9000}"
CRASH_GRACE_MS="${CLUSTER_CRASH_FENCE_GRACE_MS:-300}"
TARGETS="${CLUSTER_TARGETS:-strand kafka}"
STRAND_BASE="${CLUSTER_STRAND_BASE:-26190}"
KAFKA_BASE="${CLUSTER_KAFKA_BASE:-27092}"
STEP_TIMEOUT="${CLUSTER_STEP_TIMEOUT:-600}"
OUT="${BENCH_OUT:-$CACHE/bench-runs/cluster-$(date +%Y%m%d-%H%M%S)}"
PARTITIONS=6
RF=3
MIN_ISR=2
CLIENT_JVM=(-Xmx512m -XX:+UseG1GC)

die() { echo "bench/cluster.sh: error: $*" >&2; exit 1; }
log() { echo "cluster-bench: $*" >&2; }
now_ms() { date +%s%3N; }
show_cmd() { printf '+'; printf ' %q' "$@"; printf '\n'; }
load_avg() { cut -d' ' -f1-3 /proc/loadavg; }

for v in N RECORD_SIZE E2E_N FO_SECONDS KILL_AFTER FO_RATE SESSION_MS FO_KILLS; do
    [[ "${!v}" =~ ^[0-9]+$ && "${!v}" -gt 0 ]] || die "$v must be a positive integer, got '${!v}'"
done
(( KILL_AFTER + SESSION_MS / 1000 + 10 < FO_SECONDS )) \
    || die "CLUSTER_FAILOVER_SECONDS ($FO_SECONDS) too short for kill at ${KILL_AFTER}s + session timeout"
command -v "$JAVA" >/dev/null || die "java not found (need Java 17+)"
command -v curl >/dev/null || die "curl not found"
for t in $TARGETS; do
    [[ "$t" == strand || "$t" == kafka ]] || die "unknown target '$t' (use strand and/or kafka)"
done

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
log "output, logs and results in $OUT"

if [[ " $TARGETS " == *" strand "* ]]; then
    if [[ -n "${CLUSTER_BROKER_BIN:-}" || -n "${CLUSTER_OPERATOR_BIN:-}" ]]; then
        mkdir -p "$OUT/bin"
        ln -sf "$(realpath "${CLUSTER_BROKER_BIN:-$BIN_DIR/broker}")" "$OUT/bin/broker"
        ln -sf "$(realpath "${CLUSTER_OPERATOR_BIN:-$BIN_DIR/operator}")" "$OUT/bin/operator"
        BIN_DIR="$OUT/bin"
    fi
    for b in broker operator; do
        [[ -x "$BIN_DIR/$b" ]] || die "Strand binary $BIN_DIR/$b missing (cargo build --release -p broker -p operator, or set STRAND_BIN_DIR)"
    done
fi

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
KAFKA_TOOL=("$JAVA" "${CLIENT_JVM[@]}" -cp "$KAFKA_CP" -Dlog4j2.configurationFile="$OUT/log4j2-tools.properties")

# ----------------------------------------------------------- cluster control

UP=""   # target currently running
CLUSTER_DIR=""

start_cluster() {
    local t="$1" dir="$2" line
    CLUSTER_DIR="$dir"
    case "$t" in
        strand)
            local cmd=(env STRAND_BIN_DIR="$BIN_DIR" STRAND_CONTROLLER_ARGS="--session-timeout-ms $SESSION_MS --crash-fence-grace-ms $CRASH_GRACE_MS"
                "$LOCAL_CLUSTER" up --dir "$dir" --brokers 3 --base-port "$STRAND_BASE")
            show_cmd "${cmd[@]}"
            UP=strand
            "${cmd[@]}" >"$dir/up.log" 2>&1 || { cat "$dir/up.log" >&2; return 1; }
            line="$(grep '^BOOTSTRAP=' "$dir/up.log" | tail -n1)"
            BOOTSTRAP="${line#BOOTSTRAP=}"
            ;;
        kafka)
            local cmd=("$KAFKA_SH" start-cluster "$dir" "$KAFKA_BASE")
            show_cmd "${cmd[@]}"
            UP=kafka
            BOOTSTRAP="$("${cmd[@]}" 2>"$dir/up.log")" || { cat "$dir/up.log" >&2; return 1; }
            ;;
    esac
    [[ -n "$BOOTSTRAP" ]] || return 1
    CLUSTER_DIR="$dir"
}

stop_cluster() {
    case "$UP" in
        strand) "$LOCAL_CLUSTER" down --dir "$CLUSTER_DIR" >/dev/null 2>&1 || true ;;
        kafka) "$KAFKA_SH" stop-cluster "$CLUSTER_DIR" >/dev/null 2>&1 || true ;;
    esac
    UP=""
}

# pid of broker ID / of the controller in the running cluster
broker_pid() {
    case "$UP" in
        strand) cat "$CLUSTER_DIR/broker-$1.pid" ;;
        kafka) cat "$CLUSTER_DIR/broker-$1/kafka.pid" ;;
    esac
}
controller_pid() {
    case "$UP" in
        strand) cat "$CLUSTER_DIR/controller.pid" ;;
        kafka) cat "$CLUSTER_DIR/controller/kafka.pid" ;;
    esac
}

cleanup() {
    [[ -n "${PROBE_PID:-}" ]] && kill "$PROBE_PID" 2>/dev/null || true
    stop_cluster
}
trap cleanup EXIT
trap 'exit 130' INT TERM

peak_rss_mib() { awk '/^VmHWM:/ {printf "%.0f", $2 / 1024}' "/proc/$1/status" 2>/dev/null || echo "?"; }

# ------------------------------------------------------------------ steps

declare -A R   # R[target,metric]
FAILED=0

create_topic() { # create_topic TARGET DIR TOPIC
    local t="$1" dir="$2" topic="$3"
    local create=("${KAFKA_TOOL[@]}" org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP"
        --create --topic "$topic" --partitions "$PARTITIONS" --replication-factor "$RF"
        --config "min.insync.replicas=$MIN_ISR")
    show_cmd "${create[@]}"
    timeout 120 "${create[@]}" >>"$dir/create-topic.log" 2>&1 \
        || { cat "$dir/create-topic.log" >&2; log "$t: creating $topic failed"; return 1; }
    local ready=("$JAVA" "${CLIENT_JVM[@]}" -cp "$INTEROP_CP" -Dorg.slf4j.simpleLogger.defaultLogLevel=warn
        strand.interop.TopicReady "$BOOTSTRAP" "$topic" "$PARTITIONS" 60)
    show_cmd "${ready[@]}"
    timeout 120 "${ready[@]}" >>"$dir/create-topic.log" 2>&1 \
        || { cat "$dir/create-topic.log" >&2; log "$t: $topic not ready"; return 1; }
}

step_produce() {
    local t="$1" dir="$2" topic="$3" line
    local produce=("${KAFKA_TOOL[@]}" org.apache.kafka.tools.ProducerPerformance --topic "$topic"
        --num-records "$N" --record-size "$RECORD_SIZE" --throughput -1 --bootstrap-server "$BOOTSTRAP"
        --command-property acks=all)
    show_cmd "${produce[@]}"
    if ! timeout --kill-after=10 "$STEP_TIMEOUT" "${produce[@]}" >"$dir/producer.log" 2>&1; then
        tail -n 20 "$dir/producer.log" >&2; log "$t: ProducerPerformance failed"; return 1
    fi
    line="$(grep -E 'records sent.* ms 50th' "$dir/producer.log" | tail -n1 || true)"
    [[ -n "$line" ]] || { tail -n 20 "$dir/producer.log" >&2; log "$t: no ProducerPerformance summary"; return 1; }
    echo "  $line   (load avg $(load_avg))"
    [[ "$(awk '{print $1}' <<<"$line")" == "$N" ]] || { log "$t: not all $N records acknowledged"; return 1; }
    R[$t,prod_rps]="$(sed -E 's/.* ([0-9.]+) records\/sec.*/\1/' <<<"$line" | awk '{printf "%.0f", $1}')"
    R[$t,prod_mbps]="$(sed -E 's/.*\(([0-9.]+) MB\/sec\).*/\1/' <<<"$line")"
    R[$t,prod_p50]="$(sed -E 's/.* ([0-9.]+) ms 50th.*/\1/' <<<"$line")"
    R[$t,prod_p99]="$(sed -E 's/.* ([0-9.]+) ms 99th.*/\1/' <<<"$line")"
}

step_e2e() {
    local t="$1" dir="$2" topic="$3" line
    local e2e=("$JAVA" "${CLIENT_JVM[@]}" -cp "$BENCH_CP" -Dorg.slf4j.simpleLogger.defaultLogLevel=warn
        strand.bench.E2eLatency "$BOOTSTRAP" "$topic" "$E2E_N" "$RECORD_SIZE")
    show_cmd "${e2e[@]}"
    if ! timeout --kill-after=10 "$STEP_TIMEOUT" "${e2e[@]}" >"$dir/e2e.log" 2>&1; then
        tail -n 20 "$dir/e2e.log" >&2; log "$t: E2eLatency failed"; return 1
    fi
    # e2e-latency records=N avg_ms=.. p50_ms=.. p99_ms=.. p999_ms=.. max_ms=..
    line="$(grep '^e2e-latency ' "$dir/e2e.log" | tail -n1 || true)"
    [[ -n "$line" ]] || { tail -n 20 "$dir/e2e.log" >&2; log "$t: no E2eLatency summary"; return 1; }
    echo "  $line   (load avg $(load_avg))"
    R[$t,e2e_avg]="$(sed -E 's/.*avg_ms=([0-9.]+).*/\1/' <<<"$line")"
    R[$t,e2e_p50]="$(sed -E 's/.*p50_ms=([0-9.]+).*/\1/' <<<"$line")"
    R[$t,e2e_p99]="$(sed -E 's/.*p99_ms=([0-9.]+).*/\1/' <<<"$line")"
}

record_rss() {
    local t="$1" i rss max=0 list=""
    for i in 0 1 2; do
        rss="$(peak_rss_mib "$(broker_pid "$i")")"
        list="${list:+$list/}$rss"
        [[ "$rss" =~ ^[0-9]+$ ]] && (( rss > max )) && max="$rss"
    done
    R[$t,rss_max]="$max"
    R[$t,rss_list]="$list"
    R[$t,rss_ctrl]="$(peak_rss_mib "$(controller_pid)")"
    echo "  peak RSS MiB: brokers 0/1/2 = $list, controller = ${R[$t,rss_ctrl]}"
}

# step_failover TARGET DIR TOPIC SIGNAL: sets FO_MS (kill to first ack after it) and FO_ERRS,
# and FO_VICTIM (the broker signalled).
step_failover() {
    local t="$1" dir="$2" topic="$3" sig="$4" f="$dir/failover-$3.log" leader kill_ms first line
    local probe=("$JAVA" "${CLIENT_JVM[@]}" -cp "$BENCH_CP" -Dorg.slf4j.simpleLogger.defaultLogLevel=warn
        strand.bench.FailoverProbe "$BOOTSTRAP" "$topic" 0 "$FO_SECONDS" "$FO_RATE" "$RECORD_SIZE" "$f")
    show_cmd "${probe[@]}"
    timeout --kill-after=10 "$((FO_SECONDS + 180))" "${probe[@]}" >"$dir/failover-probe-$topic.out" 2>&1 &
    PROBE_PID=$!
    local i
    for ((i = 0; i < KILL_AFTER * 10; i++)); do sleep 0.1; done
    if ! grep -q '^ack ' "$f" 2>/dev/null; then
        log "$t: probe has no acknowledged write after ${KILL_AFTER}s"; wait "$PROBE_PID" || true; PROBE_PID=""; return 1
    fi
    leader="$(grep '^leader ' "$f" | tail -n1 | awk '{print $3}')"
    [[ "$leader" =~ ^[0-2]$ ]] || { log "$t: unknown leader '$leader' of $topic-0"; wait "$PROBE_PID" || true; PROBE_PID=""; return 1; }
    record_rss "$t"
    local victim; victim="$(broker_pid "$leader")"
    echo "+ kill -$sig $victim   # broker $leader, leader of $topic-0 (load avg $(load_avg))"
    kill_ms="$(now_ms)"
    kill "-$sig" "$victim"
    FO_VICTIM="$leader"
    echo "kill $kill_ms $leader $sig" >>"$dir/failover-kills.txt"
    local rc=0
    wait "$PROBE_PID" || rc=$?
    PROBE_PID=""
    echo "  $(tail -n1 "$dir/failover-probe-$topic.out") (exit $rc)"
    # Acks already on the wire when the leader died can arrive in the kill's millisecond; the
    # failover ends at the first ack once the probe has seen the new leader.
    local switched; switched="$(awk -v k="$kill_ms" '$1 == "leader" && $2 >= k {print $2; exit}' "$f")"
    first="$(awk -v k="${switched:-$kill_ms}" '$1 == "ack" && $2 >= k {print $2; exit}' "$f")"
    local last_before; last_before="$(awk -v k="$kill_ms" '$1 == "ack" && $2 < k {x = $2} END {print x}' "$f")"
    local new_leader; new_leader="$(awk -v k="$kill_ms" '$1 == "leader" && $2 >= k {x = $3} END {print x}' "$f")"
    if [[ -z "$first" ]]; then
        log "$t: no acknowledged write on $topic-0 after the kill (log: $f)"; return 1
    fi
    FO_MS="$((first - kill_ms))"
    FO_ERRS="$(grep -c '^err ' "$f" || true)"
    echo "  failover ($sig): last ack before it $((kill_ms - last_before)) ms before; first ack after +$FO_MS ms;" \
        "leader $leader -> ${new_leader:-?}; failed sends $FO_ERRS"
    [[ -n "$new_leader" && "$new_leader" != "$leader" ]] || log "$t: WARNING: producer metadata shows no new leader"
}

run_target() {
    local t="$1" dir="$OUT/$t"
    mkdir -p "$dir"
    echo "### $t (load avg before start $(load_avg))"
    start_cluster "$t" "$dir" || { log "$t: cluster failed to start"; return 1; }
    echo "  bootstrap $BOOTSTRAP"
    local topic="bench-$(date +%s)" fo_topic="failover-$(date +%s)"
    create_topic "$t" "$dir" "$topic" || return 1
    step_produce "$t" "$dir" "$topic" || return 1
    step_e2e "$t" "$dir" "$topic" || return 1
    local k times=() errs=0
    for ((k = 1; k <= FO_KILLS + 1; k++)); do
        local sig=KILL; ((k <= FO_KILLS)) || sig=TERM
        create_topic "$t" "$dir" "$fo_topic-$k" || return 1
        step_failover "$t" "$dir" "$fo_topic-$k" "$sig" || return 1
        if [[ $sig == KILL ]]; then times+=("$FO_MS"); errs=$((errs + FO_ERRS)); else
            R[$t,fo_term]="$FO_MS"; R[$t,fo_term_errors]="$FO_ERRS"; fi
        restart_broker "$t" "$dir" "$FO_VICTIM" || return 1
    done
    R[$t,failover]="$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
    R[$t,fo_max]="$(printf '%s\n' "${times[@]}" | sort -n | tail -n1)"
    R[$t,fo_all]="$(IFS=/; echo "${times[*]}")"
    R[$t,fo_errors]="$errs"
}

# The broker signalled in a failover step, started again on its data; waits until the
# cluster has all three brokers back (a new topic with replication factor 3 needs them).
restart_broker() {
    local t="$1" dir="$2" id="$3"
    for _ in $(seq 300); do kill -0 "$(broker_pid "$id")" 2>/dev/null || break; sleep 0.1; done
    case "$UP" in
        strand)
            STRAND_BIN_DIR="$BIN_DIR" "$LOCAL_CLUSTER" start-broker --dir "$CLUSTER_DIR" --id "$id" \
                >>"$dir/restart.log" 2>&1 || { log "$t: restarting broker $id failed"; return 1; }
            ;;
        kafka)
            "$KAFKA_SH" start-node "$CLUSTER_DIR/broker-$id" "$((KAFKA_BASE + id))" \
                >>"$dir/restart.log" 2>&1 || { log "$t: restarting broker $id failed"; return 1; }
            ;;
    esac
    # Registration and the first heartbeats (Kafka: unfenced by the controller).
    sleep 5
}

echo "## Strand vs Apache Kafka, 3-broker clusters"
echo
echo "command: CLUSTER_RECORDS=$N CLUSTER_RECORD_SIZE=$RECORD_SIZE CLUSTER_E2E_RECORDS=$E2E_N" \
    "CLUSTER_FAILOVER_SECONDS=$FO_SECONDS CLUSTER_KILL_AFTER=$KILL_AFTER CLUSTER_FAILOVER_RATE=$FO_RATE" \
    "CLUSTER_SESSION_TIMEOUT_MS=$SESSION_MS CLUSTER_TARGETS=\"$TARGETS\" STRAND_BIN_DIR=$BIN_DIR $0"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)," \
    "$("$JAVA" -version 2>&1 | head -n1), Apache Kafka $("$KAFKA_SH" version); load avg $(load_avg)"
echo

for t in $TARGETS; do
    if ! run_target "$t"; then R[$t,fail]=1; FAILED=1; fi
    stop_cluster
    [[ "${BENCH_KEEP_DATA:-0}" == 1 ]] || rm -rf "$OUT/$t"/broker-*/data "$OUT/$t"/controller/data 2>/dev/null || true
    [[ "${BENCH_KEEP_DATA:-0}" == 1 || "$t" != strand ]] || find "$OUT/$t" -mindepth 1 -maxdepth 1 -type d -name 'broker-*' -exec rm -rf {} + 2>/dev/null || true
    echo
done

cell() {
    local t="$1" m="$2"
    if [[ " $TARGETS " != *" $t "* ]]; then echo "-"
    elif [[ -n "${R[$t,$m]:-}" ]]; then echo "${R[$t,$m]}"
    elif [[ -n "${R[$t,fail]:-}" ]]; then echo "FAIL"
    else echo "-"; fi
}

{
    echo "| metric (6 partitions, RF 3, min.insync.replicas=2, acks=all) | Strand | Kafka | Strand/Kafka |"
    echo "|---|---:|---:|---:|"
    for m in prod_rps prod_mbps prod_p50 prod_p99 e2e_avg e2e_p50 e2e_p99 failover fo_max fo_all fo_errors fo_term fo_term_errors rss_max rss_list rss_ctrl; do
        case "$m" in
            prod_rps) name="producer records/s, $N x $RECORD_SIZE B (higher is better)" ;;
            prod_mbps) name="producer MB/s (higher is better)" ;;
            prod_p50) name="producer p50 latency ms (lower is better)" ;;
            prod_p99) name="producer p99 latency ms (lower is better)" ;;
            e2e_avg) name="end-to-end latency avg ms, $E2E_N round trips (lower is better)" ;;
            e2e_p50) name="end-to-end latency p50 ms (lower is better)" ;;
            e2e_p99) name="end-to-end latency p99 ms (lower is better)" ;;
            failover) name="failover: kill -9 of p0 leader -> first acked write, median of $FO_KILLS, ms (lower is better)" ;;
            fo_max) name="failover: kill -9, max of $FO_KILLS, ms (lower is better)" ;;
            fo_all) name="failover: kill -9, each run, ms" ;;
            fo_errors) name="failover: kill -9, sends failed for good, all runs (lower is better)" ;;
            fo_term) name="planned restart: SIGTERM of p0 leader -> first acked write, ms (lower is better)" ;;
            fo_term_errors) name="planned restart: sends failed for good (lower is better)" ;;
            rss_max) name="peak RSS of the largest broker MiB (lower is better)" ;;
            rss_list) name="peak RSS brokers 0/1/2 MiB" ;;
            rss_ctrl) name="peak RSS controller MiB" ;;
        esac
        a="$(cell strand "$m")"; b="$(cell kafka "$m")"
        ratio="$(awk -v a="$a" -v b="$b" 'BEGIN {
            if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b + 0 > 0) printf "%.2f", a / b; else print "-" }')"
        echo "| $name | $a | $b | $ratio |"
    done
} >"$OUT/results.md"

echo "## Results"
echo
cat "$OUT/results.md"
echo
echo "Notes: Strand = e2e/local-cluster (operator local controller, session timeout ${SESSION_MS} ms, + 3 brokers);" \
    "Kafka = kafka.sh start-cluster (1 dedicated KRaft controller + 3 brokers, ${KAFKA_HEAP_OPTS:--Xmx512m -Xms512m} each," \
    "default broker.session.timeout.ms=9000, no fsync per write). Producer = ProducerPerformance (unkeyed 1 KiB, default" \
    "settings + acks=all); e2e = bench/java E2eLatency (EndToEndLatency's method: one record in flight, acks=all," \
    "consumer assign()ed to all partitions, fetch.max.wait.ms=0, no group). Failover = FailoverProbe at $FO_RATE rec/s to partition 0;" \
    "measured in the client from the kill to the first ack after it, so it includes session expiry, leader election," \
    "the client's metadata refresh and retry backoff. RSS read just before the kill. All processes share the $(nproc) cores."
echo "results: $OUT/results.md, logs: $OUT/<system>/"

[[ $FAILED == 0 ]] || { echo "bench/cluster.sh: some steps FAILED (see FAIL cells and logs above)" >&2; exit 1; }
