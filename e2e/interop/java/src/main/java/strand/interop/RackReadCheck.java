package strand.interop;

import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.Future;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.Metric;
import org.apache.kafka.common.MetricName;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Fetch from follower (KIP-392) with the Java client: a consumer whose client.rack is a
 * follower's rack reads every acknowledged record of a partition at its offset, and the record
 * bytes come from that follower, not the leader (the consumer's own per-node metrics say
 * which broker sent what). Needs brokers with racks running RackAwareReplicaSelector.
 *
 * Usage: RackReadCheck BOOTSTRAP [RECORDS=2000]   (exit 1 on failure)
 */
public final class RackReadCheck {
    private static final int VALUE_BYTES = 100;

    public static void main(String[] args) throws Exception {
        if (args.length < 1) {
            System.err.println("usage: RackReadCheck BOOTSTRAP [RECORDS=2000]");
            System.exit(2);
        }
        String bootstrap = args[0];
        int n = args.length > 1 ? Integer.parseInt(args[1]) : 2000;
        String topic = "rack-reads-" + System.currentTimeMillis();
        TopicPartition tp = new TopicPartition(topic, 0);

        Properties ap = new Properties();
        ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(ap)) {
            admin.createTopics(List.of(new NewTopic(topic, 1, (short) 3))).all().get();
            String err = TopicReady.await(bootstrap, topic, 1, 60_000);
            if (err != null) fail(err);
            produce(bootstrap, topic, n);
            TopicPartitionInfo info = fullIsr(admin, topic);
            Node leader = info.leader();
            Node follower = info.replicas().stream().filter(r -> r.id() != leader.id()).findFirst()
                    .orElseThrow();
            if (follower.rack() == null) fail("broker " + follower.id() + " has no rack");

            Properties cp = new Properties();
            cp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            cp.put(ConsumerConfig.CLIENT_RACK_CONFIG, follower.rack());
            cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
            cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
            try (KafkaConsumer<String, String> c = new KafkaConsumer<>(cp)) {
                c.assign(List.of(tp));
                c.seekToBeginning(List.of(tp));
                long next = 0;
                long deadline = System.currentTimeMillis() + 60_000;
                while (next < n) {
                    if (System.currentTimeMillis() > deadline) fail("read " + next + " of " + n + " records");
                    for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) {
                        if (r.offset() != next || !r.value().equals(value(next))) {
                            fail("offset " + r.offset() + " holds " + r.value() + ", expected offset " + next);
                        }
                        next++;
                    }
                }
                long fromFollower = incomingBytes(c.metrics(), follower.id());
                long fromLeader = incomingBytes(c.metrics(), leader.id());
                long payload = (long) n * VALUE_BYTES;
                if (fromFollower < payload || fromLeader >= payload / 2) {
                    fail(String.format("%d record bytes: %d came from follower %d (rack %s), %d from leader %d",
                            payload, fromFollower, follower.id(), follower.rack(), fromLeader, leader.id()));
                }
                System.out.printf("PASS fetch from follower: %d records read in rack %s; %d bytes from follower %d, %d from leader %d%n",
                        n, follower.rack(), fromFollower, follower.id(), fromLeader, leader.id());
            }
            admin.deleteTopics(List.of(topic)).all().get();
        }
    }

    private static String value(long i) {
        String head = "v-" + i + "-";
        return head + "x".repeat(VALUE_BYTES - head.length());
    }

    private static void produce(String bootstrap, String topic, int n) throws Exception {
        Properties pp = new Properties();
        pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        pp.put(ProducerConfig.ACKS_CONFIG, "all");
        pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        try (KafkaProducer<String, String> p = new KafkaProducer<>(pp)) {
            Future<RecordMetadata> last = null;
            for (int i = 0; i < n; i++) last = p.send(new ProducerRecord<>(topic, 0, null, value(i)));
            p.flush();
            if (last.get().offset() != n - 1) fail("the last record landed at " + last.get().offset());
        }
    }

    /** The partition once all three replicas are in sync (acks=all needs only two). */
    private static TopicPartitionInfo fullIsr(Admin admin, String topic) throws Exception {
        long deadline = System.currentTimeMillis() + 30_000;
        while (true) {
            TopicPartitionInfo info = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic)
                    .partitions().get(0);
            if (info.isr().size() == 3) return info;
            if (System.currentTimeMillis() > deadline) fail("ISR still " + info.isr());
            Thread.sleep(100);
        }
    }

    private static long incomingBytes(Map<MetricName, ? extends Metric> metrics, int node) {
        return metrics.entrySet().stream()
                .filter(e -> e.getKey().group().equals("consumer-node-metrics")
                        && e.getKey().name().equals("incoming-byte-total")
                        && ("node-" + node).equals(e.getKey().tags().get("node-id")))
                .mapToLong(e -> (long) (double) (Double) e.getValue().metricValue())
                .sum();
    }

    private static void fail(String why) {
        System.err.println("FAIL RackReadCheck: " + why);
        System.exit(1);
    }
}
