//! The `strangler` binary: see `strangler --help`.

// mimalloc: the proxy allocates and frees many small buffers per request from two threads;
// glibc's malloc showed as ~5% of the proxy's CPU in a perf profile of a fall-through run.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // No transparent huge pages for this process: where THP is `always`, the kernel would back
    // mimalloc's 2 MiB-aligned arena with huge pages, each resident whole (megabytes of idle
    // RSS for a heap of well under one). Best effort: an old kernel just keeps THP.
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    strangler::cli::main()
}
