//! The `strangler` binary: see `strangler --help`.

// mimalloc: the proxy allocates and frees many small buffers per request from two threads;
// glibc's malloc showed as ~5% of the proxy's CPU in a perf profile of a fall-through run.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    strangler::cli::main()
}
