//! What the process sets up once, before any thread pool starts: the
//! policies every library then receives as values (thread counts), or
//! that only a process can choose (the allocator's).

/// Keeps candle's own thread pool empty. Call it first thing in `main`,
/// while the process has one thread (the environment is process-wide).
///
/// candle runs its element-wise ops on a spinning pool of its own, sized by
/// `CANDLE_NUM_THREADS` alone (no API sets it): beside cpack's encoder
/// workers and rayon's pool, its workers spin on the same cores and slow
/// every encode. With one thread candle runs those ops inline, on whichever
/// worker asked.
pub fn before_threads() {
    std::env::set_var("CANDLE_NUM_THREADS", "1");
}

/// Starts rayon's global pool on `threads` cores (0 = every core) and
/// tells glibc to keep freed memory; returns the threads the global pool
/// really has (fewer or more than asked only if it was started before).
///
/// cpack's kernels — matrix products, attention, layer norm, the optimizer
/// — run on rayon: a training step on the global pool, encoder workers each
/// in a one-thread pool of their own (`Encoder::with_workers`).
pub fn configure(threads: usize) -> usize {
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    keep_freed_buffers();
    // Fails only if the pool already runs; the count below is then the truth.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
    rayon::current_num_threads()
}

/// Stops glibc from handing freed buffers back to the OS: every fresh
/// mapping costs page faults and zeroing. Blocks over glibc's mmap threshold
/// (at most 32 MiB) are mapped and unmapped one by one — a training step
/// has many (a word-embedding gradient, AdamW's temporaries) — so no block
/// is mapped on its own (`M_MMAP_MAX` 0); and a heap whose free top passes
/// the trim threshold is cut back to almost nothing — a step frees its
/// activations after every backward — so it is never trimmed.
fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_TRIM_THRESHOLD: std::os::raw::c_int = -1;
        const M_MMAP_MAX: std::os::raw::c_int = -4;
        extern "C" {
            fn mallopt(
                param: std::os::raw::c_int,
                value: std::os::raw::c_int,
            ) -> std::os::raw::c_int;
        }
        // SAFETY: mallopt only tunes glibc's allocator; a trim threshold of -1 turns trimming off.
        unsafe {
            mallopt(M_MMAP_MAX, 0);
            mallopt(M_TRIM_THRESHOLD, -1);
        }
    }
}
