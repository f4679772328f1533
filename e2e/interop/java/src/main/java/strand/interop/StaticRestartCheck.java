package strand.interop;

import java.util.List;

import org.apache.kafka.clients.producer.KafkaProducer;

/**
 * Static membership (group.instance.id, KIP-345): two static members share a topic; one is
 * killed with SIGKILL and restarted with the same instance id well within its session
 * timeout. It gets its old partitions back and the other member sees no rebalance (no
 * revocation, no new assignment); records produced meanwhile are all consumed.
 *
 * Usage: StaticRestartCheck BOOTSTRAP [TOPIC]
 */
public final class StaticRestartCheck {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String topic = args.length > 1 ? args[1] : "static-restart-" + System.currentTimeMillis();
        String group = topic + "-group";
        Members.createTopic(bootstrap, topic, 4);
        try (KafkaProducer<String, String> p = Members.producer(bootstrap)) {
            Members.produce(p, topic, "v", 0, 200);
            Members.Member a = new Members.Member("s0", List.of(bootstrap, topic, group, "s0", "30000"));
            Members.Member b = new Members.Member("s1", List.of(bootstrap, topic, group, "s1", "30000"));
            Members.Member b2 = null;
            try {
                Members.waitFor("both static members assigned", 60_000, () -> {
                    String x = a.assignment(), y = b.assignment();
                    return x != null && y != null && !x.isEmpty() && !y.isEmpty()
                            && x.split(",").length + y.split(",").length == 4;
                });
                Members.waitFor("all records consumed", 60_000, () -> a.count("REC") + b.count("REC") >= 200);
                String before = b.assignment();
                long assignedBefore = a.count("ASSIGNED"), revokedBefore = a.count("REVOKED");
                b.kill();
                b2 = new Members.Member("s1-restarted", List.of(bootstrap, topic, group, "s1", "30000"));
                Members.Member restarted = b2;
                Members.waitFor("the restarted member's assignment", 30_000, () -> restarted.assignment() != null);
                if (!before.equals(restarted.assignment())) {
                    throw new IllegalStateException("restarted static member got [" + restarted.assignment()
                            + "], had [" + before + "]");
                }
                Members.produce(p, topic, "w", 0, 100);
                Members.waitFor("new records consumed", 60_000, () -> a.count("REC") + b.count("REC") + restarted.count("REC") >= 300);
                if (a.count("ASSIGNED") != assignedBefore || a.count("REVOKED") != revokedBefore) {
                    throw new IllegalStateException("the other member saw a rebalance: " + a.snapshot());
                }
                System.out.printf("PASS static member restart: s1 got [%s] back, s0 kept [%s] with no rebalance%n",
                        restarted.assignment(), a.assignment());
            } finally {
                a.kill();
                b.kill();
                if (b2 != null) b2.kill();
            }
        }
    }
}
