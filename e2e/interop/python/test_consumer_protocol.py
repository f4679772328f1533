"""The consumer group protocol (KIP-848, ConsumerGroupHeartbeat and ConsumerGroupDescribe)
with its real clients: confluent-kafka (librdkafka) and Kafka 4.3's Java consumer with
group.protocol=consumer, and Kafka's kafka-consumer-groups tool.

Run by e2e/run-tests against the standalone broker and the 3-broker cluster:

    BOOTSTRAP=127.0.0.1:9092 $VENV/bin/python -m pytest -v test_consumer_protocol.py
"""

import os
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from security import java_tool

BOOTSTRAP = os.environ.get("BOOTSTRAP", "127.0.0.1:9092")
RUN_ID = "%d-%s" % (int(time.time()), uuid.uuid4().hex[:6])
TIMEOUT_S = 30
DEADLINE_S = 60
GROUPS_TOOL = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"

pytestmark = pytest.mark.timeout(240)


def name(purpose):
    return "strand-kip848-%s-%s" % (purpose, RUN_ID)


@pytest.fixture(scope="module")
def admin():
    return AdminClient({"bootstrap.servers": BOOTSTRAP, "client.id": "strand-kip848-admin"})


def create_topic(admin, topic, partitions):
    nodes = len(admin.describe_cluster(request_timeout=TIMEOUT_S).result().nodes)
    rf = 3 if nodes >= 3 else 1
    admin.create_topics([NewTopic(topic, partitions, rf)])[topic].result(TIMEOUT_S)
    # Until every broker knows it (a member's heartbeat may reach any coordinator).
    deadline = time.monotonic() + DEADLINE_S
    while True:
        md = admin.list_topics(topic, timeout=TIMEOUT_S).topics.get(topic)
        if md is not None and md.error is None and len(md.partitions) == partitions:
            return
        assert time.monotonic() < deadline, f"topic {topic} not visible"
        time.sleep(0.2)


def produce(topic, values, partitions):
    p = Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all"})
    for i, v in enumerate(values):
        p.produce(topic, value=v, partition=i % partitions)
    assert p.flush(TIMEOUT_S) == 0


def member(group, topic, **extra):
    c = Consumer({
        "bootstrap.servers": BOOTSTRAP,
        "group.id": group,
        "group.protocol": "consumer",
        "client.id": "strand-kip848",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        **extra,
    })
    c.subscribe([topic])
    return c


def test_consumer_group_protocol_members_share_partitions_and_resume_from_commits(admin):
    """Two librdkafka members split a topic's partitions (the second gets its share only
    after the first revoked it), every record is read, and after both commit and leave
    a new member starts at the commits. Describe and list show a "consumer" group."""
    topic, group = name("share"), name("share-g")
    create_topic(admin, topic, 4)
    produce(topic, [b"v%d" % i for i in range(200)], 4)
    lock = threading.Lock()
    seen, shares, errors = [], {}, []
    stop = threading.Event()
    both_read = threading.Barrier(2, timeout=TIMEOUT_S)

    def run(index):
        try:
            c = member(group, topic)
            while not stop.is_set():
                m = c.poll(0.2)
                if m is not None and m.error() is None:
                    with lock:
                        seen.append(m.value())
                elif m is not None:
                    raise KafkaException(m.error())
                positions = c.position(c.assignment())
                with lock:
                    # (its partitions, read to the end of each: 50 records per partition)
                    shares[index] = (sorted(tp.partition for tp in positions),
                                     all(tp.offset == 50 for tp in positions))
            c.commit(asynchronous=False)
            both_read.wait()  # both commit before either leaves
            c.close()
        except Exception as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(2)]
    threads[0].start()
    time.sleep(1)
    threads[1].start()
    deadline = time.monotonic() + DEADLINE_S
    try:
        while True:
            assert not errors, f"a member failed: {errors[0]!r}"
            with lock:
                got, split = len(set(seen)), [shares.get(i, ([], False)) for i in range(2)]
            # Both caught up, so their commits at the end cover everything read.
            if got == 200 and all(len(s) == 2 and done for s, done in split):
                break
            assert time.monotonic() < deadline, f"read {got} of 200; (partitions, caught up) {split}"
            time.sleep(0.1)
        assert sorted(split[0][0] + split[1][0]) == [0, 1, 2, 3], split
        described = admin.describe_consumer_groups([group])[group].result(TIMEOUT_S)
        assert described.type.name == "CONSUMER"
        assert described.state.name in ("STABLE", "RECONCILING")
        assert sorted(p.partition for m in described.members
                      for p in m.assignment.topic_partitions) == [0, 1, 2, 3]
        listed = admin.list_consumer_groups().result(TIMEOUT_S).valid
        assert [g.type.name for g in listed if g.group_id == group] == ["CONSUMER"]
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=TIMEOUT_S)
    assert not errors, f"a member failed to commit or leave: {errors[0]!r}"
    # At least once: a partition that moved is read again from the last commit (none here).
    assert set(seen) == {b"v%d" % i for i in range(200)}, "every record read"

    produce(topic, [b"late%d" % i for i in range(20)], 4)
    late = member(group, topic)
    got = []
    deadline = time.monotonic() + DEADLINE_S
    while len(got) < 20:
        m = late.poll(0.2)
        if m is not None and m.error() is None:
            got.append(m.value())
        assert time.monotonic() < deadline, f"the new member read {len(got)} of 20"
    late.close()
    assert sorted(got) == sorted(b"late%d" % i for i in range(20)), "resumed at the commits"


def test_consumer_group_protocol_java_consumer_and_kafka_consumer_groups(admin):
    """Kafka 4.3's Java consumer with group.protocol=consumer reads and commits; while a
    librdkafka member holds the group, kafka-consumer-groups describes its members (through
    ConsumerGroupDescribe) and lists it as a consumer group; afterwards it shows the
    committed offsets."""
    topic, group = name("java"), name("java-g")
    create_topic(admin, topic, 3)
    produce(topic, [b"j%d" % i for i in range(30)], 3)
    consumed = java_tool(
        "org.apache.kafka.tools.consumer.ConsoleConsumer",
        ["--bootstrap-server", BOOTSTRAP, "--topic", topic, "--group", group,
         "--command-property", "group.protocol=consumer", "--from-beginning",
         "--max-messages", "30", "--timeout-ms", "60000"],
    )
    assert consumed.returncode == 0, consumed.stderr[-3000:]
    assert sorted(consumed.stdout.split()) == sorted("j%d" % i for i in range(30))

    offsets = java_tool(GROUPS_TOOL, ["--bootstrap-server", BOOTSTRAP, "--describe", "--group", group])
    assert offsets.returncode == 0, offsets.stderr[-3000:]
    rows = [line.split() for line in offsets.stdout.splitlines() if topic in line]
    # GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG ...
    assert sorted((r[2], r[3], r[5]) for r in rows) == [("0", "10", "0"), ("1", "10", "0"), ("2", "10", "0")], offsets.stdout

    c = member(group, topic)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while len(c.assignment()) < 3:
            c.poll(0.2)
            assert time.monotonic() < deadline, "the member got no assignment"
        members = java_tool(GROUPS_TOOL, ["--bootstrap-server", BOOTSTRAP, "--describe",
                                          "--group", group, "--members", "--verbose"])
        assert members.returncode == 0, members.stderr[-3000:]
        lines = [line for line in members.stdout.splitlines() if group in line]
        assert len(lines) == 1 and "strand-kip848" in lines[0], members.stdout
        listed = java_tool(GROUPS_TOOL, ["--bootstrap-server", BOOTSTRAP, "--list", "--type", "consumer"])
        assert listed.returncode == 0, listed.stderr[-3000:]
        assert group in listed.stdout.split()
        state = java_tool(GROUPS_TOOL, ["--bootstrap-server", BOOTSTRAP, "--describe",
                                        "--group", group, "--state"])
        assert state.returncode == 0 and "Stable" in state.stdout, state.stdout + state.stderr[-2000:]
    finally:
        c.close()


def fatal_error(c, deadline_s=DEADLINE_S):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is not None and m.error() is not None:
            return m.error()
    return None


def test_consumer_group_protocol_refusals(admin):
    """Bad input gets Kafka's errors and changes nothing: an assignor the broker does not
    run, a classic member joining a group of the consumer protocol, and deleting a group
    that has members."""
    topic, group = name("refuse"), name("refuse-g")
    create_topic(admin, topic, 2)
    bad = member(name("bad-assignor"), topic, **{"group.remote.assignor": "sticky"})
    try:
        err = fatal_error(bad)
        assert err is not None and "assignor" in str(err).lower(), err
    finally:
        bad.close()

    c = member(group, topic)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while len(c.assignment()) < 2:
            c.poll(0.2)
            assert time.monotonic() < deadline, "the member got no assignment"
        classic = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": group,
                            "group.protocol": "classic", "session.timeout.ms": 6000})
        classic.subscribe([topic])
        try:
            err = fatal_error(classic, 20)
            assert err is not None and err.code() == KafkaError.INCONSISTENT_GROUP_PROTOCOL, err
        finally:
            classic.close()
        with pytest.raises(KafkaException) as refused:
            admin.delete_consumer_groups([group])[group].result(TIMEOUT_S)
        assert refused.value.args[0].code() == KafkaError.NON_EMPTY_GROUP
        assert sorted(tp.partition for tp in c.assignment()) == [0, 1], "the member kept its partitions"
    finally:
        c.close()
    # Empty once its only member left: deleted.
    deadline = time.monotonic() + DEADLINE_S
    while True:
        try:
            admin.delete_consumer_groups([group])[group].result(TIMEOUT_S)
            break
        except KafkaException as e:
            assert e.args[0].code() == KafkaError.NON_EMPTY_GROUP and time.monotonic() < deadline, e
            time.sleep(0.5)


def test_consumer_group_protocol_regex_subscription_follows_new_topics(admin):
    """librdkafka sends a "^..." subscription as SubscribedTopicRegex: the broker resolves it
    (RE2 syntax, whole names) and assigns a matching topic created after the member joined."""
    prefix = name("rx")
    create_topic(admin, prefix + "-one", 2)
    produce(prefix + "-one", [b"a%d" % i for i in range(10)], 2)
    create_topic(admin, prefix + "x-no", 1)  # "-" is required: not matched
    produce(prefix + "x-no", [b"no"], 1)
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": prefix, "group.protocol": "consumer",
                  "auto.offset.reset": "earliest", "topic.metadata.refresh.interval.ms": 1000})
    c.subscribe(["^" + prefix.replace(".", "\\.") + "-.*"])
    got, made = [], False
    deadline = time.monotonic() + DEADLINE_S
    try:
        while len(got) < 20:
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                got.append(m.value())
            elif m is not None:
                raise KafkaException(m.error())
            if len(got) >= 10 and not made:
                create_topic(admin, prefix + "-two", 1)
                produce(prefix + "-two", [b"b%d" % i for i in range(10)], 1)
                made = True
            assert time.monotonic() < deadline, f"read {len(got)} of 20"
        described = admin.describe_consumer_groups([prefix])[prefix].result(TIMEOUT_S)
        topics = sorted({tp.topic for m in described.members for tp in m.assignment.topic_partitions})
        assert topics == [prefix + "-one", prefix + "-two"], topics
    finally:
        c.close()
    assert sorted(got) == sorted([b"a%d" % i for i in range(10)] + [b"b%d" % i for i in range(10)])
