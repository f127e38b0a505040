//! `bench-backend --listen ADDR`: a tiny, fast HTTP/1.1 backend for the benchmarks.

fn main() -> anyhow::Result<()> {
    strangler_bench::backend::main()
}
