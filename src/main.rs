fn main() -> std::process::ExitCode {
    payroute::cli::main()
}

/// mimalloc: per-thread free lists suit the thread-per-core workers, where
/// glibc's malloc and free were a tenth of the CPU samples under load
/// (BENCHMARKS.md, "Figures behind the code", has the measurements).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
