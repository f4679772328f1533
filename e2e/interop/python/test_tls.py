"""Kafka clients over TLS (the SSL security protocol) against a broker this module starts.

The broker gets a plaintext `internal` listener and an `external` one speaking TLS, with a
certificate from a CA made here and ssl.client.auth=required (mutual TLS):

- kafka-python (Python's ssl), confluent-kafka (librdkafka's OpenSSL) and Kafka 4.3's own
  console producer and consumer (the Java client's JSSE, PEM stores) with a client
  certificate from that CA produce and consume over TLS;
- a client certificate from another CA, or none, is refused, and so is a broker certificate
  the client does not trust: the client reports the failure and nothing is written.

Run with e2e/interop/python/run.sh BOOTSTRAP test_tls.py, STRAND_BROKER_BIN naming the broker
binary (default: target/debug/broker).
"""

import json
import time
import uuid

import pytest

import confluent_kafka
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaConnectionError, KafkaTimeoutError

from security import Broker, Ca, console_round_trip, free_port, java_tool

pytestmark = pytest.mark.timeout(180)

RUN_ID = uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    ca, foreign = Ca("strand interop CA"), Ca("someone else's CA")
    cert, key = ca.leaf("broker", dns=["localhost"], ips=["127.0.0.1"])
    files = {}

    def put(name, data):
        path = d / name
        path.write_bytes(data)
        files[name] = str(path)

    put("broker.pem", key + cert)
    alice_cert, alice_key = ca.leaf("alice", client=True)
    put("alice.pem", alice_key + alice_cert)
    put("ca.pem", ca.pem())
    put("foreign-ca.pem", foreign.pem())
    put("alice.crt", alice_cert)
    put("alice.key", alice_key)
    c, k = foreign.leaf("mallory", client=True)
    put("mallory.crt", c)
    put("mallory.key", k)
    tls_port = free_port()
    broker = Broker(d, [
        "--listener", "external=127.0.0.1:%d" % tls_port,
        "--listener-security-protocol-map", "EXTERNAL:SSL,INTERNAL:PLAINTEXT",
        "--ssl-keystore-location", files["broker.pem"],
        "--ssl-truststore-location", files["ca.pem"],
        "--ssl-client-auth", "required",
    ], wait_port=tls_port)
    # Alice's settings for Kafka's Java tools: its PEM key and trust stores.
    props = d / "alice-ssl.properties"
    props.write_text(
        "security.protocol=SSL\n"
        "ssl.truststore.type=PEM\nssl.truststore.location=%s\n"
        "ssl.keystore.type=PEM\nssl.keystore.location=%s\n" % (files["ca.pem"], files["alice.pem"])
    )
    yield {"bootstrap": "127.0.0.1:%d" % tls_port, "files": files, "props": props}
    broker.stop()


def test_kafka_python_produces_and_consumes_over_tls(tls):
    topic = "strand-tls-py-" + RUN_ID
    common = dict(
        bootstrap_servers=tls["bootstrap"], security_protocol="SSL",
        ssl_cafile=tls["files"]["ca.pem"],
        ssl_certfile=tls["files"]["alice.crt"], ssl_keyfile=tls["files"]["alice.key"],
    )
    producer = KafkaProducer(acks="all", **common)
    for i in range(20):
        producer.send(topic, b"tls-%d" % i).get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(consumer_timeout_ms=15000, **common)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got = [m.value for m in consumer]
    consumer.close()
    assert got == [b"tls-%d" % i for i in range(20)]


def test_confluent_kafka_with_a_client_certificate(tls):
    topic = "strand-tls-ck-" + RUN_ID
    f = tls["files"]
    common = {
        "bootstrap.servers": tls["bootstrap"], "security.protocol": "SSL",
        "ssl.ca.location": f["ca.pem"],
        "ssl.certificate.location": f["alice.crt"], "ssl.key.location": f["alice.key"],
    }
    producer = confluent_kafka.Producer(dict(common, acks="all", **{"enable.idempotence": True}))
    failed = []
    for i in range(20):
        producer.produce(topic, b"mtls-%d" % i, on_delivery=lambda e, m: e and failed.append(e))
    assert producer.flush(30) == 0
    assert failed == []
    consumer = confluent_kafka.Consumer(dict(common, **{"group.id": "tls-" + RUN_ID, "auto.offset.reset": "earliest"}))
    consumer.assign([confluent_kafka.TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
    got, deadline = [], time.monotonic() + 30
    while len(got) < 20 and time.monotonic() < deadline:
        m = consumer.poll(1.0)
        if m is not None and m.error() is None:
            got.append(m.value())
    consumer.close()
    assert got == [b"mtls-%d" % i for i in range(20)]


def test_kafkas_console_tools_over_mutual_tls(tls):
    """The Java client (kafka-clients 4.3, JSSE) with Kafka's PEM key and trust stores."""
    f = tls["files"]
    props = tls["props"]
    lines = ["java-%d" % i for i in range(5)]
    got = console_round_trip(tls["bootstrap"], props, "strand-tls-java-" + RUN_ID, lines)
    assert got == lines


@pytest.mark.parametrize("who", ["mallory", None])
def test_a_foreign_client_certificate_or_none_is_refused(tls, who):
    f = tls["files"]
    conf = {
        "bootstrap.servers": tls["bootstrap"], "security.protocol": "SSL",
        "ssl.ca.location": f["ca.pem"], "message.timeout.ms": 5000,
        # Fewer retries of the refused handshake, each of which librdkafka logs.
        "reconnect.backoff.ms": 1000, "reconnect.backoff.max.ms": 2000,
    }
    if who:
        conf.update({"ssl.certificate.location": f[who + ".crt"], "ssl.key.location": f[who + ".key"]})
    producer = confluent_kafka.Producer(conf)
    errors = []
    topic = "strand-tls-refused-%s-%s" % (who, RUN_ID)
    producer.produce(topic, b"never", on_delivery=lambda e, m: errors.append(e))
    producer.flush(15)
    assert len(errors) == 1 and errors[0] is not None, errors
    # Nothing was written: the topic was never created.
    admin = AdminClient({
        "bootstrap.servers": tls["bootstrap"], "security.protocol": "SSL",
        "ssl.ca.location": f["ca.pem"],
        "ssl.certificate.location": f["alice.crt"], "ssl.key.location": f["alice.key"],
    })
    assert topic not in admin.list_topics(timeout=15).topics


def test_an_untrusted_broker_certificate_is_refused_by_the_client(tls):
    topic = "strand-tls-untrusted-" + RUN_ID
    with pytest.raises((KafkaConnectionError, KafkaTimeoutError)):
        producer = KafkaProducer(
            bootstrap_servers=tls["bootstrap"], security_protocol="SSL",
            ssl_cafile=tls["files"]["foreign-ca.pem"], request_timeout_ms=5000,
            max_block_ms=5000,
        )
        producer.send(topic, b"never").get(timeout=10)


def test_a_quota_on_a_certificates_principal_throttles_its_client(tls):
    """The subject of a verified client certificate is the connection's Kafka principal
    (`CN=alice`, as Kafka's default ssl.principal.mapping.rules names it): a produce quota
    set on that user with kafka-configs throttles alice's producer."""
    f = tls["files"]
    props = tls["props"]

    def configs(*args):
        r = java_tool("kafka.admin.ConfigCommand", [
            "--bootstrap-server", tls["bootstrap"], "--command-config", str(props),
            "--entity-type", "users", "--entity-name", "CN=alice", *args])
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        return r.stdout

    # 160 KB in one request against 5 KB/s, measured over Kafka's 11 s window: throttled.
    configs("--alter", "--add-config", "producer_byte_rate=5000")
    try:
        # kafka-configs --describe shows the quota (and asks DescribeUserScramCredentials too).
        assert "producer_byte_rate=5000" in configs("--describe")
        throttles = []
        producer = confluent_kafka.Producer({
            "bootstrap.servers": tls["bootstrap"], "security.protocol": "SSL",
            "ssl.ca.location": f["ca.pem"],
            "ssl.certificate.location": f["alice.crt"], "ssl.key.location": f["alice.key"],
            "statistics.interval.ms": 500, "linger.ms": 200,
            "stats_cb": lambda s: throttles.extend(
                b["throttle"]["max"] for b in json.loads(s)["brokers"].values()
            ),
        })
        topic = "strand-tls-quota-" + RUN_ID
        for i in range(40):
            producer.produce(topic, b"q" * 4000)
        assert producer.flush(60) == 0
        deadline = time.monotonic() + 10
        while max(throttles, default=0) == 0 and time.monotonic() < deadline:
            producer.poll(0.5)
        assert max(throttles, default=0) > 0, "alice's producer was never throttled"
    finally:
        configs("--alter", "--delete-config", "producer_byte_rate")
