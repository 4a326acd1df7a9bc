//! Progress lines on stderr, at most one per interval: a long command is seen to be going.

use std::time::{Duration, Instant};

/// Says a line on stderr when `every` has passed since the last one (never when off).
pub struct ProgressLines {
    on: bool,
    every: Duration,
    last: Instant,
}

impl ProgressLines {
    pub fn new(every: Duration, on: bool) -> ProgressLines {
        ProgressLines {
            on,
            every,
            last: Instant::now(),
        }
    }

    /// `line()` on stderr if one is due; `line` is not called otherwise.
    pub fn say(&mut self, line: impl FnOnce() -> String) {
        if self.on && self.last.elapsed() >= self.every {
            eprintln!("{}", line());
            self.last = Instant::now();
        }
    }
}
