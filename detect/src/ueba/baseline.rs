//! Online rate baselines and sliding windows, both driven by event time.
//!
//! A [`RateBaseline`] learns an entity's hourly event rate as an exponentially weighted mean and
//! variance of hourly counts (empty hours count as zeros), plus - once the entity has enough
//! history of its own - an hour-of-day x day-of-week profile. Hour-of-week seasonality is kept as
//! two marginal profiles (24 + 7 numbers) instead of 168 slots: it costs a fifth of the memory and
//! learns from a few days of data instead of weeks, at the price of not modelling interactions
//! (e.g. "busy Monday mornings only").
//!
//! Counts in a window are scored with a Poisson tail, or a negative binomial tail when the
//! learned hourly counts are over-dispersed (variance above the mean).

use serde::{Deserialize, Serialize};
use statrs::distribution::{DiscreteCDF, NegativeBinomial, Poisson};

/// Sub-buckets per window length: the window edge is accurate to a tenth of its length.
const SLOTS_PER_WINDOW: i64 = 10;
/// Sub-buckets a [`WindowCounter`] keeps: the one in progress and a whole window before it. With
/// only `SLOTS_PER_WINDOW` (as snapshots `perimeter-ueba/1` hold), the slot in progress pushed
/// the oldest whole one out and a window really covered 9 to 10 tenths of its length: ten
/// failures spread over 546 s escaped a 10-minute window. Now it covers 10 to 11 tenths: never
/// less than the window, at most a tenth more.
pub(crate) const WINDOW_SLOTS: usize = SLOTS_PER_WINDOW as usize + 1;
/// The slots snapshots of format `perimeter-ueba/1` hold.
const LEGACY_WINDOW_SLOTS: usize = SLOTS_PER_WINDOW as usize;
const HOUR: i64 = 3600;

/// Event counts over a sliding window of sub-buckets (event time).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct WindowCounter {
    /// Index of the newest sub-bucket (`t / slot_seconds`).
    head: i64,
    counts: [u32; WINDOW_SLOTS],
}

pub(crate) fn slot_seconds(window_seconds: u64) -> i64 {
    (window_seconds as i64 / SLOTS_PER_WINDOW).max(1)
}

thread_local! {
    /// Set while a snapshot of format `perimeter-ueba/1` is read (see [`read_legacy_windows`]).
    static LEGACY_WINDOWS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `read` with [`WindowCounter`]s (de)serialized in the layout of format `perimeter-ueba/1`
/// (10 slots). Binary snapshots carry no lengths, so the reader must be told which layout the
/// file has. The 10 slots move to the same sub-buckets of the 11; the 11th (older) starts empty.
pub(crate) fn read_legacy_windows<T>(read: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            LEGACY_WINDOWS.with(|l| l.set(false));
        }
    }
    LEGACY_WINDOWS.with(|l| l.set(true));
    let _reset = Reset;
    read()
}

/// How a [`WindowCounter`] is written.
#[derive(Serialize, Deserialize)]
#[serde(rename = "WindowCounter")]
struct WindowLayout {
    head: i64,
    counts: [u32; WINDOW_SLOTS],
}

/// How format `perimeter-ueba/1` wrote it.
#[derive(Serialize, Deserialize)]
#[serde(rename = "WindowCounter")]
struct LegacyWindowLayout {
    head: i64,
    counts: [u32; LEGACY_WINDOW_SLOTS],
}

/// Copy the newest sub-buckets (up to `head`) from one ring of slots into another of another
/// length; slots `to` has beyond `from`'s are left as they are.
fn move_slots(head: i64, from: &[u32], to: &mut [u32]) {
    for back in 0..from.len().min(to.len()) as i64 {
        let slot = head - back;
        to[slot.rem_euclid(to.len() as i64) as usize] =
            from[slot.rem_euclid(from.len() as i64) as usize];
    }
}

impl Serialize for WindowCounter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if LEGACY_WINDOWS.with(|l| l.get()) {
            // Only tests write the old layout (to check that it is still read).
            let mut counts = [0u32; LEGACY_WINDOW_SLOTS];
            move_slots(self.head, &self.counts, &mut counts);
            return LegacyWindowLayout {
                head: self.head,
                counts,
            }
            .serialize(s);
        }
        WindowLayout {
            head: self.head,
            counts: self.counts,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for WindowCounter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !LEGACY_WINDOWS.with(|l| l.get()) {
            let w = WindowLayout::deserialize(d)?;
            return Ok(WindowCounter {
                head: w.head,
                counts: w.counts,
            });
        }
        let old = LegacyWindowLayout::deserialize(d)?;
        let mut counts = [0u32; WINDOW_SLOTS];
        move_slots(old.head, &old.counts, &mut counts);
        Ok(WindowCounter {
            head: old.head,
            counts,
        })
    }
}

impl WindowCounter {
    fn advance(&mut self, slot: i64) {
        if slot <= self.head {
            return;
        }
        let gap = slot - self.head;
        if gap >= WINDOW_SLOTS as i64 {
            self.counts = [0; WINDOW_SLOTS];
        } else {
            for s in self.head + 1..=slot {
                self.counts[s.rem_euclid(WINDOW_SLOTS as i64) as usize] = 0;
            }
        }
        self.head = slot;
    }

    /// Count `n` events at `t` and return the count in the window ending at `t`. Events older
    /// than the window (late arrivals) are not counted.
    pub fn add(&mut self, t: i64, window_seconds: u64, n: u32) -> u64 {
        let width = slot_seconds(window_seconds);
        let slot = t.div_euclid(width);
        self.advance(slot);
        if self.head - slot < WINDOW_SLOTS as i64 {
            let c = &mut self.counts[slot.rem_euclid(WINDOW_SLOTS as i64) as usize];
            *c = c.saturating_add(n);
        }
        self.total()
    }

    /// The count in the window ending at `t`, without moving the window: for a `t` before the
    /// newest time counted too (an event arriving after later ones), the slots kept up to `t`'s.
    pub fn total_until(&self, t: i64, window_seconds: u64) -> u64 {
        let slot = t.div_euclid(slot_seconds(window_seconds));
        let span = WINDOW_SLOTS as i64 - 1;
        let (from, to) = ((self.head - span).max(slot - span), slot.min(self.head));
        (from..=to)
            .map(|s| self.counts[s.rem_euclid(WINDOW_SLOTS as i64) as usize] as u64)
            .sum()
    }

    /// The count in the window ending at `t`.
    pub fn total_at(&mut self, t: i64, window_seconds: u64) -> u64 {
        self.advance(t.div_euclid(slot_seconds(window_seconds)));
        self.total()
    }

    fn total(&self) -> u64 {
        self.counts.iter().map(|&c| c as u64).sum()
    }
}

/// Hour-of-day and day-of-week profiles: per slot, an exponentially weighted average of that
/// slot's own occurrences (hourly counts per hour of day, daily totals per day of week), so a
/// slot filled recently does not look busier than one filled last week.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Season {
    /// First hour bucket this profile learned from.
    since_bucket: i64,
    /// Negative = no occurrence yet.
    hour_of_day: [f32; 24],
    day_of_week: [f32; 7],
    /// Count of the day in progress, folded into `day_of_week` at its last hour.
    day_total: f32,
}

const UNSET: f32 = -1.0;

fn ew(slot: &mut f32, x: f32, weight: f32) {
    if *slot < 0.0 {
        *slot = x;
    } else {
        *slot += weight * (x - *slot);
    }
}

/// `slots[i]` relative to the mean of the slots seen so far (1.0 when unknown).
fn relative(slots: &[f32], i: usize) -> f64 {
    let (sum, n) = slots
        .iter()
        .filter(|v| **v >= 0.0)
        .fold((0.0f64, 0u32), |(s, n), v| (s + *v as f64, n + 1));
    if slots[i] < 0.0 || n == 0 || sum <= 0.0 {
        return 1.0;
    }
    slots[i] as f64 * n as f64 / sum
}

impl Season {
    fn new(since_bucket: i64) -> Season {
        Season {
            since_bucket,
            hour_of_day: [UNSET; 24],
            day_of_week: [UNSET; 7],
            day_total: 0.0,
        }
    }

    /// Learn hour bucket `bucket`'s count `x`; `alpha` is the hourly weight of the rate baseline,
    /// turned into the equivalent weight per day / per week for slots that recur daily / weekly.
    fn learn(&mut self, bucket: i64, x: f32, alpha: f32) {
        let (h, d) = hour_and_day(bucket);
        ew(&mut self.hour_of_day[h], x, 1.0 - (1.0 - alpha).powi(24));
        self.day_total += x;
        if h == 23 {
            ew(
                &mut self.day_of_week[d],
                self.day_total,
                1.0 - (1.0 - alpha).powi(168),
            );
            self.day_total = 0.0;
        }
    }

    fn factor(&self, bucket: i64) -> f64 {
        let (h, d) = hour_and_day(bucket);
        relative(&self.hour_of_day, h) * relative(&self.day_of_week, d)
    }
}

/// Learned hourly rate of one (entity, action class).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RateBaseline {
    /// Hour bucket (`t / 3600`) being counted.
    bucket: i64,
    bucket_count: u32,
    /// Closed hourly buckets learned from (saturating).
    closed: u32,
    /// Exponentially weighted mean / variance of hourly counts, not yet bias-corrected.
    mean: f32,
    var: f32,
    season: Option<Box<Season>>,
}

/// Parameters shared by every baseline (from the global `[ueba]` settings).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BaselineParams {
    /// Weight of the newest hourly bucket.
    pub alpha: f64,
    /// Hours of own history before seasonality is applied.
    pub season_min_hours: i64,
}

impl BaselineParams {
    pub fn new(half_life_hours: f64, season_min_days: u64) -> BaselineParams {
        let hl = if half_life_hours.is_finite() {
            half_life_hours.max(1.0)
        } else {
            168.0
        };
        BaselineParams {
            alpha: 1.0 - 0.5f64.powf(1.0 / hl),
            season_min_hours: season_min_days as i64 * 24,
        }
    }
}

/// Hours of gap beyond which further empty buckets change nothing measurable.
const MAX_GAP_STEPS: i64 = 24 * 7 * 8;

impl RateBaseline {
    pub fn new(t: i64) -> RateBaseline {
        RateBaseline {
            bucket: t.div_euclid(HOUR),
            bucket_count: 0,
            closed: 0,
            mean: 0.0,
            var: 0.0,
            season: None,
        }
    }

    /// Count `n` events at `t`. Late events (an earlier hour) are counted in the current hour.
    pub fn observe(&mut self, t: i64, n: u32, p: &BaselineParams) {
        self.roll(t, p);
        self.bucket_count = self.bucket_count.saturating_add(n);
    }

    /// Learn nothing of the hour being counted so far: it held an anomaly. An attack's hour
    /// learned as normal raised the mean and the variance so far that the same attack a day or
    /// a week later was no surprise, and went unreported (QA).
    pub fn forget_current_hour(&mut self) {
        self.bucket_count = 0;
    }

    /// Close every hourly bucket before `t`'s hour.
    pub fn roll(&mut self, t: i64, p: &BaselineParams) {
        let b = t.div_euclid(HOUR);
        if b <= self.bucket {
            return;
        }
        let alpha = p.alpha as f32;
        let step = |this: &mut RateBaseline, bucket: i64, x: f32| {
            // A plain running mean until the history is as long as the half-life window, then
            // exponential weighting: no start-up bias, no correction needed.
            let a = alpha.max(1.0 / (this.closed as f32 + 1.0));
            let diff = x - this.mean;
            let incr = a * diff;
            this.mean += incr;
            this.var = (1.0 - a) * (this.var + diff * incr);
            this.closed = this.closed.saturating_add(1);
            if let Some(s) = this.season.as_deref_mut() {
                s.learn(bucket, x, alpha);
            }
        };
        let count = self.bucket_count as f32;
        let first = self.bucket;
        step(self, first, count);
        // Seasonality only for entities that are actually active: a profile is 124 bytes and most
        // entities are seen a handful of times.
        if self.season.is_none() && count > 0.0 && self.closed >= 24 {
            self.season = Some(Box::new(Season::new(first + 1)));
        }
        let gap = (b - self.bucket - 1).min(MAX_GAP_STEPS);
        for i in 0..gap {
            step(self, first + 1 + i, 0.0);
        }
        self.bucket = b;
        self.bucket_count = 0;
    }

    /// Mean and variance of hourly counts.
    fn corrected(&self, _p: &BaselineParams) -> (f64, f64) {
        (self.mean.max(0.0) as f64, self.var.max(0.0) as f64)
    }

    /// Learned events per hour (bias-corrected, without seasonality) as of `t`.
    pub fn rate_per_hour(&mut self, t: i64, p: &BaselineParams) -> f64 {
        self.roll(t, p);
        self.corrected(p).0
    }

    /// Hours of history (closed buckets).
    #[cfg(test)]
    pub fn history_hours(&self) -> u32 {
        self.closed
    }

    /// Seasonal factor for the hour containing `t` (1.0 without enough seasonal history).
    fn seasonal_factor(&self, t: i64, p: &BaselineParams) -> f64 {
        let Some(s) = self.season.as_deref() else {
            return 1.0;
        };
        if t.div_euclid(HOUR) - s.since_bucket < p.season_min_hours {
            return 1.0;
        }
        // Bounded so one quiet slot cannot turn a normal count into an alert on its own.
        s.factor(t.div_euclid(HOUR)).clamp(0.1, 10.0)
    }

    /// Score `observed` events in a window of `window_seconds` ending at `t` against the learned
    /// rate (when `use_learned`) floored at `floor_per_hour`. The tail probability is only computed
    /// when `observed` reaches `min_ratio` times the expected count (and exceeds it); otherwise it
    /// is reported as 1, which keeps the common case free of incomplete-gamma evaluations.
    #[allow(clippy::too_many_arguments)]
    pub fn score(
        &mut self,
        t: i64,
        window_seconds: u64,
        observed: u64,
        floor_per_hour: f64,
        use_learned: bool,
        min_ratio: f64,
        p: &BaselineParams,
    ) -> Score {
        self.roll(t, p);
        let (mean, var) = if use_learned {
            self.corrected(p)
        } else {
            (0.0, 0.0)
        };
        let seasonal = if use_learned {
            self.seasonal_factor(t, p)
        } else {
            1.0
        };
        let per_hour = (mean * seasonal).max(floor_per_hour).max(1e-6);
        let expected = per_hour * window_seconds as f64 / HOUR as f64;
        // With a seasonal profile in use, the busy-vs-quiet hour swings are explained by the
        // profile, so the raw hourly variance would overstate the noise around it.
        let dispersion = if mean > 0.0 && seasonal == 1.0 {
            (var / mean).clamp(1.0, 50.0)
        } else {
            1.0
        };
        let obs = observed as f64;
        let p_value = if obs <= expected || obs < min_ratio * expected {
            1.0
        } else {
            tail_probability(observed, expected, dispersion)
        };
        Score {
            observed,
            expected,
            per_hour,
            p_value,
        }
    }
}

/// A window count against its baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Score {
    pub observed: u64,
    /// Expected count in the window.
    pub expected: f64,
    /// Baseline rate per hour used.
    pub per_hour: f64,
    /// P(X >= observed) under the baseline.
    pub p_value: f64,
}

impl Score {
    /// `-log10(p)`, capped so an underflowing tail stays a finite score.
    pub fn surprise(&self) -> f64 {
        surprise(self.p_value)
    }
}

pub(crate) fn surprise(p: f64) -> f64 {
    if p <= 0.0 {
        300.0
    } else {
        (-p.log10()).clamp(0.0, 300.0)
    }
}

/// `p < 1e-9` style text for explanations.
/// `baseline 0.30/10m, p < 1e-9` (with a note while the entity is still on the prior).
pub(crate) fn baseline_clause(score: &Score, window: &str, learned: bool) -> String {
    let prior = if learned {
        ""
    } else {
        " (prior, entity still warming up)"
    };
    format!(
        "baseline {:.2}/{window}{prior}, {}",
        score.expected,
        format_p(score.p_value)
    )
}

pub(crate) fn format_p(p: f64) -> String {
    if p < 1e-300 {
        return "p < 1e-300".into();
    }
    if p < 1e-3 {
        let exp = p.log10().ceil() as i32;
        return format!("p < 1e{exp}");
    }
    format!("p = {p:.3}")
}

/// P(X >= k) for a count with mean `expected` and variance `dispersion * expected`.
pub(crate) fn tail_probability(k: u64, expected: f64, dispersion: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    let p = if dispersion > 1.05 {
        // Negative binomial with the same mean and variance: p = 1/phi, r = mu / (phi - 1).
        NegativeBinomial::new(expected / (dispersion - 1.0), 1.0 / dispersion)
            .map(|d| d.sf(k - 1))
            .ok()
    } else {
        Poisson::new(expected).map(|d| d.sf(k - 1)).ok()
    };
    p.filter(|p| p.is_finite()).unwrap_or(1.0).clamp(0.0, 1.0)
}

/// Hour of day and day of week (0 = Monday) of an hour bucket since the Unix epoch.
pub(crate) fn hour_and_day(bucket: i64) -> (usize, usize) {
    let h = bucket.rem_euclid(24) as usize;
    // 1970-01-01 was a Thursday (3 with Monday = 0).
    let d = (bucket.div_euclid(24) + 3).rem_euclid(7) as usize;
    (h, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: BaselineParams = BaselineParams {
        alpha: 0.004117,
        season_min_hours: 14 * 24,
    };

    #[test]
    fn window_slides_with_event_time() {
        let mut w = WindowCounter::default();
        let t0 = 1_700_000_040; // a whole minute
        for i in 0..5 {
            w.add(t0 + i * 60, 600, 1);
        }
        assert_eq!(w.total_at(t0 + 5 * 60, 600), 5);
        // 11 minutes after the first event, the event at minute 0 is out of the window; the one
        // at minute 1, 10 minutes old, is in its oldest tenth (a window may reach a tenth
        // further back, never less).
        assert_eq!(w.add(t0 + 11 * 60, 600, 1), 5);
        assert_eq!(w.total_at(t0 + 12 * 60, 600), 4);
        assert_eq!(w.total_at(t0 + 60 * 60, 600), 0);
        // A late event inside the window counts; one older than the window does not.
        assert_eq!(w.add(t0 + 55 * 60, 600, 1), 1);
        assert_eq!(w.add(t0, 600, 1), 1);
    }

    #[test]
    fn a_window_never_covers_less_than_its_length() {
        // The first event at the end of its slot, the last 546 s later, 10 slots further on:
        // with 10 slots the first one had been pushed out (a window of 9 tenths and a bit).
        let t0 = 1_700_000_040 + 59;
        for window in [600, 60, 3600] {
            let mut w = WindowCounter::default();
            let slot = slot_seconds(window);
            w.add(t0, window, 1);
            let last = t0 + window as i64 - slot + 1;
            assert_eq!(w.add(last, window, 1), 2, "window {window}");
            // A whole window and a slot after the first event, it is out.
            assert_eq!(w.total_at(t0 + window as i64 + slot, window), 1);
        }
    }

    #[test]
    fn steady_rate_is_learned_and_scores_normal_counts_as_normal() {
        let t0 = 1_700_000_000 - 1_700_000_000 % 3600;
        let mut b = RateBaseline::new(t0);
        for h in 0..72 {
            b.observe(t0 + h * 3600 + 10, 30, &P);
        }
        let s = b.score(t0 + 72 * 3600 + 10, 3600, 30, 0.1, true, 1.0, &P);
        assert!((s.per_hour - 30.0).abs() < 1.0, "{s:?}");
        assert!(s.p_value > 0.3, "{s:?}");
        let burst = b.score(t0 + 72 * 3600 + 10, 3600, 120, 0.1, true, 1.0, &P);
        assert!(burst.p_value < 1e-9, "{burst:?}");
    }

    #[test]
    fn quiet_hours_decay_the_rate() {
        let t0 = 1_700_000_000 - 1_700_000_000 % 3600;
        let mut b = RateBaseline::new(t0);
        b.observe(t0, 100, &P);
        let s = b.score(t0 + 24 * 3600, 3600, 0, 0.0, true, 1.0, &P);
        assert!(
            s.per_hour < 100.0 / 20.0,
            "one busy hour in 24 averages to about 4/h: {s:?}"
        );
        assert_eq!(b.history_hours(), 24);
    }

    #[test]
    fn seasonality_expects_more_in_busy_hours() {
        let p = BaselineParams {
            alpha: 0.004117,
            season_min_hours: 7 * 24,
        };
        let t0 = 1_699_920_000; // a UTC midnight
        let mut b = RateBaseline::new(t0);
        for day in 0..28 {
            for h in 9..17 {
                b.observe(t0 + day * 86400 + h * 3600, 20, &p);
            }
        }
        let now = t0 + 28 * 86400;
        let work = b.score(now + 10 * 3600, 3600, 20, 0.01, true, 1.0, &p);
        let night = b.score(now + 3 * 3600 + 86400, 3600, 20, 0.01, true, 1.0, &p);
        assert!(work.expected > night.expected * 5.0, "{work:?} {night:?}");
        assert!(
            work.p_value > 0.1 && night.p_value < 1e-6,
            "{work:?} {night:?}"
        );
    }

    #[test]
    fn tail_probability_is_monotone_and_overdispersion_widens_it() {
        let a = tail_probability(5, 1.0, 1.0);
        let b = tail_probability(10, 1.0, 1.0);
        assert!(b < a && a < 0.01);
        assert!(tail_probability(10, 1.0, 5.0) > b);
        assert_eq!(tail_probability(0, 3.0, 1.0), 1.0);
        assert_eq!(format_p(3e-10), "p < 1e-9");
        assert_eq!(hour_and_day(0), (0, 3));
    }
}
