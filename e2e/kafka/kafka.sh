#!/usr/bin/env bash
# Run a real Apache Kafka 4.x (single-node KRaft, loopback only) as the
# reference broker for interop tests and benchmarks.
#
# Kafka is assembled from Maven Central jars (no tarball download is possible
# here), cached under $CACHE/kafka-<version>/libs and reused.
#
# Usage:
#   kafka.sh fetch              resolve jars into the cache (no-op when present)
#   kafka.sh classpath          print the classpath (fetches first if needed)
#   kafka.sh version            print the Kafka version in use
#   kafka.sh start DIR PORT     start broker+controller; prints bootstrap address
#   kafka.sh stop DIR           SIGTERM, wait for exit (SIGKILL after a timeout)
#   kafka.sh status DIR         exit 0 when the broker in DIR is running
#   kafka.sh start-cluster DIR BASEPORT
#                               3-broker KRaft cluster: one dedicated controller
#                               (node 10, DIR/controller, port BASEPORT+9) and brokers
#                               0..2 (DIR/broker-I, port BASEPORT+I); prints the
#                               bootstrap list. Each node dir works with stop/status.
#   kafka.sh stop-cluster DIR   SIGTERM the brokers, then the controller
#   kafka.sh start-node NODEDIR PORT
#                               start one node of a cluster again (e.g. DIR/broker-1 on
#                               BASEPORT+1, after it was stopped or killed); waits until ready
#
# Environment:
#   STRAND_CACHE    cache root (default ~/.cache/strand)
#   KAFKA_VERSION   Kafka version from Maven Central (default below)
#   KAFKA_HEAP_OPTS JVM heap flags (default -Xmx1g -Xms1g, like kafka-server-start.sh;
#                   start-cluster: -Xmx512m -Xms512m per node)
#   KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS  group.initial.rebalance.delay.ms for `start`
#                   (default 0; Kafka's own default is 3000)
#   KAFKA_EXTRA_PROPS  more server.properties for `start`, space-separated key=value
#   JAVA            java binary (default: $JAVA_HOME/bin/java, else java on PATH)
#   KAFKA_START_TIMEOUT seconds to wait for readiness (default 120)
set -euo pipefail

CACHE="${STRAND_CACHE:-$HOME/.cache/strand}"
KAFKA_VERSION="${KAFKA_VERSION:-4.3.1}"
KAFKA_HOME="$CACHE/kafka-$KAFKA_VERSION"
LIBS="$KAFKA_HOME/libs"
# Marker written only after a complete copy, so an interrupted fetch is redone.
FETCH_MARKER="$KAFKA_HOME/.fetch-complete"

die() { echo "kafka.sh: error: $*" >&2; exit 1; }
log() { echo "kafka.sh: $*" >&2; }

java_bin() {
    if [[ -n "${JAVA:-}" ]]; then echo "$JAVA"
    elif [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then echo "$JAVA_HOME/bin/java"
    else command -v java || die "no java found (Kafka 4.x needs Java 17+); set JAVA or JAVA_HOME"
    fi
}

cmd_fetch() {
    if [[ -f "$FETCH_MARKER" ]]; then
        return 0
    fi
    command -v mvn >/dev/null || die "mvn not found (needed to fetch Kafka jars from Maven Central)"
    log "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central into $LIBS"
    mkdir -p "$KAFKA_HOME"
    local work="$KAFKA_HOME/fetch"
    rm -rf "$work" "$LIBS.tmp"
    mkdir -p "$work"
    # A throwaway pom whose runtime closure is the broker (kafka_2.13), the
    # CLI tools (kafka-tools: ProducerPerformance, StorageTool deps...) and
    # the clients. log4j-core + slf4j binding give the broker a logger (the
    # Kafka tarball ships the same).
    cat >"$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>strand.e2e</groupId>
  <artifactId>kafka-dist</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-clients</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.24.3</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>2.24.3</version></dependency>
  </dependencies>
</project>
EOF
    # Output goes to a log, shown only on failure.
    if ! mvn -B -q -Dstyle.color=never -Dmaven.repo.local="$CACHE/m2" -f "$work/pom.xml" \
        org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$LIBS.tmp" >"$work/mvn.log" 2>&1; then
        cat "$work/mvn.log" >&2
        die "mvn could not resolve Kafka $KAFKA_VERSION (network to Maven Central? does that version exist there?)"
    fi
    [[ -f "$LIBS.tmp/kafka_2.13-$KAFKA_VERSION.jar" ]] || die "kafka_2.13-$KAFKA_VERSION.jar missing after fetch"
    rm -rf "$LIBS"
    mv "$LIBS.tmp" "$LIBS"
    touch "$FETCH_MARKER"
    log "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars"
}

classpath() { echo "$LIBS/*"; }

# Run a Kafka main class in the foreground (used for the storage tool).
run_class() {
    local main="$1"; shift
    "$(java_bin)" -Xmx256m -cp "$(classpath)" \
        -Dlog4j2.configurationFile="$LOG4J_CONF" "$main" "$@"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_alive() { [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; }

read_pid() { if [[ -f "$1/kafka.pid" ]]; then cat "$1/kafka.pid"; fi; }

write_log4j() {
    LOG4J_CONF="$1/log4j2.properties"
    # INFO to stdout (redirected to DIR/kafka.log); noisy internals at WARN.
    cat >"$LOG4J_CONF" <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
EOF
}

# spawn_node DIR HEAP: start kafka.Kafka on DIR/server.properties in the
# background (pid in DIR/kafka.pid, output in DIR/kafka.log). Same JVM flags
# as the Kafka tarball's kafka-server-start.sh / kafka-run-class.sh.
spawn_node() {
    local dir="$1" heap="$2"
    # shellcheck disable=SC2086
    nohup "$(java_bin)" $heap -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
        -Djava.awt.headless=true -Dlog4j2.configurationFile="$dir/log4j2.properties" \
        -cp "$(classpath)" kafka.Kafka "$dir/server.properties" \
        </dev/null >"$dir/kafka.log" 2>&1 &
    echo "$!" >"$dir/kafka.pid"
}

# wait_ready DIR PORT: ready = process alive, PORT accepting, and the server
# logged that startup finished (the port alone can open slightly early).
wait_ready() {
    local dir="$1" port="$2" pid
    pid="$(read_pid "$dir")"
    local timeout="${KAFKA_START_TIMEOUT:-120}" waited=0
    while :; do
        if ! pid_alive "$pid"; then
            tail -n 40 "$dir/kafka.log" >&2 || true
            rm -f "$dir/kafka.pid"
            die "Kafka exited during startup (log: $dir/kafka.log)"
        fi
        if port_open "$port" && grep -q "Kafka Server started" "$dir/kafka.log" 2>/dev/null; then
            break
        fi
        if (( waited >= timeout * 5 )); then
            tail -n 40 "$dir/kafka.log" >&2 || true
            cmd_stop "$dir" || true
            die "Kafka not ready after ${timeout}s (log: $dir/kafka.log)"
        fi
        sleep 0.2; waited=$((waited + 1))
    done
}

cmd_start() {
    [[ $# -eq 2 ]] || die "usage: kafka.sh start DIR PORT"
    local dir="$1" port="$2"
    [[ "$port" =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$port'"
    local cport=$((port + 1))
    cmd_fetch
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    local pid; pid="$(read_pid "$dir")"
    if pid_alive "$pid"; then
        die "a Kafka broker is already running from $dir (pid $pid); run 'kafka.sh stop $dir' first"
    fi
    for p in "$port" "$cport"; do
        port_open "$p" && die "port $p on 127.0.0.1 is already in use"
    done

    write_log4j "$dir"

    # Combined broker+controller, everything on loopback; replication factors
    # of internal topics forced to 1 since there is a single node.
    cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=${KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS:-0}
num.network.threads=3
num.io.threads=8
log.retention.hours=168
EOF
    # Extra broker properties, one key=value per word (later keys win over the above).
    for kv in ${KAFKA_EXTRA_PROPS:-}; do
        [[ "$kv" == *=* ]] || die "KAFKA_EXTRA_PROPS: expected key=value, got '$kv'"
        echo "$kv" >>"$dir/server.properties"
    done

    # Format storage once; a restart on the same DIR keeps its data.
    if [[ ! -f "$dir/data/meta.properties" ]]; then
        local cluster_id
        cluster_id="$(run_class kafka.tools.StorageTool random-uuid 2>"$dir/format.log" | tail -n1)" \
            || die "StorageTool random-uuid failed; see $dir/format.log"
        run_class kafka.tools.StorageTool format -t "$cluster_id" \
            -c "$dir/server.properties" >>"$dir/format.log" 2>&1 \
            || { cat "$dir/format.log" >&2; die "storage format failed (log: $dir/format.log)"; }
    fi

    local heap="${KAFKA_HEAP_OPTS:--Xmx1g -Xms1g}"
    spawn_node "$dir" "$heap"
    pid="$(read_pid "$dir")"
    wait_ready "$dir" "$port"
    log "Kafka $KAFKA_VERSION ready (pid $pid, data $dir/data, log $dir/kafka.log)"
    echo "127.0.0.1:$port"
}

cmd_stop() {
    [[ $# -eq 1 ]] || die "usage: kafka.sh stop DIR"
    local dir="$1" pid
    pid="$(read_pid "$dir")"
    if ! pid_alive "$pid"; then
        rm -f "$dir/kafka.pid"
        log "no running Kafka in $dir"
        return 0
    fi
    # SIGTERM lets Kafka run its controlled shutdown and flush logs.
    kill -TERM "$pid"
    local i
    for ((i = 0; i < 600; i++)); do
        pid_alive "$pid" || break
        sleep 0.1
    done
    if pid_alive "$pid"; then
        log "Kafka (pid $pid) still alive after 60s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$dir/kafka.pid"
    log "stopped Kafka (pid $pid)"
}

cmd_status() {
    [[ $# -eq 1 ]] || die "usage: kafka.sh status DIR"
    local pid; pid="$(read_pid "$1")"
    if pid_alive "$pid"; then echo "running (pid $pid)"; else echo "not running"; return 1; fi
}

# Common server.properties lines of a cluster node; $1 = controller port.
cluster_common_props() {
    echo "controller.quorum.voters=10@127.0.0.1:$1"
    echo "controller.listener.names=CONTROLLER"
    echo "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    echo "num.network.threads=3"
    echo "num.io.threads=8"
    echo "log.retention.hours=168"
}

cmd_start_cluster() {
    [[ $# -eq 2 ]] || die "usage: kafka.sh start-cluster DIR BASEPORT"
    local dir="$1" base="$2"
    [[ "$base" =~ ^[0-9]+$ ]] || die "BASEPORT must be a number, got '$base'"
    local cport=$((base + 9)) i p n
    cmd_fetch
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    for n in controller broker-0 broker-1 broker-2; do
        if pid_alive "$(read_pid "$dir/$n")"; then
            die "$dir/$n is already running; run 'kafka.sh stop-cluster $dir' first"
        fi
    done
    for p in "$cport" "$base" $((base + 1)) $((base + 2)); do
        port_open "$p" && die "port $p on 127.0.0.1 is already in use"
    done

    # Dedicated KRaft controller (node 10) + brokers 0..2, one cluster id.
    mkdir -p "$dir/controller"
    write_log4j "$dir/controller"
    {
        echo "process.roles=controller"
        echo "node.id=10"
        echo "listeners=CONTROLLER://127.0.0.1:$cport"
        echo "log.dirs=$dir/controller/data"
        cluster_common_props "$cport"
    } >"$dir/controller/server.properties"
    for i in 0 1 2; do
        mkdir -p "$dir/broker-$i"
        write_log4j "$dir/broker-$i"
        {
            echo "process.roles=broker"
            echo "node.id=$i"
            echo "listeners=PLAINTEXT://127.0.0.1:$((base + i))"
            echo "advertised.listeners=PLAINTEXT://127.0.0.1:$((base + i))"
            echo "inter.broker.listener.name=PLAINTEXT"
            echo "log.dirs=$dir/broker-$i/data"
            echo "num.partitions=1"
            echo "auto.create.topics.enable=true"
            echo "offsets.topic.replication.factor=3"
            echo "transaction.state.log.replication.factor=3"
            echo "transaction.state.log.min.isr=2"
            echo "share.coordinator.state.topic.replication.factor=3"
            echo "share.coordinator.state.topic.min.isr=2"
            echo "group.initial.rebalance.delay.ms=0"
            cluster_common_props "$cport"
        } >"$dir/broker-$i/server.properties"
    done

    if [[ ! -f "$dir/controller/data/meta.properties" ]]; then
        local cluster_id
        LOG4J_CONF="$dir/controller/log4j2.properties"
        cluster_id="$(run_class kafka.tools.StorageTool random-uuid 2>"$dir/format.log" | tail -n1)" \
            || die "StorageTool random-uuid failed; see $dir/format.log"
        for n in controller broker-0 broker-1 broker-2; do
            run_class kafka.tools.StorageTool format -t "$cluster_id" \
                -c "$dir/$n/server.properties" >>"$dir/format.log" 2>&1 \
                || { cat "$dir/format.log" >&2; die "storage format of $n failed (log: $dir/format.log)"; }
        done
    fi

    local heap="${KAFKA_HEAP_OPTS:--Xmx512m -Xms512m}"
    spawn_node "$dir/controller" "$heap"
    for i in 0 1 2; do spawn_node "$dir/broker-$i" "$heap"; done
    # wait_ready dies (exits) on failure; stop whatever was started first.
    trap 'cmd_stop_cluster "$dir" >/dev/null 2>&1 || true' EXIT
    wait_ready "$dir/controller" "$cport"
    for i in 0 1 2; do wait_ready "$dir/broker-$i" "$((base + i))"; done
    trap - EXIT
    log "Kafka $KAFKA_VERSION cluster ready (controller 127.0.0.1:$cport, brokers 127.0.0.1:$base-$((base + 2)), dir $dir)"
    echo "127.0.0.1:$base,127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2))"
}

cmd_start_node() {
    [[ $# -eq 2 ]] || die "usage: kafka.sh start-node NODEDIR PORT"
    local dir="$1" port="$2"
    [[ -f "$dir/server.properties" ]] || die "$dir is not a node of a cluster (no server.properties)"
    pid_alive "$(read_pid "$dir")" && die "$dir is already running"
    spawn_node "$dir" "${KAFKA_HEAP_OPTS:--Xmx512m -Xms512m}"
    wait_ready "$dir" "$port"
}

cmd_stop_cluster() {
    [[ $# -eq 1 ]] || die "usage: kafka.sh stop-cluster DIR"
    local dir="$1" i
    # Brokers first (controlled shutdown needs the controller), in parallel.
    for i in 0 1 2; do
        if [[ -d "$dir/broker-$i" ]]; then cmd_stop "$dir/broker-$i" & fi
    done
    wait
    if [[ -d "$dir/controller" ]]; then cmd_stop "$dir/controller"; fi
    return 0
}

main() {
    local cmd="${1:-}"
    [[ $# -gt 0 ]] && shift
    case "$cmd" in
        fetch) cmd_fetch; echo "$LIBS" ;;
        classpath) cmd_fetch; classpath ;;
        version) echo "$KAFKA_VERSION" ;;
        start) cmd_start "$@" ;;
        stop) cmd_stop "$@" ;;
        status) cmd_status "$@" ;;
        start-cluster) cmd_start_cluster "$@" ;;
        stop-cluster) cmd_stop_cluster "$@" ;;
        start-node) cmd_start_node "$@" ;;
        *) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
}

main "$@"
