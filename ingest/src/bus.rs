//! The in-process bus: sources submit batches of input items and wait for the acknowledgement,
//! which the consumer (pipeline + store) sends only after the batch is durably stored. So a
//! source that saw an ack may forget its input; one that did not must resubmit (the store is
//! idempotent on event id, so resubmission never duplicates).

use crate::{IngestError, InputItem, Result};
use tokio::sync::{mpsc, oneshot};

/// What a consumer reports back for a stored batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct SubmitAck {
    /// Records that became events and are stored.
    pub events: usize,
    /// Replayed events that were already stored.
    pub duplicates: usize,
    /// Input lines stored as dead letters (a bad line already stored, as in a resent batch, is
    /// not stored nor counted again).
    pub dead_letters: usize,
    /// Alerts raised by this batch.
    pub alerts: usize,
    /// Of `alerts`, those counted into an open alert of the same rule and entity instead of
    /// stored (and sent) on their own.
    pub alerts_grouped: usize,
    /// Stored alerts whose `count` this batch's repeats took past 10, 100, 1000, ...: the
    /// destinations hear of them with that count (marked still firing, unless the batch raised
    /// them too).
    pub alerts_still_firing: usize,
    /// Records handed to the Kafka bus (`[kafka]`): on the broker, detected and stored by the
    /// detector instances after this answer, so the counts above stay 0. Left out on the
    /// embedded bus.
    #[serde(skip_serializing_if = "is_zero")]
    pub queued: usize,
    /// Events of this batch dated before their retention window: stored, but the next
    /// retention sweep (hourly, and at start) removes them. Raise the retention to keep them.
    pub past_retention: usize,
    /// What the sender should know about the batch (a source name no normalizer knows, whose
    /// records are stored as plain JSON); left out when there is nothing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The batch's first dead letters (at most [`MAX_DEAD_LETTER_LINES`]): each one's input
    /// line and why (masked), so the sender can tell which of its lines failed; also for a bad
    /// line sent again (not counted in `dead_letters` again). Left out when there is none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dead_letter_lines: Vec<DeadLetterLine>,
}

/// At most this many dead letters are listed in a batch's answer ([`SubmitAck::dead_letter_lines`]).
pub const MAX_DEAD_LETTER_LINES: usize = 20;

/// A dead letter of a batch, as its answer lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct DeadLetterLine {
    /// The input line (of the body; for a JSON array, of its element), when known.
    pub line: Option<u64>,
    /// Why it is a dead letter (masked).
    pub reason: String,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A batch on its way to the pipeline.
#[derive(Debug)]
pub struct Submission {
    /// Source name (`okta`, `auto`, `json`, ...).
    pub source: String,
    pub tenant: String,
    /// The file the items were read from (a spool file's name), `None` for other input (HTTP,
    /// pollers): every dead letter of the batch starts its reason with it, the normalizer's as
    /// well as the reader's, so a line number can be traced to its file.
    pub origin: Option<String>,
    pub items: Vec<InputItem>,
    /// Where the consumer sends the outcome once the batch is stored (or failed).
    pub ack: oneshot::Sender<std::result::Result<SubmitAck, String>>,
}

/// The sending half, cloned into every source.
#[derive(Debug, Clone)]
pub struct BusSender(mpsc::Sender<Submission>);

/// The receiving half, owned by the pipeline task.
pub type BusReceiver = mpsc::Receiver<Submission>;

/// A bounded bus: `capacity` batches in flight before sources wait (backpressure).
pub fn channel(capacity: usize) -> (BusSender, BusReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (BusSender(tx), rx)
}

impl BusSender {
    /// Batches submitted and not yet taken by the consumer (the backlog in front of it).
    pub fn queued(&self) -> usize {
        self.0.max_capacity() - self.0.capacity()
    }

    /// Submit a batch and wait until it is stored. `Err` if the consumer failed or is gone.
    pub async fn submit(
        &self,
        source: &str,
        tenant: &str,
        items: Vec<InputItem>,
    ) -> Result<SubmitAck> {
        self.submit_from(None, source, tenant, items).await
    }

    /// [`Self::submit`] for items read from the file named `origin` (see
    /// [`Submission::origin`]).
    pub async fn submit_from(
        &self,
        origin: Option<&str>,
        source: &str,
        tenant: &str,
        items: Vec<InputItem>,
    ) -> Result<SubmitAck> {
        self.enqueue_from(origin, source, tenant, items)
            .await?
            .stored()
            .await
    }

    /// Put a batch on the bus without waiting for it to be stored: the returned
    /// [`PendingAck`] answers that. The consumer takes batches in the order they were put, so
    /// a sender with several batches in hand (a Kafka read holding many sources) puts them all
    /// and then waits, and the store can commit them together instead of one after the other.
    pub async fn enqueue_from(
        &self,
        origin: Option<&str>,
        source: &str,
        tenant: &str,
        items: Vec<InputItem>,
    ) -> Result<PendingAck> {
        let (ack, wait) = oneshot::channel();
        let submission = Submission {
            source: source.to_string(),
            tenant: tenant.to_string(),
            origin: origin.map(str::to_string),
            items,
            ack,
        };
        self.0
            .send(submission)
            .await
            .map_err(|_| IngestError::PipelineClosed)?;
        Ok(PendingAck { wait, answer: None })
    }
}

/// The answer to a batch put on the bus by [`BusSender::enqueue_from`].
#[derive(Debug)]
pub struct PendingAck {
    wait: oneshot::Receiver<std::result::Result<SubmitAck, String>>,
    /// The answer, once [`Self::is_answered`] saw it.
    answer: Option<Result<SubmitAck>>,
}

impl PendingAck {
    /// Whether the consumer has answered (stored or refused the batch), without waiting: a
    /// sender with several batches in flight moves its checkpoint past the ones already stored.
    pub fn is_answered(&mut self) -> bool {
        if self.answer.is_none() {
            self.answer = match self.wait.try_recv() {
                Ok(answer) => Some(answer.map_err(IngestError::Rejected)),
                Err(oneshot::error::TryRecvError::Empty) => None,
                Err(oneshot::error::TryRecvError::Closed) => Some(Err(IngestError::PipelineClosed)),
            };
        }
        self.answer.is_some()
    }

    /// Wait until the batch is stored. `Err` if the consumer failed or is gone.
    pub async fn stored(self) -> Result<SubmitAck> {
        if let Some(answer) = self.answer {
            return answer;
        }
        match self.wait.await {
            Ok(Ok(ack)) => Ok(ack),
            Ok(Err(reason)) => Err(IngestError::Rejected(reason)),
            Err(_) => Err(IngestError::PipelineClosed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn submit_waits_for_the_consumer_ack() {
        let (tx, mut rx) = channel(4);
        let consumer = tokio::spawn(async move {
            let s = rx.recv().await.unwrap();
            assert_eq!(s.items.len(), 1);
            s.ack
                .send(Ok(SubmitAck {
                    events: 1,
                    ..Default::default()
                }))
                .unwrap();
            let s = rx.recv().await.unwrap();
            s.ack.send(Err("disk full".into())).unwrap();
        });
        let item = InputItem::Record {
            line: 1,
            value: sonic_rs::json!({"a": 1}),
            member_lines: Vec::new(),
        };
        let ack = tx
            .submit("json", "default", vec![item.clone()])
            .await
            .unwrap();
        assert_eq!(ack.events, 1);
        let err = tx.submit("json", "default", vec![item]).await.unwrap_err();
        assert!(err.to_string().contains("disk full"));
        consumer.await.unwrap();
    }
}
