//! The Kafka bus (ADR 019): the scaled-out form of [`crate::bus`]. Ingest instances hand their
//! batches to a topic ([`KafkaBusProducer`]); detector instances read it in one consumer group
//! ([`KafkaBusConsumer`]) and feed the same pipeline worker the embedded bus feeds. The contract
//! stays the one of the embedded bus, stretched over the broker:
//!
//! - a source's batch is acknowledged once the broker has every item (`acks=all`, idempotent
//!   producer): the source may then forget it;
//! - a detector commits a message's offset only after the batch it was in is stored: killed
//!   before that, its partitions are read again from the last commit, by it or by another
//!   instance, and the store's idempotence on event ids drops the repeats.
//!
//! Messages are keyed by tenant and entity (the user, else the source IP, as the binary's
//! [`PartitionKey`] reads them), so one entity's records land on one partition, hence on one
//! detector instance, in order: the behavioural and correlation state of an entity stays in
//! one place.
//!
//! Records travel in clear, as on the embedded bus: masking happens in the detector, which
//! must see clear values. The topic is to be protected like the SaaS APIs' credentials
//! (TLS/SASL through [`KafkaBusConfig::properties`], ACLs, a short retention).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::bus::{BusReceiver, BusSender, Submission, SubmitAck};
use crate::jsonl::{input_digest, InputItem};
use crate::kafka_seal::{OpenError, Opener, Sealer, SEAL_OVERHEAD};
use perimeter_model::Metrics;

/// `[kafka]` of the configuration: where the bus is and how it is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaBusConfig {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The topic input records travel on; created with [`Self::partitions`] partitions when
    /// missing.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// The consumer group the detector instances share.
    #[serde(default = "default_group")]
    pub group: String,
    /// Partitions of a topic this service creates: the most detector instances that can share
    /// the work. An existing topic is used as it is.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replicas of a topic this service creates (3 on a production cluster).
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
    /// Most records a detector takes into one batch (one store commit, one offset commit).
    #[serde(default = "default_batch_records")]
    pub batch_records: usize,
    /// How long a detector waits for more records before it processes what it has.
    #[serde(default = "default_batch_linger_ms")]
    pub batch_linger_ms: u64,
    /// Whether this instance is a detector: a member of `group` that reads, detects and stores
    /// its share of the topic. `false` makes an ingest-only instance (an edge that takes
    /// webhooks and files, puts them on the topic and stores nothing).
    #[serde(default = "default_consume")]
    pub consume: bool,
    /// More librdkafka properties for both clients (`security.protocol`, `sasl.*`, `ssl.*`,
    /// `session.timeout.ms`, ...); they override this module's defaults.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Files of the keys the records are sealed with on the topic (AES-256-GCM; 32 bytes as 64
    /// hex digits, e.g. `openssl rand -hex 32`), so the brokers never hold them in clear: the
    /// first seals what this instance produces, each opens what it reads (to rotate, list the
    /// new key second on every instance, then first). Empty: records travel in clear, and the
    /// topic must be protected otherwise. A detector that reads a record sealed with a key it
    /// does not hold stops reading (nothing after it is committed) until it is given the key.
    #[serde(default)]
    pub payload_keys: Vec<std::path::PathBuf>,
    /// Take sealed messages only: one in clear is a dead letter instead of a record. Then only
    /// a holder of a payload key can put records before the detectors (by default a member with
    /// keys still reads clear messages, so instances can be given keys one by one).
    #[serde(default)]
    pub require_sealed: bool,
}

fn default_topic() -> String {
    "perimeter.records".into()
}
fn default_group() -> String {
    "perimeter-detect".into()
}
fn default_partitions() -> i32 {
    12
}
fn default_replication() -> i32 {
    1
}
/// Measured with `service_ingest` on the Kafka bus: a member reads nothing while its batch is
/// stored, so small batches leave it idle between them (1,000: 14k events/s stored; 5,000: 24k;
/// 10,000 and 20,000: 26-27k). 10,000 records take a few tenths of a second to store.
fn default_batch_records() -> usize {
    10_000
}
fn default_batch_linger_ms() -> u64 {
    200
}
fn default_consume() -> bool {
    true
}

impl KafkaBusConfig {
    /// A configuration with the defaults, for `brokers`.
    pub fn new(brokers: impl Into<String>) -> KafkaBusConfig {
        KafkaBusConfig {
            brokers: brokers.into(),
            topic: default_topic(),
            group: default_group(),
            partitions: default_partitions(),
            replication_factor: default_replication(),
            batch_records: default_batch_records(),
            batch_linger_ms: default_batch_linger_ms(),
            consume: default_consume(),
            properties: BTreeMap::new(),
            payload_keys: Vec::new(),
            require_sealed: false,
        }
    }

    /// What a configuration check reports: settings that cannot work.
    pub fn validate(&self) -> Result<(), KafkaBusError> {
        let bad = |what: &str| Err(KafkaBusError::Config(what.to_string()));
        if self.brokers.split(',').all(|b| b.trim().is_empty()) {
            return bad("brokers names no broker (`host:port[,host:port...]`)");
        }
        self.max_message_bytes()?;
        if self.topic.trim().is_empty() || self.group.trim().is_empty() {
            return bad("topic and group must not be empty");
        }
        if self.partitions < 1 || self.replication_factor < 1 {
            return bad("partitions and replication_factor must be at least 1");
        }
        if self.batch_records == 0 {
            return bad("batch_records must be at least 1");
        }
        if let Some((key, why)) = RELIED_ON
            .iter()
            .find(|(key, _)| self.properties.contains_key(*key))
        {
            return Err(KafkaBusError::Config(format!(
                "[kafka.properties] may not set `{key}`: {why}"
            )));
        }
        Opener::new(&self.payload_keys).map_err(KafkaBusError::Config)?;
        if self.require_sealed && self.payload_keys.is_empty() {
            return bad("require_sealed needs payload_keys (the keys sealed messages open with)");
        }
        Ok(())
    }

    /// `message.max.bytes` of `properties`, else Kafka's default. Below [`MIN_MESSAGE_BYTES`]
    /// even a dead letter standing in for a large record (its reason and excerpt, escaped) may
    /// not fit: refused.
    fn max_message_bytes(&self) -> Result<usize, KafkaBusError> {
        let Some(max) = self.properties.get("message.max.bytes") else {
            return Ok(DEFAULT_MAX_MESSAGE_BYTES);
        };
        max.parse::<usize>()
            .ok()
            .filter(|m| *m >= MIN_MESSAGE_BYTES)
            .ok_or_else(|| {
                KafkaBusError::Config(format!(
                    "message.max.bytes = {max:?}: at least {MIN_MESSAGE_BYTES} (Kafka's default is 1000000)"
                ))
            })
    }

    /// The producer's configuration, the settings Perimeter relies on first.
    fn producer_client_config(&self) -> ClientConfig {
        // Sealed messages do not compress: lz4 would only cost CPU. (Compressing before
        // sealing would let the sizes on the broker tell about a record's content.)
        let compression = if self.payload_keys.is_empty() {
            "lz4"
        } else {
            "none"
        };
        self.client_config(
            Role::Producer,
            &[
                // Acknowledged means on every in-sync replica, written once, in order.
                ("acks", "all"),
                ("enable.idempotence", "true"),
                ("compression.type", compression),
                ("linger.ms", "5"),
                ("message.timeout.ms", "60000"),
            ],
        )
    }

    /// The consumer's configuration, the settings Perimeter relies on first.
    fn consumer_client_config(&self) -> ClientConfig {
        self.client_config(
            Role::Consumer,
            &[
                ("group.id", self.group.as_str()),
                // Offsets are committed by hand, after the batch is stored.
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
                // A member joining or leaving moves only the partitions it must: the others
                // keep theirs, and with them their entities' detection state (which does not
                // move with a partition). `range` could move partitions between the members
                // that stay, and stopped every member while the group changed.
                ("partition.assignment.strategy", "cooperative-sticky"),
            ],
        )
    }

    /// A client's configuration: `defaults`, then the `properties` that apply to `role` (a
    /// property of the other role would only be warned about at every start).
    fn client_config(&self, role: Role, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (k, v) in defaults {
            config.set(*k, *v);
        }
        for (k, v) in &self.properties {
            let consumer_only = CONSUMER_ONLY.contains(&k.as_str());
            let producer_only = PRODUCER_ONLY.contains(&k.as_str());
            let applies = match role {
                Role::Consumer => !producer_only,
                Role::Producer => !consumer_only,
                Role::Admin => !consumer_only && !producer_only,
            };
            if applies {
                config.set(k, v);
            }
        }
        config
    }
}

/// librdkafka properties Perimeter sets itself because its guarantees rest on them, with why:
/// set in `[kafka.properties]` they would win (QA: with automatic commits, `kill -9` lost
/// 10,000 of 60,000 acknowledged records, and the check said ok).
const RELIED_ON: &[(&str, &str)] = &[
    ("enable.auto.commit", "offsets are committed by Perimeter, only once a batch is stored"),
    ("enable.auto.offset.store", "offsets are committed by Perimeter, only once a batch is stored"),
    ("auto.offset.reset", "a new group reads the topic from its start (`earliest`), so no acknowledged record is skipped"),
    ("acks", "a record is acknowledged to its sender once every in-sync replica has it (`all`)"),
    ("request.required.acks", "a record is acknowledged to its sender once every in-sync replica has it (`all`)"),
    ("enable.idempotence", "a record retried after a broker error is written once, in order"),
    ("group.id", "set `group` in [kafka]"),
    ("bootstrap.servers", "set `brokers` in [kafka]"),
];

/// Which client a configuration is for.
#[derive(Clone, Copy)]
enum Role {
    Producer,
    Consumer,
    Admin,
}

/// librdkafka properties only a consumer reads.
const CONSUMER_ONLY: &[&str] = &[
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "auto.offset.reset",
    "enable.auto.commit",
    "auto.commit.interval.ms",
    "enable.auto.offset.store",
    "partition.assignment.strategy",
    "group.instance.id",
    "group.protocol",
    "group.protocol.type",
    "coordinator.query.interval.ms",
    "fetch.min.bytes",
    "fetch.max.bytes",
    "fetch.wait.max.ms",
    "fetch.error.backoff.ms",
    "fetch.queue.backoff.ms",
    "max.partition.fetch.bytes",
    "fetch.message.max.bytes",
    "queued.min.messages",
    "queued.max.messages.kbytes",
    "isolation.level",
    "check.crcs",
    "enable.partition.eof",
];

/// librdkafka properties only a producer reads.
const PRODUCER_ONLY: &[&str] = &[
    "acks",
    "request.required.acks",
    "request.timeout.ms",
    "linger.ms",
    "queue.buffering.max.ms",
    "queue.buffering.max.messages",
    "queue.buffering.max.kbytes",
    "batch.num.messages",
    "batch.size",
    "compression.type",
    "compression.codec",
    "compression.level",
    "enable.idempotence",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "message.send.max.retries",
    "retries",
    "retry.backoff.ms",
    "partitioner",
    "sticky.partitioning.linger.ms",
    "transactional.id",
    "transaction.timeout.ms",
    "enable.gapless.guarantee",
    "max.in.flight.requests.per.connection",
    "max.in.flight",
];

#[derive(Debug, thiserror::Error)]
pub enum KafkaBusError {
    #[error("[kafka] {0}")]
    Config(String),
    // Not a `source` field: its text is in this message already, and a chain printer would
    // repeat it.
    #[error("kafka: {what}: {reason}")]
    Kafka { what: String, reason: KafkaError },
}

fn kafka(what: &str) -> impl FnOnce(KafkaError) -> KafkaBusError + '_ {
    move |reason| KafkaBusError::Kafka {
        what: what.to_string(),
        reason: without_property_value(reason),
    }
}

/// `error` without the value of the property librdkafka refused: a misspelt `sasl.passwd`, or
/// `sasl.jaas.config` (a Java client's, holding the password), was printed whole in the log and
/// by `run --check` (QA).
fn without_property_value(error: KafkaError) -> KafkaError {
    match error {
        KafkaError::ClientConfig(res, desc, key, value) => {
            let hidden = "(value not shown)";
            let desc = if value.is_empty() {
                desc
            } else {
                replace_word(&desc, &value, hidden)
            };
            KafkaError::ClientConfig(res, desc, key, hidden.to_string())
        }
        other => other,
    }
}

/// `text` with each occurrence of `word` that stands as a word of its own (no letter or digit
/// right before or after it) replaced: `zstd` in `libzstd not available` is no value (QA: the
/// reason became `lib(value not shown) not available`).
fn replace_word(text: &str, word: &str, by: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + word.len()..].chars().next();
        let glued = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
        out.push_str(&rest[..at]);
        out.push_str(if glued(before) || glued(after) {
            word
        } else {
            by
        });
        rest = &rest[at + word.len()..];
    }
    out.push_str(rest);
    out
}

/// The partition key of an item: `(source, tenant, item)` to the message key. The binary reads
/// the entity with the normalizers (which this crate cannot see); [`tenant_key`] is the
/// fallback.
pub type PartitionKey = Arc<dyn Fn(&str, &str, &InputItem) -> Vec<u8> + Send + Sync>;

/// A key naming the tenant only (items with no entity: bad lines, unknown shapes).
pub fn tenant_key(tenant: &str) -> Vec<u8> {
    tenant.as_bytes().to_vec()
}

/// The [`PartitionKey`] of tenant and entity, `entity_of(source, record)` naming the entity:
/// hashed (the key shows in every broker tool; who the records are about is none of their
/// business). With `hash_key` (derived from the deployment's shared masking key) the hash is
/// keyed, so a reader of the topic cannot test guesses (`alice@acme.test`) against it; every
/// producer of one topic must use the same key, or one entity lands on several partitions.
/// Items without an entity (bad lines, records that name no one) are keyed by tenant.
pub fn entity_partition_key(
    hash_key: Option<[u8; 32]>,
    entity_of: impl Fn(&str, &perimeter_model::RawJson) -> Option<String> + Send + Sync + 'static,
) -> PartitionKey {
    Arc::new(move |source, tenant, item| {
        let entity = match item {
            InputItem::Record { value, .. } => entity_of(source, value),
            InputItem::Invalid { .. } => None,
        };
        match entity {
            Some(e) => {
                let mut hasher = perimeter_model::hasher_with(hash_key.as_ref());
                hasher.update(tenant.as_bytes());
                hasher.update(&[0]);
                hasher.update(e.as_bytes());
                hasher.finalize().as_bytes()[..16].to_vec()
            }
            None => tenant_key(tenant),
        }
    })
}

/// One input item on the wire: the batch's source, tenant and origin with it, so a detector can
/// rebuild batches from any mix of messages. Borrowed when written (a record is serialized
/// from the submission, not copied first), owned when read.
#[derive(Serialize, Deserialize)]
struct BusMessage<'a> {
    /// Format version, for readers of a later release.
    v: u32,
    source: Cow<'a, str>,
    tenant: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    origin: Option<Cow<'a, str>>,
    line: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    record: Option<Cow<'a, perimeter_model::RawJson>>,
    #[serde(default, skip_serializing_if = "<[_]>::is_empty")]
    member_lines: Cow<'a, [(String, Vec<u64>)]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    invalid: Option<InvalidLine<'a>>,
}

#[derive(Serialize, Deserialize)]
struct InvalidLine<'a> {
    reason: Cow<'a, str>,
    excerpt: Cow<'a, str>,
    digest: Cow<'a, str>,
}

const FORMAT: u32 = 1;

/// The excerpt a dead letter of the bus keeps of what it stands for.
const EXCERPT_BYTES: usize = 512;

/// The smallest `message.max.bytes` this bus takes (see [`KafkaBusConfig::validate`]).
const MIN_MESSAGE_BYTES: usize = 16_384;

/// librdkafka's and the broker's default `message.max.bytes`.
const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;

/// `payload` when the bus takes a message of its size; else the item as a bad line saying so
/// (a dead letter with its reason, not a batch the broker refuses at every retry).
fn within_limit(sub: &Submission, item: &InputItem, payload: Vec<u8>, max: usize) -> Vec<u8> {
    if payload.len() <= max {
        return payload;
    }
    oversized(
        sub,
        item,
        payload.len(),
        &format!("the Kafka bus's message limit ({max} bytes for the record, `message.max.bytes` in [kafka.properties])"),
    )
}

/// The message standing in for `item` (of `size` bytes as a message) when it is over `limit`:
/// a bad line with its reason and excerpt.
fn oversized(sub: &Submission, item: &InputItem, size: usize, limit: &str) -> Vec<u8> {
    let (line, text) = match item {
        InputItem::Record { line, value, .. } => {
            (*line, sonic_rs::to_vec(value).unwrap_or_default())
        }
        InputItem::Invalid { line, excerpt, .. } => (*line, excerpt.clone().into_bytes()),
    };
    let bad = InputItem::Invalid {
        line,
        reason: format!("record of {size} bytes is over {limit}"),
        excerpt: crate::jsonl::excerpt(&text, EXCERPT_BYTES),
        digest: input_digest(&text),
    };
    encode(sub, &bad)
}

/// What librdkafka counts against `message.max.bytes` beside the key and value: the record's
/// and its batch's framing (headers, lengths, CRC), with room to spare.
const MESSAGE_OVERHEAD: usize = 512;

fn encode(sub: &Submission, item: &InputItem) -> Vec<u8> {
    let (line, record, member_lines, invalid) = match item {
        InputItem::Record {
            line,
            value,
            member_lines,
        } => (*line, Some(Cow::Borrowed(value)), &member_lines[..], None),
        InputItem::Invalid {
            line,
            reason,
            excerpt,
            digest,
        } => (
            *line,
            None,
            &[][..],
            Some(InvalidLine {
                reason: Cow::Borrowed(reason),
                excerpt: Cow::Borrowed(excerpt),
                digest: Cow::Borrowed(digest),
            }),
        ),
    };
    let message = BusMessage {
        v: FORMAT,
        source: Cow::Borrowed(&sub.source),
        tenant: Cow::Borrowed(&sub.tenant),
        origin: sub.origin.as_deref().map(Cow::Borrowed),
        line,
        record,
        member_lines: Cow::Borrowed(member_lines),
        invalid,
    };
    sonic_rs::to_vec(&message).expect("a bus message serializes")
}

/// A message read back: its batch keys and item. A message that is not one (another writer on
/// the topic, a later format) becomes a bad line of source `kafka`, so it is a dead letter
/// with its reason instead of vanishing. A sealed message is opened first; one sealed with a
/// key `opener` does not hold is no bad message but a key missing here: `Err`.
fn decode(
    payload: Option<&[u8]>,
    partition: i32,
    offset: i64,
    own_tenant: &str,
    opener: &Opener,
) -> Result<(BatchKey, InputItem), UnopenedMessage> {
    let sealed = payload.unwrap_or_default();
    let opened;
    let bytes = if Opener::is_sealed(sealed) {
        match opener.open(sealed) {
            Ok(clear) => {
                opened = clear;
                &opened[..]
            }
            Err(OpenError::UnknownKey(key_id)) => {
                return Err(UnopenedMessage {
                    key_id,
                    partition,
                    offset,
                })
            }
            Err(OpenError::Forged) => {
                let why = "sealed, but it does not open with its key (corrupted or forged)";
                return Ok(not_a_message(partition, offset, own_tenant, why, sealed));
            }
        }
    } else if opener.requires_seal() {
        let why = "in clear, and this member takes sealed messages only (`require_sealed`)";
        return Ok(not_a_message(partition, offset, own_tenant, why, sealed));
    } else {
        sealed
    };
    // Why a message is not one, in words of this module only: a parser's message quotes the
    // bytes around the error, which may hold a secret (the excerpt is masked, the reason not).
    let parsed = sonic_rs::from_slice::<BusMessage>(bytes)
        .map_err(|e| {
            if e.is_syntax() || e.is_eof() {
                format!("not JSON (byte {})", e.offset())
            } else {
                "JSON, but not of the bus format".to_string()
            }
        })
        .and_then(|m| {
            if m.v != FORMAT {
                Err(format!(
                    "message format {} (this release reads {FORMAT})",
                    m.v
                ))
            } else if !perimeter_model::is_valid_label(&m.tenant) {
                // A tenant is a directory and a token's scope: one the API could never issue
                // would be refused by the store at every retry, or make a tenant of its own.
                Err("its tenant is no tenant name (1-128 characters from [A-Za-z0-9-_.@])".into())
            } else if !perimeter_model::is_source_name(&m.source) {
                Err("its source is no source name (1-64 characters from [a-z0-9_])".into())
            } else {
                Ok(m)
            }
        });
    let message = match parsed {
        Ok(m) => m,
        Err(why) => return Ok(not_a_message(partition, offset, own_tenant, &why, bytes)),
    };
    let key = BatchKey {
        source: message.source.into_owned(),
        tenant: message.tenant.into_owned(),
        origin: message.origin.map(Cow::into_owned),
    };
    let item = match (message.record, message.invalid) {
        (Some(value), _) => InputItem::Record {
            line: message.line,
            value: value.into_owned(),
            member_lines: message.member_lines.into_owned(),
        },
        (None, Some(bad)) => InputItem::Invalid {
            line: message.line,
            reason: bad.reason.into_owned(),
            excerpt: bad.excerpt.into_owned(),
            digest: bad.digest.into_owned(),
        },
        (None, None) => InputItem::Invalid {
            line: message.line,
            reason: "bus message without a record".into(),
            excerpt: crate::jsonl::excerpt(bytes, EXCERPT_BYTES),
            digest: input_digest(bytes),
        },
    };
    Ok((key, item))
}

/// A message that is none of this bus's, as a bad line of source `kafka` filed under
/// `own_tenant`.
fn not_a_message(
    partition: i32,
    offset: i64,
    own_tenant: &str,
    why: &str,
    bytes: &[u8],
) -> (BatchKey, InputItem) {
    let key = BatchKey {
        source: "kafka".into(),
        tenant: own_tenant.to_string(),
        origin: Some(format!("partition {partition} offset {offset}")),
    };
    let item = InputItem::Invalid {
        line: 0,
        reason: format!("not a Perimeter bus message: {why}"),
        excerpt: crate::jsonl::excerpt(bytes, EXCERPT_BYTES),
        digest: input_digest(bytes),
    };
    (key, item)
}

/// A message sealed with a key this member does not hold (hex id), and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UnopenedMessage {
    key_id: String,
    partition: i32,
    offset: i64,
}

/// Creates the topic when it is missing.
pub async fn ensure_topic(config: &KafkaBusConfig) -> Result<(), KafkaBusError> {
    let admin: AdminClient<DefaultClientContext> = config
        .client_config(Role::Admin, &[])
        .create()
        .map_err(kafka("creating the admin client"))?;
    let topic = NewTopic::new(
        &config.topic,
        config.partitions,
        TopicReplication::Fixed(config.replication_factor),
    );
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics([&topic], &options)
        .await
        .map_err(kafka("creating the topic"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(KafkaBusError::Kafka {
                    what: format!("creating topic {name}"),
                    reason: KafkaError::AdminOp(code),
                })
            }
        }
    }
    Ok(())
}

/// What is wrong but works with the payload key files: one readable by other users of the
/// machine (anyone who can read it can read the topic), with how to fix it.
pub fn payload_key_warnings(config: &KafkaBusConfig) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    config
        .payload_keys
        .iter()
        .filter_map(|path| {
            let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
            (mode & 0o077 != 0).then(|| {
                format!(
                    "payload key {} is readable by other users (mode {mode:o}): `chmod 600` it",
                    path.display()
                )
            })
        })
        .collect()
}

/// How long [`probe`] waits for a broker to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What `run --check` says of the bus: whether the brokers answer within 10 s, and the topic's
/// partitions (or that it is created at the start). Opens no group membership.
pub fn probe(config: &KafkaBusConfig) -> Result<String, KafkaBusError> {
    let timeout = PROBE_TIMEOUT;
    config.validate()?;
    // The producer's and the consumer's properties as `run` sets them (the admin client below
    // reads neither kind): a value librdkafka refuses, or one that clashes with what Perimeter
    // sets (`acks = 0` against idempotence), passed the check and stopped `run`. Made without
    // brokers, the clients connect to nothing (a client made and dropped at once was a TLS
    // handshake cut short at the broker).
    config
        .producer_client_config()
        .remove("bootstrap.servers")
        .set_log_level(rdkafka::config::RDKafkaLogLevel::Error)
        .create::<rdkafka::producer::BaseProducer>()
        .map_err(kafka("the producer's properties"))?;
    config
        .consumer_client_config()
        .remove("bootstrap.servers")
        .set_log_level(rdkafka::config::RDKafkaLogLevel::Error)
        .create::<rdkafka::consumer::BaseConsumer>()
        .map_err(kafka("the consumer's properties"))?;
    let client: rdkafka::consumer::BaseConsumer<LastClientError> = config
        .client_config(Role::Admin, &[])
        // librdkafka logs at the `log` crate's level, which nothing here raises from off.
        .set_log_level(rdkafka::config::RDKafkaLogLevel::Error)
        .create_with_context(LastClientError::default())
        .map_err(kafka("creating a client"))?;
    let metadata = client
        .fetch_metadata(Some(&config.topic), timeout)
        .map_err(|e| {
            // The client's logs and errors reach its context when it is polled, one per poll.
            let until = std::time::Instant::now() + Duration::from_millis(100);
            while std::time::Instant::now() < until {
                let _ = client.poll(Duration::from_millis(10));
            }
            KafkaBusError::Kafka {
                what: format!(
                    "no broker at {} answered within {} s{}",
                    config.brokers,
                    timeout.as_secs(),
                    client
                        .context()
                        .last()
                        .map(|cause| format!(" ({cause})"))
                        .unwrap_or_default()
                ),
                reason: e,
            }
        })?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == config.topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .filter(|n| *n > 0);
    // Which key seals (its id, as a reader without it names it), or that records go in clear.
    let sealing = match config.payload_keys.first() {
        Some(path) => {
            let (id, _) = crate::kafka_seal::read_key(path).map_err(KafkaBusError::Config)?;
            format!("; records sealed with payload key {}", hex::encode(id))
        }
        None => "; records in clear on the topic (no payload_keys)".to_string(),
    };
    let described = match partitions {
        Some(n) => format!(
            "{} broker(s) at {}; topic {} has {n} partition(s), group {}",
            metadata.brokers().len(),
            config.brokers,
            config.topic,
            config.group
        ),
        None => format!(
            "{} broker(s) at {}; topic {} is created at the start ({} partitions), group {}",
            metadata.brokers().len(),
            config.brokers,
            config.topic,
            config.partitions,
            config.group
        ),
    };
    Ok(described + &sealing)
}

/// Hands the batches of the embedded bus's sources to the topic.
pub struct KafkaBusProducer {
    producer: FutureProducer<QuietErrors>,
    /// What the producer was made with, to make it again after a fatal error.
    client_config: ClientConfig,
    topic: String,
    key: PartitionKey,
    metrics: Option<Arc<Metrics>>,
    /// The largest message the producer may send (`message.max.bytes`).
    max_message_bytes: usize,
    /// What to tell a source about its name (see [`Self::with_source_note`]).
    source_note: Option<SourceNote>,
    /// Seals each message when `payload_keys` names a key.
    sealer: Option<Sealer>,
    /// Splits an input holding several records (see [`Self::with_record_splitter`]).
    splitter: Option<RecordSplitter>,
    /// A delivery failed because the broker fenced this producer off: it is made anew before
    /// the next batch, as after a fatal error (see [`is_fencing`]).
    fenced: std::sync::atomic::AtomicBool,
}

/// Whether `error` says the broker no longer takes this producer's writes (its id fenced off or
/// its sequence lost after a broker outage): every later record fails the same way until a
/// producer of a new id takes over, whether or not librdkafka marks it fatal (QA: after a
/// broker stall every batch was refused with `ProducerFenced` until a restart).
fn is_fencing(error: &KafkaBusError) -> bool {
    let KafkaBusError::Kafka { reason, .. } = error else {
        return false;
    };
    matches!(
        reason.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::InvalidProducerIdMapping
                | RDKafkaErrorCode::OutOfOrderSequenceNumber
                | RDKafkaErrorCode::UnknownProducerId
        )
    )
}

/// The records of one input item (`source`, the item) when it holds several (a page envelope,
/// an event hook delivery, a CloudTrail file), each with the line it starts on; `None` when it
/// is one record, or no record.
pub type RecordSplitter = Arc<dyn Fn(&str, &InputItem) -> Option<Vec<InputItem>> + Send + Sync>;

/// A warning for the sender of a batch, by source name (`None`: nothing to say).
pub type SourceNote = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Add `by` to counter `name` when there are metrics.
fn count(metrics: &Option<Arc<Metrics>>, name: &str, by: u64) {
    if let Some(m) = metrics {
        m.inc(name, &[], by);
    }
}

impl KafkaBusProducer {
    pub fn new(config: &KafkaBusConfig, key: PartitionKey) -> Result<Self, KafkaBusError> {
        config.validate()?;
        // Sealed messages do not compress: lz4 would only cost CPU. (Compressing before
        // sealing would let the sizes on the broker tell about a record's content.)
        let client_config = config.producer_client_config();
        let producer = client_config
            .create_with_context(QuietErrors::default())
            .map_err(kafka("creating the producer"))?;
        Ok(KafkaBusProducer {
            producer,
            client_config,
            topic: config.topic.clone(),
            key,
            metrics: None,
            source_note: None,
            max_message_bytes: config.max_message_bytes()?,
            sealer: Sealer::new(&config.payload_keys).map_err(KafkaBusError::Config)?,
            splitter: None,
            fenced: Default::default(),
        })
    }

    /// Put each record of an input that holds several on the topic as a message of its own,
    /// keyed by its own entity: as one message, keyed by the tenant alone, a page's or an event
    /// hook delivery's records all went to one partition, so one user's records split over the
    /// detectors (QA: 7 of 8 brute-force bursts missed with two detectors), and a tenant's
    /// envelope traffic never spread.
    pub fn with_record_splitter(mut self, splitter: RecordSplitter) -> Self {
        self.splitter = Some(splitter);
        self
    }

    /// `sub` with its inputs of several records split into one item per record.
    fn split(&self, mut sub: Submission) -> Submission {
        let Some(split) = &self.splitter else {
            return sub;
        };
        if !sub
            .items
            .iter()
            .any(|item| matches!(item, InputItem::Record { .. }))
        {
            return sub;
        }
        let mut items = Vec::with_capacity(sub.items.len());
        for item in std::mem::take(&mut sub.items) {
            match split(&sub.source, &item) {
                Some(records) => items.extend(records),
                None => items.push(item),
            }
        }
        sub.items = items;
        sub
    }

    /// Answer each batch with `note(source)` among its warnings, as the pipeline answers on the
    /// embedded bus (a source name no normalizer knows is a detection gap the sender must hear
    /// of while it sends, not later from the detectors' logs).
    pub fn with_source_note(mut self, note: SourceNote) -> Self {
        self.source_note = Some(note);
        self
    }

    /// Count in `metrics`: `kafka_records_produced_total`, `kafka_batches_refused_total`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// A message as it goes on the topic: sealed when there is a key.
    fn wire(&self, message: Vec<u8>) -> Vec<u8> {
        match &self.sealer {
            Some(sealer) => sealer.seal(&message),
            None => message,
        }
    }

    /// Put every item of `sub` on the topic; returns once the broker has all of them.
    pub async fn produce(&self, sub: &Submission) -> Result<usize, KafkaBusError> {
        let pending = self.queue(sub).await?;
        self.settle_all(sub, pending).await
    }

    /// Hand every item of `sub` to the producer, in order (which keeps each entity's records
    /// in order on its partition); their deliveries, still to be settled.
    async fn queue(&self, sub: &Submission) -> Result<Deliveries, KafkaBusError> {
        let mut pending: Deliveries = Default::default();
        for (index, item) in sub.items.iter().enumerate() {
            let key = (self.key)(&sub.source, &sub.tenant, item);
            let sealing = if self.sealer.is_some() {
                SEAL_OVERHEAD
            } else {
                0
            };
            let room = self
                .max_message_bytes
                .saturating_sub(key.len() + MESSAGE_OVERHEAD + sealing);
            let mut payload = self.wire(within_limit(sub, item, encode(sub, item), room));
            let mut standing_in = false;
            loop {
                let record = FutureRecord::to(&self.topic).key(&key).payload(&payload);
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push_back((index, delivery));
                        break;
                    }
                    // The local queue is full: wait for the oldest message in flight.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        match pending.pop_front() {
                            Some(oldest) => self.settle(sub, oldest).await?,
                            None => tokio::time::sleep(Duration::from_millis(10)).await,
                        }
                    }
                    // Over the limit after all (framing larger than allowed for): sent as a
                    // dead letter, not refused at every retry of the batch.
                    Err((
                        KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
                        _,
                    )) if !standing_in => {
                        standing_in = true;
                        payload = self.wire(oversized(
                            sub,
                            item,
                            payload.len(),
                            "the producer's message limit (`message.max.bytes`)",
                        ));
                    }
                    Err((e, _)) => return Err(kafka("queueing a record")(e)),
                }
            }
        }
        Ok(pending)
    }

    /// Wait until the broker has every item [`Self::queue`] handed over.
    async fn settle_all(
        &self,
        sub: &Submission,
        pending: Deliveries,
    ) -> Result<usize, KafkaBusError> {
        for delivery in pending {
            self.settle(sub, delivery).await?;
        }
        Ok(sub.items.len())
    }

    /// Wait for the delivery of item `index` of `sub`. One the broker refuses as too large (its
    /// own `message.max.bytes` below the producer's) is sent again as a dead letter saying so.
    async fn settle(
        &self,
        sub: &Submission,
        (index, delivery): (usize, DeliveryFuture),
    ) -> Result<(), KafkaBusError> {
        match delivery.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((
                KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
                message,
            ))) => {
                let item = &sub.items[index];
                let key = (self.key)(&sub.source, &sub.tenant, item);
                let size = message.payload().map_or(0, <[u8]>::len);
                let payload = self.wire(oversized(
                    sub,
                    item,
                    size,
                    "the broker's message limit (`message.max.bytes`)",
                ));
                let record = FutureRecord::to(&self.topic).key(&key).payload(&payload);
                self.producer
                    .send(record, Duration::from_secs(60))
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| kafka("delivering a record")(e))
            }
            Ok(Err((e, _))) => Err(kafka("delivering a record")(e)),
            Err(_) => Err(KafkaBusError::Kafka {
                what: "delivering a record".into(),
                reason: KafkaError::Canceled,
            }),
        }
    }

    /// Serve the embedded bus's sources until they are all gone: each batch is acknowledged
    /// with how many records it queued, or refused with why (the source keeps it and retries).
    pub async fn run(self, mut rx: BusReceiver) {
        // Each batch's items are handed to the producer in the order the batches come; their
        // deliveries settle (and the batch is answered) on a task of their own while the next
        // batch is queued. Waiting for each batch's deliveries before queueing the next made
        // every sender wait for the others' round trips to the broker.
        let mut this = Arc::new(self);
        let mut settling = tokio::task::JoinSet::new();
        while let Some(sub) = rx.recv().await {
            let fenced = this.fenced.load(std::sync::atomic::Ordering::Relaxed);
            if fenced || this.producer.client().fatal_error().is_some() {
                // The batches in flight fail with it; then a new producer takes the next.
                while settling.join_next().await.is_some() {}
                if let Some(only) = Arc::get_mut(&mut this) {
                    only.replace_if_fatal();
                }
            }
            let sub = this.split(sub);
            match this.queue(&sub).await {
                Ok(pending) => {
                    let this = this.clone();
                    settling.spawn(async move {
                        let outcome = this.settle_all(&sub, pending).await;
                        this.answer(sub, outcome);
                    });
                }
                Err(e) => this.answer(sub, Err(e)),
            }
            while settling.try_join_next().is_some() {}
        }
        while settling.join_next().await.is_some() {}
        let _ = this.producer.flush(Duration::from_secs(30));
    }

    /// After a fatal error (an idempotent producer fenced or out of sequence after a broker
    /// outage) librdkafka's producer refuses every message for good: every batch was refused
    /// until a restart. A new one is made from the same settings; whether it could be is
    /// logged. `true` when it was replaced.
    fn replace_if_fatal(&mut self) -> bool {
        let fenced = std::mem::take(self.fenced.get_mut());
        let Some((code, reason)) = self.producer.client().fatal_error().or_else(|| {
            fenced.then(|| {
                (
                    RDKafkaErrorCode::ProducerFenced,
                    "the broker fenced the producer off".to_string(),
                )
            })
        }) else {
            return false;
        };
        count(&self.metrics, "kafka_producer_fatal_errors_total", 1);
        match self
            .client_config
            .create_with_context::<_, FutureProducer<QuietErrors>>(QuietErrors::default())
        {
            Ok(producer) => {
                tracing::warn!(error = ?code, reason, "the Kafka producer failed for good; a new one takes the next batches (the batches refused meanwhile are resent by their sources)");
                self.producer = producer;
                true
            }
            Err(e) => {
                tracing::error!(error = ?code, reason, cause = %e, "the Kafka producer failed for good and a new one could not be made; batches are refused until a restart");
                false
            }
        }
    }

    /// Answer `sub` with how its produce went.
    fn answer(&self, sub: Submission, outcome: Result<usize, KafkaBusError>) {
        let reply = match outcome {
            Ok(queued) => {
                count(&self.metrics, "kafka_records_produced_total", queued as u64);
                if let Some(m) = &self.metrics {
                    m.part_recovered("Kafka producer");
                }
                Ok(SubmitAck {
                    queued,
                    warnings: self
                        .source_note
                        .as_ref()
                        .and_then(|note| note(&sub.source))
                        .into_iter()
                        .collect(),
                    ..SubmitAck::default()
                })
            }
            Err(e) => {
                count(&self.metrics, "kafka_batches_refused_total", 1);
                if is_fencing(&e) {
                    self.fenced
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                // Not ready while batches cannot reach the broker (a load balancer sends
                // senders elsewhere): `/readyz` said ready all along.
                if let Some(m) = &self.metrics {
                    m.part_failing("Kafka producer", &e.to_string());
                }
                tracing::error!(error = %e, source = %sub.source, "a batch could not be put on the Kafka bus");
                Err(e.to_string())
            }
        };
        let _ = sub.ack.send(reply);
    }
}

/// Deliveries of a batch's items, by item index, oldest first.
type Deliveries = std::collections::VecDeque<(usize, DeliveryFuture)>;

/// The source, tenant and origin a batch shares.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BatchKey {
    source: String,
    tenant: String,
    origin: Option<String>,
}

/// Reads the topic as one member of the detectors' consumer group and feeds the pipeline.
pub struct KafkaBusConsumer {
    consumer: StreamConsumer<RevokeNotes>,
    metrics: Option<Arc<Metrics>>,
    /// When the partitions' lag was last measured (for `kafka_consumer_lag_records`).
    lag_measured: std::sync::Mutex<Option<std::time::Instant>>,
    batch_records: usize,
    linger: Duration,
    /// The tenant of this instance: dead letters of messages that name none are filed under it.
    own_tenant: String,
    /// When a read error was last logged (one line per 30 s while a broker is away).
    read_error_logged: std::sync::Mutex<Option<std::time::Instant>>,
    /// Read errors since the last message (see [`KafkaBusConsumer::take`]).
    read_errors_in_a_row: std::sync::atomic::AtomicU64,
    /// The offset this member last committed per partition, for the lag gauge.
    committed: std::sync::Mutex<HashMap<(String, i32), i64>>,
    /// Opens sealed messages with the `payload_keys`.
    opener: Opener,
}

/// What [`KafkaBusConsumer::run`] did, for the log at its end.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConsumedTotals {
    pub messages: u64,
    pub batches: u64,
}

/// Read errors in a row after which the consumer pauses half a second (see
/// `KafkaBusConsumer::take`).
const READ_ERRORS_BEFORE_A_PAUSE: u64 = 100;

impl KafkaBusConsumer {
    pub fn new(config: &KafkaBusConfig) -> Result<Self, KafkaBusError> {
        config.validate()?;
        let consumer: StreamConsumer<RevokeNotes> = config
            .consumer_client_config()
            .create_with_context(RevokeNotes::default())
            .map_err(kafka("creating the consumer"))?;
        consumer
            .subscribe(&[config.topic.as_str()])
            .map_err(kafka("subscribing to the topic"))?;
        Ok(KafkaBusConsumer {
            consumer,
            metrics: None,
            lag_measured: Default::default(),
            batch_records: config.batch_records,
            linger: Duration::from_millis(config.batch_linger_ms),
            own_tenant: "default".into(),
            read_error_logged: Default::default(),
            read_errors_in_a_row: Default::default(),
            committed: Default::default(),
            opener: Opener::new(&config.payload_keys)
                .map_err(KafkaBusError::Config)?
                .requiring_seal(config.require_sealed),
        })
    }

    /// File dead letters of messages that name no tenant (foreign messages) under `tenant`,
    /// this instance's (`default` otherwise).
    pub fn with_tenant(mut self, tenant: &str) -> Self {
        self.own_tenant = tenant.to_string();
        self
    }

    /// Count in `metrics`: `kafka_records_consumed_total`, `kafka_batches_committed_total`,
    /// `kafka_commit_failures_total`, `kafka_read_errors_total`, `kafka_batches_retried_total`,
    /// and the gauge `kafka_consumer_lag_records{partition}` (records on the broker past this
    /// member's last commit, measured at most every 10 s).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Read, submit to `pipeline` (the worker's embedded bus) and commit, until `stop` turns
    /// true. A batch the pipeline refuses is retried (its offsets stay uncommitted meanwhile);
    /// one stopped before it is stored is read again by the next member.
    ///
    /// The next batch is read and put on the bus while the one before is being stored (at most
    /// [`BATCHES_IN_FLIGHT`]), so detection of one overlaps the store commit of the other, as
    /// on the embedded bus. Offsets are still committed in read order, each batch's only once
    /// it and every batch before it are stored.
    pub async fn run(
        self,
        pipeline: BusSender,
        mut stop: watch::Receiver<bool>,
    ) -> Result<ConsumedTotals, KafkaBusError> {
        let mut totals = ConsumedTotals::default();
        let mut in_flight: VecDeque<InFlightBatch> = VecDeque::new();
        let mut next_id = 0u64;
        loop {
            let stopping = *stop.borrow();
            if stopping || in_flight.len() >= BATCHES_IN_FLIGHT {
                let Some(oldest) = in_flight.pop_front() else {
                    return Ok(totals);
                };
                if !self.settle(oldest, &pipeline, &mut stop).await? {
                    // Refused while stopping: it and the batches after it stay uncommitted,
                    // read again after the restart.
                    return Ok(totals);
                }
                continue;
            }
            // The first message of the next batch, or the oldest batch in flight stored,
            // whichever comes first (a quiet topic must not hold up a stored batch's commit).
            let mut batch = Batch::default();
            // Partitions taken away before this batch was read are not in it.
            self.revoked();
            tokio::select! {
                // A batch answered goes first: a refused one is retried before more is read.
                biased;
                // (An async block does nothing until polled, and it is polled only when a batch
                // is in flight.)
                answer = async { in_flight.front_mut().expect("in flight").answered().await },
                    if !in_flight.is_empty() => {
                    let oldest = in_flight.pop_front().expect("a batch in flight");
                    if !self.settle_answered(oldest, answer, &pipeline, &mut stop).await? {
                        return Ok(totals);
                    }
                }
                received = self.consumer.recv() => self.take(&mut batch, received).await,
                _ = stop.changed() => {}
                // Idle: the lag gauge still follows what arrives for others to read.
                _ = tokio::time::sleep(Duration::from_secs(10)) => self.measure_lag(),
            }
            if batch.unopened.is_none() && batch.len() == 0 {
                continue;
            }
            if batch.unopened.is_none() {
                self.fill(&mut batch).await;
            }
            if let Err(e) = self.opened_all(&batch) {
                // The batches before it are stored and committed first.
                while let Some(oldest) = in_flight.pop_front() {
                    if !self.settle(oldest, &pipeline, &mut stop).await? {
                        break;
                    }
                }
                return Err(e);
            }
            let messages = batch.len() as u64;
            let (groups, next_offsets) = batch.into_parts();
            if groups.is_empty() {
                continue;
            }
            totals.messages += messages;
            totals.batches += 1;
            let answer = enqueue_batch(&pipeline, &groups).await;
            next_id += 1;
            let id = next_id;
            // The answer is awaited on a task of its own, which notes it where the rebalance
            // callback can see it while this task is held inside a read.
            let uncommitted = self.consumer.context().uncommitted.clone();
            uncommitted.push(id, next_offsets);
            let answer = tokio::spawn(async move {
                let answer = answer.await;
                uncommitted.answered(id, answer.is_ok());
                answer
            });
            in_flight.push_back(InFlightBatch {
                id,
                groups,
                messages,
                answer,
            });
        }
    }

    /// An error when `batch` met a message sealed with a key this member does not hold: reading
    /// on would commit past it (it is not a bad message to file as a dead letter: its records
    /// are fine, the key is missing here). The member stops once the batches before it are
    /// stored and committed; that message, and the ones of this batch, are read again by
    /// whoever holds the key (or by this member once given it).
    fn opened_all(&self, batch: &Batch) -> Result<(), KafkaBusError> {
        match &batch.unopened {
            None => Ok(()),
            Some(m) => {
                count(&self.metrics, "kafka_messages_unopened_total", 1);
                Err(KafkaBusError::Config(format!(
                    "the message at partition {} offset {} is sealed with payload key {}, which \
                     this instance does not hold: add its file to `payload_keys` and restart \
                     (nothing from it on is committed)",
                    m.partition, m.offset, m.key_id
                )))
            }
        }
    }

    /// Wait for `batch` to be stored, then commit its offsets (see [`Self::settle_answered`]).
    async fn settle(
        &self,
        mut batch: InFlightBatch,
        pipeline: &BusSender,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<bool, KafkaBusError> {
        let answer = batch.answered().await;
        self.settle_answered(batch, answer, pipeline, stop).await
    }

    /// Commit the offsets of a batch the pipeline answered. A refused batch is submitted again
    /// until stored (with a growing pause); `false` if `stop` came first, the batch then left
    /// uncommitted.
    async fn settle_answered(
        &self,
        batch: InFlightBatch,
        mut answer: Result<(), String>,
        pipeline: &BusSender,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<bool, KafkaBusError> {
        let mut backoff = Duration::from_millis(200);
        while let Err(reason) = answer {
            if *stop.borrow() {
                return Ok(false);
            }
            count(&self.metrics, "kafka_batches_retried_total", 1);
            tracing::error!(%reason, "the pipeline refused a batch from the Kafka bus; retrying it");
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
            answer = enqueue_batch(pipeline, &batch.groups).await.await;
        }
        count(
            &self.metrics,
            "kafka_records_consumed_total",
            batch.messages,
        );
        // Its offsets are kept where the rebalance callback sees them; it is pushed there as it
        // goes on the bus.
        if let Some(settled) = self.consumer.context().uncommitted.remove(batch.id) {
            if settled.committed {
                // Committed by the rebalance callback, before its partitions were taken away.
                count(&self.metrics, "kafka_batches_committed_total", 1);
                return Ok(true);
            }
            self.commit(&settled.next_offsets)?;
        }
        self.measure_lag();
        Ok(true)
    }

    /// More messages for `batch` (which holds its first), until it is full or the linger is
    /// over; then the messages of partitions a rebalance took away meanwhile are left out.
    async fn fill(&self, batch: &mut Batch) {
        let until = tokio::time::Instant::now() + self.linger;
        while batch.len() < self.batch_records {
            match tokio::time::timeout_at(until, self.consumer.recv()).await {
                Ok(received) => self.take(batch, received).await,
                Err(_) => break,
            }
        }
        let left = batch.without_partitions(&self.revoked());
        if left > 0 {
            count(
                &self.metrics,
                "kafka_records_left_to_new_owner_total",
                left as u64,
            );
            tracing::info!(
                records = left,
                "a rebalance took partitions away while a batch was read: their records are left to the new owner"
            );
        }
    }

    /// Add a received message to `batch`. A read error (a broker gone, a rebalance under way)
    /// is logged and waited out: librdkafka reconnects by itself, and the member must not stop
    /// reading for good because a broker restarted.
    async fn take(
        &self,
        batch: &mut Batch,
        received: Result<rdkafka::message::BorrowedMessage<'_>, KafkaError>,
    ) {
        use std::sync::atomic::Ordering;
        match received {
            Ok(message) => {
                self.read_errors_in_a_row.store(0, Ordering::Relaxed);
                batch.add(message, &self.own_tenant, &self.opener)
            }
            Err(e) => {
                count(&self.metrics, "kafka_read_errors_total", 1);
                let in_a_row = self.read_errors_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
                {
                    let mut logged = self
                        .read_error_logged
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    if logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                        *logged = Some(std::time::Instant::now());
                        tracing::warn!(error = %e, "reading the Kafka bus; retrying (logged once per 30 s while it lasts, counted in kafka_read_errors_total)");
                    }
                }
                // The errors queued during an outage come back one per read once it is over:
                // with a pause after each, they took minutes to go through (2 a second), and
                // the partitions assigned meanwhile waited behind them, unread. librdkafka
                // paces the errors of an outage itself; a pause after every 100 in a row only
                // keeps an error storm from spinning.
                if in_a_row.is_multiple_of(READ_ERRORS_BEFORE_A_PAUSE) {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    fn commit(&self, next_offsets: &HashMap<(String, i32), i64>) -> Result<(), KafkaBusError> {
        let list = offset_list(next_offsets).map_err(kafka("listing offsets"))?;
        match off_the_runtime(|| self.consumer.commit(&list, CommitMode::Sync)) {
            Ok(()) => {
                count(&self.metrics, "kafka_batches_committed_total", 1);
                self.committed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(next_offsets.iter().map(|(tp, next)| (tp.clone(), *next)));
                Ok(())
            }
            // The partitions went to another member meanwhile (a rebalance): it reads them
            // from the last commit, and the store drops what this member already stored.
            Err(e) => {
                count(&self.metrics, "kafka_commit_failures_total", 1);
                tracing::warn!(error = %e, "committing Kafka offsets failed; the records are read again and stored once");
                Ok(())
            }
        }
    }
}

impl KafkaBusConsumer {
    /// The partitions a rebalance took away since the last call: no longer this member's, so
    /// their lag gauge is 0 here (their new owner reports them).
    fn revoked(&self) -> Vec<(String, i32)> {
        let revoked = self.consumer.context().take();
        if !revoked.is_empty() {
            let mut committed = self.committed.lock().unwrap_or_else(|e| e.into_inner());
            for tp in &revoked {
                committed.remove(tp);
                if let Some(metrics) = &self.metrics {
                    metrics.set(
                        "kafka_consumer_lag_records",
                        &[("partition", &tp.1.to_string())],
                        0.0,
                    );
                }
            }
        }
        revoked
    }

    /// Set `kafka_consumer_lag_records{partition}` for the partitions this member committed:
    /// what the broker holds past its commit. At most every 10 s (each asks the broker).
    fn measure_lag(&self) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        let committed = self
            .committed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if committed.is_empty() {
            return;
        }
        {
            let mut last = self.lag_measured.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        for ((topic, partition), next) in committed {
            match off_the_runtime(|| {
                self.consumer
                    .fetch_watermarks(&topic, partition, Duration::from_secs(1))
            }) {
                Ok((_, high)) => metrics.set(
                    "kafka_consumer_lag_records",
                    &[("partition", &partition.to_string())],
                    (high - next).max(0) as f64,
                ),
                // The broker is away: the read errors say so; try again next time.
                Err(_) => return,
            }
        }
    }
}

/// Run `f`, a call that waits for the broker (a synchronous commit, a watermark query), so
/// that the runtime's other tasks keep running meanwhile: on a multi-threaded runtime its
/// worker hands them to another (QA: with the broker hanging, the commit held one of the two
/// workers for a minute and the HTTP API, `/healthz` included, stopped answering).
fn off_the_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Batches a detector has put on the bus and not yet committed: one being stored while the
/// next is read and detected. More would only hold more records in memory: the store takes
/// what is queued together in one commit anyway (ADR 020).
const BATCHES_IN_FLIGHT: usize = 2;

/// The wait for every run of a batch to be stored (`Err`: the reason one was refused).
type BatchAnswer = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

/// A batch put on the bus; its offsets to commit once it is stored are in [`Uncommitted`].
struct InFlightBatch {
    /// Its entry in [`Uncommitted`].
    id: u64,
    groups: Vec<BatchRun>,
    messages: u64,
    answer: tokio::task::JoinHandle<Result<(), String>>,
}

impl InFlightBatch {
    /// The pipeline's answer (waiting for it can be given up and taken up again).
    async fn answered(&mut self) -> Result<(), String> {
        match (&mut self.answer).await {
            Ok(answer) => answer,
            Err(e) => Err(format!("waiting for the pipeline's answer: {e}")),
        }
    }
}

/// The batches a member has put on the bus and not committed yet, shared with the rebalance
/// callback. A member reads the next batch while the one before is stored, so partitions can
/// be taken away while a batch of theirs is in the pipeline; the callback then waits for it to
/// be stored and commits it before letting them go, so that their new owner does not read and
/// store those records again.
#[derive(Default)]
struct Uncommitted {
    batches: std::sync::Mutex<VecDeque<UncommittedBatch>>,
    answered: std::sync::Condvar,
}

struct UncommittedBatch {
    id: u64,
    next_offsets: NextOffsets,
    /// `None` until the pipeline answers; then whether it stored the batch.
    stored: Option<bool>,
    /// Committed by the rebalance callback.
    committed: bool,
}

impl Uncommitted {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<UncommittedBatch>> {
        self.batches.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, id: u64, next_offsets: NextOffsets) {
        self.lock().push_back(UncommittedBatch {
            id,
            next_offsets,
            stored: None,
            committed: false,
        });
    }

    fn answered(&self, id: u64, stored: bool) {
        if let Some(b) = self.lock().iter_mut().find(|b| b.id == id) {
            b.stored = Some(stored);
        }
        self.answered.notify_all();
    }

    /// Take batch `id` out (settled): its offsets, and whether the rebalance callback
    /// committed them.
    fn remove(&self, id: u64) -> Option<UncommittedBatch> {
        let mut batches = self.lock();
        let at = batches.iter().position(|b| b.id == id)?;
        batches.remove(at)
    }

    /// Wait until every batch has its answer, at most `within`, then commit through `consumer`
    /// the leading ones that were stored (in read order: a refused batch stops there, as its
    /// offsets may not be passed). The rest is left to the new owner, read again from the last
    /// commit.
    fn commit_stored<C: rdkafka::consumer::ConsumerContext>(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<C>,
        within: Duration,
    ) {
        let deadline = std::time::Instant::now() + within;
        let mut batches = self.lock();
        if batches.iter().all(|b| b.committed) {
            return;
        }
        while batches.iter().any(|b| b.stored.is_none()) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            batches = self
                .answered
                .wait_timeout(batches, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let mut offsets = NextOffsets::new();
        let mut ids = Vec::new();
        for b in batches.iter().take_while(|b| b.stored == Some(true)) {
            if !b.committed {
                for (tp, next) in &b.next_offsets {
                    let o = offsets.entry(tp.clone()).or_insert(0);
                    *o = (*o).max(*next);
                }
                ids.push(b.id);
            }
        }
        // Not held while committing: the tasks noting answers take it.
        drop(batches);
        if offsets.is_empty() {
            return;
        }
        let Ok(list) = offset_list(&offsets) else {
            return;
        };
        match consumer.commit(&list, CommitMode::Sync) {
            Ok(()) => {
                for b in self.lock().iter_mut().filter(|b| ids.contains(&b.id)) {
                    b.committed = true;
                }
                tracing::info!(
                    batches = ids.len(),
                    "partitions are being taken away: committed the batches stored meanwhile first"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "committing before a rebalance failed; the new owner reads those records again and stores them too")
            }
        }
    }
}

/// The list to commit `offsets` with.
fn offset_list(offsets: &NextOffsets) -> Result<TopicPartitionList, KafkaError> {
    let mut list = TopicPartitionList::new();
    for ((topic, partition), next) in offsets {
        list.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
    }
    Ok(list)
}

/// Consecutive items of one source, tenant and origin: one submission to the pipeline.
type BatchRun = (BatchKey, Vec<InputItem>);

/// The offset to commit per (topic, partition).
type NextOffsets = HashMap<(String, i32), i64>;

/// The messages of one batch, in the order read.
#[derive(Default)]
struct Batch {
    read: Vec<ReadMessage>,
    /// A message sealed with a key this member does not hold: the batch takes nothing after it
    /// (nothing read from it on is committed), and the member stops.
    unopened: Option<UnopenedMessage>,
}

struct ReadMessage {
    key: BatchKey,
    partition: (String, i32),
    offset: i64,
    item: InputItem,
}

impl Batch {
    fn add(
        &mut self,
        message: rdkafka::message::BorrowedMessage<'_>,
        own_tenant: &str,
        opener: &Opener,
    ) {
        if self.unopened.is_some() {
            return;
        }
        let decoded = decode(
            message.payload(),
            message.partition(),
            message.offset(),
            own_tenant,
            opener,
        );
        let (key, item) = match decoded {
            Ok(decoded) => decoded,
            Err(unopened) => {
                self.unopened = Some(unopened);
                return;
            }
        };
        self.read.push(ReadMessage {
            key,
            partition: (message.topic().to_string(), message.partition()),
            offset: message.offset(),
            item,
        });
    }

    fn len(&self) -> usize {
        self.read.len()
    }

    /// Leave out the messages of `revoked` partitions (taken away by a rebalance while the
    /// batch was read): their new owner reads them from the last commit, so storing them here
    /// too would put them in two instances' stores. How many were left out.
    fn without_partitions(&mut self, revoked: &[(String, i32)]) -> usize {
        let before = self.read.len();
        self.read.retain(|m| !revoked.contains(&m.partition));
        before - self.read.len()
    }

    /// Runs of consecutive items of one batch key (submitted in order), and the offset to
    /// commit per partition once they are stored.
    fn into_parts(self) -> (Vec<BatchRun>, NextOffsets) {
        let mut groups: Vec<BatchRun> = Vec::new();
        let mut next_offsets = NextOffsets::new();
        for m in self.read {
            let next = next_offsets.entry(m.partition).or_insert(0);
            *next = (*next).max(m.offset + 1);
            match groups.last_mut() {
                Some((last, items)) if *last == m.key => items.push(m.item),
                _ => groups.push((m.key, vec![m.item])),
            }
        }
        (groups, next_offsets)
    }
}

/// The probe's client context: keeps why librdkafka's connections to a broker failed (a TLS
/// handshake that refused the broker's certificate, a refused login, a name that does not
/// resolve), to say why no broker answered: the request itself only fails with a timeout or a
/// "transport failure".
#[derive(Default)]
struct LastClientError {
    /// The first connection failure librdkafka logged (its `FAIL` lines): the first says most
    /// (`SSL handshake failed: ... certificate verify failed: broker certificate could not be
    /// verified, verify that ssl.ca.location is correctly configured ...`), the repeats after it
    /// are shorter.
    failure: std::sync::Mutex<Option<String>>,
    /// The last client-wide error.
    error: std::sync::Mutex<Option<String>>,
}

impl LastClientError {
    fn last(&self) -> Option<String> {
        let failure = self
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        failure.or_else(|| self.error.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

impl rdkafka::ClientContext for LastClientError {
    fn log(&self, _level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        if facility == "FAIL" {
            // `[thrd:<broker>]: <broker>: <what failed>`: the thread's name adds nothing.
            let message = match message.strip_prefix("[thrd:") {
                Some(rest) => rest.split_once("]: ").map_or(message, |(_, m)| m),
                None => message,
            };
            self.failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(|| message.to_string());
        }
    }

    fn error(&self, _error: KafkaError, reason: &str) {
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_string());
    }
}

impl rdkafka::consumer::ConsumerContext for LastClientError {}

/// The consumer's context: notes the partitions a rebalance takes away (see
/// [`Batch::without_partitions`]).
#[derive(Default)]
struct RevokeNotes {
    revoked: std::sync::Mutex<Vec<(String, i32)>>,
    uncommitted: Arc<Uncommitted>,
    quiet: QuietErrors,
}

impl RevokeNotes {
    fn take(&self) -> Vec<(String, i32)> {
        std::mem::take(&mut *self.revoked.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl rdkafka::ClientContext for RevokeNotes {
    fn error(&self, error: KafkaError, reason: &str) {
        self.quiet.error(error, reason);
    }
}

/// A client context that logs librdkafka's client-wide errors (every broker down, ...) once per
/// 30 s per kind instead of a few times a second while they last.
#[derive(Default)]
pub struct QuietErrors {
    last: std::sync::Mutex<HashMap<String, std::time::Instant>>,
}

impl QuietErrors {
    fn error(&self, error: KafkaError, reason: &str) {
        let kind = format!("{:?}", error.rdkafka_error_code());
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let due = last
            .get(&kind)
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(30));
        if due {
            last.insert(kind, std::time::Instant::now());
            tracing::error!(%error, reason, "Kafka client error (logged once per 30 s while it lasts)");
        }
    }
}

impl rdkafka::ClientContext for QuietErrors {
    fn error(&self, error: KafkaError, reason: &str) {
        QuietErrors::error(self, error, reason);
    }
}

impl rdkafka::consumer::ConsumerContext for RevokeNotes {
    fn pre_rebalance(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        if let rdkafka::consumer::Rebalance::Revoke(list) = rebalance {
            {
                let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
                revoked.extend(
                    list.elements()
                        .iter()
                        .map(|e| (e.topic().to_string(), e.partition())),
                );
            }
            // Called from inside a read, on the member's task: the batches in flight are
            // answered on other tasks, so this thread may block for them only once the
            // runtime has handed its other work on (a multi-threaded runtime, as the service
            // runs). Elsewhere only the batches already stored are committed.
            let wait = || self.uncommitted.commit_stored(consumer, REVOKE_WAIT);
            match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
                Ok(_) => self.uncommitted.commit_stored(consumer, Duration::ZERO),
                Err(_) => wait(),
            }
        }
    }
}

/// The longest a rebalance waits for a member's batches in flight to be stored (it holds up
/// the group meanwhile); two batches usually take a second or two.
const REVOKE_WAIT: Duration = Duration::from_secs(30);

/// Put every run of a batch on the bus, and return the wait for all their answers.
///
/// All runs are put on the bus first, then waited for: a read interleaves many sources, and
/// waiting for each run's store commit before putting the next made one commit (and fsync)
/// per run. The worker takes them in this order, so each entity's records keep theirs.
async fn enqueue_batch(pipeline: &BusSender, groups: &[BatchRun]) -> BatchAnswer {
    let mut pending = Vec::with_capacity(groups.len());
    for (key, items) in groups {
        match pipeline
            .enqueue_from(
                key.origin.as_deref(),
                &key.source,
                &key.tenant,
                items.clone(),
            )
            .await
        {
            Ok(ack) => pending.push(ack),
            Err(e) => {
                let reason = e.to_string();
                return Box::pin(async move { Err(reason) });
            }
        }
    }
    // A refused run fails the batch, which is retried whole (uncommitted); the runs stored
    // meanwhile come back as duplicates and are dropped by event id.
    Box::pin(async move {
        for ack in pending {
            ack.stored().await.map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    /// [`decode`] of a message in clear, by a member without payload keys.
    fn decode_clear(
        payload: Option<&[u8]>,
        partition: i32,
        offset: i64,
        own_tenant: &str,
    ) -> (BatchKey, InputItem) {
        let opener = Opener::new(&[]).unwrap();
        decode(payload, partition, offset, own_tenant, &opener).expect("not sealed")
    }

    use super::*;
    use sonic_rs::JsonValueTrait;

    /// A refused property's value is not shown, and a word that merely holds it stays (QA:
    /// `libzstd not available` read `lib(value not shown) not available`).
    #[test]
    fn a_refused_value_is_hidden_as_a_word_only() {
        let error = KafkaError::ClientConfig(
            rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            "Unsupported value \"zstd\" for configuration property \"compression.type\": libzstd not available at build time".into(),
            "compression.type".into(),
            "zstd".into(),
        );
        let KafkaError::ClientConfig(_, desc, _, value) = without_property_value(error) else {
            panic!("still a config error");
        };
        assert_eq!(
            desc,
            "Unsupported value \"(value not shown)\" for configuration property \"compression.type\": libzstd not available at build time"
        );
        assert_eq!(value, "(value not shown)");
        assert_eq!(replace_word("pw=pw;pwd", "pw", "*"), "*=*;pwd");
    }

    fn submission(items: Vec<InputItem>) -> Submission {
        let (ack, _) = tokio::sync::oneshot::channel();
        Submission {
            source: "okta".into(),
            tenant: "acme".into(),
            origin: Some("spool/a.jsonl".into()),
            items,
            ack,
        }
    }

    #[test]
    fn items_survive_the_wire_format() {
        let record = InputItem::Record {
            line: 7,
            value: sonic_rs::json!({"uuid": "e1", "n": 1.5, "nested": {"a": [1, "x"]}}),
            member_lines: vec![("items".into(), vec![3, 4])],
        };
        let bad = InputItem::Invalid {
            line: 9,
            reason: "not JSON".into(),
            excerpt: "{oops".into(),
            digest: "abc".into(),
        };
        let sub = submission(vec![record.clone(), bad.clone()]);
        for item in [record, bad] {
            let (key, back) = decode_clear(Some(&encode(&sub, &item)), 0, 0, "own");
            assert_eq!(back, item);
            assert_eq!(key.source, "okta");
            assert_eq!(key.tenant, "acme");
            assert_eq!(key.origin.as_deref(), Some("spool/a.jsonl"));
        }
    }

    #[test]
    fn keys_follow_tenant_and_entity_without_showing_them() {
        let key = entity_partition_key(None, |_, record| {
            record["user"].as_str().map(str::to_string)
        });
        let item = |user: &str| InputItem::Record {
            line: 1,
            value: sonic_rs::json!({ "user": user }),
            member_lines: Vec::new(),
        };
        let alice = key("okta", "acme", &item("alice"));
        assert_eq!(
            alice,
            key("github", "acme", &item("alice")),
            "one entity, one key"
        );
        assert_ne!(alice, key("okta", "acme", &item("bob")));
        assert_ne!(alice, key("okta", "other", &item("alice")), "tenants apart");
        assert!(!alice.windows(5).any(|w| w == b"alice"));
        let bad = InputItem::Invalid {
            line: 1,
            reason: "x".into(),
            excerpt: "x".into(),
            digest: "x".into(),
        };
        assert_eq!(key("okta", "acme", &bad), b"acme");
        // Keyed with the deployment's key: the same entity agrees with itself, but not with
        // the unkeyed hash a reader could recompute from a guess, nor with another key.
        let keyed = |k: u8| {
            entity_partition_key(Some([k; 32]), |_, record| {
                record["user"].as_str().map(str::to_string)
            })
        };
        let (k1, k2) = (keyed(1), keyed(2));
        assert_eq!(
            k1("okta", "acme", &item("alice")),
            k1("slack", "acme", &item("alice"))
        );
        assert_ne!(k1("okta", "acme", &item("alice")), alice);
        assert_ne!(
            k1("okta", "acme", &item("alice")),
            k2("okta", "acme", &item("alice"))
        );
        assert_eq!(k1("okta", "acme", &bad), b"acme");
    }

    #[test]
    fn a_foreign_message_is_a_bad_line_with_its_place() {
        let record = r#""line":1,"record":{"uuid":"e1"}}"#;
        for (payload, why) in [
            (b"hello".to_vec(), "not JSON (byte 0)"),
            (
                br#"{"v":2,"source":"okta","tenant":"t","line":1}"#.to_vec(),
                "format 2",
            ),
            (
                br#"{"v":1,"source":"okta"}"#.to_vec(),
                "not of the bus format",
            ),
            // Names the store would refuse at every retry (a stuck partition), or take for a
            // tenant nobody could be issued a token for.
            (
                format!(r#"{{"v":1,"source":"okta","tenant":"",{record}"#).into_bytes(),
                "its tenant is no tenant name",
            ),
            (
                format!(r#"{{"v":1,"source":"okta","tenant":"../x",{record}"#).into_bytes(),
                "its tenant is no tenant name",
            ),
            (
                format!(
                    r#"{{"v":1,"source":"okta","tenant":"{}",{record}"#,
                    "t".repeat(300)
                )
                .into_bytes(),
                "its tenant is no tenant name",
            ),
            (
                format!(r#"{{"v":1,"source":"","tenant":"acme",{record}"#).into_bytes(),
                "its source is no source name",
            ),
            // The parser's words quote the bytes around the error; the reason must not.
            (
                br#"{"password": "hunter2secret" oops}"#.to_vec(),
                "not JSON",
            ),
        ] {
            let (key, item) = decode_clear(Some(&payload), 3, 41, "acme");
            assert_eq!(key.source, "kafka");
            assert_eq!(
                key.tenant, "acme",
                "filed where the instance's analysts look"
            );
            assert_eq!(key.origin.as_deref(), Some("partition 3 offset 41"));
            match item {
                InputItem::Invalid { reason, digest, .. } => {
                    assert!(reason.contains(why), "{reason}");
                    assert!(!reason.contains("hunter2"), "{reason}");
                    assert_eq!(digest, input_digest(&payload));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_record_over_the_message_limit_travels_as_a_bad_line_saying_so() {
        let big = InputItem::Record {
            line: 4,
            value: sonic_rs::json!({"blob": "x".repeat(5000)}),
            member_lines: Vec::new(),
        };
        let sub = submission(vec![big.clone()]);
        let payload = within_limit(&sub, &big, encode(&sub, &big), 1000);
        assert!(payload.len() < 1000);
        match decode_clear(Some(&payload), 0, 0, "own").1 {
            InputItem::Invalid {
                line,
                reason,
                excerpt,
                ..
            } => {
                assert_eq!(line, 4);
                assert!(
                    reason.contains("over the Kafka bus's message limit (1000 bytes"),
                    "{reason}"
                );
                // Cut where no token is split (as any excerpt).
                assert!(excerpt.starts_with("{\"blob\":"), "{excerpt}");
            }
            other => panic!("{other:?}"),
        }
        // Within the limit, the record itself.
        let payload = within_limit(&sub, &big, encode(&sub, &big), 1_000_000);
        assert_eq!(decode_clear(Some(&payload), 0, 0, "own").1, big);
    }

    fn read(partition: i32, offset: i64, source: &str) -> ReadMessage {
        ReadMessage {
            key: BatchKey {
                source: source.into(),
                tenant: "acme".into(),
                origin: None,
            },
            partition: ("records".into(), partition),
            offset,
            item: InputItem::Record {
                line: offset as u64,
                value: sonic_rs::json!({ "offset": offset }),
                member_lines: Vec::new(),
            },
        }
    }

    #[test]
    fn a_batch_commits_past_what_it_holds_and_leaves_revoked_partitions_out() {
        let mut batch = Batch {
            read: vec![
                read(0, 10, "okta"),
                read(1, 5, "okta"),
                read(0, 11, "github"),
                read(2, 7, "github"),
                read(0, 12, "okta"),
            ],
            unopened: None,
        };
        assert_eq!(batch.without_partitions(&[("records".into(), 2)]), 1);
        let (groups, next) = batch.into_parts();
        let sources: Vec<(&str, usize)> = groups
            .iter()
            .map(|(k, items)| (k.source.as_str(), items.len()))
            .collect();
        // Consecutive runs, in the order read: one source's order is kept.
        assert_eq!(sources, [("okta", 2), ("github", 1), ("okta", 1)]);
        assert_eq!(next[&("records".into(), 0)], 13);
        assert_eq!(next[&("records".into(), 1)], 6);
        assert!(
            !next.contains_key(&("records".into(), 2)),
            "left to its new owner"
        );
    }

    #[test]
    fn a_sealed_message_opens_with_its_key_a_forged_one_is_a_dead_letter_and_a_missing_key_stops() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("bus.key");
        std::fs::write(&key, "7a".repeat(32)).unwrap();
        let sealer = Sealer::new(std::slice::from_ref(&key)).unwrap().unwrap();
        let item = InputItem::Record {
            line: 3,
            value: sonic_rs::json!({"user": "alice", "password": "Hunter2-Horse"}),
            member_lines: Vec::new(),
        };
        let sub = submission(vec![item.clone()]);
        let sealed = sealer.seal(&encode(&sub, &item));
        let opener = Opener::new(&[key]).unwrap();
        let (batch_key, back) = decode(Some(&sealed), 2, 9, "own", &opener).unwrap();
        assert_eq!((batch_key.source.as_str(), back), ("okta", item.clone()));

        let mut forged = sealed.clone();
        let last = forged.len() - 1;
        forged[last] ^= 0x01;
        let (batch_key, bad) = decode(Some(&forged), 2, 9, "own", &opener).unwrap();
        assert_eq!(batch_key.source, "kafka");
        match bad {
            InputItem::Invalid {
                reason, excerpt, ..
            } => {
                assert!(reason.contains("does not open with its key"), "{reason}");
                assert!(!excerpt.contains("Hunter2"), "{excerpt}");
            }
            other => panic!("{other:?}"),
        }

        let without = Opener::new(&[]).unwrap();
        let unopened = decode(Some(&sealed), 2, 9, "own", &without).unwrap_err();
        assert_eq!((unopened.partition, unopened.offset), (2, 9));
        assert_eq!(unopened.key_id.len(), 8, "{unopened:?}");

        // A message in clear: read by default, a dead letter when sealed ones are required.
        let clear = encode(&sub, &item);
        let (_, back) = decode(Some(&clear), 2, 10, "own", &opener).unwrap();
        assert_eq!(back, item);
        let strict = Opener::new(&[dir.path().join("bus.key")])
            .unwrap()
            .requiring_seal(true);
        let (batch_key, refused) = decode(Some(&clear), 2, 10, "own", &strict).unwrap();
        assert_eq!(batch_key.source, "kafka");
        assert!(
            matches!(&refused, InputItem::Invalid { reason, .. } if reason.contains("require_sealed")),
            "{refused:?}"
        );
        let (_, opened) = decode(Some(&sealed), 2, 9, "own", &strict).unwrap();
        assert_eq!(opened, item);
        let mut config = KafkaBusConfig::new("localhost:9092");
        config.require_sealed = true;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("require_sealed needs payload_keys"), "{err}");
    }

    #[test]
    fn the_probe_names_why_connections_failed() {
        use rdkafka::config::RDKafkaLogLevel;
        use rdkafka::ClientContext;
        let context = LastClientError::default();
        assert_eq!(context.last(), None);
        context.error(
            KafkaError::MetadataFetch(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        assert_eq!(context.last().as_deref(), Some("1/1 brokers are down"));
        // A connection failure says more than the error it leads to, its first line more than
        // its repeats, and other lines are no reason.
        context.log(
            RDKafkaLogLevel::Error,
            "FAIL",
            "[thrd:ssl://kafka-1:9093/bootstrap]: ssl://kafka-1:9093/bootstrap: SSL handshake \
             failed: certificate verify failed",
        );
        context.log(
            RDKafkaLogLevel::Error,
            "SSL",
            "kafka: error:06880006:asn1 encoding",
        );
        context.log(
            RDKafkaLogLevel::Error,
            "FAIL",
            "[thrd:ssl://kafka-1:9093/bootstrap]: ssl://kafka-1:9093/bootstrap: certificate \
             verify failed (after 1ms in state SSL_HANDSHAKE)",
        );
        context.error(
            KafkaError::MetadataFetch(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        assert_eq!(
            context.last().as_deref(),
            Some("ssl://kafka-1:9093/bootstrap: SSL handshake failed: certificate verify failed")
        );
    }

    #[tokio::test]
    async fn tls_and_scram_can_be_configured() {
        // librdkafka refuses these at client creation when built without OpenSSL.
        let mut config = KafkaBusConfig::new("127.0.0.1:9093");
        for (k, v) in [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "perimeter"),
            ("sasl.password", "not-a-real-one"),
        ] {
            config.properties.insert(k.into(), v.into());
        }
        let key = Arc::new(|_: &str, tenant: &str, _: &InputItem| tenant_key(tenant));
        KafkaBusProducer::new(&config, key).expect("a TLS + SCRAM producer");
        KafkaBusConsumer::new(&config).expect("a TLS + SCRAM consumer");
    }

    #[test]
    fn a_fenced_producer_is_told_from_other_failures() {
        let failed = |code| KafkaBusError::Kafka {
            what: "delivering a record".into(),
            reason: KafkaError::MessageProduction(code),
        };
        assert!(is_fencing(&failed(RDKafkaErrorCode::ProducerFenced)));
        assert!(is_fencing(&failed(
            RDKafkaErrorCode::OutOfOrderSequenceNumber
        )));
        assert!(!is_fencing(&failed(RDKafkaErrorCode::MessageTimedOut)));
        assert!(!is_fencing(&KafkaBusError::Config("x".into())));
    }

    #[test]
    fn properties_perimeters_guarantees_rest_on_are_refused() {
        for key in [
            "enable.auto.commit",
            "enable.auto.offset.store",
            "acks",
            "auto.offset.reset",
        ] {
            let mut config = KafkaBusConfig::new("127.0.0.1:9092");
            config.properties.insert(key.into(), "x".into());
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(&format!("may not set `{key}`")), "{err}");
        }
        let mut config = KafkaBusConfig::new("127.0.0.1:9092");
        config
            .properties
            .insert("security.protocol".into(), "ssl".into());
        assert!(config.validate().is_ok());
    }

    #[test]
    fn each_client_gets_the_properties_of_its_role() {
        let mut config = KafkaBusConfig::new("127.0.0.1:9092");
        for (k, v) in [
            ("session.timeout.ms", "6000"),
            ("linger.ms", "20"),
            ("client.id", "edge-1"),
        ] {
            config.properties.insert(k.into(), v.into());
        }
        let has = |role, key| config.client_config(role, &[]).get(key).is_some();
        assert!(has(Role::Consumer, "session.timeout.ms"));
        assert!(!has(Role::Producer, "session.timeout.ms"));
        assert!(has(Role::Producer, "linger.ms"));
        assert!(!has(Role::Consumer, "linger.ms"));
        assert!(!has(Role::Admin, "linger.ms") && !has(Role::Admin, "session.timeout.ms"));
        for role in [Role::Producer, Role::Consumer, Role::Admin] {
            assert!(has(role, "client.id"));
        }
    }

    /// A producer that failed for good (fenced after a broker outage) refused every batch
    /// until a restart: it is replaced by a new one made with the same settings.
    #[test]
    fn a_producer_failed_for_good_is_replaced() {
        let config = KafkaBusConfig::new("127.0.0.1:1");
        let key = Arc::new(|_: &str, tenant: &str, _: &InputItem| tenant_key(tenant));
        let mut producer = KafkaBusProducer::new(&config, key).unwrap();
        assert!(!producer.replace_if_fatal(), "nothing to replace");
        let reason = std::ffi::CString::new("fenced in a test").unwrap();
        // SAFETY: the client pointer is live (owned by `producer`), the reason a C string.
        let injected = unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                producer.producer.client().native_ptr(),
                rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__FENCED,
                reason.as_ptr(),
            )
        };
        assert_eq!(
            injected,
            rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        );
        assert!(producer.producer.client().fatal_error().is_some());
        assert!(producer.replace_if_fatal());
        assert!(producer.producer.client().fatal_error().is_none());
    }

    /// `run --check` asked the brokers with an admin client, which reads neither consumer nor
    /// producer properties: a bad one of those passed the check and `run` refused it. The
    /// probe refuses them before asking any broker.
    #[test]
    fn the_probe_refuses_consumer_and_producer_properties_run_would_refuse() {
        for ((key, value), role) in [
            (("session.timeout.ms", "abc"), "consumer"),
            (("linger.ms", "abc"), "producer"),
        ] {
            let mut config = KafkaBusConfig::new("127.0.0.1:1");
            config.properties.insert(key.into(), value.into());
            let err = probe(&config).unwrap_err().to_string();
            assert!(
                err.contains(&format!("the {role}'s properties")),
                "{key}: {err}"
            );
        }
        // The value of a refused property is not shown: it may be a password (QA).
        for (key, value) in [
            ("sasl.passwd", "Pl4nted-Kafka-Passw0rd"),
            (
                "sasl.jaas.config",
                "PlainLoginModule required password=\"Pl4nted-Kafka-Passw0rd\";",
            ),
            ("session.timeout.ms", "Pl4nted-Kafka-Passw0rd"),
        ] {
            let mut config = KafkaBusConfig::new("127.0.0.1:1");
            config.properties.insert(key.into(), value.into());
            let err = probe(&config).unwrap_err().to_string();
            assert!(
                err.contains(key) && !err.contains("Pl4nted"),
                "{key}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn a_limit_too_small_for_a_dead_letter_refuses_the_batch_instead_of_spinning() {
        let mut config = KafkaBusConfig::new("127.0.0.1:1");
        config
            .properties
            .insert("message.max.bytes".into(), "1000".into());
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("at least 16384"), "{err}");
        // Past validation anyway (librdkafka refuses locally, before any broker): the dead
        // letter standing in for the record is over the limit too. Refused with why, at once.
        let producer = KafkaBusProducer {
            producer: config
                .client_config(Role::Producer, &[])
                .create_with_context(QuietErrors::default())
                .unwrap(),
            client_config: config.client_config(Role::Producer, &[]),
            topic: "records".into(),
            key: Arc::new(|_: &str, tenant: &str, _: &InputItem| tenant_key(tenant)),
            metrics: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            source_note: None,
            sealer: None,
            splitter: None,
            fenced: Default::default(),
        };
        let quotes = InputItem::Record {
            line: 1,
            value: sonic_rs::json!({ "q": "\"".repeat(1500) }),
            member_lines: Vec::new(),
        };
        let outcome = tokio::time::timeout(
            Duration::from_secs(10),
            producer.produce(&submission(vec![quotes])),
        )
        .await
        .expect("refused, not retried in a loop");
        let err = outcome.unwrap_err().to_string();
        assert!(
            err.contains("MessageSizeTooLarge") || err.contains("too large"),
            "{err}"
        );
    }

    #[test]
    fn unusable_settings_are_refused() {
        let ok = KafkaBusConfig::new("127.0.0.1:9092");
        assert!(ok.validate().is_ok());
        for broken in [
            KafkaBusConfig {
                brokers: " ".into(),
                ..ok.clone()
            },
            KafkaBusConfig {
                brokers: " , ".into(),
                ..ok.clone()
            },
            KafkaBusConfig {
                partitions: 0,
                ..ok.clone()
            },
            KafkaBusConfig {
                batch_records: 0,
                ..ok.clone()
            },
        ] {
            assert!(broken.validate().is_err(), "{broken:?}");
        }
    }

    /// The runs of one read are all on the bus before the first is waited for (so the store
    /// can commit them together), in read order, and the batch answers once every run is
    /// stored; a refused run fails it.
    #[tokio::test]
    async fn a_reads_runs_are_all_put_on_the_bus_in_order_before_waiting() {
        let run = |source: &str, line: u64| {
            let key = BatchKey {
                source: source.into(),
                tenant: "acme".into(),
                origin: None,
            };
            let item = InputItem::Record {
                line,
                value: sonic_rs::json!({"n": line}),
                member_lines: Vec::new(),
            };
            (key, vec![item])
        };
        let groups = vec![run("okta", 1), run("github", 2), run("okta", 3)];
        let (bus, mut rx) = crate::bus::channel(8);
        // A worker that answers nothing until it holds all three: waiting for each run's
        // answer before putting the next would never get there.
        let worker = tokio::spawn(async move {
            let mut taken = Vec::new();
            for _ in 0..3 {
                taken.push(rx.recv().await.expect("a run"));
            }
            let order: Vec<String> = taken.iter().map(|s| s.source.clone()).collect();
            for (i, s) in taken.into_iter().enumerate() {
                let answer = if i == 1 {
                    Err("disk full".to_string())
                } else {
                    Ok(crate::bus::SubmitAck::default())
                };
                let _ = s.ack.send(answer);
            }
            order
        });
        let answer = tokio::time::timeout(Duration::from_secs(10), async {
            enqueue_batch(&bus, &groups).await.await
        })
        .await
        .expect("the runs were put on the bus without waiting for each");
        assert!(answer.unwrap_err().contains("disk full"));
        assert_eq!(worker.await.unwrap(), ["okta", "github", "okta"]);
    }
}
