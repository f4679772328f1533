package strand.bench;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Properties;
import java.util.Random;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * End-to-end latency, same method as Kafka's org.apache.kafka.tools.EndToEndLatency
 * (one record in flight: send with acks=all, wait for the ack, poll until a
 * consumer sees it; latency = send start -> consumer has it) but without a
 * consumer group: no group.id, assign() all partitions + seekToEnd, no commits.
 * (Kafka's tool sets a group.id and needs FindCoordinator when it finishes.)
 *
 * Usage: E2eLatency BOOTSTRAP TOPIC NUM_RECORDS RECORD_SIZE
 * Prints: e2e-latency records=N avg_ms=.. p50_ms=.. p99_ms=.. p999_ms=.. max_ms=..
 */
public final class E2eLatency {
    public static void main(String[] args) throws Exception {
        if (args.length != 4) {
            System.err.println("usage: E2eLatency BOOTSTRAP TOPIC NUM_RECORDS RECORD_SIZE");
            System.exit(2);
        }
        String bootstrap = args[0], topic = args[1];
        int n = Integer.parseInt(args[2]), size = Integer.parseInt(args[3]);

        Properties cp = new Properties();
        cp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        cp.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        cp.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, "0");   // as in Kafka's EndToEndLatency
        cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        Properties pp = new Properties();
        pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        pp.put(ProducerConfig.ACKS_CONFIG, "all");
        pp.put(ProducerConfig.LINGER_MS_CONFIG, "0");
        pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());

        long[] micros = new long[n];
        long[] ackMicros = new long[n];
        Random rnd = new Random();
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(cp);
             KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pp)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (PartitionInfo pi : consumer.partitionsFor(topic)) tps.add(new TopicPartition(topic, pi.partition()));
            consumer.assign(tps);
            consumer.seekToEnd(tps);
            for (TopicPartition tp : tps) consumer.position(tp);   // resolve the end offsets now
            for (int i = 0; i < n; i++) {
                byte[] value = new byte[size];
                rnd.nextBytes(value);
                long t0 = System.nanoTime();
                producer.send(new ProducerRecord<>(topic, value)).get();
                ackMicros[i] = (System.nanoTime() - t0) / 1000;
                boolean seen = false;
                long deadline = System.currentTimeMillis() + 60_000;
                while (!seen) {
                    if (System.currentTimeMillis() > deadline) throw new IllegalStateException("record " + i + " not consumed within 60 s");
                    for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(100))) {
                        if (Arrays.equals(r.value(), value)) seen = true;
                        else throw new IllegalStateException("unexpected record at " + r.topic() + "-" + r.partition() + "@" + r.offset());
                    }
                }
                micros[i] = (System.nanoTime() - t0) / 1000;
            }
        }
        long[] s = micros.clone();
        Arrays.sort(s);
        double sum = 0;
        for (long v : s) sum += v;
        long[] a = ackMicros.clone();
        Arrays.sort(a);
        // The ack part (send -> acks=all answer) apart from the whole round trip.
        System.out.printf("e2e-latency records=%d avg_ms=%.2f p50_ms=%.2f p99_ms=%.2f p999_ms=%.2f max_ms=%.2f ack_p50_ms=%.2f ack_p99_ms=%.2f%n",
                n, sum / n / 1000.0, pct(s, 0.50), pct(s, 0.99), pct(s, 0.999), s[n - 1] / 1000.0,
                pct(a, 0.50), pct(a, 0.99));
    }

    private static double pct(long[] sorted, double q) {
        return sorted[Math.min(sorted.length - 1, (int) (sorted.length * q))] / 1000.0;
    }
}
