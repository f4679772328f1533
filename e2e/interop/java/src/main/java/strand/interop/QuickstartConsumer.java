package strand.interop;

import java.time.Duration;
import java.util.List;
import java.util.Properties;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * The Kafka quickstart consumer: group.id + subscribe(), reading from the earliest offset
 * (auto.offset.reset=earliest, like kafka-console-consumer --from-beginning) and committing
 * through the group coordinator (auto-commit, the client's default).
 *
 * Usage: QuickstartConsumer [BOOTSTRAP=localhost:9092] [TOPIC=quickstart-events] [COUNT=10] [TIMEOUT_S=30] [GROUP=quickstart-group]
 * Exits 1 if fewer than COUNT records arrive within the timeout.
 */
public final class QuickstartConsumer {
    public static void main(String[] args) {
        String bootstrap = args.length > 0 ? args[0] : "localhost:9092";
        String topic = args.length > 1 ? args[1] : "quickstart-events";
        int count = args.length > 2 ? Integer.parseInt(args[2]) : 10;
        long timeoutMs = (args.length > 3 ? Long.parseLong(args[3]) : 30) * 1000;

        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        props.put(ConsumerConfig.GROUP_ID_CONFIG, args.length > 4 ? args[4] : "quickstart-group");
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");

        int seen = 0;
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(props)) {
            consumer.subscribe(List.of(topic));

            long deadline = System.currentTimeMillis() + timeoutMs;
            while (seen < count && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(500))) {
                    System.out.printf("received partition=%d offset=%d key=%s value=%s%n",
                            r.partition(), r.offset(), r.key(), r.value());
                    if (++seen >= count) break;
                }
            }
        }
        if (seen < count) {
            System.err.printf("QuickstartConsumer: only %d of %d records within %d ms%n", seen, count, timeoutMs);
            System.exit(1);
        }
    }
}
