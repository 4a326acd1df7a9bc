//! The clock of a stream (tenant + source) in event time, shared by the correlator and the
//! UEBA engine: what the stream's records say, each believed only as far as its receipt allows.

/// How far a stream (tenant + source) has come in event time: its watermark, built from what
/// its records say, each believed only as far as its receipt allows.
///
/// A record dated after it was received (a vendor clock ahead, or a forged or skewed record,
/// believed up to `MAX_FUTURE_SKEW` by `Event::new`) cannot prove its stream got past its
/// receipt: taken at its word, one record dated `now + 9h` made every on-time event of its
/// stream "late" for nine hours. Such a record moves the watermark only as far as its receive
/// time, minus the delay of the stream's newest record dated before receipt: live, that is
/// about its receipt (a stream whose clock runs ahead still advances); in a replay of old logs
/// (every record received "now", dated days ago) it is about where the replay is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamClock {
    /// Newest time of a record dated at or before its receipt.
    pub(crate) dated: i64,
    /// That record's receive time minus its time (`i64::MAX` while unknown:
    /// [`StreamClock::restored`]).
    pub(crate) delay: i64,
    /// Newest receive time of a record dated after its receipt.
    pub(crate) ahead_received: i64,
}

impl StreamClock {
    pub(crate) const NEW: StreamClock = StreamClock {
        dated: i64::MIN,
        delay: 0,
        ahead_received: i64::MIN,
    };

    /// A clock known only by its watermark (a snapshot that kept no more). Its delay is
    /// unknown, so a record dated after its receipt is believed up to that watermark, not up to
    /// its receipt (in a replay of old logs resumed from a snapshot, "now"), until a newer record
    /// dated before its receipt tells the delay again.
    pub(crate) fn restored(watermark: i64) -> StreamClock {
        StreamClock {
            dated: watermark,
            delay: i64::MAX,
            ..StreamClock::NEW
        }
    }

    /// The watermark: no record still to come is expected older than this (minus the lateness).
    pub(crate) fn watermark(&self) -> i64 {
        if self.dated == i64::MIN {
            self.ahead_received
        } else {
            self.dated
                .max(self.ahead_received.saturating_sub(self.delay))
        }
    }

    /// Take a record dated `ts` and received at `received` (any one unit: ms in the correlator, seconds in UEBA). Returns whether it is dated
    /// after its receipt.
    pub(crate) fn observe(&mut self, ts: i64, received: i64) -> bool {
        if ts <= received {
            if ts > self.dated {
                self.dated = ts;
                self.delay = received - ts;
            }
            false
        } else {
            self.ahead_received = self.ahead_received.max(received);
            true
        }
    }

    /// The time to take a record dated `ts` at for what it counts in (UEBA's per-entity windows
    /// and baselines), once [`StreamClock::observe`]d: its own, unless the stream's clock says
    /// it cannot have happened yet. Counted at `now + 9h`, one record held its entity's windows
    /// nine hours ahead, and every on-time event of the entity fell out of them.
    pub(crate) fn believe(&self, ts: i64) -> i64 {
        match self.watermark() {
            i64::MIN => ts,
            watermark => ts.min(watermark),
        }
    }

    /// The later of two clocks of one stream (a snapshot, the correlator before a reload).
    pub(crate) fn merge(&mut self, other: StreamClock) {
        if other.dated > self.dated {
            self.dated = other.dated;
            self.delay = other.delay;
        }
        self.ahead_received = self.ahead_received.max(other.ahead_received);
    }
}
