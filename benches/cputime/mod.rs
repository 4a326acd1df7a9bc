//! CPU time of the benchmark thread, shared by the benches that print events/s.

/// CPU seconds the calling thread has run (`CLOCK_THREAD_CPUTIME_ID`, nanosecond resolution).
/// On a shared machine, events per CPU-second is what one core does whatever else competes for
/// the cores; the benches print wall-clock rates beside it.
pub fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}
