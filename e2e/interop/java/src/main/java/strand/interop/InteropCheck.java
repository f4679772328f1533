package strand.interop;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * End-to-end produce/consume check with the stock Java client.
 *
 * For each case (compression codec x partition count x created-or-auto-created
 * topic) it produces keyed records with default producer settings (idempotent,
 * acks=all; only compression.type is set), records every acknowledged
 * (partition, offset, timestamp) from the send callback, then reads the topic
 * back with assign() + seekToBeginning and checks that each acknowledged record
 * is at exactly its offset with the same key, value, headers and timestamp,
 * with no duplicates and no gaps. It also checks ListOffsets: earliest/latest
 * (beginningOffsets/endOffsets) and by timestamp (offsetsForTimes).
 *
 * Usage: InteropCheck [BOOTSTRAP=localhost:9092] [TOPIC_PREFIX=interop]
 * Env:   INTEROP_RECORDS (default 2000), INTEROP_TIMEOUT_S per step (default 60)
 * Exit:  0 when every case passes, 1 otherwise (each failure is printed).
 */
public final class InteropCheck {
    private static final int RECORDS = intEnv("INTEROP_RECORDS", 2000);
    private static final long TIMEOUT_MS = intEnv("INTEROP_TIMEOUT_S", 60) * 1000L;

    /** createTopic=false relies on broker auto-creation on first metadata request. */
    private record Case(String codec, int partitions, boolean createTopic) {
        String name() {
            return codec + "-p" + (createTopic ? partitions : "auto");
        }
    }

    private static final List<Case> CASES = List.of(
            new Case("none", 1, true),
            new Case("gzip", 1, true),
            new Case("snappy", 1, true),
            new Case("lz4", 1, true),
            new Case("zstd", 1, true),
            new Case("lz4", 3, true),
            new Case("gzip", 0, false));

    /** What the producer sent and what the broker acknowledged for one record. */
    private static final class Sent {
        final int index;
        final String key;
        final String value;
        final long timestamp;
        final RecordHeaders headers;
        volatile int partition = -1;
        volatile long offset = -1;
        volatile long ackTimestamp = -1;

        Sent(int index, String key, String value, long timestamp, RecordHeaders headers) {
            this.index = index;
            this.key = key;
            this.value = value;
            this.timestamp = timestamp;
            this.headers = headers;
        }
    }

    /** A failed expectation; the message says what was expected and what was seen. */
    private static final class CheckFailed extends Exception {
        CheckFailed(String msg) {
            super(msg);
        }
    }

    public static void main(String[] args) {
        String bootstrap = args.length > 0 ? args[0] : "localhost:9092";
        String prefix = args.length > 1 ? args[1] : "interop";
        // Unique suffix so reruns against a long-lived broker start from fresh topics.
        String runId = Long.toString(System.currentTimeMillis(), 36);

        System.out.printf("InteropCheck: bootstrap=%s records/case=%d client=kafka-clients %s%n",
                bootstrap, RECORDS, org.apache.kafka.common.utils.AppInfoParser.getVersion());
        String unreachable = preflight(bootstrap);
        if (unreachable != null) {
            System.out.println("FAIL cannot connect to " + unreachable + ": is the broker running?");
            System.out.printf("InteropCheck: 0 passed, %d failed%n", CASES.size());
            System.exit(1);
        }
        int passed = 0, failed = 0;
        List<String> failures = new ArrayList<>();
        for (Case c : CASES) {
            String topic = prefix + "-" + c.name() + "-" + runId;
            long t0 = System.nanoTime();
            try {
                String summary = runCase(bootstrap, topic, c);
                passed++;
                System.out.printf("PASS %-12s topic=%s %s (%.1fs)%n", c.name(), topic, summary,
                        (System.nanoTime() - t0) / 1e9);
            } catch (Exception e) {
                failed++;
                String msg = e instanceof CheckFailed ? e.getMessage() : e.toString();
                failures.add(c.name() + ": " + msg);
                System.out.printf("FAIL %-12s topic=%s: %s (%.1fs)%n", c.name(), topic, msg,
                        (System.nanoTime() - t0) / 1e9);
                if (!(e instanceof CheckFailed)) e.printStackTrace(System.out);
            }
        }
        if (failed > 0) {
            System.out.println("Failures:");
            failures.forEach(f -> System.out.println("  " + f));
        }
        // Plain summary line ("N passed, N failed") so CI can see the count.
        System.out.printf("InteropCheck: %d passed, %d failed%n", passed, failed);
        System.exit(failed == 0 ? 0 : 1);
    }

    private static String runCase(String bootstrap, String topic, Case c) throws Exception {
        if (c.createTopic()) {
            Properties ap = new Properties();
            ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            Admin admin = Admin.create(ap);
            try {
                admin.createTopics(List.of(new NewTopic(topic, c.partitions(), (short) 1)))
                        .all().get(TIMEOUT_MS, TimeUnit.MILLISECONDS);
            } catch (TimeoutException e) {
                throw new CheckFailed("CreateTopics not answered within " + TIMEOUT_MS + " ms");
            } catch (ExecutionException e) {
                throw new CheckFailed("CreateTopics failed: " + e.getCause());
            } finally {
                // Plain close() would wait up to 60 s for a call that timed out.
                admin.close(Duration.ofSeconds(2));
            }
        }

        List<Sent> sent = produce(bootstrap, topic, c);
        Map<Integer, TreeMap<Long, Sent>> byPartition = checkAcks(sent);
        return consumeAndVerify(bootstrap, topic, c, sent, byPartition);
    }

    // ---------------------------------------------------------------- produce

    private static List<Sent> produce(String bootstrap, String topic, Case c) throws Exception {
        Properties pp = new Properties();
        pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        pp.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, c.codec());

        // Explicit, strictly increasing CreateTime timestamps (in the past, to
        // stay inside the broker's accepted timestamp window) make the
        // offsetsForTimes answers exactly predictable.
        long baseTs = System.currentTimeMillis() - 10 * 60 * 1000L;
        List<Sent> sent = new ArrayList<>(RECORDS);
        List<Future<RecordMetadata>> futures = new ArrayList<>(RECORDS);
        AtomicReference<Exception> firstError = new AtomicReference<>();

        KafkaProducer<String, String> producer = new KafkaProducer<>(pp);
        try {
            // Metadata first: for the auto-create case this request is what
            // creates the topic (allow_auto_topic_creation=true).
            int n;
            try {
                n = producer.partitionsFor(topic).size();
            } catch (org.apache.kafka.common.errors.TimeoutException e) {
                throw new CheckFailed("producer metadata for the topic timed out: " + e.getMessage());
            }
            if (c.createTopic() && n != c.partitions()) {
                throw new CheckFailed("created topic with " + c.partitions()
                        + " partitions but metadata reports " + n);
            }
            String notReady = TopicReady.await(bootstrap, topic, n, TIMEOUT_MS);
            if (notReady != null) throw new CheckFailed(notReady);
            long sendDeadline = System.currentTimeMillis() + TIMEOUT_MS;
            for (int i = 0; i < RECORDS; i++) {
                // send() reports e.g. a metadata timeout through the callback, not
                // by throwing: stop at the first error instead of waiting per record.
                if (firstError.get() != null) {
                    throw new CheckFailed("send of record " + (i - 1) + " or earlier failed: " + firstError.get());
                }
                if (System.currentTimeMillis() > sendDeadline) {
                    throw new CheckFailed("only " + i + " records could be sent within " + TIMEOUT_MS + " ms");
                }
                RecordHeaders headers = new RecordHeaders();
                if (i % 10 == 0) {
                    headers.add("idx", Integer.toString(i).getBytes(StandardCharsets.UTF_8));
                    headers.add("empty", new byte[0]);
                }
                Sent s = new Sent(i, "key-" + i, valueFor(i, c.codec()), baseTs + i, headers);
                sent.add(s);
                ProducerRecord<String, String> rec =
                        new ProducerRecord<>(topic, null, s.timestamp, s.key, s.value, headers);
                futures.add(producer.send(rec, (md, ex) -> {
                    if (ex != null) {
                        firstError.compareAndSet(null, ex);
                    } else {
                        s.partition = md.partition();
                        s.offset = md.offset();
                        s.ackTimestamp = md.timestamp();
                    }
                }));
            }
            // Bounded wait for every ack (default delivery.timeout.ms is 2 min).
            long deadline = System.currentTimeMillis() + TIMEOUT_MS;
            for (int i = 0; i < futures.size(); i++) {
                long left = Math.max(1, deadline - System.currentTimeMillis());
                try {
                    futures.get(i).get(left, TimeUnit.MILLISECONDS);
                } catch (TimeoutException e) {
                    throw new CheckFailed("record " + i + " not acknowledged within " + TIMEOUT_MS + " ms");
                } catch (ExecutionException e) {
                    throw new CheckFailed("send of record " + i + " failed: " + e.getCause());
                }
            }
        } finally {
            producer.close(Duration.ofSeconds(5));
        }
        if (firstError.get() != null) {
            throw new CheckFailed("send callback reported: " + firstError.get());
        }
        return sent;
    }

    /** Deterministic values of varied size, including null, empty and large ones. */
    private static String valueFor(int i, String codec) {
        if (i % 400 == 17) return null; // tombstone: must come back as null, not ""
        if (i % 400 == 18) return "";
        StringBuilder sb = new StringBuilder("value-").append(i).append('-').append(codec).append('-');
        int len = (i % 500 == 499) ? 100_000 : (i * 7) % 300;
        for (int j = 0; j < len; j++) sb.append((char) ('a' + ((i + j * 31) % 26)));
        return sb.toString();
    }

    // ------------------------------------------------------------ check acks

    /** Acked offsets must be unique and, per partition, exactly 0..n-1 in send order. */
    private static Map<Integer, TreeMap<Long, Sent>> checkAcks(List<Sent> sent) throws CheckFailed {
        Map<Integer, TreeMap<Long, Sent>> byPartition = new TreeMap<>();
        for (Sent s : sent) {
            if (s.partition < 0 || s.offset < 0) {
                throw new CheckFailed("record " + s.index + " has no acknowledged offset");
            }
            if (s.ackTimestamp != s.timestamp) {
                throw new CheckFailed("record " + s.index + " acked with timestamp " + s.ackTimestamp
                        + ", sent CreateTime " + s.timestamp);
            }
            Sent prev = byPartition.computeIfAbsent(s.partition, p -> new TreeMap<>()).put(s.offset, s);
            if (prev != null) {
                throw new CheckFailed("records " + prev.index + " and " + s.index
                        + " were both acknowledged at partition " + s.partition + " offset " + s.offset);
            }
        }
        for (Map.Entry<Integer, TreeMap<Long, Sent>> e : byPartition.entrySet()) {
            TreeMap<Long, Sent> m = e.getValue();
            long expected = 0;
            int lastIndex = -1;
            for (Map.Entry<Long, Sent> o : m.entrySet()) {
                if (o.getKey() != expected) {
                    throw new CheckFailed("partition " + e.getKey() + ": acknowledged offsets have a gap: expected "
                            + expected + ", next acked is " + o.getKey());
                }
                // The idempotent producer keeps per-partition send order.
                if (o.getValue().index < lastIndex) {
                    throw new CheckFailed("partition " + e.getKey() + ": record " + o.getValue().index
                            + " acked at offset " + o.getKey() + " after record " + lastIndex + " (reordered)");
                }
                lastIndex = o.getValue().index;
                expected++;
            }
        }
        return byPartition;
    }

    // ------------------------------------------------------ consume & verify

    private static String consumeAndVerify(String bootstrap, String topic, Case c, List<Sent> sent,
                                           Map<Integer, TreeMap<Long, Sent>> byPartition) throws Exception {
        Properties cp = new Properties();
        cp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        Duration timeout = Duration.ofMillis(TIMEOUT_MS);

        KafkaConsumer<String, String> consumer = new KafkaConsumer<>(cp);
        try {
            List<PartitionInfo> infos = consumer.partitionsFor(topic, timeout);
            if (infos == null || infos.isEmpty()) throw new CheckFailed("consumer sees no partitions");
            if (c.createTopic() && infos.size() != c.partitions()) {
                throw new CheckFailed("consumer metadata reports " + infos.size() + " partitions, expected "
                        + c.partitions());
            }
            List<TopicPartition> tps = new ArrayList<>();
            for (PartitionInfo pi : infos) tps.add(new TopicPartition(topic, pi.partition()));
            for (int p : byPartition.keySet()) {
                if (p >= infos.size()) throw new CheckFailed("record acked on unknown partition " + p);
            }

            // Assign before ListOffsets so the consumer tracks these partitions.
            consumer.assign(tps);

            // ListOffsets: earliest / latest.
            Map<TopicPartition, Long> begin = consumer.beginningOffsets(tps, timeout);
            Map<TopicPartition, Long> end = consumer.endOffsets(tps, timeout);
            for (TopicPartition tp : tps) {
                long n = byPartition.getOrDefault(tp.partition(), new TreeMap<>()).size();
                if (!Objects.equals(begin.get(tp), 0L)) {
                    throw new CheckFailed(tp + ": earliest offset " + begin.get(tp) + ", expected 0");
                }
                if (!Objects.equals(end.get(tp), n)) {
                    throw new CheckFailed(tp + ": latest offset (high watermark) " + end.get(tp)
                            + ", expected " + n + " (acknowledged records)");
                }
            }

            checkOffsetsForTimes(consumer, topic, byPartition, timeout);

            // Read everything back from the beginning.
            consumer.seekToBeginning(tps);
            Map<Integer, Long> nextOffset = new HashMap<>();
            for (TopicPartition tp : tps) nextOffset.put(tp.partition(), 0L);
            int received = 0;
            long bytes = 0;
            long deadline = System.currentTimeMillis() + TIMEOUT_MS;
            while (received < sent.size()) {
                if (System.currentTimeMillis() > deadline) {
                    throw new CheckFailed("consumed only " + received + " of " + sent.size()
                            + " records within " + TIMEOUT_MS + " ms; positions " + nextOffset);
                }
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(500))) {
                    long want = nextOffset.get(r.partition());
                    if (r.offset() != want) {
                        throw new CheckFailed("partition " + r.partition() + ": expected offset " + want
                                + " next, got " + r.offset() + (r.offset() < want ? " (duplicate)" : " (gap)"));
                    }
                    Sent s = byPartition.getOrDefault(r.partition(), new TreeMap<>()).get(r.offset());
                    if (s == null) {
                        throw new CheckFailed("unexpected record at partition " + r.partition() + " offset "
                                + r.offset() + " (nothing was acknowledged there)");
                    }
                    verifyRecord(r, s);
                    nextOffset.put(r.partition(), want + 1);
                    received++;
                    bytes += r.serializedKeySize() + Math.max(0, r.serializedValueSize());
                }
            }
            // Nothing beyond the acknowledged records should be there.
            for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                throw new CheckFailed("extra record at partition " + r.partition() + " offset " + r.offset());
            }
            return String.format("partitions=%d records=%d bytes=%d per-partition=%s", tps.size(), received,
                    bytes, partitionCounts(byPartition));
        } catch (org.apache.kafka.common.errors.TimeoutException e) {
            throw new CheckFailed("consumer request timed out: " + e.getMessage());
        } finally {
            consumer.close(Duration.ofSeconds(2));
        }
    }

    private static void verifyRecord(ConsumerRecord<String, String> r, Sent s) throws CheckFailed {
        String where = "partition " + r.partition() + " offset " + r.offset() + " (record " + s.index + ")";
        if (!Objects.equals(r.key(), s.key)) {
            throw new CheckFailed(where + ": key " + r.key() + ", expected " + s.key);
        }
        if (!Objects.equals(r.value(), s.value)) {
            throw new CheckFailed(where + ": value differs (got " + describe(r.value()) + ", expected "
                    + describe(s.value) + ")");
        }
        if (r.timestamp() != s.timestamp) {
            throw new CheckFailed(where + ": timestamp " + r.timestamp() + " (" + r.timestampType()
                    + "), expected CreateTime " + s.timestamp);
        }
        Header[] got = r.headers().toArray();
        Header[] want = s.headers.toArray();
        boolean same = got.length == want.length;
        for (int i = 0; same && i < got.length; i++) {
            same = got[i].key().equals(want[i].key()) && Arrays.equals(got[i].value(), want[i].value());
        }
        if (!same) {
            throw new CheckFailed(where + ": headers " + Arrays.toString(got) + ", expected " + Arrays.toString(want));
        }
    }

    /** offsetsForTimes must return the first offset whose timestamp is >= the target. */
    private static void checkOffsetsForTimes(KafkaConsumer<String, String> consumer, String topic,
                                             Map<Integer, TreeMap<Long, Sent>> byPartition,
                                             Duration timeout) throws CheckFailed {
        for (Map.Entry<Integer, TreeMap<Long, Sent>> e : byPartition.entrySet()) {
            TopicPartition tp = new TopicPartition(topic, e.getKey());
            List<Sent> recs = new ArrayList<>(e.getValue().values());
            Sent first = recs.get(0), mid = recs.get(recs.size() / 2), last = recs.get(recs.size() - 1);
            // Before everything, exact hits, between two records, after everything (-> null).
            long[] targets = {first.timestamp - 60_000, first.timestamp, mid.timestamp, mid.timestamp + 1,
                    last.timestamp, last.timestamp + 1};
            for (long target : targets) {
                long expected = -1;
                for (Sent s : recs) { // recs are in offset order, timestamps increase with offset
                    if (s.timestamp >= target) {
                        expected = s.offset;
                        break;
                    }
                }
                OffsetAndTimestamp got = consumer.offsetsForTimes(Map.of(tp, target), timeout).get(tp);
                long gotOffset = got == null ? -1 : got.offset();
                if (gotOffset != expected) {
                    throw new CheckFailed(tp + ": offsetsForTimes(" + target + ") = "
                            + (got == null ? "null" : got) + ", expected "
                            + (expected < 0 ? "null" : "offset " + expected));
                }
                if (got != null) {
                    long wantTs = e.getValue().get(expected).timestamp;
                    if (got.timestamp() != wantTs) {
                        throw new CheckFailed(tp + ": offsetsForTimes(" + target + ") timestamp "
                                + got.timestamp() + ", expected " + wantTs);
                    }
                }
            }
        }
    }

    /** TCP connect to each bootstrap address; returns the first unreachable one (with reason) or null. */
    private static String preflight(String bootstrap) {
        for (String hp : bootstrap.split(",")) {
            hp = hp.trim();
            int colon = hp.lastIndexOf(':');
            if (colon < 0) return hp + " (no port)";
            String host = hp.substring(0, colon).replace("[", "").replace("]", "");
            try (java.net.Socket sock = new java.net.Socket()) {
                sock.connect(new java.net.InetSocketAddress(host, Integer.parseInt(hp.substring(colon + 1))), 5000);
            } catch (Exception e) {
                return hp + " (" + e + ")";
            }
        }
        return null;
    }

    private static String partitionCounts(Map<Integer, TreeMap<Long, Sent>> byPartition) {
        StringBuilder sb = new StringBuilder("{");
        byPartition.forEach((p, m) -> sb.append(sb.length() > 1 ? "," : "").append(p).append(':').append(m.size()));
        return sb.append('}').toString();
    }

    private static String describe(String v) {
        if (v == null) return "null";
        return "\"" + (v.length() > 40 ? v.substring(0, 40) + "...\" (" + v.length() + " chars)" : v + "\"");
    }

    private static int intEnv(String name, int dflt) {
        String v = System.getenv(name);
        return v == null || v.isBlank() ? dflt : Integer.parseInt(v.trim());
    }
}
