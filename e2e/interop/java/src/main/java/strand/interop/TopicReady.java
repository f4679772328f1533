package strand.interop;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * Readiness barrier for a freshly created topic: waits until every partition
 * answers ListOffsets (the consumer retries NOT_LEADER_OR_FOLLOWER itself).
 *
 * Why: real Kafka can list a new topic in Metadata a moment before its
 * partitions accept produce requests. An idempotent producer that hits that
 * window can get stuck retrying OUT_OF_ORDER_SEQUENCE_NUMBER (seen with Kafka
 * 4.3.1 on a 3-partition topic produced to right after CreateTopics).
 *
 * Usage: TopicReady BOOTSTRAP TOPIC PARTITIONS [TIMEOUT_S=60]   (exit 1 if not ready)
 */
public final class TopicReady {
    public static void main(String[] args) {
        if (args.length < 3) {
            System.err.println("usage: TopicReady BOOTSTRAP TOPIC PARTITIONS [TIMEOUT_S=60]");
            System.exit(2);
        }
        long timeoutMs = (args.length > 3 ? Long.parseLong(args[3]) : 60) * 1000;
        String err = await(args[0], args[1], Integer.parseInt(args[2]), timeoutMs);
        if (err != null) {
            System.err.println("TopicReady: " + err);
            System.exit(1);
        }
    }

    /** Returns null when ready, else a message saying what did not answer. */
    static String await(String bootstrap, String topic, int partitions, long timeoutMs) {
        Properties cp = new Properties();
        cp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        List<TopicPartition> tps = new ArrayList<>();
        for (int p = 0; p < partitions; p++) tps.add(new TopicPartition(topic, p));
        KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(cp);
        try {
            consumer.assign(tps);
            consumer.endOffsets(tps, Duration.ofMillis(timeoutMs));
            return null;
        } catch (org.apache.kafka.common.errors.TimeoutException e) {
            return "partitions of " + topic + " did not answer ListOffsets within " + timeoutMs + " ms: "
                    + e.getMessage();
        } finally {
            consumer.close(Duration.ofSeconds(2));
        }
    }
}
