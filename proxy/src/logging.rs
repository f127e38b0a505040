//! Log output: human-readable by default, one JSON object a line with `--log-format json`.
//!
//! Worker threads do not write each line to stdout as it is logged: they append it to a
//! buffer of their own, written out with one system call when it fills (32 KiB) and at least
//! every 250 ms (as NGINX's `access_log ... buffer= flush=`). An access-log line then costs a
//! request its formatting only. Every other thread writes through at once.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

/// Size at which a worker's buffer is written out.
const BUFFER_BYTES: usize = 32 * 1024;
/// Longest a line waits in a worker's buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static BUFFERED: Cell<bool> = const { Cell::new(false) };
}

/// Installs the global subscriber, writing to stdout. The level comes from `RUST_LOG`
/// (default `info`).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Stdout)
        .with_ansi(ansi);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(false)
            .with_current_span(false)
            .try_init(),
    };
    // Already installed (a test harness, say): keep the one in place.
    drop(result);
}

/// Buffers this thread's log lines from now on; call [`flush`] at least every
/// [`FLUSH_EVERY`] and before the thread ends.
pub fn buffer_this_thread() {
    BUFFERED.with(|b| b.set(true));
}

/// Writes out this thread's buffered lines.
pub fn flush() {
    BUFFER.with(|buf| {
        let mut buf = buf.borrow_mut();
        if !buf.is_empty() {
            let _ = std::io::stdout().lock().write_all(&buf);
            buf.clear();
        }
    });
}

/// Flushes this thread's buffer every [`FLUSH_EVERY`]; run it on a worker's runtime.
pub async fn flush_periodically() {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    loop {
        tick.tick().await;
        flush();
    }
}

/// The writer the subscriber formats into.
struct Stdout;

impl<'a> MakeWriter<'a> for Stdout {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line
    }
}

/// One formatted line on its way out.
struct Line;

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if !BUFFERED.with(Cell::get) {
            return std::io::stdout().lock().write(bytes);
        }
        let full = BUFFER.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.extend_from_slice(bytes);
            buf.len() >= BUFFER_BYTES
        });
        if full {
            flush();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
