//! The Kafka bus against a real Kafka-protocol broker (see `tests/support/kafka_broker.rs`):
//! batches cross it keyed by entity, a detector commits only what its pipeline stored, and a
//! member that stops before storing leaves its records to the next one.

#[path = "../../tests/support/kafka_broker.rs"]
mod kafka_broker;

use kafka_broker::KafkaBroker;
use perimeter_ingest::bus::{self, BusReceiver, BusSender, SubmitAck};
use perimeter_ingest::kafka::{
    ensure_topic, KafkaBusConfig, KafkaBusConsumer, KafkaBusProducer, PartitionKey,
};
use perimeter_ingest::InputItem;
use perimeter_model::sonic_rs::{self, JsonValueTrait};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

fn config(broker: &KafkaBroker, name: &str) -> KafkaBusConfig {
    let mut config = KafkaBusConfig::new(broker.brokers());
    config.topic = format!("records-{name}");
    config.group = format!("detect-{name}");
    config.partitions = 4;
    config.batch_linger_ms = 50;
    config.batch_records = 64;
    // A test cannot wait the production defaults out when a member leaves.
    for (k, v) in [
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
        ("max.poll.interval.ms", "10000"),
    ] {
        config.properties.insert(k.into(), v.into());
    }
    config
}

/// Keyed by the record's `user`, as the binary keys by the normalized entity.
fn user_key() -> PartitionKey {
    Arc::new(|_source, tenant, item| match item {
        InputItem::Record { value, .. } => {
            format!("{tenant}/{}", value["user"].as_str().unwrap_or("")).into_bytes()
        }
        InputItem::Invalid { .. } => tenant.as_bytes().to_vec(),
    })
}

fn records(from: u64, n: u64) -> Vec<InputItem> {
    records_of_users(from, n, 7)
}

/// Records `from..from + n` of `users` users, in turn.
fn records_of_users(from: u64, n: u64, users: u64) -> Vec<InputItem> {
    (from..from + n)
        .map(|i| InputItem::Record {
            line: i,
            value: sonic_rs::json!({"user": format!("user{}", i % users), "seq": i}),
            member_lines: Vec::new(),
        })
        .collect()
}

/// A broker, the topic `name` on it, a producer to it, and `records(0, n)` on the topic
/// (submitted by the producer, so on the broker).
async fn topic_with_records(name: &str, n: u64) -> (KafkaBroker, KafkaBusConfig, BusSender) {
    let broker = KafkaBroker::start();
    let config = config(&broker, name);
    ensure_topic(&config).await.unwrap();
    let sources = start_producer(&config);
    sources.submit("okta", "acme", records(0, n)).await.unwrap();
    (broker, config, sources)
}

fn start_producer(config: &KafkaBusConfig) -> BusSender {
    let (tx, rx) = bus::channel(4);
    let producer = KafkaBusProducer::new(config, user_key()).unwrap();
    tokio::spawn(producer.run(rx));
    tx
}

/// What a pipeline worker stored: `(user, seq)` in the order it stored them.
type Stored = Arc<Mutex<Vec<(String, u64)>>>;

/// A pipeline worker that refuses its first `refuse` batches (a full disk) and stores the rest.
fn worker(mut rx: BusReceiver, refuse: usize, stored: Stored) {
    tokio::spawn(async move {
        let mut refused = 0;
        while let Some(sub) = rx.recv().await {
            if refused < refuse {
                refused += 1;
                let _ = sub.ack.send(Err("no space left on device".into()));
                continue;
            }
            store(&stored, sub);
        }
    });
}

/// The sequence numbers `stored` holds, sorted.
fn sorted_seqs(stored: &Stored) -> Vec<u64> {
    let mut seqs: Vec<u64> = stored.lock().unwrap().iter().map(|(_, s)| *s).collect();
    seqs.sort_unstable();
    seqs
}

/// Store a submission's records in `stored` and acknowledge it.
fn store(stored: &Stored, sub: bus::Submission) {
    let mut stored = stored.lock().unwrap();
    for item in &sub.items {
        if let InputItem::Record { value, .. } = item {
            let user = value["user"].as_str().unwrap().to_string();
            stored.push((user, value["seq"].as_u64().unwrap()));
        }
    }
    let _ = sub.ack.send(Ok(SubmitAck {
        events: sub.items.len(),
        ..Default::default()
    }));
}

fn start_consumer(
    config: &KafkaBusConfig,
    pipeline: BusSender,
) -> (
    watch::Sender<bool>,
    tokio::task::JoinHandle<perimeter_ingest::kafka::ConsumedTotals>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let consumer = KafkaBusConsumer::new(config).unwrap();
    let task = tokio::spawn(async move { consumer.run(pipeline, stop_rx).await.unwrap() });
    (stop_tx, task)
}

async fn wait_for(stored: &Stored, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while stored.lock().unwrap().len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} records reached the pipeline",
            stored.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_cross_the_broker_in_entity_order_and_commits_follow_storage() {
    let broker = KafkaBroker::start();
    let config = config(&broker, "order");
    ensure_topic(&config).await.unwrap();
    // Creating it again is no error.
    ensure_topic(&config).await.unwrap();
    let sources = start_producer(&config);
    for batch in 0..3 {
        let ack = sources
            .submit("okta", "acme", records(batch * 100, 100))
            .await
            .unwrap();
        assert_eq!(ack.queued, 100, "acknowledged once all are on the broker");
        assert_eq!(ack.events, 0, "nothing is stored by the ingest side");
    }

    let stored: Stored = Arc::default();
    let (pipeline, rx) = bus::channel(4);
    // The first two batches meet a full disk: retried, not committed, nothing lost.
    worker(rx, 2, stored.clone());
    let (stop, member) = start_consumer(&config, pipeline);
    wait_for(&stored, 300, Duration::from_secs(60)).await;
    {
        let stored = stored.lock().unwrap();
        let mut seqs: Vec<u64> = stored.iter().map(|(_, s)| *s).collect();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs, (0..300).collect::<Vec<_>>(), "every record, once");
        assert_eq!(
            stored.len(),
            300,
            "refused batches are retried, not doubled"
        );
        // One entity's records stay in order (one partition, read in order).
        for user in 0..7 {
            let name = format!("user{user}");
            let mine: Vec<u64> = stored
                .iter()
                .filter(|(u, _)| *u == name)
                .map(|(_, s)| *s)
                .collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "{name}: {mine:?}");
        }
    }
    stop.send(true).unwrap();
    let totals = member.await.unwrap();
    assert_eq!(totals.messages, 300);

    // A new member of the group starts after the last commit: only new records reach it.
    only_new_records_reach_a_new_member(&config, &sources, 300, 10).await;
}

/// A new member of the group, started now, gets `records(from, n)` submitted after it and
/// nothing before them: everything before was committed.
async fn only_new_records_reach_a_new_member(
    config: &KafkaBusConfig,
    sources: &BusSender,
    from: u64,
    n: u64,
) {
    let again: Stored = Arc::default();
    let (pipeline, rx) = bus::channel(4);
    worker(rx, 0, again.clone());
    let (stop, member) = start_consumer(config, pipeline);
    sources
        .submit("okta", "acme", records(from, n))
        .await
        .unwrap();
    wait_for(&again, n as usize, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sorted_seqs(&again), (from..from + n).collect::<Vec<_>>());
    stop.send(true).unwrap();
    member.await.unwrap();
}

/// The next batch is read and put on the bus while the one before is still being stored (so
/// detection of one overlaps the store commit of the other), and the offsets of both are
/// committed once both are stored: a member that comes after reads none of them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_batch_is_on_the_bus_while_one_is_stored_and_both_are_committed() {
    let (_broker, mut config, sources) = topic_with_records("ahead", 100).await;
    config.batch_records = 20;

    // A store that answers its first batch only once the second is on the bus: a member that
    // waited for each batch's answer before reading the next would never send the second.
    let (pipeline, mut rx) = bus::channel(4);
    let stored: Stored = Arc::default();
    let held = {
        let stored = stored.clone();
        tokio::spawn(async move {
            let first = rx.recv().await.unwrap();
            let second = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .expect("the second batch came while the first was unanswered")
                .unwrap();
            store(&stored, first);
            store(&stored, second);
            worker(rx, 0, stored);
        })
    };
    let (stop, member) = start_consumer(&config, pipeline);
    held.await.unwrap();
    wait_for(&stored, 100, Duration::from_secs(60)).await;
    stop.send(true).unwrap();
    let totals = member.await.unwrap();
    assert_eq!(totals.messages, 100);
    assert!(totals.batches >= 2, "{totals:?}");
    let seqs = sorted_seqs(&stored);
    assert_eq!(seqs, (0..100).collect::<Vec<_>>(), "every record, once");

    // Every batch was committed before the member stopped.
    only_new_records_reach_a_new_member(&config, &sources, 100, 5).await;
}

/// Partitions taken away while a batch of theirs is still being stored (the member reads on
/// meanwhile, so a rebalance can come then) are let go only once it is stored and committed:
/// the member that gets them does not read and store those records again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_waits_for_the_batch_being_stored_and_commits_it() {
    // Fewer than a batch: the first member reads them as one batch, then waits for more.
    let (_broker, config, sources) = topic_with_records("rebalance", 40).await;

    // The first member's store answers its first batch only 10 s after taking it: the second
    // member joins meanwhile (the group takes a few seconds to hand it partitions).
    let first: Stored = Arc::default();
    let (pipeline, mut rx) = bus::channel(4);
    let (took, took_it) = tokio::sync::oneshot::channel();
    {
        let first = first.clone();
        tokio::spawn(async move {
            let sub = rx.recv().await.unwrap();
            let _ = took.send(sub.items.len());
            tokio::time::sleep(Duration::from_secs(10)).await;
            store(&first, sub);
            worker(rx, 0, first);
        });
    }
    let (stop_first, first_member) = start_consumer(&config, pipeline);
    assert_eq!(took_it.await.unwrap(), 40);
    let second: Stored = Arc::default();
    let (pipeline, rx) = bus::channel(4);
    worker(rx, 0, second.clone());
    let (stop_second, second_member) = start_consumer(&config, pipeline);

    // Once the group has settled, new records go to whichever member owns their partition.
    wait_for(&first, 40, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    sources
        .submit("okta", "acme", records(40, 40))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (a, b) = (first.lock().unwrap().len(), second.lock().unwrap().len());
        if a + b >= 80 {
            break;
        }
        assert!(Instant::now() < deadline, "{a} + {b} of 80 records stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (a, b) = (sorted_seqs(&first), sorted_seqs(&second));
    assert!(!b.is_empty(), "the second member got partitions");
    let both: Vec<&u64> = a.iter().filter(|q| b.contains(q)).collect();
    assert!(both.is_empty(), "stored by both members: {both:?}");
    let mut all = [a, b].concat();
    all.sort_unstable();
    assert_eq!(all, (0..80).collect::<Vec<_>>(), "every record, once");
    stop_first.send(true).unwrap();
    stop_second.send(true).unwrap();
    first_member.await.unwrap();
    second_member.await.unwrap();
}

/// The users each pipeline stored records of.
fn users_of(stored: &Stored) -> HashSet<String> {
    stored
        .lock()
        .unwrap()
        .iter()
        .map(|(u, _)| u.clone())
        .collect()
}

/// A member of a group in a test: what its pipeline stored, its stop switch, its task.
type Member = (
    Stored,
    watch::Sender<bool>,
    tokio::task::JoinHandle<perimeter_ingest::kafka::ConsumedTotals>,
);

/// Submit rounds of records of 60 users (from `seq` on) until the number of users each member
/// stored in the last round is `settled`.
async fn users_per_member(
    sources: &BusSender,
    members: &[Member],
    seq: &mut u64,
    settled: impl Fn(&[usize]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for (stored, _, _) in members {
            stored.lock().unwrap().clear();
        }
        let round = records_of_users(*seq, 120, 60);
        sources.submit("okta", "acme", round).await.unwrap();
        *seq += 120;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let users: Vec<usize> = members.iter().map(|m| users_of(&m.0).len()).collect();
        if settled(&users) {
            return;
        }
        assert!(Instant::now() < deadline, "users per member: {users:?}");
    }
}

/// A member leaving moves only its own partitions: the members that stay keep theirs, so the
/// entities they detect on (and the correlation windows and baselines they hold for them) stay
/// with them. (With the `range` assignment a member leaving could move partitions between
/// the members that stay.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_leaving_moves_only_its_own_partitions() {
    let broker = KafkaBroker::start();
    let mut config = config(&broker, "sticky");
    config.partitions = 6;
    ensure_topic(&config).await.unwrap();
    let sources = start_producer(&config);
    let members: Vec<Member> = (0..3)
        .map(|_| {
            let stored: Stored = Arc::default();
            let (pipeline, rx) = bus::channel(4);
            worker(rx, 0, stored.clone());
            let (stop, task) = start_consumer(&config, pipeline);
            (stored, stop, task)
        })
        .collect();
    // Until each member holds partitions, records go to whoever holds them at the time.
    let mut seq = 0;
    users_per_member(&sources, &members, &mut seq, |users| {
        users.iter().sum::<usize>() == 60 && users.iter().all(|&n| n > 0)
    })
    .await;
    let before: Vec<HashSet<String>> = members.iter().map(|m| users_of(&m.0)).collect();

    // The third member leaves; its partitions go to the other two.
    let mut members = members;
    let (_, stop, task) = members.pop().unwrap();
    stop.send(true).unwrap();
    task.await.unwrap();
    users_per_member(&sources, &members, &mut seq, |users| {
        users.iter().sum::<usize>() == 60
    })
    .await;
    for (i, (stored, _, _)) in members.iter().enumerate() {
        let after = users_of(stored);
        let moved: Vec<&String> = before[i].difference(&after).collect();
        assert!(moved.is_empty(), "member {i} lost users it held: {moved:?}");
        assert!(after.len() > before[i].len(), "member {i} took over none");
    }
    for (_, stop, task) in members {
        stop.send(true).unwrap();
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_stopped_before_storing_leaves_its_records_to_the_next() {
    let (_broker, config, _sources) = topic_with_records("handover", 50).await;

    // The first member's pipeline takes the batch and never stores it.
    let (pipeline, mut rx) = bus::channel(4);
    let taken = tokio::spawn(async move {
        let sub = rx.recv().await.unwrap();
        let n = sub.items.len();
        // Hold the batch (and the bus) until the test ends: never acknowledged.
        std::mem::forget(sub);
        std::mem::forget(rx);
        n
    });
    let (_stop, member) = start_consumer(&config, pipeline);
    assert!(taken.await.unwrap() > 0);
    // It dies waiting for the store (its task is dropped, as a crash drops it): no commit.
    member.abort();
    let _ = member.await;

    let stored: Stored = Arc::default();
    let (pipeline, rx) = bus::channel(4);
    worker(rx, 0, stored.clone());
    let (stop, member) = start_consumer(&config, pipeline);
    wait_for(&stored, 50, Duration::from_secs(60)).await;
    let seqs = sorted_seqs(&stored);
    assert_eq!(seqs, (0..50).collect::<Vec<_>>());
    stop.send(true).unwrap();
    member.await.unwrap();
}

/// A payload key file of `byte` repeated (a test key).
fn payload_key(dir: &std::path::Path, byte: u8) -> std::path::PathBuf {
    let path = dir.join(format!("{byte:02x}.key"));
    std::fs::write(&path, hex::encode([byte; 32])).unwrap();
    path
}

/// Every message on `topic`'s partitions, read as they are on the broker (not as a member).
fn raw_messages(config: &KafkaBusConfig, partitions: i32, n: usize) -> Vec<Vec<u8>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let reader: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", "raw-reader")
        .create()
        .unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(&config.topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    reader.assign(&list).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut payloads = Vec::new();
    while payloads.len() < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} messages read",
            payloads.len()
        );
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(200)) {
            payloads.push(m.payload().unwrap_or_default().to_vec());
        }
    }
    payloads
}

/// With `payload_keys`, the records on the topic are sealed: what the broker holds shows none
/// of them, members holding the key read them as before, and a member without it stops at the
/// first sealed message, commits nothing past it, and says which key it lacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_records_are_unreadable_on_the_broker_and_a_member_without_the_key_stops() {
    let broker = KafkaBroker::start();
    let keys = tempfile::tempdir().unwrap();
    let mut config = config(&broker, "sealed");
    config.payload_keys = vec![payload_key(keys.path(), 0xa1)];
    ensure_topic(&config).await.unwrap();
    let sources = start_producer(&config);
    let secret_records: Vec<InputItem> = (0..50)
        .map(|i| InputItem::Record {
            line: i,
            value: sonic_rs::json!({"user": format!("user{}", i % 7), "seq": i, "password": "Hunter2-Horse"}),
            member_lines: Vec::new(),
        })
        .collect();
    sources
        .submit("okta", "acme", secret_records)
        .await
        .unwrap();

    for payload in raw_messages(&config, config.partitions, 50) {
        for clear in ["Hunter2-Horse", "user", "acme", "okta"] {
            assert!(
                !payload.windows(clear.len()).any(|w| w == clear.as_bytes()),
                "{clear} in clear on the broker"
            );
        }
    }

    // A member with another key: it stops, having handed nothing on and committed nothing.
    let mut stranger = config.clone();
    stranger.payload_keys = vec![payload_key(keys.path(), 0xb2)];
    let nothing: Stored = Arc::default();
    let (pipeline, rx) = bus::channel(4);
    worker(rx, 0, nothing.clone());
    let consumer = KafkaBusConsumer::new(&stranger).unwrap();
    let (_stop, stop_rx) = watch::channel(false);
    let err = tokio::time::timeout(Duration::from_secs(60), consumer.run(pipeline, stop_rx))
        .await
        .expect("stops")
        .expect_err("a key missing is an error");
    let key_id = {
        use sha2::Digest;
        hex::encode(&sha2::Sha256::digest([0xa1; 32])[..4])
    };
    assert!(
        err.to_string()
            .contains(&format!("sealed with payload key {key_id}")),
        "{err}"
    );
    assert!(nothing.lock().unwrap().is_empty());

    // A member with the key (the current one listed second, as during a rotation) reads them.
    let mut rotating = config.clone();
    rotating.payload_keys = vec![
        payload_key(keys.path(), 0xc3),
        payload_key(keys.path(), 0xa1),
    ];
    let stored: Stored = Arc::default();
    let (pipeline, rx) = bus::channel(4);
    worker(rx, 0, stored.clone());
    let (stop, member) = start_consumer(&rotating, pipeline);
    wait_for(&stored, 50, Duration::from_secs(60)).await;
    assert_eq!(sorted_seqs(&stored), (0..50).collect::<Vec<_>>());
    stop.send(true).unwrap();
    member.await.unwrap();
}

#[tokio::test]
async fn a_broker_that_is_not_there_refuses_the_batch_with_why() {
    // Nothing listens on port 1 of loopback: the batch is refused, the source keeps it.
    let mut config = KafkaBusConfig::new("127.0.0.1:1");
    config
        .properties
        .insert("message.timeout.ms".into(), "1500".into());
    let sources = start_producer(&config);
    let err = sources
        .submit("okta", "acme", records(0, 3))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("delivering a record"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_foreign_messages_reach_the_pipeline_as_bad_lines_and_reading_goes_on() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let broker = KafkaBroker::start();
    let config = config(&broker, "bad");
    ensure_topic(&config).await.unwrap();
    let sources = start_producer(&config);
    // Just under librdkafka's 1,000,000-byte limit as a value, over it with key and framing.
    let edge = InputItem::Record {
        line: 1,
        value: sonic_rs::json!({"user": "user1", "seq": 0, "blob": "x".repeat(999_850)}),
        member_lines: Vec::new(),
    };
    let ack = sources
        .submit("okta", "acme", vec![edge])
        .await
        .expect("taken as a dead letter, not refused at every retry");
    assert_eq!(ack.queued, 1);
    // Another writer's message, and one naming a tenant the store would refuse.
    let raw: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .create()
        .unwrap();
    for payload in [
        "not json".to_string(),
        r#"{"v":1,"source":"okta","tenant":"","line":1,"record":{"user":"x","seq":1}}"#.into(),
    ] {
        raw.send(
            FutureRecord::<(), _>::to(&config.topic).payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }
    sources.submit("okta", "acme", records(2, 1)).await.unwrap();

    let (pipeline, mut rx) = bus::channel(4);
    let (stop, member) = {
        let (stop_tx, stop_rx) = watch::channel(false);
        let consumer = KafkaBusConsumer::new(&config).unwrap().with_tenant("acme");
        let task = tokio::spawn(async move { consumer.run(pipeline, stop_rx).await.unwrap() });
        (stop_tx, task)
    };
    let mut bad = Vec::new();
    let mut good = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while bad.len() + good.len() < 4 {
        let sub = tokio::time::timeout_at(deadline.into(), rx.recv())
            .await
            .expect("every message reaches the pipeline")
            .unwrap();
        assert_eq!(sub.tenant, "acme", "{:?}", sub.items);
        for item in &sub.items {
            match item {
                InputItem::Invalid { reason, .. } => bad.push((sub.source.clone(), reason.clone())),
                InputItem::Record { .. } => good.push(sub.source.clone()),
            }
        }
        let _ = sub.ack.send(Ok(SubmitAck::default()));
    }
    bad.sort();
    assert_eq!(good, ["okta"], "the record after them is read too");
    assert_eq!(bad.len(), 3, "{bad:?}");
    assert!(
        bad.iter()
            .any(|(s, r)| s == "okta" && r.contains("over the")),
        "{bad:?}"
    );
    assert!(
        bad.iter()
            .any(|(s, r)| s == "kafka" && r.contains("not JSON")),
        "{bad:?}"
    );
    assert!(
        bad.iter()
            .any(|(s, r)| s == "kafka" && r.contains("its tenant is no tenant name")),
        "{bad:?}"
    );
    stop.send(true).unwrap();
    member.await.unwrap();
}
