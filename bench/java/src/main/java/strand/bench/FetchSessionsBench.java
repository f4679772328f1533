package strand.bench;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
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
 * Broker CPU of one consumer on a many-partition topic, for bench/fetch-sessions.sh.
 *
 * assign()s every partition of TOPIC (no group), reads from the beginning until MB
 * megabytes (2^20 bytes of key+value) have arrived, then seeks to the end, waits until
 * every position reached the end offsets, and polls for IDLE_S seconds with nothing to
 * read. The broker's CPU (utime+stime of /proc/BROKER_PID/stat) is sampled around the read
 * and around the idle polling, so the client's own startup is not counted.
 *
 * Usage: FetchSessionsBench BOOTSTRAP TOPIC MB IDLE_S BROKER_PID CLK_TCK
 * Prints: "read records=.. bytes=.. seconds=.. broker_cpu_s=.." and
 *         "idle seconds=.. broker_cpu_s=.. records=.." (records read while idle: want 0).
 * Exit 1 if the topic holds less than MB or a phase times out.
 */
public final class FetchSessionsBench {
    static double cpuSeconds(String pid, double ticks) throws Exception {
        String stat = Files.readString(Path.of("/proc/" + pid + "/stat"));
        String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
        // utime and stime: fields 14 and 15 of stat, 12 and 13 after the command name.
        return (Long.parseLong(f[11]) + Long.parseLong(f[12])) / ticks;
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 6) {
            System.err.println("usage: FetchSessionsBench BOOTSTRAP TOPIC MB IDLE_S BROKER_PID CLK_TCK");
            System.exit(2);
        }
        String bootstrap = args[0], topic = args[1], pid = args[4];
        long wantBytes = Long.parseLong(args[2]) << 20;
        long idleMs = Long.parseLong(args[3]) * 1000;
        double ticks = Double.parseDouble(args[5]);

        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(props)) {
            List<PartitionInfo> infos = consumer.partitionsFor(topic, Duration.ofSeconds(60));
            List<TopicPartition> tps = new ArrayList<>();
            for (PartitionInfo pi : infos) tps.add(new TopicPartition(topic, pi.partition()));
            consumer.assign(tps);
            Map<TopicPartition, Long> end = consumer.endOffsets(tps, Duration.ofSeconds(60));
            consumer.seekToBeginning(tps);
            for (TopicPartition tp : tps) consumer.position(tp, Duration.ofSeconds(60));

            long records = 0, bytes = 0;
            double cpu0 = cpuSeconds(pid, ticks);
            long start = System.nanoTime();
            long deadline = System.currentTimeMillis() + 600_000;
            while (bytes < wantBytes) {
                if (System.currentTimeMillis() > deadline) {
                    System.err.printf("FetchSessionsBench: read timed out at %d of %d bytes%n", bytes, wantBytes);
                    System.exit(1);
                }
                ConsumerRecords<byte[], byte[]> batch = consumer.poll(Duration.ofMillis(500));
                for (ConsumerRecord<byte[], byte[]> r : batch) {
                    records++;
                    bytes += Math.max(0, r.serializedKeySize()) + Math.max(0, r.serializedValueSize());
                }
                if (batch.isEmpty() && consumer.assignment().stream()
                        .allMatch(tp -> consumer.position(tp) >= end.get(tp))) {
                    System.err.printf("FetchSessionsBench: the topic holds only %d bytes, want %d%n", bytes, wantBytes);
                    System.exit(1);
                }
            }
            double seconds = (System.nanoTime() - start) / 1e9;
            double cpu1 = cpuSeconds(pid, ticks);
            System.out.printf("read records=%d bytes=%d seconds=%.2f broker_cpu_s=%.2f%n",
                    records, bytes, seconds, cpu1 - cpu0);

            // Caught up: every position at the end, then a moment for the fetches in flight.
            consumer.seekToEnd(tps);
            for (TopicPartition tp : tps) consumer.position(tp, Duration.ofSeconds(60));
            long settle = System.currentTimeMillis() + 2000;
            while (System.currentTimeMillis() < settle) consumer.poll(Duration.ofMillis(200));
            long idleRecords = 0;
            double cpu2 = cpuSeconds(pid, ticks);
            long idleStart = System.nanoTime();
            long idleEnd = System.currentTimeMillis() + idleMs;
            while (System.currentTimeMillis() < idleEnd) {
                idleRecords += consumer.poll(Duration.ofMillis(Math.max(1, Math.min(500,
                        idleEnd - System.currentTimeMillis())))).count();
            }
            double idleSeconds = (System.nanoTime() - idleStart) / 1e9;
            double cpu3 = cpuSeconds(pid, ticks);
            System.out.printf("idle seconds=%.2f broker_cpu_s=%.2f records=%d%n",
                    idleSeconds, cpu3 - cpu2, idleRecords);
        }
    }
}
