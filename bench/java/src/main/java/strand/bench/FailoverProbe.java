package strand.bench;

import java.io.BufferedWriter;
import java.io.FileWriter;
import java.io.IOException;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Produces to ONE partition at a fixed rate (acks=all, default idempotent
 * producer, default retries / delivery.timeout.ms) and logs every
 * acknowledgement with its wall-clock time, so a script can kill the
 * partition leader and find the first write acknowledged after the kill.
 *
 * Usage: FailoverProbe BOOTSTRAP TOPIC PARTITION DURATION_S RATE_PER_S RECORD_SIZE OUT_FILE
 *
 * OUT_FILE lines (times are System.currentTimeMillis(), the same clock as `date +%s%3N`):
 *   start MS
 *   ack MS OFFSET          one per acknowledged record, in callback order
 *   err MS EXCEPTION       a record that failed for good (after the producer's own retries)
 *   leader MS NODE_ID      partition leader in the producer's metadata cache, logged at start
 *                          and whenever it changes (checked on each ack)
 *   end MS sent=N acked=N errors=N
 */
public final class FailoverProbe {
    public static void main(String[] args) throws Exception {
        if (args.length != 7) {
            System.err.println("usage: FailoverProbe BOOTSTRAP TOPIC PARTITION DURATION_S RATE_PER_S RECORD_SIZE OUT_FILE");
            System.exit(2);
        }
        String bootstrap = args[0], topic = args[1];
        int partition = Integer.parseInt(args[2]);
        long durationMs = Long.parseLong(args[3]) * 1000L;
        int rate = Integer.parseInt(args[4]);
        int size = Integer.parseInt(args[5]);
        BufferedWriter out = new BufferedWriter(new FileWriter(args[6]));

        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.LINGER_MS_CONFIG, "0");

        AtomicLong acked = new AtomicLong(), errors = new AtomicLong();
        long[] lastLeader = {Long.MIN_VALUE};
        byte[] value = new byte[size];
        long sent = 0;
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
            long start = System.currentTimeMillis();
            synchronized (out) {
                out.write("start " + start + "\n");
            }
            logLeader(producer, topic, partition, out, lastLeader);
            long intervalNs = 1_000_000_000L / Math.max(1, rate);
            long t0 = System.nanoTime();
            while (System.currentTimeMillis() - start < durationMs) {
                long due = t0 + sent * intervalNs;
                long now = System.nanoTime();
                if (due > now) {
                    Thread.sleep((due - now) / 1_000_000L, (int) ((due - now) % 1_000_000L));
                    continue;
                }
                producer.send(new ProducerRecord<>(topic, partition, null, value), (md, ex) -> {
                    long ms = System.currentTimeMillis();
                    try {
                        synchronized (out) {
                            if (ex != null) {
                                errors.incrementAndGet();
                                out.write("err " + ms + " " + ex.toString().replace('\n', ' ') + "\n");
                            } else {
                                acked.incrementAndGet();
                                out.write("ack " + ms + " " + md.offset() + "\n");
                            }
                        }
                        if (ex == null) logLeader(producer, topic, partition, out, lastLeader);
                    } catch (IOException e) {
                        throw new RuntimeException(e);
                    }
                });
                sent++;
            }
            producer.flush();
        }
        synchronized (out) {
            out.write("end " + System.currentTimeMillis() + " sent=" + sent + " acked=" + acked.get()
                    + " errors=" + errors.get() + "\n");
            out.close();
        }
        System.out.println("failover-probe sent=" + sent + " acked=" + acked.get() + " errors=" + errors.get());
        System.exit(errors.get() == 0 && acked.get() == sent ? 0 : 1);
    }

    private static void logLeader(KafkaProducer<byte[], byte[]> producer, String topic, int partition,
                                  BufferedWriter out, long[] last) throws IOException {
        long leader = -1;
        for (PartitionInfo pi : producer.partitionsFor(topic)) {
            if (pi.partition() == partition && pi.leader() != null) leader = pi.leader().id();
        }
        synchronized (out) {
            if (leader != last[0]) {
                last[0] = leader;
                out.write("leader " + System.currentTimeMillis() + " " + leader + "\n");
            }
        }
    }
}
