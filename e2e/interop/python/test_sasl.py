"""Kafka clients authenticating with SASL/SCRAM against a broker this module starts.

The broker has a plaintext `internal` listener (where the users are made, as an operator
would before turning clients over to SASL), a SASL_PLAINTEXT listener `sasl` and a SASL_SSL
listener `saslssl` (with a certificate from a CA made here):

- Kafka 4.3's kafka-configs makes SCRAM users with AlterUserScramCredentials (the client
  salts; the broker keeps derived keys only) and shows them with DescribeUserScramCredentials;
- Kafka's console producer and consumer (kafka-clients' own SCRAM), confluent-kafka
  (librdkafka's) and kafka-python (its own) log in and produce and consume, over
  SASL_PLAINTEXT and over SASL_SSL;
- PLAIN with the static users of the listener's JAAS config (Kafka's PlainLoginModule
  `user_<name>` entries) logs in over SASL_SSL; PLAIN is not offered where it is not enabled;
- a wrong password, an unknown user, a deleted credential and a client without SASL are
  refused with an authentication error, and nothing is written;
- with connections.max.reauth.ms (KIP-368) librdkafka logs in again on its connection, and a
  deleted user's open connection stops serving it.

Run with e2e/interop/python/run.sh BOOTSTRAP test_sasl.py, STRAND_BROKER_BIN naming the broker
binary (default: target/debug/broker).
"""

import time
import uuid

import pytest

import confluent_kafka
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from security import Broker, Ca, console_round_trip, free_port, java_tool

pytestmark = pytest.mark.timeout(240)

RUN_ID = uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def sasl(tmp_path_factory):
    d = tmp_path_factory.mktemp("sasl")
    ca = Ca("strand interop CA")
    cert, key = ca.leaf("broker", dns=["localhost"], ips=["127.0.0.1"])
    (d / "broker.pem").write_bytes(key + cert)
    (d / "ca.pem").write_bytes(ca.pem())
    sasl_port, ssl_port = free_port(), free_port()
    # PLAIN's static users, as Kafka's docs write them (a JAAS line continued with `\`), on
    # the TLS listener only.
    (d / "server.properties").write_text(
        "sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512\n"
        "listener.name.saslssl.sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN\n"
        "listener.name.saslssl.plain.sasl.jaas.config="
        "org.apache.kafka.common.security.plain.PlainLoginModule required \\\n"
        "    username=\"admin\" password=\"admin-secret\" \\\n"
        "    user_dave=\"dave-secret\";\n"
    )
    broker = Broker(d, [
        "--config-file", str(d / "server.properties"),
        "--listener", "sasl=127.0.0.1:%d" % sasl_port,
        "--listener", "saslssl=127.0.0.1:%d" % ssl_port,
        "--listener-security-protocol-map", "INTERNAL:PLAINTEXT,SASL:SASL_PLAINTEXT,SASLSSL:SASL_SSL",
        "--ssl-keystore-location", str(d / "broker.pem"),
    ], wait_port=ssl_port)
    try:
        def configs(*args):
            r = java_tool("kafka.admin.ConfigCommand", [
                "--bootstrap-server", broker.plaintext, "--entity-type", "users", *args])
            assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
            return r.stdout

        configs("--entity-name", "alice", "--alter", "--add-config",
                "SCRAM-SHA-256=[iterations=8192,password=alice-secret],SCRAM-SHA-512=[password=alice-secret]")
        configs("--entity-name", "bob", "--alter", "--add-config", "SCRAM-SHA-512=[password=bob-secret]")
        yield {
            "plaintext": broker.plaintext,
            "sasl": "127.0.0.1:%d" % sasl_port,
            "saslssl": "127.0.0.1:%d" % ssl_port,
            "ca": str(d / "ca.pem"),
            "dir": d,
            "configs": configs,
            "log": broker.log_path,
        }
    finally:
        # Also when the setup above fails: no broker outlives the module.
        broker.stop()


def librdkafka_conf(sasl, listener, user, password, mechanism="SCRAM-SHA-512"):
    conf = {
        "bootstrap.servers": sasl[listener],
        "security.protocol": "SASL_SSL" if listener == "saslssl" else "SASL_PLAINTEXT",
        "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password,
    }
    if listener == "saslssl":
        conf["ssl.ca.location"] = sasl["ca"]
    return conf


def test_kafka_configs_describes_the_users_without_their_keys(sasl):
    out = sasl["configs"]("--describe")
    assert "alice" in out and "bob" in out, out
    assert "SCRAM-SHA-256=iterations=8192" in out and "SCRAM-SHA-512=iterations=4096" in out, out
    assert "password" not in out and "secret" not in out, out


@pytest.mark.parametrize("listener,mechanism,user,password", [
    ("sasl", "SCRAM-SHA-512", "alice", "alice-secret"),
    ("saslssl", "SCRAM-SHA-512", "alice", "alice-secret"),
    ("saslssl", "PLAIN", "dave", "dave-secret"),
])
def test_kafkas_console_tools_log_in(sasl, listener, mechanism, user, password, tmp_path):
    module = ("org.apache.kafka.common.security.plain.PlainLoginModule" if mechanism == "PLAIN"
              else "org.apache.kafka.common.security.scram.ScramLoginModule")
    props = tmp_path / "client.properties"
    props.write_text(
        "security.protocol=%s\nsasl.mechanism=%s\n"
        "sasl.jaas.config=%s required username=\"%s\" password=\"%s\";\n"
        % ("SASL_SSL" if listener == "saslssl" else "SASL_PLAINTEXT", mechanism, module, user, password)
        + ("ssl.truststore.type=PEM\nssl.truststore.location=%s\n" % sasl["ca"]
           if listener == "saslssl" else "")
    )
    lines = ["sasl-%d" % i for i in range(5)]
    topic = "strand-sasl-java-%s-%s-%s" % (listener, mechanism.lower(), RUN_ID)
    assert console_round_trip(sasl[listener], props, topic, lines) == lines


@pytest.mark.parametrize("listener", ["sasl", "saslssl"])
def test_confluent_kafka_logs_in_with_scram(sasl, listener):
    topic = "strand-sasl-ck-%s-%s" % (listener, RUN_ID)
    conf = librdkafka_conf(sasl, listener, "bob", "bob-secret")
    producer = confluent_kafka.Producer(dict(conf, acks="all", **{"enable.idempotence": True}))
    failed = []
    for i in range(20):
        producer.produce(topic, b"ck-%d" % i, on_delivery=lambda e, m: e and failed.append(e))
    assert producer.flush(30) == 0
    assert failed == []
    consumer = confluent_kafka.Consumer(dict(conf, **{"group.id": "sasl-" + RUN_ID, "auto.offset.reset": "earliest"}))
    consumer.assign([confluent_kafka.TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
    got, deadline = [], time.monotonic() + 30
    while len(got) < 20 and time.monotonic() < deadline:
        m = consumer.poll(1.0)
        if m is not None and m.error() is None:
            got.append(m.value())
    consumer.close()
    assert got == [b"ck-%d" % i for i in range(20)]


def test_kafka_python_logs_in_with_scram_sha_256(sasl):
    topic = "strand-sasl-py-" + RUN_ID
    common = dict(
        bootstrap_servers=sasl["sasl"], security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="alice",
        sasl_plain_password="alice-secret",
    )
    producer = KafkaProducer(acks="all", **common)
    for i in range(20):
        producer.send(topic, b"py-%d" % i).get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(consumer_timeout_ms=15000, **common)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got = [m.value for m in consumer]
    consumer.close()
    assert got == [b"py-%d" % i for i in range(20)]


def topics(sasl):
    return AdminClient({"bootstrap.servers": sasl["plaintext"]}).list_topics(timeout=15).topics


@pytest.mark.parametrize("user,password,mechanism", [
    ("alice", "wrong", "SCRAM-SHA-512"),
    ("mallory", "alice-secret", "SCRAM-SHA-512"),
    ("bob", "bob-secret", "SCRAM-SHA-256"),  # bob has a SHA-512 credential only
])
def test_bad_credentials_are_refused_and_write_nothing(sasl, user, password, mechanism):
    refused_to_write(sasl, "sasl", user, password, mechanism)


@pytest.mark.parametrize("listener,user,password", [
    ("saslssl", "dave", "wrong"),
    ("saslssl", "alice", "alice-secret"),  # a SCRAM user is not a PLAIN one
    ("sasl", "dave", "dave-secret"),  # PLAIN is not enabled on this listener
])
def test_plain_refuses_wrong_passwords_and_where_it_is_off(sasl, listener, user, password):
    refused_to_write(sasl, listener, user, password, "PLAIN")


def refused_to_write(sasl, listener, user, password, mechanism):
    errors = []
    conf = librdkafka_conf(sasl, listener, user, password, mechanism)
    conf.update({
        "message.timeout.ms": 5000, "error_cb": errors.append,
        "reconnect.backoff.ms": 1000, "reconnect.backoff.max.ms": 2000,
    })
    producer = confluent_kafka.Producer(conf)
    delivered = []
    topic = "strand-sasl-refused-%s-%s-%s-%s" % (listener, user, mechanism.lower(), RUN_ID)
    producer.produce(topic, b"never", on_delivery=lambda e, m: delivered.append(e))
    producer.flush(15)
    assert len(delivered) == 1 and delivered[0] is not None, delivered
    assert any(e.code() == confluent_kafka.KafkaError._AUTHENTICATION for e in errors), errors
    assert topic not in topics(sasl)


def test_a_client_without_sasl_is_refused(sasl):
    topic = "strand-sasl-nosasl-" + RUN_ID
    with pytest.raises(KafkaError):
        producer = KafkaProducer(
            bootstrap_servers=sasl["sasl"], request_timeout_ms=5000, max_block_ms=5000,
        )
        producer.send(topic, b"never").get(timeout=10)
    assert topic not in topics(sasl)
    # The broker says why in its log (rate-limited), naming the request.
    assert "before SASL authentication" in sasl["log"].read_text()


def test_a_deleted_credential_no_longer_logs_in(sasl):
    sasl["configs"]("--entity-name", "carol", "--alter", "--add-config", "SCRAM-SHA-512=[password=carol-secret]")
    conf = librdkafka_conf(sasl, "sasl", "carol", "carol-secret")
    admin = AdminClient(conf)
    assert admin.list_topics(timeout=15) is not None
    sasl["configs"]("--entity-name", "carol", "--alter", "--delete-config", "SCRAM-SHA-512")
    assert "carol" not in sasl["configs"]("--describe")
    errors = []
    conf["error_cb"] = errors.append
    refused = AdminClient(conf)
    with pytest.raises(confluent_kafka.KafkaException):
        refused.list_topics(timeout=5)
    refused.poll(1)  # serves error_cb
    assert any(e.code() == confluent_kafka.KafkaError._AUTHENTICATION for e in errors), errors


def test_logins_are_renewed_and_a_deleted_user_loses_its_connections(tmp_path):
    """KIP-368: with connections.max.reauth.ms a login lasts that long. librdkafka logs in
    again on its open connection and keeps producing; once the user is deleted, the renewal
    fails and the open connection stops serving it."""
    sasl_port = free_port()
    broker = Broker(tmp_path, [
        "--listener", "sasl=127.0.0.1:%d" % sasl_port,
        "--listener-security-protocol-map", "INTERNAL:PLAINTEXT,SASL:SASL_PLAINTEXT",
        "--connections-max-reauth-ms", "1500",
    ], wait_port=sasl_port)
    try:
        r = java_tool("kafka.admin.ConfigCommand", [
            "--bootstrap-server", broker.plaintext, "--entity-type", "users", "--entity-name", "erin",
            "--alter", "--add-config", "SCRAM-SHA-512=[password=erin-secret]"])
        assert r.returncode == 0, r.stderr[-3000:]
        errors, results = [], []
        producer = confluent_kafka.Producer({
            "bootstrap.servers": "127.0.0.1:%d" % sasl_port, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "erin", "sasl.password": "erin-secret",
            "acks": "all", "message.timeout.ms": 4000, "error_cb": errors.append,
            "reconnect.backoff.ms": 500, "reconnect.backoff.max.ms": 1000,
        })
        topic = "strand-sasl-reauth-" + RUN_ID

        def send_for(seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                producer.produce(topic, b"r", on_delivery=lambda e, m: results.append(e))
                producer.poll(0.2)
            producer.flush(10)

        # Three lifetimes: every record delivered over renewed logins.
        send_for(5)
        assert results and all(e is None for e in results), results[:5]
        assert not any(e.code() == confluent_kafka.KafkaError._AUTHENTICATION for e in errors), errors
        # Renewed on the same connection: none was closed for an expired login.
        assert "SASL session expired" not in broker.log_path.read_text()
        # Deleted: the next renewal fails; records after it are not delivered.
        r = java_tool("kafka.admin.ConfigCommand", [
            "--bootstrap-server", broker.plaintext, "--entity-type", "users", "--entity-name", "erin",
            "--alter", "--delete-config", "SCRAM-SHA-512"])
        assert r.returncode == 0, r.stderr[-3000:]
        time.sleep(2)
        results.clear()
        send_for(3)
        assert results and all(e is not None for e in results), results[:5]
        assert any(e.code() == confluent_kafka.KafkaError._AUTHENTICATION for e in errors), errors
    finally:
        broker.stop()
