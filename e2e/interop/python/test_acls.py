"""Kafka's ACLs, made with Kafka 4.3's kafka-acls, enforced on real clients.

The broker this module starts runs Kafka's authorizer (authorizer.class.name=
org.apache.kafka.metadata.authorizer.StandardAuthorizer, allow.everyone.if.no.acl.found=false)
with a plaintext `internal` listener whose anonymous clients are super users (the operator's
door, as Kafka deployments often make it) and a SASL_PLAINTEXT listener where alice and bob
log in with SCRAM:

- kafka-acls adds, lists and removes bindings (CreateAcls, DescribeAcls, DeleteAcls);
- alice, allowed to write and read `orders` in group `g1`, produces and consumes;
- a refused write (another topic, or bob) fails with TOPIC_AUTHORIZATION_FAILED and writes
  nothing; a refused read returns nothing; a group without an ACL is refused with
  GROUP_AUTHORIZATION_FAILED; bob cannot see `orders` in Metadata, delete it, or change ACLs;
- a DENY wins over an ALLOW, and a removed ACL stops allowing.

Run with e2e/interop/python/run.sh BOOTSTRAP test_acls.py, STRAND_BROKER_BIN naming the broker
binary (default: target/debug/broker).
"""

import time
import uuid

import pytest

import confluent_kafka
from confluent_kafka.admin import AdminClient, NewTopic

from security import Broker, free_port, java_tool

pytestmark = pytest.mark.timeout(240)

RUN_ID = uuid.uuid4().hex[:8]
ORDERS = "orders-" + RUN_ID
SECRET = "secret-" + RUN_ID


@pytest.fixture(scope="module")
def acls(tmp_path_factory):
    d = tmp_path_factory.mktemp("acls")
    sasl_port = free_port()
    broker = Broker(d, [
        "--listener", "sasl=127.0.0.1:%d" % sasl_port,
        "--listener-security-protocol-map", "INTERNAL:PLAINTEXT,SASL:SASL_PLAINTEXT",
        "--authorizer-class-name", "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "--super-users", "User:ANONYMOUS",
    ], wait_port=sasl_port)
    try:
        def tool(main, *args):
            r = java_tool(main, ["--bootstrap-server", broker.plaintext, *args])
            assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
            return r.stdout

        for user in ("alice", "bob"):
            tool("kafka.admin.ConfigCommand", "--entity-type", "users", "--entity-name", user,
                 "--alter", "--add-config", "SCRAM-SHA-512=[password=%s-secret]" % user)
        admin = AdminClient({"bootstrap.servers": broker.plaintext})
        for f in admin.create_topics([NewTopic(t, 1, 1) for t in (ORDERS, SECRET)]).values():
            f.result(30)
        acl = lambda *args: tool("org.apache.kafka.tools.AclCommand", *args)
        acl("--add", "--allow-principal", "User:alice", "--operation", "Write",
            "--operation", "Read", "--topic", ORDERS)
        acl("--add", "--allow-principal", "User:alice", "--operation", "Read", "--group", "g1")
        acl("--add", "--allow-principal", "User:alice", "--operation", "Write",
            "--topic", "alice-", "--resource-pattern-type", "prefixed")
        yield {
            "plaintext": broker.plaintext,
            "sasl": "127.0.0.1:%d" % sasl_port,
            "acl": acl,
            "admin": admin,
        }
    finally:
        # Also when the setup above fails: no broker outlives the module.
        broker.stop()


def conf(acls, user, **extra):
    c = {
        "bootstrap.servers": acls["sasl"], "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user,
        "sasl.password": "%s-secret" % user,
    }
    c.update(extra)
    return c


def produce(acls, user, topic, n=5):
    """Delivery results: None for each acknowledged record, else the error."""
    producer = confluent_kafka.Producer(conf(acls, user, **{"message.timeout.ms": 10000, "acks": "all"}))
    results = []
    for i in range(n):
        producer.produce(topic, b"%s-%d" % (user.encode(), i), on_delivery=lambda e, m: results.append(e))
    producer.flush(30)
    return results


def end_offset(acls, topic):
    c = confluent_kafka.Consumer({"bootstrap.servers": acls["plaintext"], "group.id": "probe-" + RUN_ID})
    _, high = c.get_watermark_offsets(confluent_kafka.TopicPartition(topic, 0), timeout=15)
    c.close()
    return high


def consume(acls, user, topic, group, want, **extra):
    c = confluent_kafka.Consumer(conf(acls, user, **{"group.id": group, "auto.offset.reset": "earliest", **extra}))
    c.subscribe([topic])
    got, errors, deadline = [], [], time.monotonic() + 20
    while len(got) < want and time.monotonic() < deadline:
        m = c.poll(1.0)
        if m is None:
            continue
        if m.error():
            errors.append(m.error())
            if not m.error().retriable():
                break
        else:
            got.append(m.value())
    c.close()
    return got, errors


def test_kafka_acls_lists_the_bindings(acls):
    out = acls["acl"]("--list")
    assert "User:alice" in out and ORDERS in out and "PREFIXED" in out, out
    assert "operation=WRITE" in out and "operation=READ" in out, out


def test_an_allowed_user_produces_and_consumes_in_its_group(acls):
    assert produce(acls, "alice", ORDERS) == [None] * 5
    got, errors = consume(acls, "alice", ORDERS, "g1", 5)
    assert len(got) >= 5, errors
    # A prefixed ACL: alice-anything may be written (the topic exists: no CREATE needed).
    acls["admin"].create_topics([NewTopic("alice-" + RUN_ID, 1, 1)])["alice-" + RUN_ID].result(30)
    assert produce(acls, "alice", "alice-" + RUN_ID, 2) == [None] * 2


def test_refused_writes_write_nothing(acls):
    for user, topic in (("alice", SECRET), ("bob", ORDERS)):
        before = end_offset(acls, topic)
        results = produce(acls, user, topic, 3)
        assert len(results) == 3 and all(e is not None for e in results), results
        assert all(e.code() == confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED for e in results), results
        assert end_offset(acls, topic) == before


def test_refused_reads_and_groups(acls):
    # bob may not read orders (nor describe it: it is not in his metadata).
    md = AdminClient(conf(acls, "bob")).list_topics(timeout=15)
    assert ORDERS not in md.topics, list(md.topics)
    got, errors = consume(acls, "bob", ORDERS, "g1", 1)
    assert got == []
    assert any(e.code() in (confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED,
                            confluent_kafka.KafkaError.GROUP_AUTHORIZATION_FAILED) for e in errors), errors
    # alice may read orders, but not in a group nobody allowed her.
    got, errors = consume(acls, "alice", ORDERS, "g2", 1)
    assert got == []
    assert any(e.code() == confluent_kafka.KafkaError.GROUP_AUTHORIZATION_FAILED for e in errors), errors


def test_bob_cannot_delete_topics_or_change_acls(acls):
    bob = AdminClient(conf(acls, "bob"))
    with pytest.raises(confluent_kafka.KafkaException) as e:
        bob.delete_topics([ORDERS])[ORDERS].result(30)
    assert e.value.args[0].code() == confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert ORDERS in acls["admin"].list_topics(timeout=15).topics
    binding = confluent_kafka.admin.AclBinding(
        confluent_kafka.admin.ResourceType.TOPIC, ORDERS,
        confluent_kafka.admin.ResourcePatternType.LITERAL, "User:bob", "*",
        confluent_kafka.admin.AclOperation.ALL, confluent_kafka.admin.AclPermissionType.ALLOW)
    with pytest.raises(confluent_kafka.KafkaException) as e:
        bob.create_acls([binding])[binding].result(30)
    assert e.value.args[0].code() == confluent_kafka.KafkaError.CLUSTER_AUTHORIZATION_FAILED


def test_deny_wins_and_a_removed_acl_stops_allowing(acls):
    acls["acl"]("--add", "--deny-principal", "User:alice", "--operation", "Write", "--topic", ORDERS)
    results = produce(acls, "alice", ORDERS, 1)
    assert results[0] is not None and results[0].code() == confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED
    acls["acl"]("--remove", "--force", "--deny-principal", "User:alice", "--operation", "Write", "--topic", ORDERS)
    assert produce(acls, "alice", ORDERS, 1) == [None]
    acls["acl"]("--remove", "--force", "--allow-principal", "User:alice", "--operation", "Write", "--topic", ORDERS)
    results = produce(acls, "alice", ORDERS, 1)
    assert results[0] is not None and results[0].code() == confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert "operation=WRITE" not in acls["acl"]("--list", "--topic", ORDERS)


def test_the_consumer_group_protocol_is_authorized_as_kafka_does(acls):
    """ConsumerGroupHeartbeat (KIP-848) needs READ on the group and DESCRIBE on each topic
    the member subscribes to."""
    kip848 = {"group.protocol": "consumer"}
    produce(acls, "alice", ORDERS, 1)
    got, errors = consume(acls, "alice", ORDERS, "g1", 1, **kip848)
    assert got, errors
    got, errors = consume(acls, "bob", ORDERS, "g1", 1, **kip848)
    assert not got and any("GROUP_AUTHORIZATION_FAILED" in str(e) or "Group authorization" in str(e)
                           for e in errors), errors
    got, errors = consume(acls, "alice", SECRET, "g1", 1, **kip848)
    assert not got and any("TOPIC_AUTHORIZATION_FAILED" in str(e) or "Topic authorization" in str(e)
                           for e in errors), errors
