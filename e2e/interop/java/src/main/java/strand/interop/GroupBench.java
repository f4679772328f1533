package strand.interop;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * Consumer-group benchmark, run the same way against Strand and Apache Kafka (bench/groups.sh):
 *   1. rebalance time: three members share six partitions; one leaves (3 -> 2), then a new one
 *      joins (2 -> 3); each transition is timed until every remaining member holds its new
 *      assignment and all six partitions are assigned. ROUNDS rounds; median and max printed.
 *   2. commit throughput: THREADS clients, each committing six partitions' offsets with
 *      commitSync in a loop for SECONDS seconds; commits/s and median latency.
 * Members use heartbeat.interval.ms=100 so the time measured is the coordinator's, not the
 * client's heartbeat timer. Prints "RESULT name value" lines.
 *
 * Usage: GroupBench BOOTSTRAP [ROUNDS=5] [SECONDS=10] [THREADS=4]
 */
public final class GroupBench {
    static final int PARTITIONS = 6;

    /** A member polling on its own thread; remembers its assignment and when it changed. */
    static final class Runner {
        final KafkaConsumer<byte[], byte[]> consumer;
        final Thread thread;
        final AtomicBoolean stop = new AtomicBoolean();
        volatile Set<Integer> assignment = Set.of();
        final AtomicLong assignedAt = new AtomicLong();

        Runner(String bootstrap, String topic, String group) {
            consumer = new KafkaConsumer<>(props(bootstrap, group));
            thread = new Thread(() -> {
                consumer.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                    public void onPartitionsRevoked(Collection<TopicPartition> p) {}

                    public void onPartitionsAssigned(Collection<TopicPartition> p) {
                        Set<Integer> s = new TreeSet<>();
                        for (TopicPartition tp : consumer.assignment()) s.add(tp.partition());
                        assignment = s;
                        assignedAt.set(System.nanoTime());
                    }
                });
                while (!stop.get()) consumer.poll(Duration.ofMillis(20));
                consumer.close(); // sends LeaveGroup
            });
            thread.start();
        }

        void close() throws InterruptedException {
            stop.set(true);
            thread.join();
        }
    }

    static Properties props(String bootstrap, String group) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "100");
        p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "10000");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        return p;
    }

    /** Every runner holds a share assigned after `since`, and together they hold all six. */
    static boolean settled(List<Runner> rs, long since) {
        int total = 0;
        for (Runner r : rs) {
            if (r.assignment.isEmpty() || r.assignedAt.get() < since) return false;
            total += r.assignment.size();
        }
        return total == PARTITIONS;
    }

    static long waitSettled(List<Runner> rs, long since) throws InterruptedException {
        long deadline = System.nanoTime() + 120_000_000_000L;
        while (!settled(rs, since)) {
            if (System.nanoTime() > deadline) throw new IllegalStateException("group did not settle");
            Thread.sleep(1);
        }
        long last = 0;
        for (Runner r : rs) last = Math.max(last, r.assignedAt.get());
        return last;
    }

    static double median(List<Double> xs) {
        List<Double> s = new ArrayList<>(xs);
        Collections.sort(s);
        return s.get(s.size() / 2);
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        int rounds = args.length > 1 ? Integer.parseInt(args[1]) : 5;
        int seconds = args.length > 2 ? Integer.parseInt(args[2]) : 10;
        int threads = args.length > 3 ? Integer.parseInt(args[3]) : 4;
        String topic = "group-bench-" + System.currentTimeMillis();
        Members.createTopic(bootstrap, topic, PARTITIONS);

        // 1. Rebalance 3 -> 2 -> 3.
        String group = topic + "-rebalance";
        List<Runner> rs = new ArrayList<>();
        for (int i = 0; i < 3; i++) rs.add(new Runner(bootstrap, topic, group));
        waitSettled(rs, 0);
        List<Double> down = new ArrayList<>(), up = new ArrayList<>();
        for (int round = 0; round < rounds; round++) {
            Thread.sleep(500);
            long t0 = System.nanoTime();
            rs.remove(0).close();
            down.add((waitSettled(rs, t0) - t0) / 1e6);
            Thread.sleep(500);
            long t1 = System.nanoTime();
            rs.add(new Runner(bootstrap, topic, group));
            up.add((waitSettled(rs, t1) - t1) / 1e6);
        }
        for (Runner r : rs) r.close();
        System.out.printf("RESULT rebalance_3to2_median_ms %.0f%n", median(down));
        System.out.printf("RESULT rebalance_3to2_max_ms %.0f%n", Collections.max(down));
        System.out.printf("RESULT rebalance_2to3_median_ms %.0f%n", median(up));
        System.out.printf("RESULT rebalance_2to3_max_ms %.0f%n", Collections.max(up));

        // 2. Commit throughput.
        AtomicLong commits = new AtomicLong();
        List<Double> latencies = Collections.synchronizedList(new ArrayList<>());
        List<Thread> ts = new ArrayList<>();
        long end = System.nanoTime() + seconds * 1_000_000_000L;
        for (int t = 0; t < threads; t++) {
            String g = topic + "-commit-" + t;
            Thread th = new Thread(() -> {
                try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(props(bootstrap, g))) {
                    List<TopicPartition> tps = new ArrayList<>();
                    for (int p = 0; p < PARTITIONS; p++) tps.add(new TopicPartition(topic, p));
                    c.assign(tps);
                    long offset = 0;
                    c.commitSync(Map.of(tps.get(0), new OffsetAndMetadata(0))); // finds the coordinator
                    while (System.nanoTime() < end) {
                        Map<TopicPartition, OffsetAndMetadata> m = new HashMap<>();
                        offset++;
                        for (TopicPartition tp : tps) m.put(tp, new OffsetAndMetadata(offset));
                        long s = System.nanoTime();
                        c.commitSync(m);
                        latencies.add((System.nanoTime() - s) / 1e6);
                        commits.incrementAndGet();
                    }
                }
            });
            th.start();
            ts.add(th);
        }
        for (Thread th : ts) th.join();
        System.out.printf("RESULT commits_per_s %.0f%n", commits.get() / (double) seconds);
        System.out.printf("RESULT commit_p50_ms %.2f%n", median(latencies));
    }
}
