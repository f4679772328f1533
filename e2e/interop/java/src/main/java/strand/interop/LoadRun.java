package strand.interop;

import java.io.BufferedWriter;
import java.io.FileWriter;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.BitSet;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * The load of an end-to-end scenario: an idempotent acks=all producer at a fixed rate and a
 * consumer-group member reading the same topic, both running until STOP_FILE exists. Each
 * record's value is "NAME-SEQ" (NAME tells runs apart), its key SEQ, so records spread over
 * the partitions and every one can be looked up afterwards.
 *
 * Usage: LoadRun BOOTSTRAP TOPIC NAME RATE_PER_S OUT_DIR STOP_FILE
 *
 * OUT_DIR/acks, one line per send outcome (times: System.currentTimeMillis()):
 *   ack SENT_MS ACK_MS PARTITION OFFSET SEQ
 *   err SENT_MS FAIL_MS SEQ EXCEPTION        failed for good, after the producer's retries
 * OUT_DIR/summary: "sent=N acked=N failed=N consumed=N consumedDistinct=N
 *   ackedNotConsumed=N" once the consumer has caught up with every acknowledged record
 *   (or 120 s after the stop). Exit status 0 when the run itself worked (the checks are
 *   LoadVerify's and the scenario's).
 */
public final class LoadRun {
    public static void main(String[] args) throws Exception {
        if (args.length != 6) {
            System.err.println("usage: LoadRun BOOTSTRAP TOPIC NAME RATE_PER_S OUT_DIR STOP_FILE");
            System.exit(2);
        }
        String bootstrap = args[0], topic = args[1], name = args[2];
        int rate = Integer.parseInt(args[3]);
        Path outDir = Path.of(args[4]), stop = Path.of(args[5]);
        Files.createDirectories(outDir);
        BufferedWriter acks = new BufferedWriter(new FileWriter(outDir.resolve("acks").toFile()));

        BitSet ackedSeqs = new BitSet(), consumedSeqs = new BitSet();
        AtomicLong acked = new AtomicLong(), failed = new AtomicLong(), consumed = new AtomicLong();
        AtomicBoolean producing = new AtomicBoolean(true);
        Thread consumerThread = new Thread(() -> consume(bootstrap, topic, name, consumedSeqs, consumed,
                ackedSeqs, producing));
        consumerThread.setDaemon(true);
        consumerThread.start();

        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        p.put(ProducerConfig.LINGER_MS_CONFIG, "0");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        long sent = 0;
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            long intervalNs = 1_000_000_000L / Math.max(1, rate);
            long t0 = System.nanoTime();
            while (!Files.exists(stop)) {
                long due = t0 + sent * intervalNs, now = System.nanoTime();
                if (due > now) {
                    Thread.sleep((due - now) / 1_000_000L, (int) ((due - now) % 1_000_000L));
                    continue;
                }
                long seq = sent++;
                long sentMs = System.currentTimeMillis();
                producer.send(new ProducerRecord<>(topic, Long.toString(seq), name + "-" + seq), (md, ex) -> {
                    long ms = System.currentTimeMillis();
                    synchronized (acks) {
                        try {
                            if (ex != null) {
                                failed.incrementAndGet();
                                acks.write("err " + sentMs + " " + ms + " " + seq + " "
                                        + ex.toString().replace('\n', ' ') + "\n");
                            } else {
                                acked.incrementAndGet();
                                synchronized (ackedSeqs) {
                                    ackedSeqs.set((int) seq);
                                }
                                acks.write("ack " + sentMs + " " + ms + " " + md.partition() + " "
                                        + md.offset() + " " + seq + "\n");
                            }
                        } catch (IOException e) {
                            throw new RuntimeException(e);
                        }
                    }
                });
            }
            producer.flush();
        }
        producing.set(false);
        synchronized (acks) {
            acks.close();
        }
        consumerThread.join(130_000);
        long notConsumed;
        int distinct;
        synchronized (ackedSeqs) {
            synchronized (consumedSeqs) {
                BitSet missing = (BitSet) ackedSeqs.clone();
                missing.andNot(consumedSeqs);
                notConsumed = missing.cardinality();
                distinct = consumedSeqs.cardinality();
            }
        }
        String summary = "sent=" + sent + " acked=" + acked.get() + " failed=" + failed.get()
                + " consumed=" + consumed.get() + " consumedDistinct=" + distinct
                + " ackedNotConsumed=" + notConsumed;
        Files.writeString(outDir.resolve("summary"), summary + "\n");
        System.out.println("load " + name + ": " + summary);
    }

    /** A group member reading until, after the producer stopped, it has seen every ack. */
    private static void consume(String bootstrap, String topic, String name, BitSet seen, AtomicLong count,
                                BitSet ackedSeqs, AtomicBoolean producing) {
        Properties c = new Properties();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        c.put(ConsumerConfig.GROUP_ID_CONFIG, "e2e-load-" + name);
        c.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        String prefix = name + "-";
        long stoppedAt = -1;
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
            consumer.subscribe(List.of(topic));
            while (true) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                    if (r.value() == null || !r.value().startsWith(prefix)) continue;
                    try {
                        int seq = Integer.parseInt(r.value().substring(prefix.length()));
                        count.incrementAndGet();
                        synchronized (seen) {
                            seen.set(seq);
                        }
                    } catch (NumberFormatException e) {
                        // another writer's record: not ours to count
                    }
                }
                if (!producing.get()) {
                    if (stoppedAt < 0) stoppedAt = System.currentTimeMillis();
                    boolean caughtUp;
                    synchronized (ackedSeqs) {
                        synchronized (seen) {
                            BitSet missing = (BitSet) ackedSeqs.clone();
                            missing.andNot(seen);
                            caughtUp = missing.isEmpty();
                        }
                    }
                    if (caughtUp || System.currentTimeMillis() - stoppedAt > 120_000) return;
                }
            }
        } catch (RuntimeException e) {
            System.err.println("consumer failed: " + e);
        }
    }
}
