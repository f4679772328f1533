"""Sends one Fetch (v4) that claims to come from a follower (replica_id set) as an ordinary,
unauthenticated client would, and prints the error code the broker gives the partition.

    python3 forged_fetch.py HOST:PORT TOPIC REPLICA_ID

A cluster with a secret answers 29 (TOPIC_AUTHORIZATION_FAILED): only a connection that
authenticated as the cluster's broker user may fetch as a replica. Exit status 0 when the
answer is 29, 1 otherwise (the code is printed either way). Standard library only.
"""

import socket
import struct
import sys

FETCH, VERSION, CORRELATION = 1, 4, 7
TOPIC_AUTHORIZATION_FAILED = 29


def string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def request(topic, replica_id):
    header = struct.pack(">hhi", FETCH, VERSION, CORRELATION) + string("forged-fetch")
    # replica_id, max_wait_ms, min_bytes, max_bytes, isolation_level
    body = struct.pack(">iiiib", replica_id, 0, 0, 1 << 20, 0)
    # one topic, one partition: partition 0 at offset 0, up to 1 MiB
    body += struct.pack(">i", 1) + string(topic) + struct.pack(">i", 1)
    body += struct.pack(">iqi", 0, 0, 1 << 20)
    frame = header + body
    return struct.pack(">i", len(frame)) + frame


def read_exact(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError("connection closed after %d of %d bytes" % (len(out), n))
        out += chunk
    return out


def main():
    addr, topic, replica_id = sys.argv[1], sys.argv[2], int(sys.argv[3])
    host, _, port = addr.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request(topic, replica_id))
        (size,) = struct.unpack(">i", read_exact(sock, 4))
        resp = read_exact(sock, size)
    correlation, _throttle, topics = struct.unpack(">iii", resp[:12])
    assert correlation == CORRELATION, correlation
    assert topics == 1, topics
    (name_len,) = struct.unpack(">h", resp[12:14])
    at = 14 + name_len
    partitions, partition, error = struct.unpack(">iih", resp[at : at + 10])
    assert partitions == 1 and partition == 0, (partitions, partition)
    print("forged fetch as replica %d of %s-0 via %s: error code %d" % (replica_id, topic, addr, error))
    sys.exit(0 if error == TOPIC_AUTHORIZATION_FAILED else 1)


if __name__ == "__main__":
    main()
