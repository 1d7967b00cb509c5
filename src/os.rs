//! What payroute asks of the operating system and the allocator beyond
//! sockets and files: a lower CPU priority for the reload thread, the heap
//! a config parse freed handed back, and the open-file limit (which sizes
//! the payment listener's connection cap).
//!
//! All are foreign calls without memory-safety preconditions, and both are
//! best effort: a failure costs priority or resident memory, never
//! correctness. They are the crate's only `unsafe` code, kept in one small
//! file so that auditing it is one screen.

/// Nice 10 for the calling thread (on Linux the nice value is per thread). A
/// failure only means the caller runs at normal priority, so it is ignored.
pub(crate) fn lower_priority() {
    // SAFETY: gettid and setpriority have no memory-safety preconditions;
    // they change this thread's scheduling weight and nothing else.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}

/// Returns freed heap memory to the OS. An allocator keeps what a config
/// parse freed mapped and resident, and for a large config that is many
/// times what the built snapshot keeps (BENCHMARKS.md); so after each load
/// (startup, and every reload that parsed a file) it is handed back. The
/// payroute binary allocates with mimalloc (`main.rs`), whose `mi_collect`
/// does this for the calling thread's heap — the one that just parsed — and
/// for its abandoned pages; glibc's `malloc_trim` covers builds on the
/// system allocator. A few milliseconds, never on the request path.
pub(crate) fn release_freed_memory() {
    // SAFETY: mi_collect has no preconditions; with mimalloc not in use it
    // only visits mimalloc's own (empty) heap.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heap under its arena locks;
    // it has no preconditions and is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The process's soft limit on open files (`ulimit -n`), if it can be read
/// and is finite.
pub(crate) fn open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a pointer to a live,
    // properly aligned local; it has no other effect.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_priority_lowers_the_calling_thread_and_no_other() {
        // SAFETY: getpriority only reads this thread's nice value.
        let nice = || unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
        let before = nice();
        let lowered = std::thread::spawn(move || {
            lower_priority();
            nice()
        })
        .join()
        .unwrap();
        assert!(lowered >= 10, "nice {lowered}");
        assert_eq!(nice(), before, "only the calling thread");
    }
}
