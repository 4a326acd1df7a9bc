//! CPU time of the benchmark thread, shared by the benches that print events/s.

/// CPU seconds the calling thread has run, from the kernel's scheduler statistics (Linux; 0
/// elsewhere). On a shared machine, events per CPU-second is what one core does whatever else
/// competes for the cores; the benches print wall-clock rates beside it.
pub fn thread_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 / 1e9)
}
