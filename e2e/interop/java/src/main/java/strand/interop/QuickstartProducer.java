package strand.interop;

import java.util.Properties;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * The Kafka quickstart / Java client docs producer: only bootstrap servers and
 * String serializers are set, everything else is the client default (so the
 * producer is idempotent with acks=all).
 *
 * Usage: QuickstartProducer [BOOTSTRAP=localhost:9092] [TOPIC=quickstart-events] [COUNT=10]
 */
public final class QuickstartProducer {
    public static void main(String[] args) throws Exception {
        String bootstrap = args.length > 0 ? args[0] : "localhost:9092";
        String topic = args.length > 1 ? args[1] : "quickstart-events";
        int count = args.length > 2 ? Integer.parseInt(args[2]) : 10;

        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());

        try (KafkaProducer<String, String> producer = new KafkaProducer<>(props)) {
            for (int i = 0; i < count; i++) {
                String key = "key-" + i;
                String value = "This is event " + i;
                // Synchronous send: wait for the ack of each record (bounded so a
                // dead broker fails the run instead of hanging for 2 minutes).
                RecordMetadata md = producer.send(new ProducerRecord<>(topic, key, value))
                        .get(60, TimeUnit.SECONDS);
                System.out.printf("sent topic=%s partition=%d offset=%d key=%s value=%s%n",
                        md.topic(), md.partition(), md.offset(), key, value);
            }
        }
    }
}
