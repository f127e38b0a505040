//! `strangler-bench`: runs the proxy benchmarks and prints a Markdown table.

fn main() -> anyhow::Result<()> {
    strangler_bench::runner::main()
}
