package strand.interop;

import java.time.Duration;
import java.util.Collection;
import java.util.List;
import java.util.Properties;
import java.util.TreeSet;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * One member of a consumer group, run as its own process by the group checks so that it can
 * be killed with SIGKILL. Prints, one line each and flushed:
 *   ASSIGNED p,p,...   after each assignment (the whole current assignment)
 *   REVOKED p,p,...    when partitions are taken away
 *   REC p offset value after processing a record (before its offset is committed)
 *   COMMITTED          after each synchronous commit
 * Commits synchronously after every poll, so a killed member re-delivers at most its last
 * uncommitted poll to the members that take over its partitions.
 *
 * Usage: GroupMember BOOTSTRAP TOPIC GROUP [INSTANCE_ID|-] [SESSION_TIMEOUT_MS]
 */
public final class GroupMember {
    public static void main(String[] args) {
        String bootstrap = args[0], topic = args[1], group = args[2];
        String instance = args.length > 3 && !args[3].equals("-") ? args[3] : null;
        String session = args.length > 4 ? args[4] : "6000";
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        if (instance != null) props.put(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, instance);
        props.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, session);
        props.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "500");
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, "50");
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(props)) {
            consumer.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                @Override
                public void onPartitionsRevoked(Collection<TopicPartition> parts) {
                    if (!parts.isEmpty()) say("REVOKED " + names(parts));
                }

                @Override
                public void onPartitionsAssigned(Collection<TopicPartition> parts) {
                    say("ASSIGNED " + names(consumer.assignment()));
                }
            });
            while (true) {
                ConsumerRecords<String, String> records = consumer.poll(Duration.ofMillis(200));
                for (ConsumerRecord<String, String> r : records) {
                    say("REC " + r.partition() + " " + r.offset() + " " + r.value());
                }
                if (!records.isEmpty()) {
                    consumer.commitSync();
                    say("COMMITTED");
                }
            }
        }
    }

    static String names(Collection<TopicPartition> parts) {
        TreeSet<Integer> ids = new TreeSet<>();
        for (TopicPartition tp : parts) ids.add(tp.partition());
        StringBuilder b = new StringBuilder();
        for (int p : ids) b.append(b.length() == 0 ? "" : ",").append(p);
        return b.toString();
    }

    static synchronized void say(String line) {
        System.out.println(line);
        System.out.flush();
    }
}
