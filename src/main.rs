fn main() -> std::process::ExitCode {
    payroute::cli::main()
}
