//! What else happened around one event: the events of the same user (or from the same address)
//! shortly before and after it. It is the first pivot of a triage ("what did this account do
//! right after the MFA reset?"), and typing it as a search means copying the user, the time and
//! the window by hand.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::reader::{EventQuery, EventSort};
use crate::store::Store;
use crate::top_values::values_in_doc;
use crate::{Result, StoreError};

/// Most events one context lists; the answer says when there are more (`more`).
pub const MAX_CONTEXT_EVENTS: usize = 1000;
/// The widest window before and after the event, in days.
pub const MAX_CONTEXT_WINDOW_DAYS: i64 = 30;

/// What ties the events of a context to the event asked about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContextPivot {
    /// The same user: any of the event's `user.name` and `user.email` as another event's user
    /// or target user (`related.user`, `user.*`, `user.target.*`).
    #[default]
    User,
    /// The same address: any of the event's `source.ip` and `related.ip` in another event's.
    Ip,
}

impl ContextPivot {
    /// The name `by=` and `--by` take (and the answer's `by` says).
    pub fn as_str(self) -> &'static str {
        match self {
            ContextPivot::User => "user",
            ContextPivot::Ip => "ip",
        }
    }
}

impl std::str::FromStr for ContextPivot {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<ContextPivot, String> {
        match s {
            "user" => Ok(ContextPivot::User),
            "ip" => Ok(ContextPivot::Ip),
            other => Err(format!("`{other}`: expected user or ip")),
        }
    }
}

/// The events around one event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventContext {
    /// The event asked about, as stored.
    pub event: serde_json::Value,
    pub by: ContextPivot,
    /// The values the other events share with it (users or addresses).
    pub values: Vec<String>,
    /// The window: `[from, to)` around the event's `@timestamp`.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The search that finds them (for `GET /events/search` or `perimeter search`, to page on
    /// or narrow).
    pub query: String,
    /// Oldest first, the event itself included. When more than `limit` match, the nearest:
    /// up to half of them before the event, the rest from it on.
    pub items: Vec<serde_json::Value>,
    /// More events matched than `limit`.
    pub more: bool,
}

impl Store {
    /// The events of `tenant` sharing the user (or address) of event `id` within `window`
    /// before and after it, oldest first, at most `limit` (`1..=MAX_CONTEXT_EVENTS`). `None`
    /// when the tenant has no such event; [`StoreError::InvalidQuery`] when the event has no
    /// user (address) or the window or limit is out of range.
    pub fn event_context(
        &self,
        tenant: &str,
        id: &str,
        by: ContextPivot,
        window: TimeDelta,
        limit: usize,
    ) -> Result<Option<EventContext>> {
        if !(1..=MAX_CONTEXT_EVENTS).contains(&limit) {
            return Err(StoreError::InvalidQuery(format!(
                "the limit must be between 1 and {MAX_CONTEXT_EVENTS}"
            )));
        }
        if window <= TimeDelta::zero() || window > TimeDelta::days(MAX_CONTEXT_WINDOW_DAYS) {
            return Err(StoreError::InvalidQuery(format!(
                "the window must be longer than 0 and at most {MAX_CONTEXT_WINDOW_DAYS} days"
            )));
        }
        let Some(event) = self.get_event(tenant, id)? else {
            return Ok(None);
        };
        let at = values_in_doc(&event, "@timestamp")
            .into_iter()
            .next()
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| StoreError::InvalidQuery(format!("event `{id}` has no @timestamp")))?;
        // `related.*` holds them all for events a normalizer filled it for; the fields
        // themselves for the others.
        let (fields, sources): (&[&str], &[&str]) = match by {
            ContextPivot::User => (
                &[
                    "related.user",
                    "user.name",
                    "user.email",
                    "user.target.name",
                    "user.target.email",
                ],
                &["user.name", "user.email"],
            ),
            ContextPivot::Ip => (&["related.ip", "source.ip"], &["source.ip", "related.ip"]),
        };
        let mut values: Vec<String> = Vec::new();
        for path in sources {
            for v in values_in_doc(&event, path) {
                if !values.contains(&v) {
                    values.push(v);
                }
            }
        }
        if values.is_empty() {
            let what = match by {
                ContextPivot::User => "user (user.name or user.email)",
                ContextPivot::Ip => "address (related.ip)",
            };
            return Err(StoreError::InvalidQuery(format!(
                "event `{id}` has no {what} to find other events by"
            )));
        }
        let query = values
            .iter()
            .flat_map(|v| {
                let quoted = v.replace('\\', "\\\\").replace('"', "\\\"");
                fields.iter().map(move |f| format!("{f}:\"{quoted}\""))
            })
            .collect::<Vec<_>>()
            .join(" OR ");
        let (from, to) = (at - window, at + window + TimeDelta::microseconds(1));
        // The nearest events on both sides when there are more than `limit`: half before the
        // event (newest first, then turned), the rest from it on; a side with fewer leaves its
        // share to the other.
        let search = |from, to, sort, limit| {
            self.exact_matches(tenant, &query, (from, to, sort), limit, |doc| {
                fields.iter().any(|f| {
                    values_in_doc(doc, f)
                        .iter()
                        .any(|v| values.iter().any(|want| same_value(by, v, want)))
                })
            })
        };
        // (A limit of 1 is the event itself: one before is looked at only to tell `more`.)
        let (mut before, mut before_left_out) =
            search(from, at, EventSort::Newest, (limit / 2).max(1))?;
        if limit == 1 {
            before_left_out |= !before.is_empty();
            before.clear();
        }
        let (after, after_left_out) = search(at, to, EventSort::Oldest, limit - before.len())?;
        if after.len() < limit - before.len() && before_left_out {
            (before, before_left_out) = search(from, at, EventSort::Newest, limit - after.len())?;
        }
        let more = before_left_out || after_left_out;
        let mut items = before;
        items.reverse();
        items.extend(after);
        Ok(Some(EventContext {
            event,
            by,
            values,
            from,
            to,
            query,
            more,
            items,
        }))
    }

    /// Up to `limit` events of `query` in `(from, to)` sorted by `sort` that `exact` keeps, and
    /// whether more are left. The query's phrases on word fields also match
    /// longer values (`"kim@acme.example"` is a run of words of `dana.kim@acme.example`: QA, a
    /// context of 351 events, 350 another user's), so each page is filtered, and pages are read
    /// on until `limit` are kept, at most [`MAX_CONTEXT_SCANNED`] events in all.
    fn exact_matches(
        &self,
        tenant: &str,
        query: &str,
        (from, to, sort): (DateTime<Utc>, DateTime<Utc>, EventSort),
        limit: usize,
        exact: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<(Vec<serde_json::Value>, bool)> {
        let mut kept = Vec::new();
        let mut cursor = None;
        let mut scanned = 0;
        loop {
            let page = self.search_events(
                tenant,
                &EventQuery {
                    query: query.to_string(),
                    from: Some(from),
                    to: Some(to),
                    limit: (limit + 1).clamp(100, crate::alerts::MAX_PAGE_LIMIT),
                    cursor,
                    sort,
                },
            )?;
            scanned += page.items.len();
            kept.extend(page.items.into_iter().filter(|doc| exact(doc)));
            cursor = page.next_cursor;
            if kept.len() > limit || cursor.is_none() || scanned >= MAX_CONTEXT_SCANNED {
                break;
            }
        }
        let more = kept.len() > limit || cursor.is_some();
        kept.truncate(limit);
        Ok((kept, more))
    }
}

/// Most events a context reads on each side to find the ones of its user or address exactly.
const MAX_CONTEXT_SCANNED: usize = 20_000;

/// Whether a stored value is the value a context looks for: a user whatever its case, an address
/// as written.
fn same_value(by: ContextPivot, stored: &str, wanted: &str) -> bool {
    match by {
        ContextPivot::User => stored.to_lowercase() == wanted.to_lowercase(),
        ContextPivot::Ip => stored == wanted,
    }
}
