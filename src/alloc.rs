//! The process allocator, shared with the benches (`#[path]`-included there) so their numbers
//! are the binary's.

// Every event allocates a parsed record and its ECS strings and frees them soon after; mimalloc
// makes that allocation and the matching frees markedly cheaper than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mimalloc.h` (v2 and v3 alike); libmimalloc-sys names
/// no constant for it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays with the process before it goes back to the OS. mimalloc's
/// default (10 ms) returns the pages of one batch before the next batch allocates them again,
/// so the kernel faults and zeroes the same pages over and over: about 15% of `detect`'s CPU
/// time. Ten seconds outlasts a store batch (1-2 s) and still returns the memory when the
/// service goes idle. `MIMALLOC_PURGE_DELAY` in the environment still overrides it.
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// Call first thing in `main`.
pub fn tune() {
    // mimalloc reads every option from the environment when the process loads, before `main`:
    // `mi_option_set_default` comes too late then and changes nothing (the purge delay stayed
    // at mimalloc's 1 s, and the store bench faulted ~130 KB of zeroed pages in per event).
    // Set the value itself unless the environment chose one.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // Safety: sets a plain integer option; mimalloc reads options atomically.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tune_sets_the_purge_delay() {
        super::tune();
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // Safety: reads a plain integer option.
            let delay = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
            assert_eq!(delay, super::PURGE_DELAY_MS);
        }
    }
}
