"""What the security interop tests share: a CA for test certificates, a broker process
started with given flags, and Kafka 4.3's Java tools (kafka-clients' own TLS and SASL code).
"""

import datetime
import ipaddress
import os
import socket
import subprocess
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Ca:
    def __init__(self, name):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )

    def pem(self):
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def leaf(self, cn, dns=(), ips=(), client=False):
        """A certificate for `cn` signed by this CA: (cert PEM, key PEM)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        usage = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH if client else x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem



class Broker:
    """A broker process on a fresh data directory under `d`: the plaintext listener
    `internal` on `self.port`, plus whatever `args` add; stopped by `stop()`."""

    def __init__(self, d, args, wait_port=None):
        binary = os.environ.get("STRAND_BROKER_BIN") or os.path.join(
            os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "debug", "broker"
        )
        self.port, self.http = free_port(), free_port()
        self.log_path = d / "broker.log"
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, "--data-dir", str(d / "data"),
             "--listen", "127.0.0.1:%d" % self.port, "--http", "127.0.0.1:%d" % self.http,
             *args],
            stdout=subprocess.DEVNULL, stderr=log,
        )
        deadline = time.monotonic() + 30
        for port in (self.port, wait_port or self.port):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        self.proc.kill()
                        self.proc.wait(timeout=30)
                        raise RuntimeError("broker did not start: %s" % self.log_path.read_text())
                    time.sleep(0.1)

    @property
    def plaintext(self):
        return "127.0.0.1:%d" % self.port

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def kafka_classpath():
    """Kafka 4.3's jars (fetched and cached by e2e/kafka/kafka.sh)."""
    return subprocess.run(
        ["bash", os.path.join(ROOT, "e2e", "kafka", "kafka.sh"), "classpath"],
        capture_output=True, text=True, timeout=900, check=True,
    ).stdout.strip().splitlines()[-1]


def java_tool(main, args, stdin=None, timeout=120):
    """Runs one of Kafka's tools (its main class) and returns the finished process."""
    java = os.path.join(os.environ["JAVA_HOME"], "bin", "java") if os.environ.get("JAVA_HOME") else "java"
    return subprocess.run(
        [java, "-cp", kafka_classpath(), main, *args],
        input=stdin, capture_output=True, text=True, timeout=timeout,
    )


def console_round_trip(bootstrap, props, topic, lines):
    """Kafka's console producer then console consumer with client settings `props` (a
    file): the lines read back."""
    produced = java_tool(
        "org.apache.kafka.tools.ConsoleProducer",
        ["--bootstrap-server", bootstrap, "--topic", topic,
         "--command-config", str(props), "--producer-property", "acks=all"],
        stdin="\n".join(lines) + "\n",
    )
    assert produced.returncode == 0, produced.stderr[-3000:]
    consumed = java_tool(
        "org.apache.kafka.tools.consumer.ConsoleConsumer",
        ["--bootstrap-server", bootstrap, "--topic", topic, "--from-beginning",
         "--max-messages", str(len(lines)), "--timeout-ms", "60000",
         "--command-config", str(props)],
    )
    assert consumed.returncode == 0, consumed.stderr[-3000:]
    return consumed.stdout.split()
