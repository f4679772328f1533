//! The operator against a real kube-apiserver and kube-controller-manager (`e2e/control-plane`):
//! CRDs installed from `crds/`, a LogCluster turned into a StatefulSet and friends, topics
//! assigned and reported, bad manifests refused or given clear conditions, state kept across
//! operator restarts, leader election between two replicas, and a hybrid run where broker
//! processes on the host join the operator's controller, serve a Kafka client and fail over.
//! Each test has its own namespace, operator process(es) and Lease.

#[path = "../../broker/tests/common/kafka.rs"]
#[allow(dead_code)]
mod kafka;
mod kube;

use std::collections::BTreeSet;
use std::time::Duration;

use ::kube::Api;
use ::kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Pod, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use operator::crd::{LogCluster, ReplicatedTopic};
use serde_json::{Value, json};

use self::kube::*;

const T: Duration = Duration::from_secs(60);

fn logcluster(replicas: i32) -> Value {
    let mut doc = read_yaml(&repo_root().join("e2e/manifests/logcluster.yaml")).remove(0);
    doc["spec"]["replicas"] = json!(replicas);
    // NodePorts are cluster-wide: the example's fixed base would collide between the tests
    // running in parallel on one API server (and with a run's leftovers), so each cluster here
    // gets a range of its own.
    static NEXT: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let base = 30200 + (std::process::id() % 100) as i32 * 20 + n * 5;
    if let Some(listeners) = doc["spec"]["listeners"].as_array_mut() {
        for l in listeners {
            l["nodePortBase"] = json!(base);
        }
    }
    doc
}

fn topic(name: &str, partitions: i32, rf: i32) -> Value {
    json!({
        "apiVersion": "strand.dev/v1alpha1",
        "kind": "ReplicatedTopic",
        "metadata": { "name": name },
        "spec": { "cluster": "demo", "partitions": partitions, "replicationFactor": rf }
    })
}

fn api_error(e: ::kube::Error) -> (u16, String) {
    match e {
        ::kube::Error::Api(s) => (s.code, s.message),
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn crds_install_and_the_api_server_refuses_bad_manifests() {
    let Some(kc) = kubeconfig() else { return };
    let c = client(&kc).await;
    install_crds(&c).await;
    let ns = namespace(&c, "refuse").await;

    let mut lc = logcluster(0);
    let (code, msg) = api_error(create_doc(&c, &ns, &lc).await.unwrap_err());
    assert_eq!(code, 422, "{msg}");
    assert!(msg.contains("spec.replicas"), "{msg}");
    lc["spec"]["replicas"] = json!(3);
    lc["spec"]["image"] = json!("");
    let (code, msg) = api_error(create_doc(&c, &ns, &lc).await.unwrap_err());
    assert_eq!(code, 422, "{msg}");

    // The example manifests are valid as they are.
    apply_docs(&c, &ns, &[logcluster(3)]).await.unwrap();
    apply_docs(
        &c,
        &ns,
        &read_yaml(&repo_root().join("e2e/manifests/topics.yaml")),
    )
    .await
    .unwrap();

    // CEL rules: partitions never decrease; replication factor and cluster are immutable.
    let rts: Api<ReplicatedTopic> = Api::namespaced(c.clone(), &ns);
    let pp = PatchParams::default();
    for (patch, words) in [
        (json!({"spec": {"partitions": 2}}), "partitions"),
        (
            json!({"spec": {"replicationFactor": 1}}),
            "replicationFactor",
        ),
        (json!({"spec": {"cluster": "other"}}), "cluster"),
    ] {
        let e = rts
            .patch("orders", &pp, &Patch::Merge(&patch))
            .await
            .unwrap_err();
        let (code, msg) = api_error(e);
        assert_eq!(code, 422, "{patch}: {msg}");
        assert!(msg.contains(words), "{patch}: {msg}");
    }
    // Growing is allowed.
    rts.patch(
        "orders",
        &pp,
        &Patch::Merge(&json!({"spec": {"partitions": 8}})),
    )
    .await
    .unwrap();

    // Issue part 2: topic names outside Kafka's rule never get past the API server.
    for bad in [
        "./victim",
        "../ESCAPED",
        "bad\0name",
        ".",
        "..",
        &"x".repeat(250),
    ] {
        let mut t = topic("named-badly", 1, 1);
        t["spec"]["topicName"] = json!(bad);
        let (code, msg) = api_error(create_doc(&c, &ns, &t).await.unwrap_err());
        assert_eq!(code, 422, "{bad:?}: {msg}");
        assert!(msg.contains("spec.topicName"), "{bad:?}: {msg}");
    }
    let (code, msg) = api_error(
        create_doc(&c, &ns, &topic(&"x".repeat(250), 1, 1))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422, "{msg}");
    assert!(msg.contains("at most 249 characters"), "{msg}");
    let mut ok = topic(&"x".repeat(250), 1, 1);
    ok["spec"]["topicName"] = json!("..a.b_c-D");
    create_doc(&c, &ns, &ok).await.unwrap();
}

#[tokio::test]
async fn a_logcluster_becomes_a_statefulset_and_friends() {
    let Some(kc) = kubeconfig() else { return };
    let c = client(&kc).await;
    install_crds(&c).await;
    let ns = namespace(&c, "children").await;
    let dir = test_dir();
    let op = OperatorProcess::start(&kc, &ns, "op-a", dir.path());
    apply_docs(&c, &ns, &[logcluster(3)]).await.unwrap();

    let stss: Api<StatefulSet> = Api::namespaced(c.clone(), &ns);
    let sts = wait_for("the StatefulSet", T, || async {
        stss.get_opt("demo").await.ok()?
    })
    .await;
    let spec = &sts.spec;
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(spec.service_name.as_deref(), Some("demo-brokers"));
    assert_eq!(
        spec.update_strategy.as_ref().unwrap().type_.as_deref(),
        Some("OnDelete")
    );
    let owner = &sts.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("LogCluster", Some(true))
    );
    let container = &spec.template.spec.as_ref().unwrap().containers[0];
    assert_eq!(container.image.as_deref(), Some("strand/broker:0.1.0"));
    // A new cluster gets a secret of its own, owned by it, and its brokers mount it.
    let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(c.clone(), &ns)
        .get("demo-cluster-secret")
        .await
        .unwrap();
    assert_eq!(
        secret.metadata.owner_references.as_ref().unwrap()[0].kind,
        "LogCluster"
    );
    assert!(secret.data.as_ref().unwrap()["secret"].0.len() >= 32);
    let volumes = spec
        .template
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .clone()
        .unwrap();
    assert!(
        volumes.iter().any(|v| v
            .secret
            .as_ref()
            .is_some_and(|s| s.secret_name.as_deref() == Some("demo-cluster-secret"))),
        "{volumes:?}"
    );
    let args = container.args.clone().unwrap();
    assert!(
        args.contains(&format!(
            "--controller=http://{}/clusters/{ns}/demo",
            op.listen
        )),
        "{args:?}"
    );
    // Server-side apply with our field manager.
    assert!(
        sts.metadata
            .managed_fields
            .clone()
            .unwrap_or_default()
            .iter()
            .any(|f| f.manager.as_deref() == Some("strand-operator")
                && f.operation.as_deref() == Some("Apply"))
    );

    let svcs: Api<Service> = Api::namespaced(c.clone(), &ns);
    let headless = svcs.get("demo-brokers").await.unwrap();
    assert_eq!(
        headless.spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some("None")
    );
    svcs.get("demo").await.unwrap();
    let cm = Api::<ConfigMap>::namespaced(c.clone(), &ns)
        .get("demo-config")
        .await
        .unwrap();
    assert!(cm.data.unwrap()["broker.properties"].contains("min.insync.replicas=2"));
    Api::<ServiceAccount>::namespaced(c.clone(), &ns)
        .get("demo-broker")
        .await
        .unwrap();
    Api::<PodDisruptionBudget>::namespaced(c.clone(), &ns)
        .get("demo")
        .await
        .unwrap();

    // kube-controller-manager's StatefulSet controller made the pods (Pending: no kubelet).
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns);
    wait_for("3 broker pods", T, || async {
        let n = pods.list(&Default::default()).await.ok()?.items.len();
        (n == 3).then_some(())
    })
    .await;

    // Status: brokers listed, not ready, with a clear Ready=False condition.
    let lcs: Api<LogCluster> = Api::namespaced(c.clone(), &ns);
    let status = wait_for("LogCluster status", T, || async {
        let v = get_json(&lcs, "demo").await?;
        condition(&v, "Ready").map(|_| v)
    })
    .await;
    let (st, reason, msg) = condition(&status, "Ready").unwrap();
    assert_eq!(
        (st.as_str(), reason.as_str()),
        ("False", "BrokersNotReady"),
        "{msg}"
    );
    assert_eq!(status["status"]["brokers"].as_array().unwrap().len(), 3);
    assert_eq!(status["status"]["observedGeneration"], json!(1));
    assert!(status["status"]["controllerState"]["metadata"]["cluster_id"].is_string());

    // Events say what the operator did.
    let events: Api<Event> = Api::namespaced(c.clone(), &ns);
    let reasons: BTreeSet<String> = wait_for("Created events", T, || async {
        let r: BTreeSet<String> = events
            .list(&Default::default())
            .await
            .ok()?
            .items
            .into_iter()
            .filter_map(|e| e.reason)
            .collect();
        r.contains("Created").then_some(r)
    })
    .await;
    assert!(reasons.contains("Created"), "{reasons:?}");

    // A broker config change reaches the ConfigMap and the pod template (a roll).
    let hash = |s: &StatefulSet| {
        s.spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()["strand.dev/config-hash"]
            .clone()
    };
    let before = hash(&sts);
    lcs.patch(
        "demo",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"brokerConfig": {"retention.ms": "3600000"}}})),
    )
    .await
    .unwrap();
    wait_for("a new config hash", T, || async {
        let s = stss.get("demo").await.ok()?;
        (hash(&s) != before).then_some(())
    })
    .await;

    // A deleted cluster secret is an error with a Warning, and the brokers keep mounting it
    // (dropping it would roll them into a mix that cannot replicate): nothing changes.
    let after_first = hash(&stss.get("demo").await.unwrap());
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(c.clone(), &ns)
        .delete("demo-cluster-secret", &DeleteParams::default())
        .await
        .unwrap();
    lcs.patch(
        "demo",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"brokerConfig": {"retention.ms": "7200000"}}})),
    )
    .await
    .unwrap();
    wait_for("a ClusterSecretMissing Warning", T, || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("ClusterSecretMissing")
                    && e.type_.as_deref() == Some("Warning")
            })
            .then_some(())
    })
    .await;
    let kept = stss.get("demo").await.unwrap();
    let volumes = kept.spec.template.spec.as_ref().unwrap().volumes.clone();
    assert!(
        volumes.unwrap().iter().any(|v| v.secret.is_some()),
        "the brokers still mount the secret"
    );
    assert_eq!(
        hash(&kept),
        after_first,
        "the second config change was not applied"
    );

    // Deleting the cluster deletes its children (owner references, garbage collector).
    lcs.delete("demo", &DeleteParams::foreground())
        .await
        .unwrap();
    wait_for("the StatefulSet to be collected", T, || async {
        stss.get_opt("demo").await.ok()?.is_none().then_some(())
    })
    .await;
    let old_id = status["status"]["controllerState"]["metadata"]["cluster_id"].clone();
    wait_for("the LogCluster to be gone", T, || async {
        lcs.get_opt("demo").await.ok()?.is_none().then_some(())
    })
    .await;

    // A LogCluster recreated under the same name is a new cluster (new id), not the old one.
    apply_docs(&c, &ns, &[logcluster(3)]).await.unwrap();
    let new_id = wait_for("the new cluster's controller state", T, || async {
        let v = get_json(&lcs, "demo").await?;
        let id = v["status"]["controllerState"]["metadata"]["cluster_id"].clone();
        id.is_string().then_some(id)
    })
    .await;
    assert_ne!(old_id, new_id);
    drop(op);
}

/// A NodePort already taken by another Service: that broker's external Service is refused by
/// the API server, the LogCluster says so (Degraded ListenerServiceRefused, a Warning Event)
/// while the rest is reconciled (StatefulSet, the other brokers' Services, status); once the
/// port is free the Service is made and Degraded clears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_node_port_degrades_the_cluster_and_nothing_else() {
    let Some(kc) = kubeconfig() else { return };
    let c = client(&kc).await;
    install_crds(&c).await;
    let ns = namespace(&c, "nodeport").await;
    let dir = test_dir();
    let op = OperatorProcess::start(&kc, &ns, "op-np", dir.path());
    let lc = logcluster(3);
    let base = lc["spec"]["listeners"][0]["nodePortBase"].as_i64().unwrap();
    let svcs: Api<Service> = Api::namespaced(c.clone(), &ns);
    let squatter: Service = serde_json::from_value(json!({
        "metadata": { "name": "squatter" },
        "spec": {
            "type": "NodePort",
            "selector": { "app": "none" },
            "ports": [{ "port": 80, "nodePort": base + 1 }]
        }
    }))
    .unwrap();
    svcs.create(&PostParams::default(), &squatter)
        .await
        .unwrap();
    apply_docs(&c, &ns, &[lc]).await.unwrap();

    let lcs: Api<LogCluster> = Api::namespaced(c.clone(), &ns);
    let msg = wait_for("Degraded ListenerServiceRefused", T, || async {
        let v = get_json(&lcs, "demo").await?;
        let (st, reason, msg) = condition(&v, "Degraded")?;
        (st == "True" && reason == "ListenerServiceRefused").then_some(msg)
    })
    .await;
    assert!(msg.contains("demo-1-external"), "{msg}");
    assert!(msg.contains("already allocated"), "{msg}");
    // Everything else was reconciled.
    let v = get_json(&lcs, "demo").await.unwrap();
    assert_eq!(v["status"]["brokers"].as_array().unwrap().len(), 3, "{v:#}");
    Api::<StatefulSet>::namespaced(c.clone(), &ns)
        .get("demo")
        .await
        .unwrap();
    for ok in ["demo-0-external", "demo-2-external"] {
        svcs.get(ok).await.unwrap();
    }
    assert!(svcs.get_opt("demo-1-external").await.unwrap().is_none());
    let events: Api<Event> = Api::namespaced(c.clone(), &ns);
    wait_for("a ListenerServiceRefused Warning", T, || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("ListenerServiceRefused")
                    && e.type_.as_deref() == Some("Warning")
            })
            .then_some(())
    })
    .await;

    svcs.delete("squatter", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("demo-1-external made and Degraded cleared", T, || async {
        svcs.get_opt("demo-1-external").await.ok()??;
        let v = get_json(&lcs, "demo").await?;
        let (st, _, _) = condition(&v, "Degraded")?;
        (st == "False").then_some(())
    })
    .await;
    drop(op);
}

/// Brokers on the host join the cluster through the operator; topics from YAML get spread
/// assignments; bad topics get clear conditions; a Kafka client produces and consumes across a
/// broker kill; the operator restarts without losing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_brokers_topics_failover_and_operator_restart() {
    let Some(kc) = kubeconfig() else { return };
    let c = client(&kc).await;
    install_crds(&c).await;
    let ns = namespace(&c, "hybrid").await;
    let dir = test_dir();
    let mut op = OperatorProcess::start(&kc, &ns, "op-a", dir.path());
    apply_docs(&c, &ns, &[logcluster(3)]).await.unwrap();
    let lcs: Api<LogCluster> = Api::namespaced(c.clone(), &ns);
    let rts: Api<ReplicatedTopic> = Api::namespaced(c.clone(), &ns);

    // The controller for demo starts with the first reconcile; then brokers can register,
    // with the cluster's secret (the operator made it with the cluster).
    let url = op.controller_url(&ns, "demo");
    let secret = cluster_secret(&c, &ns, "demo", dir.path()).await;
    wait_for("the cluster controller", T, || async {
        let r = controller_get(&format!("{url}/v1/metadata"), &secret.token)
            .await
            .ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    // Without the token, nothing but health and describe answers.
    let anonymous = reqwest::get(format!("{url}/v1/metadata")).await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let described = reqwest::get(format!("{url}/v1/admin/describe"))
        .await
        .unwrap();
    assert_eq!(described.status().as_u16(), 200);
    let mut brokers: Vec<HostBroker> = (0..3)
        .map(|id| HostBroker::start(dir.path(), id, &url, &secret.path))
        .collect();
    wait_for(
        "3 brokers registered in the LogCluster status",
        T,
        || async {
            let v = get_json(&lcs, "demo").await?;
            let n = v["status"]["brokers"]
                .as_array()?
                .iter()
                .filter(|b| b["registered"] == json!(true))
                .count();
            (n == 3).then_some(())
        },
    )
    .await;

    // Racks from nodes (the manifest's rackLabelKey is topology.kubernetes.io/zone): with no
    // scheduler here, each pod is bound by hand to a node of its own zone; the operator reads
    // the label and the controller takes it as the broker's rack.
    let nodes: Api<Node> = Api::all(c.clone());
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns);
    let node_names: Vec<String> = (0..3).map(|id| format!("{ns}-node-{id}")).collect();
    for (id, node) in node_names.iter().enumerate() {
        let n: Node = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": node,
                "labels": { "topology.kubernetes.io/zone": format!("zone-{id}") }
            }
        }))
        .unwrap();
        nodes.create(&PostParams::default(), &n).await.unwrap();
        let pod = format!("demo-{id}");
        wait_for(&format!("pod {pod}"), T, || async {
            pods.get_opt(&pod).await.ok().flatten()
        })
        .await;
        let binding = json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": { "name": pod },
            "target": { "apiVersion": "v1", "kind": "Node", "name": node }
        });
        pods.create_subresource::<Value, Value>("binding", &pod, &PostParams::default(), &binding)
            .await
            .unwrap();
    }
    wait_for("each broker's rack in the LogCluster status", T, || async {
        let v = get_json(&lcs, "demo").await?;
        let racks: Vec<String> = v["status"]["brokers"]
            .as_array()?
            .iter()
            .map(|b| b["rack"].as_str().unwrap_or("").to_string())
            .collect();
        (racks == ["zone-0", "zone-1", "zone-2"]).then_some(())
    })
    .await;

    apply_docs(
        &c,
        &ns,
        &read_yaml(&repo_root().join("e2e/manifests/topics.yaml")),
    )
    .await
    .unwrap();
    let orders = wait_for("orders Ready", T, || async {
        let v = get_json(&rts, "orders").await?;
        (condition(&v, "Ready")?.0 == "True").then_some(v)
    })
    .await;
    let parts = orders["status"]["partitions"].as_array().unwrap().clone();
    assert_eq!(parts.len(), 6);
    let mut leaders = std::collections::BTreeMap::<i64, usize>::new();
    for p in &parts {
        assert_eq!(p["replicas"].as_array().unwrap().len(), 3, "{p}");
        assert_eq!(p["isr"].as_array().unwrap().len(), 3, "{p}");
        *leaders.entry(p["leader"].as_i64().unwrap()).or_default() += 1;
    }
    assert_eq!(
        leaders.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2],
        "leaders spread: {leaders:?}"
    );
    let topic_id = orders["status"]["topicId"].as_str().unwrap().to_string();
    wait_for("audit_log Ready", T, || async {
        let v = get_json(&rts, "audit-log").await?;
        (condition(&v, "Ready")?.0 == "True").then_some(())
    })
    .await;

    // Bad topics: clear False conditions, nothing created.
    apply_docs(&c, &ns, &[topic("too-wide", 1, 5)])
        .await
        .unwrap();
    let mut other_cluster = topic("lost", 1, 1);
    other_cluster["spec"]["cluster"] = json!("nope");
    apply_docs(&c, &ns, &[other_cluster]).await.unwrap();
    let mut dup = topic("orders-again", 6, 3);
    dup["spec"]["topicName"] = json!("orders");
    dup["spec"]["deletionPolicy"] = json!("Delete");
    apply_docs(&c, &ns, &[dup]).await.unwrap();
    // `audit.log` beside `audit_log`: Kafka's collision rule.
    let mut dotted = topic("audit-dotted", 3, 3);
    dotted["spec"]["topicName"] = json!("audit.log");
    apply_docs(&c, &ns, &[dotted]).await.unwrap();
    for (name, reason) in [
        ("too-wide", "ReplicationFactorTooLarge"),
        ("lost", "ClusterNotFound"),
        ("orders-again", "TopicConflict"),
        ("audit-dotted", "TopicNameCollision"),
    ] {
        let (st, r, msg) = wait_for(&format!("{name} condition"), T, || async {
            condition(&get_json(&rts, name).await?, "Ready").filter(|c| c.1 == reason)
        })
        .await;
        assert_eq!(st, "False", "{name}: {msg}");
        assert_eq!(r, reason, "{name}: {msg}");
    }
    let events: Api<Event> = Api::namespaced(c.clone(), &ns);
    let collision = wait_for("a TopicNameCollision event", T, || async {
        events
            .list(&Default::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("TopicNameCollision"))
    })
    .await;
    assert_eq!(collision.type_.as_deref(), Some("Warning"));
    let note = collision.message.unwrap_or_default();
    assert!(
        note.contains("audit.log") && note.contains("audit_log"),
        "{note}"
    );
    let md: Value = controller_get(&format!("{url}/v1/metadata"), &secret.token)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(md["topics"].get("audit.log").is_none(), "{md}");

    // A Kafka client through the brokers that joined via the operator.
    let bootstrap = brokers
        .iter()
        .map(|b| b.kafka.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let producer = kafka::producer(&bootstrap, kafka::ACKS_ALL_IDEMPOTENT);
    let mut acked = kafka::produce(&producer, "orders", "before", 2000).await;

    // A declared topic is changed through its ReplicatedTopic: Kafka's admin API is refused
    // (POLICY_VIOLATION, naming the resource), where the reconciler would otherwise undo the
    // change; a topic nobody declared is changed freely.
    {
        use rdkafka::admin::{
            AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication,
        };
        use rdkafka::types::RDKafkaErrorCode;
        let admin: AdminClient<rdkafka::client::DefaultClientContext> =
            rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .create()
                .unwrap();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
        let grown = admin
            .create_partitions([&NewPartitions::new("orders", 8)], &opts)
            .await
            .unwrap();
        assert!(
            matches!(&grown[0], Err((_, RDKafkaErrorCode::PolicyViolation))),
            "growing a declared topic: {grown:?}"
        );
        let deleted = admin.delete_topics(&["orders"], &opts).await.unwrap();
        assert!(
            matches!(&deleted[0], Err((_, RDKafkaErrorCode::PolicyViolation))),
            "deleting a declared topic: {deleted:?}"
        );
        let free = NewTopic::new("undeclared", 1, TopicReplication::Fixed(3));
        let created = admin.create_topics([&free], &opts).await.unwrap();
        assert!(created[0].is_ok(), "{created:?}");
        let grown = admin
            .create_partitions([&NewPartitions::new("undeclared", 2)], &opts)
            .await
            .unwrap();
        assert!(grown[0].is_ok(), "growing an undeclared topic: {grown:?}");
        let r = reqwest::Client::new()
            .post(format!("{url}/v1/topics/orders/partitions"))
            .bearer_auth(&secret.token)
            .json(&json!({ "partitions": 8 }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 409);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["kind"], "policy_violation", "{body}");
        let owner = format!("ReplicatedTopic {ns}/orders");
        assert!(body["error"].as_str().unwrap().contains(&owner), "{body}");
    }

    // Kill -9 the leader of partition 0; the controller moves it and the status shows it.
    let victim = parts[0]["leader"].as_i64().unwrap() as i32;
    brokers.iter_mut().find(|b| b.id == victim).unwrap().kill9();
    wait_for(
        "partition 0 led by another broker, victim out of the ISR",
        T,
        || async {
            let v = get_json(&rts, "orders").await?;
            let p0 = &v["status"]["partitions"][0];
            let isr: Vec<i64> = p0["isr"]
                .as_array()?
                .iter()
                .filter_map(|x| x.as_i64())
                .collect();
            (p0["leader"].as_i64()? != i64::from(victim)
                && p0["leader"].as_i64()? >= 0
                && !isr.contains(&i64::from(victim)))
            .then_some(())
        },
    )
    .await;
    acked.extend(kafka::produce(&producer, "orders", "after", 2000).await);

    // The operator restarts (clean stop, Lease released); everything it knew is still there.
    assert!(
        op.terminate(),
        "operator did not stop cleanly:\n{}",
        op.log_text()
    );
    // Same address, as a Service would give: the brokers keep heartbeating to the new process.
    let op2 = OperatorProcess::start_on(&kc, &ns, "op-b", dir.path(), Some(op.listen));
    let after = wait_for("orders status from the new operator", T, || async {
        let v = get_json(&rts, "orders").await?;
        (condition(&v, "Ready")?.0 == "True").then_some(v)
    })
    .await;
    assert_eq!(after["status"]["topicId"].as_str(), Some(topic_id.as_str()));
    let md: Value = wait_for("metadata from the new operator", T, || async {
        let url = format!("{}/v1/metadata", op2.controller_url(&ns, "demo"));
        let r = controller_get(&url, &secret.token).await.ok()?;
        r.json().await.ok()
    })
    .await;
    let p0 = &md["topics"]["orders"]["partitions"][0];
    assert_ne!(p0["leader"].as_i64(), Some(i64::from(victim)), "{p0}");
    // The surviving brokers stay registered with the new operator and take writes.
    acked.extend(kafka::produce(&producer, "orders", "restarted", 1000).await);

    // The killed broker comes back, catches up and rejoins every ISR; the status shows it.
    let back = HostBroker::start(
        dir.path(),
        victim,
        &op2.controller_url(&ns, "demo"),
        &secret.path,
    );
    brokers.retain(|b| b.id != victim);
    brokers.push(back);
    wait_for("every ISR full again", T, || async {
        let v = get_json(&rts, "orders").await?;
        let full = v["status"]["partitions"]
            .as_array()?
            .iter()
            .all(|p| p["isr"].as_array().is_some_and(|isr| isr.len() == 3));
        full.then_some(())
    })
    .await;
    let bootstrap = brokers
        .iter()
        .map(|b| b.kafka.to_string())
        .collect::<Vec<_>>()
        .join(",");

    // Every acknowledged record is there.
    let read = tokio::task::spawn_blocking({
        let bootstrap = bootstrap.clone();
        move || kafka::consume_all(&bootstrap, "orders", &(0..6).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    kafka::assert_acked_present(&acked, &read);

    // Deleting a Delete-policy topic deletes it; deleting the loser of a conflict does not
    // delete the winner's topic, whatever its policy.
    rts.delete("orders-again", &DeleteParams::default())
        .await
        .unwrap();
    rts.delete("audit-log", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("audit-log resource gone", T, || async {
        rts.get_opt("audit-log").await.ok()?.is_none().then_some(())
    })
    .await;
    wait_for("orders-again resource gone", T, || async {
        rts.get_opt("orders-again")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let lc = get_json(&lcs, "demo").await.unwrap();
    let topics = &lc["status"]["controllerState"]["metadata"]["topics"];
    assert!(
        topics.get("audit_log").is_none(),
        "audit_log should be deleted"
    );
    assert!(
        topics.get("orders").is_some(),
        "orders must survive its rival's deletion"
    );

    // Scaling to 2 brokers cannot keep replication factor 3: refused before anything moves.
    // The StatefulSet keeps broker 2, Degraded says why, and nothing is lost.
    lcs.patch(
        "demo",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 2}})),
    )
    .await
    .unwrap();
    let (_, reason, msg) = wait_for("a ScaleDownRefused condition", T, || async {
        condition(&get_json(&lcs, "demo").await?, "Degraded")
            .filter(|c| c.0 == "True" && c.1 == "ScaleDownRefused")
    })
    .await;
    assert!(msg.contains("replication factor 3"), "{reason}: {msg}");
    let stss: Api<StatefulSet> = Api::namespaced(c.clone(), &ns);
    assert_eq!(stss.get("demo").await.unwrap().spec.replicas, Some(3));
    drop(op2);
    // Nodes are cluster-wide: not cleaned up with the namespace.
    for node in &node_names {
        let _ = nodes.delete(node, &DeleteParams::default()).await;
    }
}

/// What a LogUser can do on a broker that runs the security flags the operator renders for
/// the cluster's pods: log in with its Secret's password, see the topics its ACLs name and no
/// other; and once the resource is deleted, not log in at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loguser_logs_in_with_its_secret_and_its_acls_hold() {
    use broker::auth::scram::Mechanism;
    use broker::replication::client::Connection;
    use k8s_openapi::api::core::v1::Secret;
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{MetadataRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use operator::crd::LogUser;

    let Some(kc) = kubeconfig() else { return };
    let c = client(&kc).await;
    install_crds(&c).await;
    let ns = namespace(&c, "users").await;
    let dir = test_dir();
    let op = OperatorProcess::start(&kc, &ns, "op-a", dir.path());
    let mut lc = logcluster(1);
    lc["spec"]["brokerConfig"] = json!({});
    lc["spec"]["listeners"][0]["authentication"] = json!({ "type": "scram-sha-512" });
    lc["spec"]["authorization"] = json!({ "type": "simple", "superUsers": ["admin"] });
    apply_docs(&c, &ns, &[lc]).await.unwrap();

    // The flags the operator gives the pods, run by a broker on this host.
    let stss: Api<StatefulSet> = Api::namespaced(c.clone(), &ns);
    let sts = wait_for("the StatefulSet", T, || async {
        stss.get_opt("demo").await.ok()?
    })
    .await;
    let args = sts.spec.template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    let security: Vec<String> = args
        .iter()
        .filter(|a| {
            [
                "--listener-security-protocol-map",
                "--sasl-enabled-mechanisms",
                "--authorizer-class-name",
                "--super-users",
            ]
            .iter()
            .any(|f| a.starts_with(f))
        })
        .cloned()
        .collect();
    assert_eq!(security.len(), 4, "{args:?}");
    assert!(
        security.contains(&"--super-users=User:admin".to_string()),
        "{security:?}"
    );
    // The listener flags are the operator's too, with this host's address for the pod's.
    let listener_flag = args
        .iter()
        .find(|a| a.starts_with("--listener=external="))
        .expect("the external listener's flag");
    let listener = format!("127.0.0.1:{}", free_port());
    let mut flags = vec![
        listener_flag.replace("0.0.0.0:9094", &listener),
        format!("--advertised-listener=external={listener}"),
    ];
    flags.extend(security);
    let url = op.controller_url(&ns, "demo");
    let secret = cluster_secret(&c, &ns, "demo", dir.path()).await;
    wait_for("the cluster controller", T, || async {
        let r = controller_get(&format!("{url}/v1/metadata"), &secret.token)
            .await
            .ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    let _broker = HostBroker::start_with(dir.path(), 0, &url, &secret.path, &flags);

    let mut docs = read_yaml(&repo_root().join("e2e/manifests/users.yaml"));
    docs.push(topic("orders", 1, 1));
    docs.push(topic("payroll", 1, 1));
    apply_docs(&c, &ns, &docs).await.unwrap();
    let users: Api<LogUser> = Api::namespaced(c.clone(), &ns);
    let ready = wait_for("orders-app Ready", T, || async {
        let v = get_json(&users, "orders-app").await?;
        (condition(&v, "Ready")?.0 == "True").then_some(v)
    })
    .await;
    assert_eq!(ready["status"]["username"], "orders-app", "{ready}");
    assert_eq!(ready["status"]["acls"], 4, "{ready}");
    let secrets: Api<Secret> = Api::namespaced(c.clone(), &ns);
    let s = secrets.get("orders-app").await.unwrap();
    let data = s.data.unwrap();
    let password = String::from_utf8(data["password"].0.clone()).unwrap();
    let jaas = String::from_utf8(data["sasl.jaas.config"].0.clone()).unwrap();
    assert!(
        jaas.contains("username=\"orders-app\"") && jaas.contains(&password),
        "{jaas}"
    );

    // The topic error orders-app gets for each topic in Metadata (29:
    // TOPIC_AUTHORIZATION_FAILED), or why it cannot log in.
    let view = |password: String| {
        let listener = listener.clone();
        async move {
            let mut conn = Connection::connect(&listener, "orders-app")
                .await
                .map_err(|e| e.to_string())?;
            conn.authenticate_as(Mechanism::Sha512, "orders-app", password.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let topics = ["orders", "payroll"].map(|t| {
                MetadataRequestTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_static_str(t))))
            });
            let r = conn
                .send(
                    &MetadataRequest::default().with_topics(Some(topics.to_vec())),
                    12,
                )
                .await
                .map_err(|e| e.to_string())?;
            Ok::<Vec<i16>, String>(r.topics.iter().map(|t| t.error_code).collect())
        }
    };
    // The credential and the ACLs reach the broker with the controller's metadata.
    wait_for("orders-app sees orders and not payroll", T, || async {
        (view(password.clone()).await.ok()? == [0, 29]).then_some(())
    })
    .await;
    let wrong = view(format!("{password}x")).await.unwrap_err();
    let refused =
        |e: &str| e.contains("SASL_AUTHENTICATION_FAILED") || e.contains("authentication failed");
    assert!(refused(&wrong), "{wrong}");

    // Deleted: the credential and the ACLs leave the controller, the login fails.
    users
        .delete("orders-app", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("orders-app gone", T, || async {
        users
            .get_opt("orders-app")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let md: Value = controller_get(&format!("{url}/v1/metadata"), &secret.token)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        md["scram_credentials"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "{}",
        md["scram_credentials"]
    );
    assert!(
        md["acls"].as_array().is_none_or(|a| a.is_empty()),
        "{}",
        md["acls"]
    );
    wait_for("orders-app refused", T, || async {
        view(password.clone()).await.err().filter(|e| refused(e))
    })
    .await;

    // A user made through Kafka's API is not taken over by a LogUser of its name.
    let legacy =
        broker::auth::users::UserCredential::for_password("legacy", Mechanism::Sha512, "pw");
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/scram-credentials"))
        .bearer_auth(&secret.token)
        .json(&json!({ "alterations": [broker::auth::users::Alteration::Upsert(legacy.clone())] }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let mut taker = read_yaml(&repo_root().join("e2e/manifests/users.yaml")).remove(0);
    taker["metadata"]["name"] = json!("legacy");
    apply_docs(&c, &ns, &[taker]).await.unwrap();
    let (_, reason, msg) = wait_for("legacy refused", T, || async {
        condition(&get_json(&users, "legacy").await?, "Ready").filter(|c| c.0 == "False")
    })
    .await;
    assert_eq!(reason, "UserExists", "{msg}");
    let md: Value = controller_get(&format!("{url}/v1/metadata"), &secret.token)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        md["scram_credentials"],
        json!([serde_json::to_value(&legacy).unwrap()]),
        "the credential is kafka-configs' still"
    );
    assert!(
        secrets.get_opt("legacy").await.unwrap().is_none(),
        "no Secret made"
    );

    // A bad rule is a clear False condition, and nothing reaches the controller.
    let mut bad = read_yaml(&repo_root().join("e2e/manifests/users.yaml")).remove(0);
    bad["metadata"]["name"] = json!("bad-host");
    bad["spec"]["authorization"]["acls"][0]["host"] = json!("db.example");
    apply_docs(&c, &ns, &[bad]).await.unwrap();
    let (_, reason, msg) = wait_for("bad-host refused", T, || async {
        condition(&get_json(&users, "bad-host").await?, "Ready").filter(|c| c.0 == "False")
    })
    .await;
    assert_eq!(reason, "InvalidAcl", "{msg}");
    assert!(
        msg.contains("acls[0]") && msg.contains("db.example"),
        "{msg}"
    );
    let md: Value = controller_get(&format!("{url}/v1/metadata"), &secret.token)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        md["acls"].as_array().is_none_or(|a| a.is_empty()),
        "{}",
        md["acls"]
    );
    drop(op);
}

/// A TLS listener with the user's own CA (another subject and key id than the operator's): the
/// operator issues each broker a certificate from it that names the broker's DNS names and
/// every node's address; a broker run with the flags the operator renders serves TLS that a
/// client trusting `<cluster>-cluster-ca-cert` verifies, for those names and no other; the
/// certificates are not issued again while nothing changes; a scale-up issues one for the new
/// broker. (The operator's own CA is exercised on kind, scenario `users`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_listener_gets_certificates_from_the_cluster_ca() {
    use k8s_openapi::api::core::v1::Secret;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName};

    let Some(kc) = kubeconfig() else { return };
    let c = client(&kc).await;
    install_crds(&c).await;
    let ns = namespace(&c, "tls").await;
    // A node with an address: NodePort clients reach a broker there.
    let nodes: Api<Node> = Api::all(c.clone());
    let node = format!("{ns}-node");
    let n: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node", "metadata": { "name": node }
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &n).await.unwrap();
    nodes
        .patch_status(
            &node,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "addresses": [
                { "type": "InternalIP", "address": "10.9.8.7" },
                { "type": "Hostname", "address": "not-a-san" }
            ] } })),
        )
        .await
        .unwrap();
    // The user's CA, as OpenSSL would make it, annotated to be used.
    let users_ca = {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyIdMethod, KeyPair};
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name
            .push(DnType::CommonName, "Example Corp Root");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_identifier_method = KeyIdMethod::PreSpecified(vec![9; 20]);
        (p.self_signed(&key).unwrap().pem(), key.serialize_pem())
    };
    let ca_secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "demo-cluster-ca", "annotations": { "strand.dev/user-ca": "true" } },
        "stringData": { "ca.crt": users_ca.0, "ca.key": users_ca.1 }
    }))
    .unwrap();
    let secrets: Api<Secret> = Api::namespaced(c.clone(), &ns);
    secrets
        .create(&PostParams::default(), &ca_secret)
        .await
        .unwrap();
    let dir = test_dir();
    let op = OperatorProcess::start(&kc, &ns, "op-a", dir.path());
    let mut lc = logcluster(1);
    lc["spec"]["brokerConfig"] = json!({});
    lc["spec"]["listeners"][0]["tls"] = json!(true);
    apply_docs(&c, &ns, &[lc]).await.unwrap();

    let read = |name: &'static str, key: &'static str| {
        let secrets = secrets.clone();
        async move {
            let s = secrets.get_opt(name).await.ok()??;
            String::from_utf8(s.data?.get(key)?.0.clone()).ok()
        }
    };
    let ca = wait_for("the CA certificate for clients", T, || {
        read("demo-cluster-ca-cert", "ca.crt")
    })
    .await;
    let keystore = wait_for("broker 0's keystore", T, || {
        read("demo-broker-certs", "demo-0.pem")
    })
    .await;
    assert!(keystore.ends_with(&ca), "the keystore ends with the CA");
    assert_eq!(ca, users_ca.0, "the user's CA is the one clients trust");
    let issued = secrets.get("demo-broker-certs").await.unwrap();
    let stss: Api<StatefulSet> = Api::namespaced(c.clone(), &ns);
    let sts = wait_for("the StatefulSet", T, || async {
        stss.get_opt("demo").await.ok()?
    })
    .await;
    let pod = sts.spec.template.spec.unwrap();
    let args = pod.containers[0].args.clone().unwrap();
    for want in [
        "--listener-security-protocol-map=external:SSL",
        "--ssl-keystore-location=/etc/strand/tls/$(POD_NAME).pem",
    ] {
        assert!(args.contains(&want.to_string()), "{want} in {args:?}");
    }
    assert!(
        pod.volumes.unwrap().iter().any(|v| v
            .secret
            .as_ref()
            .is_some_and(|s| s.secret_name.as_deref() == Some("demo-broker-certs"))),
        "the pods mount the brokers' certificates"
    );

    // The operator's flags, with this host's files and address for the pod's.
    let keystore_file = dir.path().join("demo-0.pem");
    std::fs::write(&keystore_file, &keystore).unwrap();
    let listener = format!("127.0.0.1:{}", free_port());
    let flags: Vec<String> = args
        .iter()
        .filter_map(|a| {
            if a.starts_with("--listener=external=") {
                Some(a.replace("0.0.0.0:9094", &listener))
            } else if a.starts_with("--advertised-listener=external=") {
                Some(format!("--advertised-listener=external={listener}"))
            } else if a.starts_with("--ssl-keystore-location=") {
                Some(format!(
                    "--ssl-keystore-location={}",
                    keystore_file.display()
                ))
            } else if a.starts_with("--listener-security-protocol-map=") {
                Some(a.clone())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(flags.len(), 4, "{flags:?}");
    let url = op.controller_url(&ns, "demo");
    let secret = cluster_secret(&c, &ns, "demo", dir.path()).await;
    let _broker = HostBroker::start_with(dir.path(), 0, &url, &secret.path, &flags);

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let config = std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let handshake = |name: String| {
        let (config, listener) = (config.clone(), listener.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(&listener)
                .await
                .map_err(|e| e.to_string())?;
            let server = ServerName::try_from(name).map_err(|e| e.to_string())?;
            tokio_rustls::TlsConnector::from(config)
                .connect(server, tcp)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    };
    wait_for("a verified TLS handshake", T, || async {
        handshake(format!("demo-0.demo-brokers.{ns}.svc"))
            .await
            .ok()
    })
    .await;
    for name in [format!("demo.{ns}.svc"), "10.9.8.7".to_string()] {
        handshake(name.clone())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for name in ["evil.example", "not-a-san"] {
        let e = handshake(name.to_string()).await.unwrap_err();
        assert!(e.contains("not valid for name"), "{name}: {e}");
    }

    // Nothing changed, nothing issued again (reconciles run every 15 s).
    tokio::time::sleep(Duration::from_secs(20)).await;
    let later = secrets.get("demo-broker-certs").await.unwrap();
    assert_eq!(
        later.metadata.resource_version, issued.metadata.resource_version,
        "certificates issued again with nothing changed"
    );
    let kept = secrets.get("demo-cluster-ca").await.unwrap();
    assert!(
        kept.metadata.owner_references.is_none(),
        "the user's CA stays the user's"
    );

    // A second broker gets a certificate of its own.
    Api::<LogCluster>::namespaced(c.clone(), &ns)
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 2 } })),
        )
        .await
        .unwrap();
    wait_for("broker 1's keystore", T, || {
        read("demo-broker-certs", "demo-1.pem")
    })
    .await;
    drop(op);
    let _ = nodes.delete(&node, &DeleteParams::default()).await;
}

/// A deleted LogCluster's controller stops: its API answers 404 and nothing of it lingers to
/// hold up the finalizers of the namespace's other resources (a namespace deleted whole).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_logclusters_controller_stops() {
    let Some(kc) = kubeconfig() else { return };
    let c = client(&kc).await;
    install_crds(&c).await;
    let ns = namespace(&c, "gone").await;
    let dir = test_dir();
    let op = OperatorProcess::start(&kc, &ns, "op-a", dir.path());
    let mut lc = logcluster(1);
    lc["spec"]["brokerConfig"] = json!({});
    apply_docs(&c, &ns, &[lc, topic("orders", 1, 1)])
        .await
        .unwrap();
    let url = op.controller_url(&ns, "demo");
    let secret = cluster_secret(&c, &ns, "demo", dir.path()).await;
    wait_for("the cluster controller", T, || async {
        let r = controller_get(&format!("{url}/v1/metadata"), &secret.token)
            .await
            .ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    let lcs: Api<LogCluster> = Api::namespaced(c.clone(), &ns);
    lcs.delete("demo", &DeleteParams::default()).await.unwrap();
    wait_for("the controller's API gone", T, || async {
        let r = controller_get(&format!("{url}/v1/metadata"), &secret.token)
            .await
            .ok()?;
        (r.status().as_u16() == 404).then_some(())
    })
    .await;
    // The topic's finalizer lets go: its cluster took the topic with it.
    let rts: Api<ReplicatedTopic> = Api::namespaced(c.clone(), &ns);
    rts.delete("orders", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the ReplicatedTopic gone", T, || async {
        rts.get_opt("orders").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(
        !op.log_text().contains("no longer exists"),
        "a controller outlived its LogCluster:\n{}",
        op.log_text()
    );
    drop(op);
}

#[tokio::test]
async fn two_operator_replicas_elect_one_leader() {
    let Some(kc) = kubeconfig() else { return };
    let c = client(&kc).await;
    install_crds(&c).await;
    let ns = namespace(&c, "lease").await;
    let dir = test_dir();
    let mut a = OperatorProcess::start(&kc, &ns, "op-a", dir.path());
    let leases: Api<Lease> = Api::namespaced(c.clone(), &ns);
    wait_for("op-a holds the Lease", T, || async {
        let l = leases.get_opt("strand-operator").await.ok()??;
        (l.spec?.holder_identity? == "op-a").then_some(())
    })
    .await;
    let b = OperatorProcess::start(&kc, &ns, "op-b", dir.path());
    apply_docs(&c, &ns, &[logcluster(1)]).await.unwrap();
    let secret = cluster_secret(&c, &ns, "demo", dir.path()).await;
    let status = |p: &OperatorProcess| {
        let url = format!("{}/v1/metadata", p.controller_url(&ns, "demo"));
        let token = secret.token.clone();
        async move {
            controller_get(&url, &token)
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    wait_for("op-a serves demo", T, || async {
        (status(&a).await == 200).then_some(())
    })
    .await;
    assert_eq!(
        status(&b).await,
        503,
        "the follower must not serve the controller API"
    );

    // The leader dies without releasing the Lease: the follower takes over after it expires.
    a.kill9();
    wait_for("op-b holds the Lease", T, || async {
        let l = leases.get_opt("strand-operator").await.ok()??;
        (l.spec?.holder_identity? == "op-b").then_some(())
    })
    .await;
    wait_for("op-b serves demo", T, || async {
        (status(&b).await == 200).then_some(())
    })
    .await;
    let lease = leases.get("strand-operator").await.unwrap();
    assert!(lease.spec.unwrap().lease_transitions.unwrap_or(0) >= 1);
}
