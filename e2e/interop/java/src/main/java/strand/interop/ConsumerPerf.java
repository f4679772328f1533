package strand.interop;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * Consumer throughput tool for bench/: like Kafka's ConsumerPerformance, but
 * with assign() + seekToBeginning and no group.id (ConsumerPerformance uses
 * subscribe() and a consumer group, which Strand does not have yet).
 *
 * Reads every partition of TOPIC from the beginning up to the end offsets seen
 * at start, with default consumer settings and byte-array deserializers.
 * The clock starts right before the first poll() and stops at the last record,
 * so metadata lookups are not counted.
 *
 * Usage: ConsumerPerf BOOTSTRAP TOPIC [TIMEOUT_S=300]
 * Prints one line: consumer-perf records=.. bytes=.. seconds=.. records_per_sec=.. mb_per_sec=..
 * (MB = 1024*1024 bytes of key+value, as in Kafka's perf tools). Exit 1 on timeout.
 */
public final class ConsumerPerf {
    public static void main(String[] args) {
        if (args.length < 2) {
            System.err.println("usage: ConsumerPerf BOOTSTRAP TOPIC [TIMEOUT_S=300]");
            System.exit(2);
        }
        String bootstrap = args[0];
        String topic = args[1];
        long timeoutMs = (args.length > 2 ? Long.parseLong(args[2]) : 300) * 1000;

        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());

        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(props)) {
            List<PartitionInfo> infos = consumer.partitionsFor(topic, Duration.ofSeconds(60));
            if (infos == null || infos.isEmpty()) {
                System.err.println("ConsumerPerf: topic " + topic + " has no partitions");
                System.exit(1);
            }
            List<TopicPartition> tps = new ArrayList<>();
            for (PartitionInfo pi : infos) tps.add(new TopicPartition(topic, pi.partition()));
            consumer.assign(tps); // before ListOffsets, so the consumer tracks these partitions
            Map<TopicPartition, Long> end = consumer.endOffsets(tps, Duration.ofSeconds(60));
            Map<TopicPartition, Long> begin = consumer.beginningOffsets(tps, Duration.ofSeconds(60));
            long target = 0;
            Map<TopicPartition, Long> remaining = new HashMap<>();
            for (TopicPartition tp : tps) {
                long n = end.get(tp) - begin.get(tp);
                target += n;
                if (n > 0) remaining.put(tp, end.get(tp));
            }
            consumer.seekToBeginning(tps);

            long records = 0, bytes = 0;
            long start = System.nanoTime(), last = start;
            long deadline = System.currentTimeMillis() + timeoutMs;
            while (!remaining.isEmpty()) {
                if (System.currentTimeMillis() > deadline) {
                    System.err.printf("ConsumerPerf: timeout after %d ms with %d of %d records%n",
                            timeoutMs, records, target);
                    System.exit(1);
                }
                ConsumerRecords<byte[], byte[]> batch = consumer.poll(Duration.ofMillis(500));
                if (batch.isEmpty()) continue;
                for (ConsumerRecord<byte[], byte[]> r : batch) {
                    records++;
                    bytes += Math.max(0, r.serializedKeySize()) + Math.max(0, r.serializedValueSize());
                }
                last = System.nanoTime();
                for (TopicPartition tp : batch.partitions()) {
                    Long stop = remaining.get(tp);
                    if (stop != null && consumer.position(tp) >= stop) remaining.remove(tp);
                }
            }
            double secs = Math.max(1e-9, (last - start) / 1e9);
            System.out.printf("consumer-perf records=%d bytes=%d seconds=%.3f records_per_sec=%.1f mb_per_sec=%.2f%n",
                    records, bytes, secs, records / secs, bytes / 1048576.0 / secs);
        }
    }
}
