#!/usr/bin/env bash
# Kafka's own admin CLI tools against a running broker (or cluster). Every tool
# is run from the cached Apache Kafka jars (e2e/kafka/kafka.sh classpath), the
# same main classes the kafka-*.sh wrappers of the Kafka tarball start:
#
#   kafka-topics               org.apache.kafka.tools.TopicCommand
#   kafka-configs              kafka.admin.ConfigCommand (still Scala, in kafka_2.13, in 4.3)
#   kafka-leader-election      org.apache.kafka.tools.LeaderElectionCommand
#   kafka-reassign-partitions  org.apache.kafka.tools.reassign.ReassignPartitionsCommand
#   kafka-get-offsets          org.apache.kafka.tools.GetOffsetShell
#   kafka-delete-records       org.apache.kafka.tools.DeleteRecordsCommand
#   kafka-console-producer     org.apache.kafka.tools.ConsoleProducer
#   kafka-console-consumer     org.apache.kafka.tools.consumer.ConsoleConsumer
#   kafka-consumer-groups      org.apache.kafka.tools.consumer.group.ConsumerGroupCommand
#   kafka-producer-perf-test   org.apache.kafka.tools.ProducerPerformance
#   kafka-transactions         org.apache.kafka.tools.TransactionsCommand
#   kafka-metadata-quorum      org.apache.kafka.tools.MetadataQuorumCommand
#
# Checks (each asserts the tool's exit status AND its output):
#   topics    --create (2 partitions, rf 1, or 3 with --brokers >= 3), --alter to 4 partitions
#             and --describe shows 4; a decrease to 3 fails with InvalidPartitionsException and
#             the topic keeps 4; --alter of an unknown topic fails
#   describe  kafka-topics --describe is answered by DescribeTopicPartitions (the AdminClient's
#             debug log shows that request and its response: no fallback to Metadata); every
#             partition has rf replicas, all in sync, the leader one of them; with
#             STRAND_CLUSTER_DIR, leader, replicas and ISR are exactly the controller's
#   producers 7 records with the console producer (enable.idempotence=true, acks=all) to a new
#             one-partition topic; kafka-transactions describe-producers lists one producer:
#             epoch 0, last sequence 6, coordinator epoch -1, no transaction (None); with
#             --brokers >= 3 a follower (--broker-id) lists the same producer
#   quorum    kafka-metadata-quorum describe --status: on Strand it fails with "does not support
#             DESCRIBE_QUORUM" (the controller is the operator, not a KRaft quorum); on Kafka
#             (--against-kafka) it prints the quorum's LeaderId
#   configs   --add-config retention.ms,max.message.bytes then --describe shows both;
#             --delete-config retention.ms removes it; an invalid value (retention.ms=banana,
#             sent together with a valid change) fails with InvalidConfigurationException and
#             changes nothing; an unknown config name fails the same way; an unknown topic fails
#   quotas    kafka-configs sets producer_byte_rate on a client id and consumer_byte_rate plus
#             request_percentage on a user's default client, --describe shows them; a
#             kafka-producer-perf-test with that client id over its rate reports
#             produce-throttle-time-max > 0; --delete-config removes the rate
#   reassign  (--brokers >= 3) partition 0 moved to its replica list rotated by one, --execute,
#             --verify until complete (60 s), --describe shows the new replicas; a move to an
#             unknown broker (99) fails; a throttled (1 B/s) move that adds a replica is
#             --cancel'ed and the old replicas are back (SKIP if the move completed before the
#             cancel could be sent: the broker ignored the throttle)
#   election  preferred --all-topic-partitions; preferred --topic T --partition 0 (with 3
#             brokers after the rotation above: leadership moves to the new first replica);
#             unclean on a healthy partition answers "Valid replica already elected" (Kafka's
#             ElectionNotNeeded); an unknown topic fails
#   offsets   20 keyed records produced with the console producer; kafka-get-offsets prints the
#             4 partitions' end offsets (summing to 20) and earliest offsets (all 0)
#   groups    the console consumer reads the 20 records in a group; kafka-consumer-groups --list
#             shows it, --describe shows its commits at the log end (lag 0) on all 4 partitions;
#             --delete-offsets of partition 0 removes that commit and keeps the others
#   records   kafka-delete-records before offset 1 of partition 0: low_watermark 1, and
#             kafka-get-offsets --time -2 then shows 0:1 (the other partitions still 0)
#
# Usage:
#   admin-tools.sh BOOTSTRAP [--brokers N]
#                   BOOTSTRAP host:port (or a comma-separated list); N = brokers in the cluster
#                   (default 1). N >= 3 adds the reassignment checks and uses rf 3.
#   admin-tools.sh --against-kafka [--brokers N]
#                   start a throwaway real Apache Kafka (e2e/kafka/kafka.sh: `start` for N=1,
#                   `start-cluster` for N=3) on free loopback ports, run the checks, stop it
#                   (validates the checks themselves)
#
# Env: STRAND_CACHE (default ~/.cache/strand), JAVA (java binary, 17+), TOPIC_PREFIX (default
#      admin-tools), TOOL_TIMEOUT_S (bound on each tool run, default 90), STRAND_CLUSTER_DIR
#      (an e2e/local-cluster directory: the cancel check keeps its move in progress by stopping
#      the added broker with SIGSTOP instead of a replication throttle, which Strand lacks; give
#      that cluster a session timeout of 30 s so the stopped broker is not fenced meanwhile;
#      the describe check compares kafka-topics' view with that cluster's controller).
# Output: one PASS/FAIL/SKIP line per check. Exit status: 0 only if every check passed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KAFKA_SH="$HERE/../kafka/kafka.sh"
JAVA="${JAVA:-java}"
TOOL_TIMEOUT_S="${TOOL_TIMEOUT_S:-90}"
# Short-lived client JVMs: C1 only and the serial collector start faster.
JVM_OPTS=(-Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC)

die() { echo "admin-tools.sh: error: $*" >&2; exit 1; }
log() { echo "admin-tools.sh: $*" >&2; }

TOPICS=org.apache.kafka.tools.TopicCommand
CONFIGS=kafka.admin.ConfigCommand
ELECTION=org.apache.kafka.tools.LeaderElectionCommand
REASSIGN=org.apache.kafka.tools.reassign.ReassignPartitionsCommand
GET_OFFSETS=org.apache.kafka.tools.GetOffsetShell
DELETE_RECORDS=org.apache.kafka.tools.DeleteRecordsCommand
PRODUCER=org.apache.kafka.tools.ConsoleProducer
CONSUMER=org.apache.kafka.tools.consumer.ConsoleConsumer
GROUPS_CMD=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand
PERF=org.apache.kafka.tools.ProducerPerformance
TXNS=org.apache.kafka.tools.TransactionsCommand
QUORUM=org.apache.kafka.tools.MetadataQuorumCommand

PASSED=0 FAILED=0 SKIPPED=0
OUT="" RC=0

pass() { echo "PASS $*"; PASSED=$((PASSED + 1)); }
skip() { echo "SKIP $*"; SKIPPED=$((SKIPPED + 1)); }
# fail MESSAGE: also shows the last tool run's exit status and output.
fail() {
    echo "FAIL $*" >&2
    echo "  last tool exit status $RC, output:" >&2
    sed -n '1,40s/^/  | /p' <<<"$OUT" >&2
    FAILED=$((FAILED + 1))
}

# tool MAIN ARGS...: run a Kafka CLI main class with --bootstrap-server; sets OUT (stdout and
# stderr together) and RC. Stdin comes from $TOOL_STDIN (default /dev/null); TOOL_LOG4J is
# another log4j2 configuration (default: errors only).
tool() {
    local main="$1"; shift
    set +e
    OUT="$(timeout -k 5 "$TOOL_TIMEOUT_S" "$JAVA" "${JVM_OPTS[@]}" -cp "$CP" \
        -Dlog4j2.configurationFile="${TOOL_LOG4J:-$WORK/log4j2-tools.properties}" "$main" \
        --bootstrap-server "$BOOTSTRAP" "$@" <"${TOOL_STDIN:-/dev/null}" 2>&1)"
    RC=$?
    set -e
    if [[ $RC -eq 124 || $RC -eq 137 ]]; then OUT="$OUT"$'\n'"(killed after ${TOOL_TIMEOUT_S}s)"; fi
}

has() { grep -qE -- "$1" <<<"$OUT"; }

# describe_topic T: kafka-topics --describe into DESC (and OUT/RC).
DESC=""
describe_topic() { tool "$TOPICS" --describe --topic "$1"; DESC="$OUT"; }
# From DESC: the PartitionCount field, the number of partition lines, one partition's fields.
partition_count() { grep -oE 'PartitionCount: *[0-9]+' <<<"$DESC" | grep -oE '[0-9]+$' | head -n1 || true; }
partition_lines() { grep -cE "^[[:space:]]+Topic: $1[[:space:]]+Partition: [0-9]+" <<<"$DESC" || true; }
# partition_field T P FIELD (Leader|Replicas|Isr): value of FIELD on T's partition P line.
partition_field() {
    grep -E "^[[:space:]]+Topic: $1[[:space:]]+Partition: $2[[:space:]]" <<<"$DESC" \
        | grep -oE "$3: *[-0-9,]*" | head -n1 | sed -E "s/^$3: *//" || true
}

# ---------------------------------------------------------------------------------------------

check_topics() {
    tool "$TOPICS" --create --topic "$T" --partitions 2 --replication-factor "$RF"
    if [[ $RC -eq 0 ]] && has "^Created topic $T\.$"; then
        pass "kafka-topics --create $T (2 partitions, rf $RF)"
    else
        fail "kafka-topics --create $T"
        return 1 # everything below works on this topic
    fi
    describe_topic "$T"
    if [[ $RC -eq 0 && "$(partition_count)" == 2 && "$(partition_lines "$T")" == 2 ]] \
        && grep -qE "ReplicationFactor: *$RF([^0-9]|$)" <<<"$DESC"; then
        pass "kafka-topics --describe: 2 partitions, rf $RF"
    else
        fail "kafka-topics --describe after --create: want PartitionCount 2, 2 partition lines, ReplicationFactor $RF"
    fi

    tool "$TOPICS" --alter --topic "$T" --partitions 4
    if [[ $RC -eq 0 ]]; then
        describe_topic "$T"
        local p ok=1
        for p in 0 1 2 3; do
            [[ -n "$(partition_field "$T" "$p" Leader)" ]] || ok=0
        done
        if [[ $RC -eq 0 && $ok -eq 1 && "$(partition_count)" == 4 && "$(partition_lines "$T")" == 4 ]]; then
            pass "kafka-topics --alter --partitions 4: --describe shows partitions 0..3 with leaders"
        else
            fail "kafka-topics --describe after --alter --partitions 4: want PartitionCount 4 and partitions 0..3"
        fi
    else
        fail "kafka-topics --alter --partitions 4"
    fi

    tool "$TOPICS" --alter --topic "$T" --partitions 3
    local decrease_out="$OUT" decrease_rc=$RC
    describe_topic "$T"
    if [[ $decrease_rc -ne 0 ]] && grep -q 'InvalidPartitionsException' <<<"$decrease_out" \
        && grep -q '^Error while executing topic command' <<<"$decrease_out" \
        && [[ $RC -eq 0 && "$(partition_count)" == 4 && "$(partition_lines "$T")" == 4 ]]; then
        pass "kafka-topics --alter --partitions 3 (a decrease) fails with InvalidPartitionsException:" \
            "$(grep -m1 '^Error while executing topic command' <<<"$decrease_out" | sed 's/^Error while executing topic command : //'); still 4 partitions"
    else
        OUT="$decrease_out"$'\n--- describe afterwards:\n'"$DESC"; RC=$decrease_rc
        fail "kafka-topics --alter --partitions 3: want a non-zero exit with InvalidPartitionsException and 4 partitions left"
    fi

    tool "$TOPICS" --alter --topic "$T-unknown" --partitions 5
    if [[ $RC -ne 0 ]] && has "Topic '$T-unknown' does not exist"; then
        pass "kafka-topics --alter of an unknown topic fails (does not exist)"
    else
        fail "kafka-topics --alter of unknown topic $T-unknown: want a non-zero exit and 'does not exist'"
    fi
}

# controller_partitions T: "P LEADER REPLICAS ISR" per partition of T, from the controller of
# STRAND_CLUSTER_DIR (lists comma-separated, in the controller's order).
controller_partitions() {
    local base auth=()
    base="$(cat "$STRAND_CLUSTER_DIR/base-port")"
    [[ -f "$STRAND_CLUSTER_DIR/controller-token" ]] \
        && auth=(-H "Authorization: Bearer $(cat "$STRAND_CLUSTER_DIR/controller-token")")
    curl -sf "${auth[@]}" "http://127.0.0.1:$base/v1/metadata" | python3 -c '
import json, sys
for p in json.load(sys.stdin)["topics"][sys.argv[1]]["partitions"]:
    j = lambda l: ",".join(map(str, l))
    print(p["partition"], p["leader"], j(p["replicas"]), j(p["isr"]))' "$1"
}

# described_partitions T N: the same lines for partitions 0..N-1 from DESC (kafka-topics --describe).
described_partitions() {
    local p
    for ((p = 0; p < $2; p++)); do
        echo "$p $(partition_field "$1" "$p" Leader) $(partition_field "$1" "$p" Replicas) $(partition_field "$1" "$p" Isr)"
    done
}

# Every line of described_partitions: rf replicas, the ISR the same set, the leader among them.
healthy() {
    local p leader replicas isr
    while read -r p leader replicas isr; do
        [[ -n "$p" && "$(tr ',' '\n' <<<"$replicas" | wc -l)" == "$RF" ]] || return 1
        [[ "$(tr ',' '\n' <<<"$replicas" | sort -n)" == "$(tr ',' '\n' <<<"$isr" | sort -n)" ]] || return 1
        [[ ",$replicas," == *",$leader,"* ]] || return 1
    done <<<"$1"
}

check_describe() {
    TOOL_LOG4J="$WORK/log4j2-debug.properties" tool "$TOPICS" --describe --topic "$T"
    local version
    version="$(grep -m1 -oE 'apiKey=DESCRIBE_TOPIC_PARTITIONS, apiVersion=[0-9]+' <<<"$OUT" | grep -oE '[0-9]+$' || true)"
    if [[ $RC -eq 0 ]] && has '^DEBUG .*Sending DESCRIBE_TOPIC_PARTITIONS request' \
        && has '^DEBUG .*Received DESCRIBE_TOPIC_PARTITIONS response' \
        && grep -v '^DEBUG ' <<<"$OUT" | grep -qE "^[[:space:]]+Topic: $T[[:space:]]+Partition: 3[[:space:]]"; then
        pass "kafka-topics --describe is answered by DescribeTopicPartitions v$version (the AdminClient's debug log)"
    else
        OUT="$(grep -v '^DEBUG ' <<<"$OUT")"$'\n--- requests sent:\n'"$(grep -oE 'Sending [A-Z_]+ request' <<<"$OUT" | sort | uniq -c)"
        fail "kafka-topics --describe: want a DESCRIBE_TOPIC_PARTITIONS request and response in the AdminClient's debug log"
    fi
    # A partition added a moment ago may still be catching up: up to 20 s for a healthy view.
    local deadline=$((SECONDS + 20)) shown want=""
    while :; do
        describe_topic "$T"
        shown="$(described_partitions "$T" 4)"
        [[ -n "${STRAND_CLUSTER_DIR:-}" ]] && want="$(controller_partitions "$T" || true)"
        if [[ $RC -eq 0 ]] && healthy "$shown" && [[ -z "${STRAND_CLUSTER_DIR:-}" || "$shown" == "$want" ]]; then
            break
        fi
        ((SECONDS < deadline)) || break
        sleep 1
    done
    if [[ $RC -eq 0 ]] && healthy "$shown" && [[ -z "${STRAND_CLUSTER_DIR:-}" || "$shown" == "$want" ]]; then
        pass "kafka-topics --describe: partitions 0..3 each with $RF replica(s), all in sync, led by one of them" \
            "${STRAND_CLUSTER_DIR:+(as the controller has them) }(partition leader replicas isr: $(tr '\n' ';' <<<"$shown"))"
    else
        OUT="$DESC"$'\n--- partition, leader, replicas, isr:\n'"$shown"$'\n--- the controller:\n'"$want"
        fail "kafka-topics --describe: want $RF replicas per partition, ISR = replicas, leader among them${STRAND_CLUSTER_DIR:+, as the controller has them}"
    fi
}

IDEMPOTENT_RECORDS=7
PRODUCERS=""
# describe_producers T [BROKER]: into PRODUCERS, the producer rows of T-0 (from BROKER with
# --broker-id) as "EPOCH COORDINATOR_EPOCH LAST_SEQUENCE TXN_START".
describe_producers() {
    tool "$TXNS" describe-producers --topic "$1" --partition 0 ${2:+--broker-id "$2"}
    # ProducerId ProducerEpoch LatestCoordinatorEpoch LastSequence LastTimestamp CurrentTransactionStartOffset
    PRODUCERS="$(awk '$1 ~ /^[0-9]+$/ {print $2, $3, $4, $6}' <<<"$OUT")"
}

check_producers() {
    local t="$T-idem" i want
    tool "$TOPICS" --create --topic "$t" --partitions 1 --replication-factor "$RF"
    if [[ $RC -ne 0 ]]; then fail "kafka-topics --create $t"; return 0; fi
    for ((i = 0; i < IDEMPOTENT_RECORDS; i++)); do echo "idempotent-$i"; done >"$WORK/idempotent.txt"
    TOOL_STDIN="$WORK/idempotent.txt" tool "$PRODUCER" --topic "$t" \
        --command-property enable.idempotence=true --command-property acks=all
    if [[ $RC -ne 0 ]] || has 'ERROR|Exception'; then
        fail "kafka-console-producer --command-property enable.idempotence=true: $IDEMPOTENT_RECORDS records to $t"
        return 0
    fi
    want="0 -1 $((IDEMPOTENT_RECORDS - 1)) None"
    describe_producers "$t"
    if [[ $RC -eq 0 && "$PRODUCERS" == "$want" ]]; then
        pass "kafka-transactions describe-producers --topic $t --partition 0: one producer," \
            "epoch 0, coordinator epoch -1, last sequence $((IDEMPOTENT_RECORDS - 1)), no transaction"
    else
        fail "kafka-transactions describe-producers $t-0: want one producer row 'epoch coordinator-epoch last-sequence txn-start' = '$want', got '$PRODUCERS'"
        return 0
    fi
    ((NBROKERS >= 3)) || return 0
    describe_topic "$t"
    local leader follower
    leader="$(partition_field "$t" 0 Leader)"
    follower="$(partition_field "$t" 0 Isr | tr ',' '\n' | grep -vx -- "$leader" | head -n1 || true)"
    if [[ -z "$follower" ]]; then fail "kafka-topics --describe $t: no in-sync follower (leader '$leader')"; return 0; fi
    describe_producers "$t" "$follower"
    if [[ $RC -eq 0 && "$PRODUCERS" == "$want" ]]; then
        pass "kafka-transactions describe-producers --broker-id $follower (a follower of $t-0, led by $leader): the same producer"
    else
        fail "kafka-transactions describe-producers --broker-id $follower (a follower): want '$want', got '$PRODUCERS'"
    fi
}

check_quorum() {
    tool "$QUORUM" describe --status
    if [[ $AGAINST_KAFKA -eq 1 ]]; then
        if [[ $RC -eq 0 ]] && has '^LeaderId:'; then
            pass "kafka-metadata-quorum describe --status (Kafka): $(grep -m1 '^LeaderId:' <<<"$OUT" | tr -s '[:space:]' ' ')"
        else
            fail "kafka-metadata-quorum describe --status against Kafka: want exit 0 and LeaderId"
        fi
    elif [[ $RC -ne 0 ]] && has 'UnsupportedVersionException: The node does not support DESCRIBE_QUORUM'; then
        pass "kafka-metadata-quorum describe --status fails: UnsupportedVersionException: The node does not support DESCRIBE_QUORUM (no KRaft quorum: the controller is the operator)"
    else
        fail "kafka-metadata-quorum describe --status: want a non-zero exit with 'The node does not support DESCRIBE_QUORUM'"
    fi
}

# describe_configs T: kafka-configs --describe into CONF; 0 when it ran and printed the header.
CONF=""
describe_configs() {
    tool "$CONFIGS" --entity-type topics --entity-name "$T" --describe
    CONF="$OUT"
    [[ $RC -eq 0 ]] && grep -q "^Dynamic configs for topic $T are:" <<<"$CONF"
}
conf_has() { grep -qE "^[[:space:]]+$1 " <<<"$CONF"; }
conf_has_key() { grep -qE "^[[:space:]]+$1=" <<<"$CONF"; }

check_configs() {
    tool "$CONFIGS" --entity-type topics --entity-name "$T" --alter \
        --add-config retention.ms=3600000,max.message.bytes=200000
    if [[ $RC -eq 0 ]] && has "^Completed updating config for topic $T\.$"; then
        if describe_configs && conf_has 'retention\.ms=3600000' && conf_has 'max\.message\.bytes=200000'; then
            pass "kafka-configs --add-config retention.ms=3600000,max.message.bytes=200000: --describe shows both"
        else
            fail "kafka-configs --describe after --add-config: want retention.ms=3600000 and max.message.bytes=200000"
        fi
    else
        fail "kafka-configs --alter --add-config retention.ms=3600000,max.message.bytes=200000"
    fi

    tool "$CONFIGS" --entity-type topics --entity-name "$T" --alter --delete-config retention.ms
    if [[ $RC -eq 0 ]] && has "^Completed updating config for topic $T\.$"; then
        if describe_configs && ! conf_has_key 'retention\.ms' && conf_has 'max\.message\.bytes=200000'; then
            pass "kafka-configs --delete-config retention.ms: gone from --describe, max.message.bytes kept"
        else
            fail "kafka-configs --describe after --delete-config retention.ms: want no retention.ms, max.message.bytes=200000"
        fi
    else
        fail "kafka-configs --alter --delete-config retention.ms"
    fi

    # The invalid value travels with a valid change: the whole request must be refused.
    tool "$CONFIGS" --entity-type topics --entity-name "$T" --alter \
        --add-config retention.ms=banana,max.message.bytes=300000
    local bad_out="$OUT" bad_rc=$RC
    if [[ $bad_rc -ne 0 ]] && grep -q 'InvalidConfigurationException' <<<"$bad_out"; then
        if describe_configs && ! conf_has_key 'retention\.ms' && conf_has 'max\.message\.bytes=200000'; then
            pass "kafka-configs --add-config retention.ms=banana (with max.message.bytes=300000) fails with" \
                "InvalidConfigurationException; nothing changed"
        else
            fail "kafka-configs after the refused retention.ms=banana: want no retention.ms and max.message.bytes still 200000"
        fi
    else
        fail "kafka-configs --add-config retention.ms=banana: want a non-zero exit with InvalidConfigurationException"
    fi

    tool "$CONFIGS" --entity-type topics --entity-name "$T" --alter --add-config strand.no.such.config=1
    if [[ $RC -ne 0 ]] && has 'InvalidConfigurationException'; then
        if describe_configs && ! conf_has_key 'strand\.no\.such\.config' && conf_has 'max\.message\.bytes=200000'; then
            pass "kafka-configs --add-config of an unknown config name fails with InvalidConfigurationException"
        else
            fail "kafka-configs after the refused unknown config: want it absent and max.message.bytes still 200000"
        fi
    else
        fail "kafka-configs --add-config strand.no.such.config=1: want a non-zero exit with InvalidConfigurationException"
    fi

    tool "$CONFIGS" --entity-type topics --entity-name "$T-unknown" --alter --add-config retention.ms=1000
    if [[ $RC -ne 0 ]] && has 'UnknownTopicOrPartitionException'; then
        pass "kafka-configs --alter of an unknown topic fails with UnknownTopicOrPartitionException"
    else
        fail "kafka-configs --alter of unknown topic $T-unknown: want a non-zero exit with UnknownTopicOrPartitionException"
    fi
}

# describe_quota ENTITY-ARGS... -- PATTERN...: kafka-configs --describe until every PATTERN
# shows (a cluster's other brokers apply the controller's metadata a moment later), 10 tries.
describe_quota() {
    local args=() try p ok
    while [[ $1 != -- ]]; do args+=("$1"); shift; done
    shift
    for try in 1 2 3 4 5 6 7 8 9 10; do
        tool "$CONFIGS" --describe "${args[@]}"
        ok=1
        for p in "$@"; do has "$p" || ok=0; done
        [[ $RC -eq 0 && $ok -eq 1 ]] && return 0
        sleep 0.5
    done
    return 1
}

# check_quotas: client quotas with kafka-configs (users and clients), enforced on a producer.
check_quotas() {
    local client="$T-perf"
    tool "$CONFIGS" --alter --entity-type clients --entity-name "$client" --add-config producer_byte_rate=20480
    if [[ $RC -eq 0 ]] && has "^Completed updating config for client $client\.$"; then
        if describe_quota --entity-type clients --entity-name "$client" -- "producer_byte_rate=20480"; then
            pass "kafka-configs --entity-type clients --add-config producer_byte_rate=20480: --describe shows it"
        else
            fail "kafka-configs --describe --entity-type clients $client: want producer_byte_rate=20480"
        fi
    else
        fail "kafka-configs --alter --entity-type clients --entity-name $client --add-config producer_byte_rate=20480"
    fi

    tool "$CONFIGS" --alter --entity-type users --entity-name "$T-user" --entity-type clients \
        --entity-default --add-config consumer_byte_rate=4096,request_percentage=50
    if [[ $RC -eq 0 ]]; then
        if describe_quota --entity-type users --entity-name "$T-user" --entity-type clients --entity-default \
            -- "consumer_byte_rate=4096" "request_percentage=50"; then
            pass "kafka-configs --entity-type users --entity-name U --entity-type clients --entity-default: set and described"
        else
            fail "kafka-configs --describe of user $T-user's default client: want consumer_byte_rate=4096 and request_percentage=50"
        fi
    else
        fail "kafka-configs --alter --entity-type users --entity-name $T-user --entity-type clients --entity-default"
    fi

    # 300 KiB at 20 KiB/s: past the window's first ~200 KiB the broker throttles the producer,
    # which the client's own metrics show.
    # (--command-property takes every property at once: a second one replaces the first.)
    tool "$TOPICS" --create --topic "$T-quota" --partitions 1 --replication-factor "$RF"
    [[ $RC -eq 0 ]] || { fail "kafka-topics --create $T-quota"; return 0; }
    tool "$PERF" --topic "$T-quota" --num-records 300 --record-size 1024 --throughput -1 --print-metrics \
        --command-property "client.id=$client" acks=1 batch.size=16384
    local throttle
    throttle="$(grep -E "^producer-metrics:produce-throttle-time-max:\{client-id=$client\}" <<<"$OUT" \
        | grep -oE '[0-9]+\.[0-9]+$' | head -n1 || true)"
    if [[ $RC -eq 0 ]] && has "^300 records sent" && [[ -n "$throttle" ]] && awk -v t="$throttle" 'BEGIN { exit !(t > 0) }'; then
        pass "kafka-producer-perf-test as client.id $client over producer_byte_rate: produce-throttle-time-max ${throttle} ms, all 300 records sent"
    else
        fail "kafka-producer-perf-test as $client: want 300 records sent and produce-throttle-time-max > 0 (got '${throttle}')"
    fi

    tool "$CONFIGS" --alter --entity-type clients --entity-name "$client" --delete-config producer_byte_rate
    local deleted_rc=$RC
    tool "$CONFIGS" --describe --entity-type clients --entity-name "$client"
    if [[ $deleted_rc -eq 0 && $RC -eq 0 ]] && ! has "producer_byte_rate"; then
        pass "kafka-configs --delete-config producer_byte_rate: gone from --describe"
    else
        fail "kafka-configs --delete-config producer_byte_rate for client $client: want it gone"
    fi
    tool "$CONFIGS" --alter --entity-type users --entity-name "$T-user" --entity-type clients \
        --entity-default --delete-config consumer_byte_rate,request_percentage
}

# reassign_json FILE TOPIC PARTITION REPLICAS(comma-separated)
reassign_json() {
    printf '{"version":1,"partitions":[{"topic":"%s","partition":%s,"replicas":[%s]}]}\n' "$2" "$3" "$4" >"$1"
}

check_reassign() {
    describe_topic "$T"
    local old new
    old="$(partition_field "$T" 0 Replicas)"
    if [[ $RC -ne 0 || -z "$old" ]]; then fail "kafka-topics --describe: no replicas for $T-0"; return 0; fi
    BROKER_IDS="$old" # for check_cancel: the 3 broker ids
    # Rotated by one: same broker set, a different order and a different preferred leader.
    new="${old#*,},${old%%,*}"
    reassign_json "$WORK/move.json" "$T" 0 "$new"
    tool "$REASSIGN" --reassignment-json-file "$WORK/move.json" --execute
    if [[ $RC -ne 0 ]] || ! has "^Successfully started partition reassignment for $T-0$"; then
        fail "kafka-reassign-partitions --execute ($T-0: $old -> $new)"
        return 0
    fi
    local deadline=$((SECONDS + 60)) done=0
    while :; do
        tool "$REASSIGN" --reassignment-json-file "$WORK/move.json" --verify
        if [[ $RC -eq 0 ]] && has "^Reassignment of partition $T-0 is complete"; then done=1; break; fi
        if [[ $RC -ne 0 ]] || ! has "^Reassignment of partition $T-0 is still in progress"; then break; fi
        ((SECONDS < deadline)) || break
        sleep 1
    done
    describe_topic "$T"
    if [[ $done -eq 1 && $RC -eq 0 && "$(partition_field "$T" 0 Replicas)" == "$new" ]]; then
        pass "kafka-reassign-partitions --execute/--verify: $T-0 replicas $old -> $new, shown by kafka-topics --describe"
    else
        OUT="$OUT"$'\n--- describe:\n'"$DESC"
        fail "kafka-reassign-partitions: want --verify 'is complete' within 60s and Replicas: $new on $T-0"
    fi

    reassign_json "$WORK/bad.json" "$T" 0 "99,${new#*,}"
    tool "$REASSIGN" --reassignment-json-file "$WORK/bad.json" --execute
    local bad_out="$OUT" bad_rc=$RC
    describe_topic "$T"
    if [[ $bad_rc -ne 0 ]] && grep -q 'Unknown broker id 99' <<<"$bad_out" \
        && [[ "$(partition_field "$T" 0 Replicas)" == "$new" ]]; then
        pass "kafka-reassign-partitions --execute to unknown broker 99 fails (Unknown broker id 99); replicas unchanged"
    else
        OUT="$bad_out"; RC=$bad_rc
        fail "kafka-reassign-partitions to broker 99: want a non-zero exit with 'Unknown broker id 99', replicas unchanged"
    fi
}

check_election() {
    describe_topic "$T"
    local leader replicas preferred
    leader="$(partition_field "$T" 0 Leader)"
    replicas="$(partition_field "$T" 0 Replicas)"
    preferred="${replicas%%,*}"
    tool "$ELECTION" --election-type preferred --topic "$T" --partition 0
    local el_out="$OUT" el_rc=$RC want
    if [[ "$leader" == "$preferred" ]]; then
        want="^Valid replica already elected for partitions .*$T-0"
    else
        # The election moves leadership. (Kafka's controller may also have rebalanced it on its
        # own in between, leader.imbalance.check.interval.seconds: then "already elected".)
        want="^(Successfully completed leader election \(PREFERRED\)|Valid replica already elected) for partitions .*$T-0"
    fi
    describe_topic "$T"
    if [[ $el_rc -eq 0 ]] && grep -qE "$want" <<<"$el_out" && [[ "$(partition_field "$T" 0 Leader)" == "$preferred" ]]; then
        pass "kafka-leader-election preferred --topic $T --partition 0 (leader $leader, replicas $replicas):" \
            "$(grep -m1 -E "$want" <<<"$el_out"); leader now $preferred"
    else
        OUT="$el_out"$'\n--- describe afterwards:\n'"$DESC"; RC=$el_rc
        fail "kafka-leader-election preferred on $T-0 (leader $leader, replicas $replicas): want exit 0, /$want/ and leader $preferred"
    fi

    tool "$ELECTION" --election-type preferred --all-topic-partitions
    if [[ $RC -eq 0 ]] && ! has 'could not be elected|Error|Exception'; then
        pass "kafka-leader-election --election-type preferred --all-topic-partitions" \
            "($(if [[ -z "${OUT//[[:space:]]/}" ]]; then echo "no output: nothing to elect"; else head -c 120 <<<"${OUT//$'\n'/ }"; fi))"
    else
        fail "kafka-leader-election preferred --all-topic-partitions: want exit 0 and no errors"
    fi

    tool "$ELECTION" --election-type unclean --topic "$T" --partition 0
    if [[ $RC -eq 0 ]] && has "^Valid replica already elected for partitions .*$T-0"; then
        pass "kafka-leader-election unclean on healthy $T-0: Valid replica already elected (ElectionNotNeeded)"
    else
        fail "kafka-leader-election unclean on $T-0: want exit 0 and 'Valid replica already elected'"
    fi

    tool "$ELECTION" --election-type preferred --topic "$T-unknown" --partition 0
    if [[ $RC -ne 0 ]] && has 'UnknownTopicOrPartitionException' && has 'could not be elected'; then
        pass "kafka-leader-election on an unknown topic fails (UnknownTopicOrPartitionException)"
    else
        fail "kafka-leader-election on $T-unknown: want a non-zero exit, UnknownTopicOrPartitionException"
    fi
}

RECORDS=20
check_offsets() {
    local i
    for ((i = 0; i < RECORDS; i++)); do printf 'key-%d\tvalue-%d\n' "$i" "$i"; done >"$WORK/records.txt"
    TOOL_STDIN="$WORK/records.txt" tool "$PRODUCER" --topic "$T" \
        --reader-property parse.key=true --command-property acks=all
    if [[ $RC -ne 0 ]] || has 'ERROR|Exception'; then
        fail "kafka-console-producer: $RECORDS keyed records to $T"
        return 1
    fi
    tool "$GET_OFFSETS" --topic "$T"
    local lines sum
    lines="$(grep -E "^$T:[0-9]+:[0-9]+$" <<<"$OUT" | sort -t: -k2,2n || true)"
    sum="$(awk -F: '{s += $3} END {print s + 0}' <<<"$lines")"
    if [[ $RC -eq 0 && "$(cut -d: -f2 <<<"$lines" | tr '\n' ' ')" == "0 1 2 3 " && "$sum" == "$RECORDS" ]]; then
        pass "kafka-get-offsets --topic $T: end offsets $(cut -d: -f2,3 <<<"$lines" | tr '\n' ' ')(sum $RECORDS)"
    else
        fail "kafka-get-offsets --topic $T: want one $T:P:OFFSET line for P=0..3, offsets summing to $RECORDS (got $sum)"
    fi
    tool "$GET_OFFSETS" --topic "$T" --time -2
    lines="$(grep -E "^$T:[0-9]+:[0-9]+$" <<<"$OUT" | sort -t: -k2,2n || true)"
    if [[ $RC -eq 0 && "$(cut -d: -f2,3 <<<"$lines" | tr '\n' ' ')" == "0:0 1:0 2:0 3:0 " ]]; then
        pass "kafka-get-offsets --topic $T --time -2: earliest offsets all 0"
    else
        fail "kafka-get-offsets --time -2 (earliest): want $T:P:0 for P=0..3"
    fi
}

# kafka-delete-records: partition 0 starts at offset 1 afterwards (its earliest offset), the
# other partitions are untouched.
check_delete_records() {
    printf '{"partitions":[{"topic":"%s","partition":0,"offset":1}],"version":1}\n' "$T" >"$WORK/delete-records.json"
    tool "$DELETE_RECORDS" --offset-json-file "$WORK/delete-records.json"
    local deleted_out="$OUT" deleted_rc=$RC
    tool "$GET_OFFSETS" --topic "$T" --time -2
    local lines
    lines="$(grep -E "^$T:[0-9]+:[0-9]+$" <<<"$OUT" | sort -t: -k2,2n || true)"
    if [[ $deleted_rc -eq 0 ]] && grep -qE "partition: $T-0[[:space:]]+low_watermark: 1" <<<"$deleted_out" \
        && [[ "$(cut -d: -f2,3 <<<"$lines" | tr '\n' ' ')" == "0:1 1:0 2:0 3:0 " ]]; then
        pass "kafka-delete-records $T-0 before offset 1: low_watermark 1, earliest offsets now 0:1 1:0 2:0 3:0"
    else
        OUT="$deleted_out"$'\n--- kafka-get-offsets --time -2 afterwards:\n'"$OUT"; RC=$deleted_rc
        fail "kafka-delete-records: want 'low_watermark: 1' for $T-0 and earliest offsets 0:1 1:0 2:0 3:0"
    fi
}

check_groups() {
    local group="$T-group"
    tool "$CONSUMER" --topic "$T" --group "$group" --from-beginning --max-messages "$RECORDS" --timeout-ms 60000
    if [[ $RC -ne 0 || "$(grep -cE '^value-[0-9]+$' <<<"$OUT")" -ne $RECORDS ]]; then
        fail "kafka-console-consumer --group $group: want $RECORDS values"
        return 0
    fi
    tool "$GROUPS_CMD" --list
    if [[ $RC -eq 0 ]] && has "^$group$"; then
        pass "kafka-consumer-groups --list shows $group"
    else
        fail "kafka-consumer-groups --list: want $group"
    fi
    tool "$GROUPS_CMD" --describe --group "$group"
    # GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG ...
    local rows
    rows="$(awk -v g="$group" -v t="$T" '$1 == g && $2 == t {print $3, $4, $5, $6}' <<<"$OUT" | sort -n)"
    if [[ $RC -eq 0 && "$(cut -d' ' -f1 <<<"$rows" | tr '\n' ' ')" == "0 1 2 3 " ]] \
        && awk -v n="$RECORDS" '$2 != $3 || $4 != 0 {bad = 1} {s += $2} END {exit (bad || s != n)}' <<<"$rows"; then
        pass "kafka-consumer-groups --describe --group $group: partitions 0..3 committed at the log end, lag 0"
    else
        fail "kafka-consumer-groups --describe: want partitions 0..3 with CURRENT-OFFSET = LOG-END-OFFSET (sum $RECORDS), LAG 0"
    fi
    # The group is empty now (the console consumer left): its offsets of partition 0 can go.
    tool "$GROUPS_CMD" --delete-offsets --group "$group" --topic "$T:0"
    local deleted_out="$OUT" deleted_rc=$RC
    tool "$GROUPS_CMD" --describe --group "$group"
    rows="$(awk -v g="$group" -v t="$T" '$1 == g && $2 == t {print $3, $4}' <<<"$OUT" | sort -n)"
    if [[ $deleted_rc -eq 0 ]] && grep -q "Request succeeded for deleting offsets" <<<"$deleted_out" \
        && ! grep -qE '^0 [0-9]+$' <<<"$rows" && grep -qE '^1 [0-9]+$' <<<"$rows"; then
        pass "kafka-consumer-groups --delete-offsets --topic $T:0: partition 0's commit gone, 1..3 kept"
    else
        OUT="$deleted_out"$'\n--- describe afterwards:\n'"$OUT"; RC=$deleted_rc
        fail "kafka-consumer-groups --delete-offsets: want partition 0's commit gone and the others kept"
    fi
}

# STRAND_CLUSTER_DIR's controller shows no reassignment of partition 0 of topic $1.
cancelled() {
    local base auth=()
    base="$(cat "$STRAND_CLUSTER_DIR/base-port")"
    [[ -f "$STRAND_CLUSTER_DIR/controller-token" ]] \
        && auth=(-H "Authorization: Bearer $(cat "$STRAND_CLUSTER_DIR/controller-token")")
    curl -sf "${auth[@]}" "http://127.0.0.1:$base/v1/metadata" | python3 -c '
import json, sys
p = json.load(sys.stdin)["topics"][sys.argv[1]]["partitions"][0]
sys.exit(0 if not p.get("adding") and not p.get("removing") else 1)' "$1"
}

# A reassignment kept in progress by a 1 B/s replication throttle, then cancelled.
check_cancel() {
    local c="$T-cancel" b0 b1 b2
    IFS=, read -r b0 b1 b2 <<<"$BROKER_IDS"
    if [[ -z "$b2" ]]; then fail "cancel: no 3 broker ids known (from $T-0's replicas: '$BROKER_IDS')"; return 0; fi
    tool "$TOPICS" --create --topic "$c" --replica-assignment "$b0:$b1"
    if [[ $RC -ne 0 ]]; then fail "kafka-topics --create $c --replica-assignment $b0:$b1"; return 0; fi
    # 3 MB: more than one replica fetch (replica.fetch.max.bytes 1 MiB) can take before the throttle bites.
    tool "$PERF" --topic "$c" --num-records 3000 --record-size 1000 --throughput -1 \
        --command-property acks=all
    if [[ $RC -ne 0 ]] || ! has '^3000 records sent'; then fail "kafka-producer-perf-test: 3000 records to $c"; return 0; fi
    reassign_json "$WORK/cancel.json" "$c" 0 "$b0,$b1,$b2"
    # Kafka: a 1 B/s replication throttle keeps the move in progress. A cluster whose broker
    # processes this script may signal (STRAND_CLUSTER_DIR, e2e/local-cluster's directory):
    # the added broker is stopped (SIGSTOP) instead, so it cannot catch up, and resumed after.
    local paused="" how="--throttle 1" all_brokers="$BOOTSTRAP"
    if [[ -n "${STRAND_CLUSTER_DIR:-}" ]]; then
        paused="$(cat "$STRAND_CLUSTER_DIR/broker-$b2.pid")"
        kill -STOP "$paused"
        how="(broker $b2 stopped)"
        # A stopped broker still accepts connections (the kernel does) and never answers:
        # the tools bootstrap from the others. e2e/local-cluster lists brokers in id order.
        local addrs
        IFS=, read -ra addrs <<<"$BOOTSTRAP"
        unset 'addrs[b2]'
        BOOTSTRAP="$(IFS=,; echo "${addrs[*]}")"
        tool "$REASSIGN" --reassignment-json-file "$WORK/cancel.json" --execute
    else
        tool "$REASSIGN" --reassignment-json-file "$WORK/cancel.json" --execute --throttle 1
    fi
    if [[ $RC -ne 0 ]] || ! has "^Successfully started partition reassignment for $c-0$"; then
        fail "kafka-reassign-partitions --execute $how ($c-0: $b0,$b1 -> $b0,$b1,$b2)"
    else
        tool "$REASSIGN" --list
        if [[ $RC -eq 0 ]] && has "^$c-0: replicas: .*adding: $b2"; then
            local list_out="$OUT"
            if [[ -n "$paused" ]]; then
                # The tool cancels, then clears throttles on every broker, the stopped one
                # included: resume it once the controller shows the move cancelled.
                ( tool "$REASSIGN" --reassignment-json-file "$WORK/cancel.json" --cancel
                  printf '%s' "$OUT" >"$WORK/cancel.out"; echo "$RC" >"$WORK/cancel.rc" ) &
                local bg=$! i
                for i in $(seq 150); do
                    cancelled "$c" && break
                    sleep 0.2
                done
                kill -CONT "$paused"; paused=""; BOOTSTRAP="$all_brokers"
                wait "$bg" || true
                OUT="$(cat "$WORK/cancel.out")"; RC="$(cat "$WORK/cancel.rc")"
            else
                tool "$REASSIGN" --reassignment-json-file "$WORK/cancel.json" --cancel
            fi
            local cancel_out="$OUT" cancel_rc=$RC
            describe_topic "$c"
            if [[ $cancel_rc -eq 0 ]] && grep -qE "^Successfully cancelled partition reassignment for: .*$c-0" <<<"$cancel_out" \
                && [[ "$(partition_field "$c" 0 Replicas)" == "$b0,$b1" ]]; then
                pass "kafka-reassign-partitions --cancel of an in-progress move ($(head -n1 <<<"$(grep "^$c-0" <<<"$list_out")")): replicas back to $b0,$b1"
            else
                OUT="$cancel_out"$'\n--- describe afterwards:\n'"$DESC"; RC=$cancel_rc
                fail "kafka-reassign-partitions --cancel: want 'Successfully cancelled' and replicas $b0,$b1"
            fi
        elif [[ $RC -eq 0 ]] && { has '^No partition reassignments found' || ! has "^$c-0:"; }; then
            skip "kafka-reassign-partitions --cancel: the throttled move of $c-0 had already completed (throttle not applied?)"
        else
            fail "kafka-reassign-partitions --list: want $c-0 in progress (or no reassignment)"
        fi
    fi
    [[ -n "$paused" ]] && kill -CONT "$paused"
    BOOTSTRAP="$all_brokers"
    # Clears the throttles (topic and broker level) once nothing is in progress.
    tool "$REASSIGN" --reassignment-json-file "$WORK/cancel.json" --verify
}

run_checks() {
    local t0=$SECONDS
    T="${TOPIC_PREFIX:-admin-tools}-$(date +%s)-$$"
    RF=1
    ((NBROKERS >= 3)) && RF=3
    log "against $BOOTSTRAP ($NBROKERS broker(s), rf $RF), topic $T"
    # Each check runs as a condition (no errexit inside): its assertions count, not stray statuses.
    if check_topics; then
        check_describe || true
        check_configs || true
        check_quotas || true
        if ((NBROKERS >= 3)); then check_reassign || true; fi
        check_election || true
        if check_offsets; then
            check_groups || true
            check_delete_records || true
        fi
        if ((NBROKERS >= 3)) && [[ -n "${BROKER_IDS:-}" ]]; then check_cancel || true; fi
        check_producers || true
    fi
    check_quorum || true
    echo "admin-tools: $PASSED passed, $FAILED failed, $SKIPPED skipped in $((SECONDS - t0))s against $BOOTSTRAP"
    [[ $FAILED -eq 0 && $PASSED -gt 0 ]]
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_base N: a port P with P..P+N-1 and P+9 (the cluster's controller) free on loopback.
free_base() {
    local i p k ok
    for ((i = 0; i < 100; i++)); do
        p=$((20000 + RANDOM % 12000)) ok=1 # below the ephemeral range (32768+)
        for k in $(seq 0 "$(($1 - 1))") 9; do port_open "$((p + k))" && { ok=0; break; }; done
        [[ $ok -eq 1 ]] && { echo "$p"; return 0; }
    done
    die "no free port range found on 127.0.0.1"
}

main() {
    local against=0
    BOOTSTRAP="" NBROKERS=1 AGAINST_KAFKA=0
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --brokers) [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || die "--brokers needs a number"; NBROKERS="$2"; shift 2 ;;
            --against-kafka) against=1; AGAINST_KAFKA=1; shift ;;
            -h|--help) sed -n '2,70p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
            -*) die "unknown option $1" ;;
            *) [[ -z "$BOOTSTRAP" ]] || die "one BOOTSTRAP only"; BOOTSTRAP="$1"; shift ;;
        esac
    done
    [[ $against -eq 1 || -n "$BOOTSTRAP" ]] || die "usage: admin-tools.sh BOOTSTRAP [--brokers N] | --against-kafka [--brokers N]"
    command -v "$JAVA" >/dev/null || die "no java ($JAVA); Kafka's tools need Java 17+"
    CP="$("$KAFKA_SH" classpath)"
    WORK="$(mktemp -d -t strand-admin-tools.XXXXXX)"
    printf '%s\n' 'rootLogger.level=ERROR' 'rootLogger.appenderRef.e.ref=E' 'appender.e.type=Console' \
        'appender.e.name=E' 'appender.e.target=SYSTEM_ERR' 'appender.e.layout.type=PatternLayout' \
        'appender.e.layout.pattern=%p %m%n' >"$WORK/log4j2-tools.properties"
    # The same, with the clients' requests and responses (NetworkClient at DEBUG).
    printf '%s\n' 'logger.nc.name=org.apache.kafka.clients.NetworkClient' 'logger.nc.level=DEBUG' \
        | cat "$WORK/log4j2-tools.properties" - >"$WORK/log4j2-debug.properties"
    local rc=0
    if [[ $against -eq 1 ]]; then
        [[ -z "$BOOTSTRAP" ]] || die "--against-kafka takes no BOOTSTRAP"
        local kdir="$WORK/kafka" base
        if ((NBROKERS == 1)); then
            base="$(free_base 2)"
            # shellcheck disable=SC2064
            trap "'$KAFKA_SH' stop '$kdir' >/dev/null 2>&1 || true; rm -rf '$WORK'" EXIT
            BOOTSTRAP="$("$KAFKA_SH" start "$kdir" "$base")"
        elif ((NBROKERS == 3)); then
            base="$(free_base 3)"
            # shellcheck disable=SC2064
            trap "'$KAFKA_SH' stop-cluster '$kdir' >/dev/null 2>&1 || true; rm -rf '$WORK'" EXIT
            BOOTSTRAP="$("$KAFKA_SH" start-cluster "$kdir" "$base")"
        else
            die "--against-kafka runs 1 (kafka.sh start) or 3 (kafka.sh start-cluster) brokers"
        fi
        run_checks || rc=$?
        [[ $rc -eq 0 ]] && echo "admin-tools: all checks passed against Apache Kafka $("$KAFKA_SH" version) ($NBROKERS broker(s))" \
            || echo "admin-tools: checks FAILED against Apache Kafka ($NBROKERS broker(s))" >&2
    else
        # shellcheck disable=SC2064
        trap "rm -rf '$WORK'" EXIT
        run_checks || rc=$?
        [[ $rc -eq 0 ]] && echo "admin-tools: all checks passed against $BOOTSTRAP" \
            || echo "admin-tools: checks FAILED against $BOOTSTRAP" >&2
    fi
    return $rc
}

main "$@"
