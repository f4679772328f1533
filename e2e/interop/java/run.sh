#!/usr/bin/env bash
# Java client interop check: build this Maven project (cached) and run, against
# a running broker:
#   1. InteropCheck: produce/consume/ListOffsets with every compression codec
#   2. quickstart round trip: QuickstartProducer -> QuickstartConsumer
#
# Usage:
#   run.sh BOOTSTRAP           e.g. run.sh 127.0.0.1:9092
#   run.sh --against-kafka     start a throwaway real Apache Kafka (e2e/kafka/kafka.sh) on
#                              a free port (or $KAFKA_PORT), run the checks, stop it
#                              (validates the checks themselves)
#   run.sh --build-only        just build (used by bench/run.sh)
#   run.sh --groups BOOTSTRAP  consumer groups (best against a 3-broker cluster):
#     3. GroupFailoverCheck: three consumers share six partitions, one is killed -9
#     4. StaticRestartCheck: a static member restarts without a rebalance
#     5. Kafka's own kafka-console-consumer with --group: reads everything, then resumes
#        at its commit
#   run.sh --rack-reads BOOTSTRAP  fetch from follower (KIP-392; brokers with racks and
#                              RackAwareReplicaSelector): RackReadCheck
#
# Env: STRAND_CACHE (default ~/.cache/strand), KAFKA_VERSION (client version
#      override), TOPIC_PREFIX (default interop), INTEROP_RECORDS, INTEROP_TIMEOUT_S,
#      JAVA (java binary, default: java on PATH; needs 17+)
# Exit status: 0 only if every check passed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${STRAND_CACHE:-$HOME/.cache/strand}"
JAVA="${JAVA:-java}"

die() { echo "interop/java/run.sh: error: $*" >&2; exit 1; }
log() { echo "interop/java/run.sh: $*" >&2; }

build() {
    command -v mvn >/dev/null || die "mvn not found (needed to build the Java interop client)"
    local stamp="$HERE/target/.build-stamp"
    # Skip Maven entirely when nothing changed since the last good build.
    if [[ -f "$stamp" && -d "$HERE/target/lib" && -z "$(find "$HERE/src" "$HERE/pom.xml" -newer "$stamp" | head -n1)" \
          && "$(cat "$stamp")" == "${KAFKA_VERSION:-default}" ]]; then
        return 0
    fi
    local args=(-B -q -Dstyle.color=never -Dmaven.repo.local="$CACHE/m2" -f "$HERE/pom.xml" package -DskipTests)
    [[ -n "${KAFKA_VERSION:-}" ]] && args+=(-Dkafka.version="$KAFKA_VERSION")
    mkdir -p "$HERE/target"
    local out="$HERE/target/mvn.log"
    # Offline first (no network round trips once $CACHE/m2 is warm); fall
    # back to an online build when something is missing from the cache.
    if ! mvn -o "${args[@]}" >"$out" 2>&1; then
        log "offline build failed (cold cache?); building online"
        if ! mvn "${args[@]}" >"$out" 2>&1; then
            cat "$out" >&2
            die "Maven build failed (log above, also in $out)"
        fi
    fi
    echo "${KAFKA_VERSION:-default}" >"$stamp"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A random port P with P and P+1 (Kafka's controller) both free on loopback.
free_port_pair() {
    local i p
    for ((i = 0; i < 100; i++)); do
        p=$((20000 + RANDOM % 12000)) # below the ephemeral range (32768+)
        if ! port_open "$p" && ! port_open "$((p + 1))"; then echo "$p"; return 0; fi
    done
    die "no free port pair found on 127.0.0.1"
}

classpath() { echo "$HERE/target/classes:$HERE/target/lib/*"; }

run_java() { "$JAVA" -cp "$(classpath)" -Dorg.slf4j.simpleLogger.defaultLogLevel=warn "$@"; }

run_checks() {
    local bootstrap="$1" failed=0
    log "InteropCheck against $bootstrap"
    if ! run_java strand.interop.InteropCheck "$bootstrap" "${TOPIC_PREFIX:-interop}"; then
        echo "FAIL InteropCheck" >&2
        failed=1
    fi

    # Quickstart round trip on a fresh (auto-created) topic.
    local topic n=10 out
    topic="quickstart-$(date +%s)-$$"
    log "quickstart round trip on topic $topic"
    if ! run_java strand.interop.QuickstartProducer "$bootstrap" "$topic" "$n"; then
        echo "FAIL QuickstartProducer" >&2
        failed=1
    elif ! out="$(run_java strand.interop.QuickstartConsumer "$bootstrap" "$topic" "$n" 30)"; then
        echo "$out"
        echo "FAIL QuickstartConsumer" >&2
        failed=1
    else
        echo "$out"
        local i
        for ((i = 0; i < n; i++)); do
            if ! grep -q "key=key-$i value=This is event $i\$" <<<"$out"; then
                echo "FAIL quickstart: consumer did not print event $i" >&2
                failed=1
            fi
        done
        [[ $failed -eq 0 ]] && echo "PASS quickstart round trip ($n records)"
    fi
    return $failed
}

# Kafka's console consumer (kafka-tools from the cached Kafka jars) in a group.
console_consumer() {
    local cp conf="$HERE/target/log4j2-tools.properties"
    cp="$("$HERE/../../kafka/kafka.sh" classpath)"
    printf '%s\n' 'rootLogger.level=ERROR' 'rootLogger.appenderRef.e.ref=E' 'appender.e.type=Console' \
        'appender.e.name=E' 'appender.e.target=SYSTEM_ERR' 'appender.e.layout.type=PatternLayout' \
        'appender.e.layout.pattern=%p %m%n' >"$conf"
    "$JAVA" -cp "$cp" -Dlog4j2.configurationFile="$conf" org.apache.kafka.tools.consumer.ConsoleConsumer \
        --bootstrap-server "$1" --topic "$2" --group "$3" --from-beginning --max-messages "$4" --timeout-ms 60000
}

run_group_checks() {
    local bootstrap="$1" failed=0 out
    for check in GroupFailoverCheck StaticRestartCheck; do
        log "$check against $bootstrap"
        if ! run_java "strand.interop.$check" "$bootstrap"; then
            echo "FAIL $check" >&2
            failed=1
        fi
    done
    local topic group
    topic="console-$(date +%s)-$$"
    group="$topic-group"
    log "kafka-console-consumer --group on topic $topic"
    if ! run_java strand.interop.QuickstartProducer "$bootstrap" "$topic" 20 >/dev/null; then
        echo "FAIL QuickstartProducer" >&2
        return 1
    fi
    out="$(console_consumer "$bootstrap" "$topic" "$group" 20 2>&1)" || true
    if [[ "$(grep -c '^This is event ' <<<"$out")" -ne 20 ]]; then
        echo "$out"
        echo "FAIL kafka-console-consumer did not print 20 events" >&2
        return 1
    fi
    # The group committed at the end: a second run reads only what was produced since.
    run_java strand.interop.QuickstartProducer "$bootstrap" "$topic" 5 >/dev/null
    out="$(console_consumer "$bootstrap" "$topic" "$group" 5 2>&1)" || true
    if [[ "$(grep -c '^This is event ' <<<"$out")" -ne 5 ]] || grep -q 'Processed a total of [^5]' <<<"$out"; then
        echo "$out"
        echo "FAIL kafka-console-consumer did not resume at its group's commit" >&2
        failed=1
    else
        echo "PASS kafka-console-consumer --group: 20 records, then resumed at the commit for 5 more"
    fi
    return $failed
}

main() {
    [[ $# -ge 1 ]] || die "usage: run.sh BOOTSTRAP | --against-kafka | --build-only"
    case "$1" in
        --build-only)
            build
            ;;
        --against-kafka)
            build
            local kdir port="${KAFKA_PORT:-$(free_port_pair)}" bootstrap rc=0
            kdir="$(mktemp -d -t strand-interop-kafka.XXXXXX)"
            bootstrap="$("$HERE/../../kafka/kafka.sh" start "$kdir" "$port")"
            # shellcheck disable=SC2064
            trap "'$HERE/../../kafka/kafka.sh' stop '$kdir'; rm -rf '$kdir'" EXIT
            run_checks "$bootstrap" || rc=$?
            [[ $rc -eq 0 ]] && echo "interop/java: all checks passed against Apache Kafka" \
                || echo "interop/java: checks FAILED against Apache Kafka" >&2
            return $rc
            ;;
        --groups)
            [[ $# -ge 2 ]] || die "usage: run.sh --groups BOOTSTRAP"
            build
            local rc=0
            run_group_checks "$2" || rc=$?
            [[ $rc -eq 0 ]] && echo "interop/java: group checks passed against $2" \
                || echo "interop/java: group checks FAILED against $2" >&2
            return $rc
            ;;
        --rack-reads)
            [[ $# -ge 2 ]] || die "usage: run.sh --rack-reads BOOTSTRAP"
            build
            log "RackReadCheck against $2"
            run_java strand.interop.RackReadCheck "$2"
            ;;
        -*)
            die "unknown option $1"
            ;;
        *)
            build
            local rc=0
            run_checks "$1" || rc=$?
            [[ $rc -eq 0 ]] && echo "interop/java: all checks passed against $1" \
                || echo "interop/java: checks FAILED against $1" >&2
            return $rc
            ;;
    esac
}

main "$@"
