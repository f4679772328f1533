"""confluent-kafka (librdkafka) AdminClient tests for Strand (or any Kafka-compatible broker).

Run with e2e/interop/python/run.sh BOOTSTRAP test_admin.py, or directly:

    BOOTSTRAP=127.0.0.1:9092 $VENV/bin/python -m pytest -v test_admin.py

BOOTSTRAP is one address or a comma-separated list, as for test_interop.py. The number of
brokers comes from DescribeCluster; set EXPECT_BROKERS=N to also assert it. Topics get
replication factor 3 when the cluster has at least 3 brokers, else 1. Only the tests that
genuinely need 3 brokers (rf 3 placement, a leader moved by a reassignment) skip themselves
on a smaller cluster. Topic names are unique per run.
"""

import os
import time
import uuid

import pytest

from confluent_kafka import (ElectionType, KafkaError, KafkaException, Producer, TopicCollection,
                             TopicPartition)
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   ConfigSource, NewPartitions, NewTopic, OffsetSpec, ResourceType)

BOOTSTRAP = os.environ.get("BOOTSTRAP", "127.0.0.1:9092")
EXPECT_BROKERS = int(os.environ["EXPECT_BROKERS"]) if os.environ.get("EXPECT_BROKERS") else None
RUN_ID = "%d-%s" % (int(time.time()), uuid.uuid4().hex[:6])
# Every admin call gets an explicit bound (seconds), so a broker that never answers fails a
# test instead of hanging the run.
TIMEOUT_S = 30
METADATA_DEADLINE_S = 30

pytestmark = pytest.mark.timeout(180)


def topic_name(purpose):
    return "strand-ck-%s-%s" % (purpose, RUN_ID)


@pytest.fixture(scope="module")
def admin():
    # No close() in confluent-kafka: the client goes with the last reference.
    return AdminClient({"bootstrap.servers": BOOTSTRAP, "client.id": "strand-interop-ck-admin"})


@pytest.fixture(scope="module")
def cluster(admin):
    return admin.describe_cluster(request_timeout=TIMEOUT_S).result()


@pytest.fixture(scope="module")
def rf(cluster):
    return 3 if len(cluster.nodes) >= 3 else 1


def needs_3_brokers(cluster):
    if len(cluster.nodes) < 3:
        pytest.skip("needs 3 brokers, the cluster has %d" % len(cluster.nodes))


def error_of(future):
    """The KafkaError a future failed with (fails the test if it succeeded)."""
    with pytest.raises(KafkaException) as info:
        future.result(timeout=TIMEOUT_S)
    return info.value.args[0]


def wait_for(what, probe, deadline_s=METADATA_DEADLINE_S):
    """Retry probe() until it returns a truthy value; the last exception or value in the failure."""
    deadline = time.monotonic() + deadline_s
    last = None
    while True:
        try:
            value = probe()
            if value:
                return value
            last = value
        except KafkaException as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for %s; last: %r" % (deadline_s, what, last))
        time.sleep(0.2)


def describe_topic(admin, topic):
    return admin.describe_topics(TopicCollection([topic]), request_timeout=TIMEOUT_S)[topic].result()


def wait_partitions(admin, topic, count):
    """describe_topics shows `count` partitions, each with a leader (metadata propagated)."""
    def probe():
        desc = describe_topic(admin, topic)
        ok = (len(desc.partitions) == count
              and all(p.leader is not None and p.leader.id >= 0 for p in desc.partitions))
        return desc if ok else None
    return wait_for("%s to show %d partitions with leaders" % (topic, count), probe)


def create_topic(admin, topic, partitions, replication_factor, config=None):
    futures = admin.create_topics([NewTopic(topic, partitions, replication_factor, config=config or {})],
                                  operation_timeout=TIMEOUT_S, request_timeout=TIMEOUT_S)
    futures[topic].result(timeout=TIMEOUT_S)
    return wait_partitions(admin, topic, partitions)


def topic_configs(admin, topic):
    resource = ConfigResource(ResourceType.TOPIC, topic)
    return admin.describe_configs([resource], request_timeout=TIMEOUT_S)[resource].result(timeout=TIMEOUT_S)


def dynamic(configs, name):
    """The value of a topic-level override, or None when the config is not overridden."""
    entry = configs[name]
    return entry.value if entry.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value else None


def incremental(topic, *ops):
    return ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry(name, value, incremental_operation=op) for name, value, op in ops])


def alter_incremental(admin, topic, *ops, validate_only=False):
    resource = incremental(topic, *ops)
    return admin.incremental_alter_configs([resource], validate_only=validate_only,
                                           request_timeout=TIMEOUT_S)[resource]


SET, DELETE = AlterConfigOpType.SET, AlterConfigOpType.DELETE


def until_known(op):
    """op() retried while the broker answering does not know the topic yet (a cluster's
    brokers learn a new topic from the controller a moment apart)."""
    def attempt():
        try:
            return op() or True
        except KafkaException as e:
            if e.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                return None
            raise
    return wait_for("a broker that knows the topic", attempt)


def wait_configs(admin, topic, what, predicate):
    """describe_configs until predicate(configs) holds: the broker answering may not have applied
    the controller's latest config record yet."""
    return wait_for("%s: %s" % (topic, what),
                    lambda: (lambda c: c if predicate(c) else None)(topic_configs(admin, topic)))


# A change applied after the refused or validate-only ones: once a broker shows it, it shows
# every change made before it (metadata is applied in order), so their absence is meaningful.
BARRIER = ("segment.ms", "86400000", SET)


def wait_barrier(admin, topic):
    alter_incremental(admin, topic, BARRIER).result(timeout=TIMEOUT_S)
    return wait_configs(admin, topic, "segment.ms=86400000 (barrier)",
                        lambda c: dynamic(c, "segment.ms") == "86400000")


# ---------------------------------------------------------------------------


def test_describe_cluster(admin, cluster):
    assert isinstance(cluster.cluster_id, str) and cluster.cluster_id, "empty cluster id: %r" % (cluster.cluster_id,)
    ids = [n.id for n in cluster.nodes]
    assert ids and len(ids) == len(set(ids)), "broker ids missing or repeated: %r" % (ids,)
    assert all(i >= 0 for i in ids), ids
    if EXPECT_BROKERS is not None:
        assert len(ids) == EXPECT_BROKERS, "DescribeCluster lists %d brokers %r, expected %d" % (
            len(ids), ids, EXPECT_BROKERS)
    assert all(n.host and n.port > 0 for n in cluster.nodes), cluster.nodes
    if cluster.controller is not None:
        assert cluster.controller.id in ids, "controller %r is not a listed broker" % (cluster.controller,)
    # Metadata agrees with DescribeCluster.
    md = admin.list_topics(timeout=TIMEOUT_S)
    assert md.cluster_id == cluster.cluster_id
    assert sorted(md.brokers) == sorted(ids)


def test_create_partitions(admin, rf):
    topic = topic_name("partitions")
    desc = create_topic(admin, topic, 2, rf)
    assert [p.id for p in desc.partitions] == [0, 1]

    until_known(lambda: admin.create_partitions([NewPartitions(topic, 4)], operation_timeout=TIMEOUT_S,
                                                request_timeout=TIMEOUT_S)[topic].result(timeout=TIMEOUT_S))
    desc = wait_partitions(admin, topic, 4)
    assert sorted(p.id for p in desc.partitions) == [0, 1, 2, 3]
    for p in desc.partitions:
        replicas = [r.id for r in p.replicas]
        assert len(replicas) == len(set(replicas)) == rf, "partition %d replicas %r, want rf %d" % (p.id, replicas, rf)
        assert p.leader.id in replicas
        assert {r.id for r in p.isr} <= set(replicas)

    # A decrease, and no change at all, are refused with INVALID_PARTITIONS.
    for count in (3, 4):
        err = error_of(admin.create_partitions([NewPartitions(topic, count)], request_timeout=TIMEOUT_S)[topic])
        assert err.code() == KafkaError.INVALID_PARTITIONS, "to %d: %s" % (count, err)
    # validate_only accepts a valid increase and changes nothing: a real increase to 5 afterwards
    # is accepted (it would not be over 6).
    admin.create_partitions([NewPartitions(topic, 6)], validate_only=True,
                            request_timeout=TIMEOUT_S)[topic].result(timeout=TIMEOUT_S)
    admin.create_partitions([NewPartitions(topic, 5)], request_timeout=TIMEOUT_S)[topic].result(timeout=TIMEOUT_S)
    assert sorted(p.id for p in wait_partitions(admin, topic, 5).partitions) == [0, 1, 2, 3, 4]

    err = error_of(admin.create_partitions([NewPartitions(topic + "-unknown", 5)], request_timeout=TIMEOUT_S)[topic + "-unknown"])
    assert err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, err


def test_create_topic_replication_factor_above_brokers_refused(admin, cluster):
    topic = topic_name("rf-too-high")
    n = len(cluster.nodes)
    futures = admin.create_topics([NewTopic(topic, 1, n + 1)], request_timeout=TIMEOUT_S)
    err = error_of(futures[topic])
    assert err.code() == KafkaError.INVALID_REPLICATION_FACTOR, err


def test_replicas_spread_over_3_brokers(admin, cluster):
    needs_3_brokers(cluster)
    topic = topic_name("rf3")
    desc = create_topic(admin, topic, 3, 3)
    broker_ids = {n.id for n in cluster.nodes}
    leaders = set()
    for p in desc.partitions:
        replicas = [r.id for r in p.replicas]
        assert len(set(replicas)) == 3 and set(replicas) <= broker_ids, (p.id, replicas)
        assert p.leader.id in replicas
        leaders.add(p.leader.id)
    # In sync once followers caught up (an empty topic: immediately, or nearly).
    wait_for("every replica of %s in sync" % topic,
             lambda: all(len(p.isr) == 3 for p in describe_topic(admin, topic).partitions))
    # Leadership of the 3 partitions is spread (Kafka: round-robin placement).
    assert len(leaders) > 1, "every partition of %s is led by broker %s" % (topic, leaders)


def test_incremental_alter_configs(admin, rf):
    topic = topic_name("incremental")
    create_topic(admin, topic, 1, rf)

    until_known(lambda: alter_incremental(admin, topic, ("retention.ms", "3600000", SET),
                                          ("max.message.bytes", "200000", SET)).result(timeout=TIMEOUT_S))
    configs = wait_configs(admin, topic, "retention.ms=3600000 and max.message.bytes=200000",
                           lambda c: dynamic(c, "retention.ms") == "3600000"
                           and dynamic(c, "max.message.bytes") == "200000")
    assert not configs["retention.ms"].is_default

    alter_incremental(admin, topic, ("retention.ms", None, DELETE)).result(timeout=TIMEOUT_S)
    configs = wait_configs(admin, topic, "no retention.ms override",
                           lambda c: dynamic(c, "retention.ms") is None)
    assert configs["retention.ms"].value != "3600000"
    assert dynamic(configs, "max.message.bytes") == "200000"

    # An invalid value sent with a valid change: the whole resource is refused.
    err = error_of(alter_incremental(admin, topic, ("retention.ms", "banana", SET),
                                     ("max.message.bytes", "300000", SET)))
    assert err.code() == KafkaError.INVALID_CONFIG, err
    err = error_of(alter_incremental(admin, topic, ("strand.no.such.config", "1", SET)))
    assert err.code() == KafkaError.INVALID_CONFIG, err
    # validate_only: a valid change is accepted, an invalid one still refused; neither applies.
    alter_incremental(admin, topic, ("retention.ms", "7200000", SET), ("max.message.bytes", "100000", SET),
                      validate_only=True).result(timeout=TIMEOUT_S)
    err = error_of(alter_incremental(admin, topic, ("retention.ms", "banana", SET), validate_only=True))
    assert err.code() == KafkaError.INVALID_CONFIG, err

    configs = wait_barrier(admin, topic)
    assert dynamic(configs, "retention.ms") is None, configs["retention.ms"]
    assert dynamic(configs, "max.message.bytes") == "200000", configs["max.message.bytes"]
    assert "strand.no.such.config" not in configs

    err = error_of(alter_incremental(admin, topic + "-unknown", ("retention.ms", "1000", SET)))
    assert err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, err


@pytest.mark.filterwarnings("ignore:alter_configs has been deprecated:DeprecationWarning")
def test_alter_configs_replaces_all_overrides(admin, rf):
    topic = topic_name("alter-configs")
    create_topic(admin, topic, 1, rf, config={"max.message.bytes": "200000"})
    until_known(lambda: wait_configs(admin, topic, "max.message.bytes=200000 (set at creation)",
                                     lambda c: dynamic(c, "max.message.bytes") == "200000"))

    def alter(config, validate_only=False):
        resource = ConfigResource(ResourceType.TOPIC, topic, set_config=config)
        return admin.alter_configs([resource], validate_only=validate_only, request_timeout=TIMEOUT_S)[resource]

    # The legacy AlterConfigs sets the topic's whole override set: max.message.bytes goes.
    alter({"retention.ms": "7200000"}).result(timeout=TIMEOUT_S)
    wait_configs(admin, topic, "retention.ms=7200000 and no max.message.bytes override",
                 lambda c: dynamic(c, "retention.ms") == "7200000" and dynamic(c, "max.message.bytes") is None)

    err = error_of(alter({"retention.ms": "banana", "max.message.bytes": "300000"}))
    assert err.code() == KafkaError.INVALID_CONFIG, err
    alter({"retention.ms": "1000"}, validate_only=True).result(timeout=TIMEOUT_S)

    configs = wait_barrier(admin, topic)
    assert dynamic(configs, "retention.ms") == "7200000", configs["retention.ms"]
    assert dynamic(configs, "max.message.bytes") is None, configs["max.message.bytes"]


def elect(admin, election_type, partitions):
    # No request_timeout/operation_timeout: confluent-kafka 2.16.2's C binding of elect_leaders
    # fails on any keyword argument (TypeError/SystemError); result(timeout=) bounds the wait.
    return admin.elect_leaders(election_type, partitions).result(timeout=TIMEOUT_S)


def test_elect_leaders(admin, rf):
    topic = topic_name("elect")
    create_topic(admin, topic, 2, rf)
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]

    # Healthy partitions led by their preferred replica: nothing to do (ELECTION_NOT_NEEDED).
    result = elect(admin, ElectionType.PREFERRED, tps)
    assert sorted((tp.topic, tp.partition) for tp in result) == [(topic, 0), (topic, 1)], result
    for tp, err in result.items():
        assert err is None or err.code() == KafkaError.ELECTION_NOT_NEEDED, (tp, err)
    for p in describe_topic(admin, topic).partitions:
        assert p.leader.id == p.replicas[0].id, "partition %d led by %d, preferred %d" % (
            p.id, p.leader.id, p.replicas[0].id)

    # Unclean on a partition with a live in-sync leader: not needed either.
    result = elect(admin, ElectionType.UNCLEAN, tps[:1])
    assert list(result.values())[0] is not None and list(result.values())[0].code() == KafkaError.ELECTION_NOT_NEEDED, result

    # All partitions (null topics): no per-partition failure.
    result = elect(admin, ElectionType.PREFERRED, None)
    for tp, err in result.items():
        assert err is None or err.code() == KafkaError.ELECTION_NOT_NEEDED, (tp, err)

    result = elect(admin, ElectionType.PREFERRED, [TopicPartition(topic + "-unknown", 0)])
    err = list(result.values())[0]
    assert err is not None and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, result


def test_elect_preferred_leader_after_reassignment(admin, cluster):
    """Rotate a partition's replicas (kafka-python's AlterPartitionReassignments: confluent-kafka
    has no such call); its leader stays, so a PREFERRED election moves leadership to the new
    first replica."""
    needs_3_brokers(cluster)
    from kafka import KafkaAdminClient
    from kafka import TopicPartition as KpTopicPartition

    topic = topic_name("preferred")
    desc = create_topic(admin, topic, 1, 3)
    old = [r.id for r in desc.partitions[0].replicas]
    new = old[1:] + old[:1]
    kp = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, client_id="strand-interop-ck-reassign",
                          request_timeout_ms=TIMEOUT_S * 1000)
    try:
        result = kp.alter_partition_reassignments({KpTopicPartition(topic, 0): new}, timeout_ms=TIMEOUT_S * 1000)
        assert list(result.values()) == [None], result
        wait_for("the reassignment of %s-0 to complete" % topic,
                 lambda: not kp.list_partition_reassignments([KpTopicPartition(topic, 0)]), deadline_s=60)
    finally:
        kp.close()
    part = wait_for("%s-0 replicas %r" % (topic, new),
                    lambda: next((p for p in describe_topic(admin, topic).partitions
                                  if [r.id for r in p.replicas] == new), None))
    leader_before = part.leader.id

    result = elect(admin, ElectionType.PREFERRED, [TopicPartition(topic, 0)])
    err = list(result.values())[0]
    if leader_before == new[0]:
        # Leadership already moved (the broker elected the new preferred replica on its own).
        assert err is not None and err.code() == KafkaError.ELECTION_NOT_NEEDED, result
    else:
        assert err is None or err.code() == KafkaError.ELECTION_NOT_NEEDED, result
    wait_for("%s-0 led by its preferred replica %d" % (topic, new[0]),
             lambda: describe_topic(admin, topic).partitions[0].leader.id == new[0])


def test_list_offsets(admin, rf):
    topic = topic_name("offsets")
    create_topic(admin, topic, 2, rf)
    base = int(time.time() * 1000) - 60_000
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "client.id": "strand-interop-ck-producer",
                         "acks": "all", "linger.ms": 0})
    errors = []

    def delivered(err, msg):
        if err is not None:
            errors.append(err)
    # Partition 0: 5 records at base, base+1s ... base+4s, except offset 2 carries the latest
    # timestamp (max_timestamp must find it, not just the last offset). Partition 1: 3 records.
    stamps0 = [base, base + 1000, base + 9000, base + 3000, base + 4000]
    for i, ts in enumerate(stamps0):
        producer.produce(topic, value=b"p0-%d" % i, key=b"k%d" % i, partition=0, timestamp=ts, on_delivery=delivered)
    for i in range(3):
        producer.produce(topic, value=b"p1-%d" % i, partition=1, timestamp=base + i * 1000, on_delivery=delivered)
    assert producer.flush(TIMEOUT_S) == 0, "records still undelivered after %ss" % TIMEOUT_S
    assert not errors, errors

    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    got = admin.list_offsets({p0: OffsetSpec.earliest(), p1: OffsetSpec.earliest()}, request_timeout=TIMEOUT_S)
    assert {tp.partition: f.result(timeout=TIMEOUT_S).offset for tp, f in got.items()} == {0: 0, 1: 0}
    got = admin.list_offsets({p0: OffsetSpec.latest(), p1: OffsetSpec.latest()}, request_timeout=TIMEOUT_S)
    assert {tp.partition: f.result(timeout=TIMEOUT_S).offset for tp, f in got.items()} == {0: 5, 1: 3}

    info = admin.list_offsets({p0: OffsetSpec.max_timestamp()}, request_timeout=TIMEOUT_S)[p0].result(timeout=TIMEOUT_S)
    assert (info.offset, info.timestamp) == (2, base + 9000)

    # The first record with a timestamp >= the one asked for.
    info = admin.list_offsets({p0: OffsetSpec.for_timestamp(base + 2500)},
                              request_timeout=TIMEOUT_S)[p0].result(timeout=TIMEOUT_S)
    assert info.offset == 2 and info.timestamp == base + 9000
    info = admin.list_offsets({p1: OffsetSpec.for_timestamp(base + 1000)},
                              request_timeout=TIMEOUT_S)[p1].result(timeout=TIMEOUT_S)
    assert (info.offset, info.timestamp) == (1, base + 1000)
    # Later than every record: no offset (-1).
    info = admin.list_offsets({p1: OffsetSpec.for_timestamp(base + 3_600_000)},
                              request_timeout=TIMEOUT_S)[p1].result(timeout=TIMEOUT_S)
    assert info.offset == -1


def test_describe_topics_after_growth(admin, rf):
    """describe_topics (DescribeTopicPartitions or Metadata) and list_topics agree on the new count."""
    topic = topic_name("describe")
    create_topic(admin, topic, 1, rf)
    until_known(lambda: admin.create_partitions([NewPartitions(topic, 3)],
                                                request_timeout=TIMEOUT_S)[topic].result(timeout=TIMEOUT_S))
    desc = wait_partitions(admin, topic, 3)
    assert desc.name == topic and not desc.is_internal
    assert desc.topic_id is not None and str(desc.topic_id) != "AAAAAAAAAAAAAAAAAAAAAA", desc.topic_id
    md = wait_for("Metadata to show 3 partitions of %s" % topic,
                  lambda: (lambda t: t if t is not None and t.error is None and len(t.partitions) == 3 else None)(
                      admin.list_topics(topic, timeout=TIMEOUT_S).topics.get(topic)))
    assert sorted(md.partitions) == [0, 1, 2]
    by_id = {p.id: p for p in desc.partitions}
    for pid, pm in md.partitions.items():
        assert pm.replicas == [r.id for r in by_id[pid].replicas]
