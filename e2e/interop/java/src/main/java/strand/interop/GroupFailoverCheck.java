package strand.interop;

import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;

import org.apache.kafka.clients.producer.KafkaProducer;

/**
 * Three Java consumers in one group share a six-partition topic; one is killed with SIGKILL
 * mid-stream. The other two take over its partitions (after its session times out) and, with
 * the records produced while that happens, every record is consumed: none lost, none skipped.
 * Duplicates are allowed (the killed member's last uncommitted poll is re-delivered).
 *
 * Usage: GroupFailoverCheck BOOTSTRAP [TOPIC]
 */
public final class GroupFailoverCheck {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String topic = args.length > 1 ? args[1] : "group-failover-" + System.currentTimeMillis();
        String group = topic + "-group";
        int total = 3000;
        Members.createTopic(bootstrap, topic, 6);
        try (KafkaProducer<String, String> p = Members.producer(bootstrap)) {
            Members.produce(p, topic, "v", 0, total / 2);
            List<String> memberArgs = List.of(bootstrap, topic, group, "-", "6000");
            Members.Member[] m = {
                new Members.Member("m0", memberArgs), new Members.Member("m1", memberArgs), new Members.Member("m2", memberArgs),
            };
            try {
                Members.waitFor("three members sharing six partitions", 60_000, () -> {
                    int parts = 0;
                    for (Members.Member x : m) {
                        String a = x.assignment();
                        if (a == null || a.isEmpty()) return false;
                        parts += a.split(",").length;
                    }
                    return parts == 6;
                });
                Members.waitFor("the victim to consume", 60_000, () -> m[0].count("REC") >= 100);
                String victim = m[0].assignment();
                m[0].kill();
                long killed = System.currentTimeMillis();
                Members.produce(p, topic, "v", total / 2, total);
                Members.waitFor("the survivors to take over all six partitions", 60_000, () -> {
                    String a = m[1].assignment(), b = m[2].assignment();
                    return a != null && b != null && !a.isEmpty() && !b.isEmpty()
                            && a.split(",").length + b.split(",").length == 6;
                });
                long rebalanceMs = System.currentTimeMillis() - killed;
                Members.waitFor("every record consumed", 90_000, () -> consumed(m).size() >= total);
                Set<String> seen = consumed(m);
                Set<String> missing = new TreeSet<>();
                for (int i = 0; i < total; i++) if (!seen.contains("v-" + i)) missing.add("v-" + i);
                if (!missing.isEmpty()) throw new IllegalStateException("records never consumed: " + missing);
                long deliveries = 0;
                for (Members.Member x : m) deliveries += x.count("REC");
                System.out.printf("PASS group failover: %d records, %d deliveries (%d re-delivered after the kill), "
                        + "victim held [%s], survivors rebalanced %d ms after SIGKILL (session timeout 6000 ms)%n",
                        total, deliveries, deliveries - total, victim, rebalanceMs);
            } finally {
                for (Members.Member x : m) x.kill();
            }
        }
    }

    static Set<String> consumed(Members.Member[] m) {
        Set<String> s = new HashSet<>();
        for (Members.Member x : m) {
            for (String l : x.snapshot()) {
                if (l.startsWith("REC ")) s.add(l.split(" ", 4)[3]);
            }
        }
        return s;
    }
}
