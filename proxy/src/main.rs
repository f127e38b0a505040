//! The `strangler` binary: see `strangler --help`.

fn main() -> std::process::ExitCode {
    strangler::cli::main()
}
