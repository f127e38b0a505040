//! Locating the `strangler` binary and running its one-shot commands with a bounded wait.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root: the parent of this package's directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package lives inside the workspace")
        .to_path_buf()
}

/// Path of the `strangler` binary: `$STRANGLER_BIN`, else `$CARGO_TARGET_DIR/debug/strangler`,
/// else `<workspace>/target/debug/strangler`. Panics when it does not exist: the tests never
/// build it themselves.
pub fn strangler_bin() -> PathBuf {
    let path = if let Some(bin) = std::env::var_os("STRANGLER_BIN") {
        PathBuf::from(bin)
    } else {
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => {
                let dir = PathBuf::from(dir);
                if dir.is_absolute() {
                    dir
                } else {
                    workspace_root().join(dir)
                }
            }
            None => workspace_root().join("target"),
        };
        target.join("debug").join("strangler")
    };
    assert!(
        path.is_file(),
        "strangler binary not found at {}: build it first: cargo build --workspace --bins",
        path.display()
    );
    path
}

/// A `Command` for the `strangler` binary.
pub fn strangler_cmd() -> Command {
    Command::new(strangler_bin())
}

/// What a finished one-shot command printed and how it exited.
#[derive(Debug)]
pub struct CliOutput {
    /// Exit code; `None` when it was killed (by a signal or because it overran its time).
    pub code: Option<i32>,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
}

impl CliOutput {
    /// Runs `strangler ARGS...` in `cwd`, waiting at most `limit` (then it is killed and `code` is
    /// `None`).
    pub fn run(args: &[&str], cwd: &Path, limit: Duration) -> CliOutput {
        let mut child = strangler_cmd()
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn strangler");
        let mut out = child.stdout.take().expect("piped stdout");
        let mut err = child.stderr.take().expect("piped stderr");
        let out_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + limit;
        let status = loop {
            match child.try_wait().expect("wait for strangler") {
                Some(status) => break Some(status),
                None if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        CliOutput {
            code: status.and_then(|s| s.code()),
            stdout: out_reader.join().unwrap_or_default(),
            stderr: err_reader.join().unwrap_or_default(),
        }
    }
}
