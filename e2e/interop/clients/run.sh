#!/usr/bin/env bash
# Non-Java client interop: three client families that speak ListOffsets v1-v3 (a past Strand
# bug made exactly these fail) produce to and consume from a running broker or cluster:
#
#   kafkajs   2.2.4 (Node.js; kafkajs/check.js, pinned by kafkajs/package-lock.json)
#             admin.createTopics (3 partitions, rf 1, or 3 with --brokers >= 3); an idempotent
#             producer (acks -1) sends 300 keyed messages in two timestamped waves;
#             fetchTopicOffsets (latest/earliest) sums to 300; a consumer group fromBeginning
#             reads every value exactly once (keys, timestamps, offsets); admin.fetchOffsets
#             shows its commits at the ends; fetchTopicOffsetsByTimestamp gives each partition's
#             first wave-2 offset; a second consumer in the group reads exactly 10 new messages;
#             a new group without fromBeginning (latest) reads exactly the 5 produced after it
#   kafka-go  segmentio/kafka-go v0.4.51 (Go; kafka-go/main.go, pinned by go.sum)
#             Writer (RequiredAcks all) writes 300 keyed, timestamped messages; Conn.ReadFirstOffset,
#             ReadLastOffset, ReadOffset(time) (ListOffsets v1) per partition leader; a partition
#             Reader from FirstOffset per partition and a group Reader (GroupID) read all 300
#             exactly once; OffsetFetch shows the commits; a second group Reader reads exactly
#             the 10 new messages
#   kcat      Debian's kcat (librdkafka 2.x) on a 3-partition topic (created by the kafka-go
#             binary): -P -K: of 100 keyed lines in two waves; -C -o beginning -e reads all
#             100; -Q T:P:<ts between the waves> gives each partition's first wave-2 offset (-1
#             when none) and a later timestamp -1; -o s@<ts> reads exactly wave 2; -o -3 reads
#             each partition's last 3; -G (balanced consumer, auto.offset.reset=earliest, -e)
#             reads all 100, and after 5 more a second -G run reads exactly those 5; -L shows
#             the topic with 3 partitions and their leaders
#
# Usage:
#   run.sh BOOTSTRAP [--brokers N]
#               BOOTSTRAP host:port (or a comma-separated list); N = brokers in the cluster
#               (default 1): N >= 3 creates the topics with replication factor 3
#   run.sh --against-kafka [--brokers 1|3]
#               start a throwaway real Apache Kafka (e2e/kafka/kafka.sh: `start` for 1,
#               `start-cluster` for 3) on free loopback ports, run the checks, stop it
#               (validates the checks themselves)
#   run.sh --setup-only
#               install kcat, kafkajs and build the kafka-go binary (setup.sh), nothing else
#
# Clients are installed by setup.sh beside this script and cached under
# ${STRAND_CACHE:-$HOME/.cache/strand} (kcat itself with apt-get): a second run downloads nothing.
# Env: STRAND_CACHE, CLIENTS (subset to run, default "kafkajs kafka-go kcat"), TOPIC_PREFIX
#      (default clients), CLIENT_TIMEOUT_S (bound on each client program run, default 240;
#      each kcat command gets 60 s).
# Output: one PASS/FAIL line per check; a failed check shows the client's output (its own
# error, logs and exit status). Exit status: 0 only if every check passed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KAFKA_SH="$HERE/../../kafka/kafka.sh"
CLIENT_TIMEOUT_S="${CLIENT_TIMEOUT_S:-240}"
KCAT_TIMEOUT_S=60

die() { echo "interop/clients/run.sh: error: $*" >&2; exit 1; }
log() { echo "interop/clients/run.sh: $*" >&2; }

PASSED=0 FAILED=0
OUT="" RC=0

pass() { echo "PASS $*"; PASSED=$((PASSED + 1)); }
# fail MESSAGE: also shows the last command's exit status and output (stdout and stderr).
fail() {
    echo "FAIL $*" >&2
    echo "  last command exit status $RC, output:" >&2
    sed -n '1,200s/^/  | /p' <<<"$OUT" >&2
    local n
    n="$(wc -l <<<"$OUT")"
    ((n <= 200)) || echo "  | ... ($((n - 200)) more lines)" >&2
    FAILED=$((FAILED + 1))
}

# run SECONDS CMD...: sets OUT (stdout and stderr together) and RC; stdin from $STDIN or /dev/null.
run() {
    local secs="$1"; shift
    set +e
    OUT="$(timeout -k 5 "$secs" "$@" <"${STDIN:-/dev/null}" 2>&1)"
    RC=$?
    set -e
    if [[ $RC -eq 124 || $RC -eq 137 ]]; then OUT="$OUT"$'\n'"(killed after ${secs}s)"; fi
}

# run_split SECONDS CMD...: like run, but OUT is stdout only and ERR stderr.
ERR=""
run_split() {
    local secs="$1"; shift
    set +e
    OUT="$(timeout -k 5 "$secs" "$@" <"${STDIN:-/dev/null}" 2>"$WORK/stderr")"
    RC=$?
    set -e
    ERR="$(cat "$WORK/stderr")"
    if [[ $RC -eq 124 || $RC -eq 137 ]]; then ERR="$ERR"$'\n'"(killed after ${secs}s)"; fi
}

# A client program prints its own PASS/FAIL lines: count them, and fail when it exited
# non-zero or printed no PASS (so it cannot pass vacuously); show everything it said then.
client_program() {
    local name="$1"; shift
    local t0=$SECONDS
    log "$name: $*"
    run "$CLIENT_TIMEOUT_S" "$@"
    local p f
    p="$(grep -c '^PASS ' <<<"$OUT" || true)"
    f="$(grep -c '^FAIL ' <<<"$OUT" || true)"
    grep -E '^(PASS|FAIL) ' <<<"$OUT" | while IFS= read -r line; do
        if [[ "$line" == PASS* ]]; then echo "$line"; else echo "$line" >&2; fi
    done
    PASSED=$((PASSED + p))
    FAILED=$((FAILED + f))
    if [[ $RC -ne 0 || $f -gt 0 || $p -eq 0 ]]; then
        # The program's FAIL lines were counted; its exit status alone counts when it had none.
        if [[ $f -eq 0 ]]; then
            fail "$name exited with status $RC after $p PASS lines and no FAIL line"
        else
            echo "  $name exit status $RC, its full output:" >&2
            sed 's/^/  | /' <<<"$OUT" >&2
        fi
    else
        log "$name: $p checks passed in $((SECONDS - t0))s"
    fi
}

check_kafkajs() {
    client_program kafkajs env NODE_PATH="$KAFKAJS_NODE_PATH" KAFKAJS_NO_PARTITIONER_WARNING=1 \
        node "$HERE/kafkajs/check.js" "$BOOTSTRAP" "$PREFIX-kafkajs" "$RF"
}

check_kafka_go() {
    client_program kafka-go "$KAFKA_GO_BIN" check "$BOOTSTRAP" "$PREFIX-kafka-go" "$RF"
}

# librdkafka's own timeouts below our bound (KCAT_TIMEOUT_S), so a hang shows its error.
KCAT_X=(-X socket.timeout.ms=20000)

# kcat_produce FROM TO: lines k-I:kcat-I, keyed with -K:, acks=all.
kcat_produce() {
    local i lines=""
    for ((i = $1; i < $2; i++)); do lines+="k-$i:kcat-$i"$'\n'; done
    printf '%s' "$lines" >"$WORK/kcat-in"
    STDIN="$WORK/kcat-in" run "$KCAT_TIMEOUT_S" "$KCAT" -P -b "$BOOTSTRAP" -t "$T" -K: -X acks=all -X message.timeout.ms=30000 "${KCAT_X[@]}"
    [[ $RC -eq 0 ]]
}

# kcat_values_once N FROM TO: OUT (lines "P\tO\tK\tV\tTS") has N lines, each value kcat-I for
# I in [FROM, TO) exactly once with key k-I. Sets WHY when not.
WHY=""
kcat_values_once() {
    local n="$1" from="$2" to="$3"
    WHY="$(awk -F'\t' -v n="$n" -v from="$from" -v to="$to" '
        NF < 4 { bad = bad " malformed line: " $0; next }
        { lines++; v = $4; sub(/^kcat-/, "", v); v += 0
          if ($4 !~ /^kcat-[0-9]+$/ || v < from || v >= to) { bad = bad " unexpected value " $4; next }
          if ($3 != "k-" v) bad = bad " " $4 " has key " $3
          seen[v]++ }
        END { if (lines != n) bad = bad " " lines + 0 " lines, want " n
              for (i = from; i < to; i++) if (seen[i] != 1) bad = bad " kcat-" i " seen " seen[i] + 0 " times"
              print substr(bad, 1, 600) }' <<<"$OUT")"
    [[ -z "$WHY" ]]
}

check_kcat() {
    local t0=$SECONDS
    T="$PREFIX-kcat"
    log "kcat: topic $T"
    run 90 "$KAFKA_GO_BIN" create-topic "$BOOTSTRAP" "$T" 3 "$RF"
    if [[ $RC -ne 0 ]]; then fail "kcat: creating topic $T (3 partitions, rf $RF) with the kafka-go binary"; return 0; fi

    # Two waves of 50 with a timestamp between them (librdkafka stamps CreateTime at produce).
    local ts_mid
    if ! kcat_produce 0 50; then fail "kcat -P -K: (50 keyed lines, acks=all)"; return 0; fi
    sleep 0.3
    ts_mid="$(date +%s%3N)"
    sleep 0.3
    if ! kcat_produce 50 100; then fail "kcat -P -K: (50 more keyed lines, acks=all)"; return 0; fi
    pass "kcat -P -K: produced 100 keyed lines (acks=all) in two waves"

    # Everything from the beginning (ListOffsets earliest).
    local fmt='%p\t%o\t%k\t%s\t%T\n' all
    run_split "$KCAT_TIMEOUT_S" "$KCAT" -C -b "$BOOTSTRAP" -t "$T" -o beginning -e -q -f "$fmt" "${KCAT_X[@]}"
    all="$OUT"
    if [[ $RC -eq 0 ]] && kcat_values_once 100 0 100; then
        pass "kcat -C -o beginning -e: all 100 keyed values exactly once"
    else
        OUT="$OUT"$'\n'"--- stderr:"$'\n'"$ERR"
        fail "kcat -C -o beginning -e: want kcat-0..kcat-99 exactly once with their keys:$WHY"
        return 0
    fi
    # Per partition: its end offset and the number of wave-1 records (the first wave-2 offset).
    local p ends=() firsts=() ok=1
    for p in 0 1 2; do
        ends[p]="$(awk -F'\t' -v p="$p" '$1 == p { n++ } END { print n + 0 }' <<<"$all")"
        firsts[p]="$(awk -F'\t' -v p="$p" '$1 == p { v = $4; sub(/^kcat-/, "", v); if (v + 0 < 50) n++ } END { print n + 0 }' <<<"$all")"
        # Offsets 0..end-1 each once.
        [[ "$(awk -F'\t' -v p="$p" '$1 == p { print $2 }' <<<"$all" | sort -n | tr '\n' ' ')" == "$(seq -s ' ' 0 $((ends[p] - 1))) " || ${ends[p]} -eq 0 ]] || ok=0
    done
    if [[ $ok -ne 1 ]]; then OUT="$all"; fail "kcat -C: offsets per partition are not 0..end-1"; fi

    # -Q: offsets for a timestamp (ListOffsets by timestamp).
    run_split "$KCAT_TIMEOUT_S" "$KCAT" -Q -b "$BOOTSTRAP" -t "$T:0:$ts_mid" -t "$T:1:$ts_mid" -t "$T:2:$ts_mid" "${KCAT_X[@]}"
    local want got
    want="" got=""
    for p in 0 1 2; do
        local w="${firsts[p]}"
        [[ "$w" -eq "${ends[p]}" ]] && w=-1 # no wave-2 record on this partition
        want+="$p:$w "
        got+="$p:$(sed -nE "s/^$T \[$p\] offset (-?[0-9]+)$/\1/p" <<<"$OUT" | head -n1) "
    done
    if [[ $RC -eq 0 && "$got" == "$want" ]]; then
        pass "kcat -Q -t $T:P:<timestamp between the waves>: each partition's first wave-2 offset ($got)"
    else
        OUT="$OUT"$'\n'"--- stderr:"$'\n'"$ERR"
        fail "kcat -Q $T:P:$ts_mid: want offsets $want, got $got"
    fi
    local later=$((ts_mid + 3600 * 1000))
    run_split "$KCAT_TIMEOUT_S" "$KCAT" -Q -b "$BOOTSTRAP" -t "$T:0:$later" "${KCAT_X[@]}"
    if [[ $RC -eq 0 ]] && grep -qE "^$T \[0\] offset -1$" <<<"$OUT"; then
        pass "kcat -Q -t $T:0:<an hour after the records>: offset -1"
    else
        OUT="$OUT"$'\n'"--- stderr:"$'\n'"$ERR"
        fail "kcat -Q $T:0:$later: want offset -1 (no record at or after it)"
    fi

    # -o s@TS: start at a timestamp (ListOffsets by timestamp inside the consumer).
    run_split "$KCAT_TIMEOUT_S" "$KCAT" -C -b "$BOOTSTRAP" -t "$T" -o "s@$ts_mid" -e -q -f "$fmt" "${KCAT_X[@]}"
    if [[ $RC -eq 0 ]] && kcat_values_once 50 50 100; then
        pass "kcat -C -o s@<timestamp between the waves> -e: exactly the 50 wave-2 values"
    else
        OUT="$OUT"$'\n'"--- stderr:"$'\n'"$ERR"
        fail "kcat -C -o s@$ts_mid: want kcat-50..kcat-99 exactly once:$WHY"
    fi

    # -o -3: the last 3 of each partition (ListOffsets latest, then back 3).
    run_split "$KCAT_TIMEOUT_S" "$KCAT" -C -b "$BOOTSTRAP" -t "$T" -o -3 -e -q -f "$fmt" "${KCAT_X[@]}"
    local expect_tail
    expect_tail="$(for p in 0 1 2; do awk -F'\t' -v p="$p" -v e="${ends[p]}" '$1 == p && $2 >= e - 3 { print $1, $2, $4 }' <<<"$all"; done | sort)"
    if [[ $RC -eq 0 && -n "$expect_tail" && "$(awk -F'\t' '{ print $1, $2, $4 }' <<<"$OUT" | sort)" == "$expect_tail" ]]; then
        pass "kcat -C -o -3 -e: each partition's last 3 records (ends ${ends[*]})"
    else
        OUT="$OUT"$'\n'"--- want (partition offset value):"$'\n'"$expect_tail"$'\n'"--- stderr:"$'\n'"$ERR"
        fail "kcat -C -o -3: want each partition's last 3 records"
    fi

    # Balanced consumer group: reads everything (no commit yet: auto.offset.reset=earliest),
    # commits on close; a second run reads only what was produced since.
    local group="$T-group"
    local gx=(-X auto.offset.reset=earliest -X session.timeout.ms=10000 "${KCAT_X[@]}")
    run_split "$KCAT_TIMEOUT_S" "$KCAT" -b "$BOOTSTRAP" -G "$group" "${gx[@]}" -e -q -f "$fmt" "$T"
    if [[ $RC -eq 0 ]] && kcat_values_once 100 0 100; then
        pass "kcat -G $group (balanced consumer, -e): all 100 values exactly once"
    else
        OUT="$OUT"$'\n'"--- stderr:"$'\n'"$ERR"
        fail "kcat -G $group -e: want kcat-0..kcat-99 exactly once:$WHY"
        return 0
    fi
    if ! kcat_produce 100 105; then fail "kcat -P -K: (5 more keyed lines)"; return 0; fi
    run_split "$KCAT_TIMEOUT_S" "$KCAT" -b "$BOOTSTRAP" -G "$group" "${gx[@]}" -e -q -f "$fmt" "$T"
    if [[ $RC -eq 0 ]] && kcat_values_once 5 100 105; then
        pass "kcat -G $group again: resumed at its commits, exactly the 5 new values"
    else
        OUT="$OUT"$'\n'"--- stderr:"$'\n'"$ERR"
        fail "kcat -G $group (second run): want exactly kcat-100..kcat-104:$WHY"
    fi

    # -L: the topic with its 3 partitions, each with a leader and RF replicas.
    run "$KCAT_TIMEOUT_S" "$KCAT" -L -b "$BOOTSTRAP" -t "$T" "${KCAT_X[@]}"
    local plines
    plines="$(grep -cE "^ +partition [0-2], leader [0-9]+, replicas: [0-9]+(,[0-9]+){$((RF - 1))}, isrs: " <<<"$OUT" || true)"
    if [[ $RC -eq 0 ]] && grep -qE "^ +topic \"$T\" with 3 partitions:$" <<<"$OUT" && [[ "$plines" -eq 3 ]]; then
        pass "kcat -L -t $T: 3 partitions, each with a leader and $RF replica(s)"
    else
        fail "kcat -L -t $T: want 'topic \"$T\" with 3 partitions:' and 3 partition lines with a leader and $RF replicas"
    fi
    log "kcat: done in $((SECONDS - t0))s"
}

run_checks() {
    local t0=$SECONDS c
    PREFIX="${TOPIC_PREFIX:-clients}-$(date +%s)-$$"
    RF=1
    ((NBROKERS >= 3)) && RF=3
    log "against $BOOTSTRAP ($NBROKERS broker(s), rf $RF), topics $PREFIX-*"
    for c in $CLIENTS; do
        case "$c" in
            kafkajs) check_kafkajs ;;
            kafka-go) check_kafka_go ;;
            kcat) check_kcat ;;
        esac
    done
    echo "interop/clients: $PASSED passed, $FAILED failed in $((SECONDS - t0))s against $BOOTSTRAP"
    [[ $FAILED -eq 0 && $PASSED -gt 0 ]]
}

setup() {
    # kcat's topic is created by the kafka-go binary.
    local need=() c
    for c in $CLIENTS; do
        case "$c" in
            kafkajs) need+=(kafkajs) ;;
            kafka-go) need+=(kafka-go) ;;
            kcat) need+=(kcat kafka-go) ;;
            *) die "unknown client '$c' in CLIENTS (kafkajs, kafka-go, kcat)" ;;
        esac
    done
    local vars
    # shellcheck disable=SC2207 # one word per client name
    need=($(printf '%s\n' "${need[@]}" | sort -u))
    vars="$(bash "$HERE/setup.sh" "${need[@]}")" || die "setup.sh failed"
    eval "$vars"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_base N: a port P with P..P+N-1 and P+9 (kafka.sh's controller) free on loopback.
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
    local against=0 setup_only=0
    BOOTSTRAP="" NBROKERS=1
    CLIENTS="${CLIENTS:-kafkajs kafka-go kcat}"
    KCAT="" KAFKAJS_NODE_PATH="" KAFKA_GO_BIN=""
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --brokers) [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || die "--brokers needs a number"; NBROKERS="$2"; shift 2 ;;
            --against-kafka) against=1; shift ;;
            --setup-only) setup_only=1; shift ;;
            -h|--help) sed -n '2,44p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
            -*) die "unknown option $1" ;;
            *) [[ -z "$BOOTSTRAP" ]] || die "one BOOTSTRAP only"; BOOTSTRAP="$1"; shift ;;
        esac
    done
    if [[ $setup_only -eq 1 ]]; then
        setup
        log "setup done"
        return 0
    fi
    [[ $against -eq 1 || -n "$BOOTSTRAP" ]] || die "usage: run.sh BOOTSTRAP [--brokers N] | --against-kafka [--brokers 1|3] | --setup-only"
    setup
    WORK="$(mktemp -d -t strand-clients.XXXXXX)"
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
        [[ $rc -eq 0 ]] && echo "interop/clients: all checks passed against Apache Kafka $("$KAFKA_SH" version) ($NBROKERS broker(s))" \
            || echo "interop/clients: checks FAILED against Apache Kafka ($NBROKERS broker(s))" >&2
    else
        # shellcheck disable=SC2064
        trap "rm -rf '$WORK'" EXIT
        run_checks || rc=$?
        [[ $rc -eq 0 ]] && echo "interop/clients: all checks passed against $BOOTSTRAP" \
            || echo "interop/clients: checks FAILED against $BOOTSTRAP" >&2
    fi
    return $rc
}

main "$@"
