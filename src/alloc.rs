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

/// Call first thing in `main` (options set later still apply to later purges).
pub fn tune() {
    // Safety: sets the default of a plain integer option; mimalloc reads options atomically.
    unsafe { libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
}
