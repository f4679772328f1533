package strand.interop;

import java.io.BufferedReader;
import java.io.File;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.function.Supplier;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.StringSerializer;

/** Shared plumbing of the group checks: member processes, topics, producing. */
final class Members {
    /** A GroupMember child process and every line it printed. */
    static final class Member {
        final String name;
        final Process process;
        final List<String> lines = Collections.synchronizedList(new ArrayList<>());

        Member(String name, List<String> args) throws Exception {
            this.name = name;
            List<String> cmd = new ArrayList<>();
            cmd.add(System.getProperty("java.home") + File.separator + "bin" + File.separator + "java");
            cmd.add("-cp");
            cmd.add(System.getProperty("java.class.path"));
            cmd.add("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn");
            cmd.add(GroupMember.class.getName());
            cmd.addAll(args);
            process = new ProcessBuilder(cmd).redirectError(ProcessBuilder.Redirect.INHERIT).start();
            Thread t = new Thread(() -> {
                try (BufferedReader r = new BufferedReader(
                        new InputStreamReader(process.getInputStream(), StandardCharsets.UTF_8))) {
                    String line;
                    while ((line = r.readLine()) != null) lines.add(line);
                } catch (Exception ignored) {
                }
            });
            t.setDaemon(true);
            t.start();
        }

        List<String> snapshot() {
            synchronized (lines) {
                return new ArrayList<>(lines);
            }
        }

        /** The last ASSIGNED line's partitions, or null before the first assignment. */
        String assignment() {
            String last = null;
            for (String l : snapshot()) if (l.startsWith("ASSIGNED")) last = l.substring(8).trim();
            return last;
        }

        long count(String prefix) {
            return snapshot().stream().filter(l -> l.startsWith(prefix)).count();
        }

        /** SIGKILL: no LeaveGroup, no commit. */
        void kill() throws InterruptedException {
            process.destroyForcibly();
            process.waitFor();
        }
    }

    static void waitFor(String what, long timeoutMs, Supplier<Boolean> done) throws InterruptedException {
        long deadline = System.currentTimeMillis() + timeoutMs;
        while (!done.get()) {
            if (System.currentTimeMillis() > deadline) throw new IllegalStateException("timed out waiting for " + what);
            Thread.sleep(100);
        }
    }

    static void createTopic(String bootstrap, String topic, int partitions) throws Exception {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(p)) {
            admin.createTopics(List.of(new NewTopic(topic, java.util.Optional.of(partitions), java.util.Optional.empty())))
                    .all().get();
        } catch (ExecutionException e) {
            if (!(e.getCause() instanceof TopicExistsException)) throw e;
        }
        // An idempotent producer sending in the instant after CreateTopics can get stuck.
        String problem = TopicReady.await(bootstrap, topic, partitions, 60_000);
        if (problem != null) throw new IllegalStateException("topic " + topic + " not ready: " + problem);
    }

    static KafkaProducer<String, String> producer(String bootstrap) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        return new KafkaProducer<>(p);
    }

    /** Sends values prefix-from..prefix-(to-1), keyed so they spread over the partitions. */
    static void produce(KafkaProducer<String, String> p, String topic, String prefix, int from, int to) throws Exception {
        List<java.util.concurrent.Future<?>> acks = new ArrayList<>();
        for (int i = from; i < to; i++) {
            acks.add(p.send(new ProducerRecord<>(topic, "k" + i, prefix + "-" + i)));
        }
        for (java.util.concurrent.Future<?> f : acks) f.get();
    }

    private Members() {}
}
