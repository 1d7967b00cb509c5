fn main() -> std::process::ExitCode {
    payroute::cli::main()
}

/// mimalloc: per-thread free lists suit the thread-per-core workers; measured
/// against glibc malloc (BENCHMARKS.md) it cut the proxy's CPU per payment by
/// ~18% under load, where glibc's malloc/free were ~11% of the samples.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
