package strand.interop;

import java.io.BufferedReader;
import java.io.FileReader;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * The Jepsen-style check after a scenario: reads every partition of TOPIC from its start to
 * its end (no group), then checks against LoadRun's acks file(s) that every acknowledged
 * record is in the log at the offset it was acknowledged at, with its value, and that no
 * value of the named runs appears twice (idempotence: retries never duplicate).
 *
 * Usage: LoadVerify BOOTSTRAP TOPIC NAME=ACKS_FILE...
 * Prints "verify: acked=N found=N lost=N moved=N duplicates=N records=N" and up to 10
 * examples of each problem; exit status 0 only when lost, moved and duplicates are all 0.
 */
public final class LoadVerify {
    public static void main(String[] args) throws Exception {
        if (args.length < 3) {
            System.err.println("usage: LoadVerify BOOTSTRAP TOPIC NAME=ACKS_FILE...");
            System.exit(2);
        }
        String bootstrap = args[0], topic = args[1];
        Properties c = new Properties();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        Map<String, String> log = new HashMap<>();          // "p/offset" -> value
        Map<String, Integer> copies = new HashMap<>();      // value -> times in the log
        long records = 0;
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
            List<TopicPartition> parts = new ArrayList<>();
            for (PartitionInfo pi : consumer.partitionsFor(topic, Duration.ofSeconds(60))) {
                parts.add(new TopicPartition(topic, pi.partition()));
            }
            consumer.assign(parts);
            consumer.seekToBeginning(parts);
            Map<TopicPartition, Long> end = consumer.endOffsets(parts, Duration.ofSeconds(60));
            long deadline = System.currentTimeMillis() + 300_000;
            while (true) {
                boolean done = true;
                for (TopicPartition tp : parts) {
                    if (consumer.position(tp, Duration.ofSeconds(60)) < end.get(tp)) done = false;
                }
                if (done) break;
                if (System.currentTimeMillis() > deadline) {
                    System.err.println("verify: could not read to the end offsets " + end + " in 300 s");
                    System.exit(1);
                }
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(500))) {
                    records++;
                    log.put(r.partition() + "/" + r.offset(), r.value());
                    if (r.value() != null) copies.merge(r.value(), 1, Integer::sum);
                }
            }
        }
        long acked = 0, found = 0, lost = 0, moved = 0, duplicates = 0;
        List<String> examples = new ArrayList<>();
        for (int i = 2; i < args.length; i++) {
            String name = args[i].substring(0, args[i].indexOf('='));
            String file = args[i].substring(args[i].indexOf('=') + 1);
            try (BufferedReader in = new BufferedReader(new FileReader(file))) {
                String line;
                while ((line = in.readLine()) != null) {
                    String[] f = line.split(" ");
                    if (!f[0].equals("ack")) continue;
                    acked++;
                    String value = name + "-" + f[5];
                    String at = log.get(f[3] + "/" + f[4]);
                    if (value.equals(at)) {
                        found++;
                    } else if (copies.containsKey(value)) {
                        moved++;
                        if (examples.size() < 10) examples.add("moved: " + value + " acked at " + f[3] + "/" + f[4] + ", there: " + at);
                    } else {
                        lost++;
                        if (examples.size() < 10) examples.add("lost: " + value + " acked at " + f[3] + "/" + f[4] + ", there: " + at);
                    }
                }
            }
            String prefix = name + "-";
            for (Map.Entry<String, Integer> e : copies.entrySet()) {
                if (e.getKey().startsWith(prefix) && e.getValue() > 1) {
                    duplicates += e.getValue() - 1;
                    if (examples.size() < 20) examples.add("duplicate: " + e.getKey() + " x" + e.getValue());
                }
            }
        }
        System.out.println("verify: acked=" + acked + " found=" + found + " lost=" + lost + " moved=" + moved
                + " duplicates=" + duplicates + " records=" + records);
        for (String e : examples) System.out.println("  " + e);
        System.exit(lost == 0 && moved == 0 && duplicates == 0 && acked > 0 ? 0 : 1);
    }
}
