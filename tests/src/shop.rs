//! The sample shop's programs (`legacy-monolith`, `catalog-service`, `inventory-service`) as
//! child processes on ephemeral ports with temp databases, a client for their API, and readers
//! for their SQLite databases (to check where stock ended up).

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::binary::{strangler_bin, CliOutput};
use crate::client::http_client;
use crate::proxy::free_port;

/// How long a shop program may take to answer `/healthz` after start.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// Path of a workspace binary next to `strangler` (same target dir and profile).
pub fn shop_bin(name: &str) -> PathBuf {
    let path = strangler_bin().with_file_name(name);
    assert!(
        path.is_file(),
        "{name} not found at {}: build it first: cargo build --workspace --bins",
        path.display()
    );
    path
}

/// One running shop program. Dropping it stops it (SIGTERM, then SIGKILL).
#[derive(Debug)]
pub struct ShopProcess {
    child: Child,
    name: String,
    addr: SocketAddr,
    args: Vec<String>,
    log_path: PathBuf,
}

impl ShopProcess {
    /// Starts `bin --listen 127.0.0.1:PORT ARGS...` (a fresh port when `port` is `None`), logging
    /// to `dir/NAME.log`, and waits for `/healthz`.
    pub async fn start(bin: &str, port: Option<u16>, args: &[String], dir: &Path) -> ShopProcess {
        let port = port.unwrap_or_else(free_port);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let log_path = dir.join(format!("{bin}-{port}.log"));
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open log");
        let child = Command::new(shop_bin(bin))
            .arg("--listen")
            .arg(addr.to_string())
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        let mut p = ShopProcess {
            child,
            name: bin.to_string(),
            addr,
            args: args.to_vec(),
            log_path,
        };
        p.wait_ready().await;
        p
    }

    /// Starts a service program (`catalog-service`, `inventory-service`) on the database
    /// `dir/DB` (a fresh port when `port` is `None`).
    pub async fn service(bin: &str, port: Option<u16>, db: &str, dir: &Path) -> ShopProcess {
        ShopProcess::start(bin, port, &["--db".into(), path_arg(dir, db)], dir).await
    }

    /// Starts `legacy-monolith` on `port` with the database `dir/legacy.db`, `--config CONFIG`
    /// and `--seed-products N`.
    pub async fn legacy(port: u16, config: &str, seed_products: u64, dir: &Path) -> ShopProcess {
        let args = [
            "--db".into(),
            path_arg(dir, "legacy.db"),
            "--config".into(),
            config.to_string(),
            "--seed-products".into(),
            seed_products.to_string(),
        ];
        ShopProcess::start("legacy-monolith", Some(port), &args, dir).await
    }

    async fn wait_ready(&mut self) {
        let client = http_client();
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited during start-up with {status}:\n{}",
                    self.name,
                    self.logs()
                );
            }
            let ok = matches!(
                client.get(self.url("/healthz")).timeout(Duration::from_secs(2)).send().await,
                Ok(r) if r.status() == 200
            );
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready within {READY_WITHIN:?}:\n{}",
                self.name,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://ADDR` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGKILL: the process dies at once, mid-request if need be.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and a bounded wait (SIGKILL past it). Returns whether it exited by itself.
    pub fn stop(&mut self) -> bool {
        if let Ok(Some(_)) = self.child.try_wait() {
            return true;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    /// Starts the same program again on the same port with the same arguments (after a kill).
    pub async fn restart(&mut self, dir: &Path) {
        self.stop();
        let again = ShopProcess::start(&self.name, Some(self.addr.port()), &self.args, dir).await;
        *self = again;
    }
}

impl Drop for ShopProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `dir/name` as a command-line argument.
fn path_arg(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().expect("utf-8 path").to_string()
}

/// Runs `BIN --db DB import --from URL` and panics unless it succeeds.
pub fn import(bin: &str, db: &Path, from: &str) -> String {
    let out = std::process::Command::new(shop_bin(bin))
        .arg("--db")
        .arg(db)
        .args(["import", "--from", from])
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run import");
    assert!(
        out.status.success(),
        "{bin} import failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a `strangler` subcommand that edits a config (`set-mode`, `set-adapter`) and panics
/// unless it succeeds.
pub fn strangler_edit(args: &[&str], cwd: &Path) {
    let out = CliOutput::run(args, cwd, Duration::from_secs(20));
    assert_eq!(
        out.code,
        Some(0),
        "strangler {args:?} failed:\n{}{}",
        out.stdout,
        out.stderr
    );
}

/// Opens a shop database to read it (safe while its program runs: WAL mode). Not opened
/// read-only: a read-only reader of a WAL database cannot always create the shared-memory
/// file it needs.
pub fn open_db(path: &Path) -> rusqlite::Connection {
    let db =
        rusqlite::Connection::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    db.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    db
}

/// `(sku, qty)` of every held reservation, by order reference.
pub fn held_reservations(db: &rusqlite::Connection) -> BTreeMap<String, Vec<(String, i64)>> {
    let mut stmt = db
        .prepare("SELECT order_ref, sku, qty FROM reservations WHERE status = 'held' ORDER BY order_ref, sku, qty")
        .expect("query reservations");
    let mut out: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))
        .expect("read reservations");
    for row in rows {
        let (order_ref, sku, qty) = row.expect("reservation row");
        out.entry(order_ref).or_default().push((sku, qty));
    }
    out
}

/// `sku -> (available, reserved)` of every stock row.
pub fn stock(db: &rusqlite::Connection) -> BTreeMap<String, (i64, i64)> {
    let mut stmt = db
        .prepare("SELECT sku, available, reserved FROM stock")
        .expect("query stock");
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get(2)?))))
        .expect("read stock");
    rows.map(|r| r.expect("stock row")).collect()
}

/// One placed order as the monolith stored it.
#[derive(Debug, Clone)]
pub struct StoredOrder {
    /// The reference its reservations carry.
    pub order_ref: String,
    /// `local` or `remote URL`: who held its stock when it was placed.
    pub inventory_owner: String,
    /// `(sku, qty)` of its lines, sorted.
    pub lines: Vec<(String, i64)>,
}

/// Every order in the monolith's database.
pub fn orders(db: &rusqlite::Connection) -> Vec<StoredOrder> {
    let mut stmt = db
        .prepare("SELECT id, order_ref, inventory_owner FROM orders ORDER BY id")
        .expect("query orders");
    let heads: Vec<(i64, String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("read orders")
        .map(|r| r.expect("order row"))
        .collect();
    let mut lines = db
        .prepare("SELECT sku, qty FROM order_lines WHERE order_id = ?1 ORDER BY sku, qty")
        .expect("query lines");
    heads
        .into_iter()
        .map(|(id, order_ref, inventory_owner)| StoredOrder {
            order_ref,
            inventory_owner,
            lines: lines
                .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .expect("read lines")
                .map(|r| r.expect("line row"))
                .collect(),
        })
        .collect()
}
