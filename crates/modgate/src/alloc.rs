//! The process allocator: mimalloc instead of glibc's malloc, tuned to give memory back.
//!
//! A cached hit makes dozens of small allocations (headers, the request's state, the log and
//! audit lines); glibc's malloc/free were about a tenth of its CPU time, mimalloc saves most of
//! that (docs/performance.md has the before and after). mimalloc's defaults keep freed memory
//! for a second and commit whole arenas eagerly, which let a gateway streaming 64 large zips at
//! once peak at 70 MiB against glibc's 39 MiB; committing arenas on demand and purging after
//! 10 ms brings it back to glibc's figure. Purging at once (0 ms) did too, but gave a page back
//! and faulted it in again on every HTTP/1.1 request (one `madvise` each: 22 → 38 µs per cached
//! `.info`). `MIMALLOC_*` environment variables, when set, win. (libmimalloc-sys builds
//! mimalloc v3.)

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` (`mimalloc.h`, `mi_option_e`: the same number in v2 and in
/// v3, which libmimalloc-sys builds by default). Not among the crate's named constants.
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
/// `mi_option_purge_delay`, in milliseconds (v3's default: 1000).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// Freed memory goes back to the system after this many milliseconds (mimalloc v2's default).
const PURGE_AFTER_MS: std::ffi::c_long = 10;

/// Applies the memory-return settings, unless the environment chose its own. It must run
/// before the first allocation (the first arena is reserved then, with the setting in force), so
/// it runs as an ELF constructor, before Rust's runtime starts, and allocates nothing.
fn tune() {
    // each option with its name and the older name mimalloc also reads
    for (option, env, legacy, value) in [
        (
            PURGE_DELAY,
            c"MIMALLOC_PURGE_DELAY",
            c"MIMALLOC_RESET_DELAY",
            PURGE_AFTER_MS,
        ),
        (
            ARENA_EAGER_COMMIT,
            c"MIMALLOC_ARENA_EAGER_COMMIT",
            c"MIMALLOC_EAGER_REGION_COMMIT",
            0,
        ),
    ] {
        // SAFETY: getenv reads the environment without allocating; nothing modifies it this
        // early (libc, not std::env or rustix: this runs before main, where std's variant would
        // allocate through the allocator being tuned, and rustix has no getenv). mi_option_set only stores an integer in mimalloc's option table.
        unsafe {
            if libc::getenv(env.as_ptr()).is_null() && libc::getenv(legacy.as_ptr()).is_null() {
                libmimalloc_sys::mi_option_set(option, value);
            }
        }
    }
}

extern "C" fn tune_at_load() {
    tune();
}

/// Runs [`tune`] when the program is loaded, before `main` and any allocation by Rust's runtime.
#[used]
#[link_section = ".init_array"]
static TUNE_AT_LOAD: extern "C" fn() = tune_at_load;

#[cfg(test)]
mod tests {
    #[test]
    fn the_options_are_the_ones_named() {
        super::tune();
        // SAFETY: reading an option is a plain load.
        let (purge, eager) = unsafe {
            (
                libmimalloc_sys::mi_option_get(super::PURGE_DELAY),
                libmimalloc_sys::mi_option_get(super::ARENA_EAGER_COMMIT),
            )
        };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none()
            && std::env::var_os("MIMALLOC_RESET_DELAY").is_none()
        {
            assert_eq!(purge, super::PURGE_AFTER_MS);
        }
        if std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_none()
            && std::env::var_os("MIMALLOC_EAGER_REGION_COMMIT").is_none()
        {
            assert_eq!(eager, 0);
        }
        // the neighbours keep their documented defaults: the numbering is mimalloc.h's
        // SAFETY: as above.
        let (eager_commit, numa) = unsafe {
            (
                libmimalloc_sys::mi_option_get(3),
                libmimalloc_sys::mi_option_get(16),
            )
        };
        assert_eq!((eager_commit, numa), (1, 0));
    }
}
