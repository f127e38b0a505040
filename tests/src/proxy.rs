//! [`Proxy`]: one running `strangler run`, with its own config directory, ports and log file.

use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::binary::strangler_cmd;
use crate::client::http_client;
use crate::metrics::Metrics;

/// How long a proxy may take to become ready.
const READY_WITHIN: Duration = Duration::from_secs(20);
/// How many times to retry start-up with fresh ports when it fails.
const START_ATTEMPTS: usize = 3;

/// A free TCP port on 127.0.0.1 (bound, read back and released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A free TCP port on `ip` (bound, read back and released).
pub fn free_port_on(ip: std::net::IpAddr) -> u16 {
    TcpListener::bind(SocketAddr::new(ip, 0))
        .and_then(|l| l.local_addr())
        .expect("bind IP:0")
        .port()
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Options for starting a [`Proxy`].
#[derive(Debug, Clone)]
pub struct ProxyBuilder {
    yaml: String,
    configmap: bool,
    json_logs: bool,
    addresses_in_file: bool,
    files: Vec<(String, Vec<u8>)>,
    admin_ip: std::net::IpAddr,
    args: Vec<String>,
    envs: Vec<(String, String)>,
}

impl ProxyBuilder {
    /// Writes `listen:` and `admin:` (fresh ports) at the top of the file instead of passing
    /// `--listen`/`--admin`. Not for use with [`ProxyBuilder::configmap`]; a config rewritten
    /// later must carry the same addresses itself.
    pub fn addresses_in_file(mut self) -> Self {
        self.addresses_in_file = true;
        self
    }

    /// Lays the config out as a Kubernetes ConfigMap volume does: `routes.yaml -> ..data/routes.yaml`,
    /// `..data -> ..<generation>`.
    pub fn configmap(mut self) -> Self {
        self.configmap = true;
        self
    }

    /// Passes `--log-format json`.
    pub fn json_logs(mut self) -> Self {
        self.json_logs = true;
        self
    }

    /// Writes `contents` to `name` in the config directory before starting (certificates,
    /// token files: relative paths in the config start there).
    pub fn file(mut self, name: &str, contents: impl Into<Vec<u8>>) -> Self {
        self.files.push((name.to_string(), contents.into()));
        self
    }

    /// Binds the admin API to `ip` (a free port on it) instead of 127.0.0.1.
    pub fn admin_ip(mut self, ip: std::net::IpAddr) -> Self {
        self.admin_ip = ip;
        self
    }

    /// Passes an extra argument to `strangler run`; `{dir}` in it stands for the config
    /// directory.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    /// Sets an environment variable for the process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_string(), value.to_string()));
        self
    }

    /// Writes the config and starts the proxy; waits until it is ready.
    pub async fn start(self) -> Proxy {
        let mut dir = tempfile::tempdir().expect("create temp dir");
        for (name, contents) in &self.files {
            fs::write(dir.path().join(name), contents).expect("write a config-side file");
        }
        let config_path = dir.path().join("routes.yaml");
        let log_path = dir.path().join("strangler.log");
        let mut failures = Vec::new();
        for attempt in 0..START_ATTEMPTS {
            let listen: SocketAddr = format!("127.0.0.1:{}", free_port())
                .parse()
                .expect("socket address");
            let admin = SocketAddr::new(self.admin_ip, free_port_on(self.admin_ip));
            let yaml = if self.addresses_in_file {
                format!("listen: {listen}\nadmin: {admin}\n{}", self.yaml)
            } else {
                self.yaml.clone()
            };
            if self.configmap {
                if attempt == 0 {
                    configmap_write(dir.path(), 0, &yaml);
                }
            } else {
                fs::write(&config_path, &yaml).expect("write routes.yaml");
            }
            let log = File::create(&log_path).expect("create log file");
            let mut cmd = strangler_cmd();
            cmd.arg("run").arg("--config").arg(&config_path);
            if !self.addresses_in_file {
                cmd.arg("--listen")
                    .arg(listen.to_string())
                    .arg("--admin")
                    .arg(admin.to_string());
            }
            if self.json_logs {
                cmd.args(["--log-format", "json"]);
            }
            let args: Vec<String> = self
                .args
                .iter()
                .map(|a| a.replace("{dir}", &dir.path().display().to_string()))
                .collect();
            cmd.args(&args);
            for (k, v) in &self.envs {
                cmd.env(k, v);
            }
            let full_args: Vec<std::ffi::OsString> =
                cmd.get_args().map(|a| a.to_os_string()).collect();
            let envs = self.envs.clone();
            let child = cmd
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log handle"))
                .stderr(log)
                .spawn()
                .expect("spawn strangler run");
            let mut proxy = Proxy {
                child,
                args: full_args,
                envs,
                listen,
                admin,
                config_path: config_path.clone(),
                log_path: log_path.clone(),
                configmap_generation: 0,
                exited: None,
                dir,
            };
            match proxy.wait_ready().await {
                Ok(()) => return proxy,
                Err(why) => {
                    failures.push(format!(
                        "attempt {}: {why}\n--- log ---\n{}",
                        attempt + 1,
                        proxy.logs()
                    ));
                    proxy.stop();
                    // Keep the directory (and config) for the next attempt.
                    dir = std::mem::replace(
                        &mut proxy.dir,
                        tempfile::tempdir().expect("create temp dir"),
                    );
                }
            }
        }
        panic!("strangler did not become ready:\n{}", failures.join("\n"));
    }
}

/// A running `strangler run` process. Dropping it stops the process (SIGTERM, then SIGKILL).
pub struct Proxy {
    child: Child,
    /// The arguments it was started with, for [`Proxy::upgrade`].
    args: Vec<std::ffi::OsString>,
    envs: Vec<(String, String)>,
    listen: SocketAddr,
    admin: SocketAddr,
    config_path: PathBuf,
    log_path: PathBuf,
    configmap_generation: usize,
    exited: Option<ExitStatus>,
    // Last, so the directory outlives the process that uses it.
    dir: TempDir,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("pid", &self.child.id())
            .field("listen", &self.listen)
            .field("admin", &self.admin)
            .finish()
    }
}

impl Proxy {
    /// Starts a proxy on `yaml` (a plain `routes.yaml` in a temp dir); ports come from the flags.
    pub async fn start(yaml: &str) -> Proxy {
        Proxy::builder(yaml).start().await
    }

    /// A builder for the less common options.
    pub fn builder(yaml: &str) -> ProxyBuilder {
        ProxyBuilder {
            yaml: yaml.to_string(),
            configmap: false,
            json_logs: false,
            addresses_in_file: false,
            files: Vec::new(),
            admin_ip: std::net::IpAddr::from([127, 0, 0, 1]),
            args: Vec::new(),
            envs: Vec::new(),
        }
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let client = http_client();
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                self.exited = Some(status);
                return Err(format!("exited during start-up with {status}"));
            }
            let healthy = matches!(
                client
                    .get(self.admin_url("/healthz"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await,
                Ok(r) if r.status() == 200
            );
            if healthy && TcpStream::connect_timeout(&self.listen, Duration::from_secs(1)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("not ready within {READY_WITHIN:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The listen address.
    pub fn addr(&self) -> SocketAddr {
        self.listen
    }

    /// The admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// `http://LISTEN` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.listen, path)
    }

    /// `http://ADMIN` + `path`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The config file's path (for a ConfigMap layout, the `routes.yaml` symlink).
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The temp directory holding the config and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Overwrites the config file in place (truncate and write, same inode).
    pub fn rewrite_config(&self, yaml: &str) {
        fs::write(&self.config_path, yaml).expect("rewrite routes.yaml in place");
    }

    /// Writes the new config next to the file and renames it over the file (new inode).
    pub fn replace_config_by_rename(&self, yaml: &str) {
        let tmp = self.dir.path().join(".routes.yaml.tmp");
        fs::write(&tmp, yaml).expect("write temp config");
        fs::rename(&tmp, &self.config_path).expect("rename config over routes.yaml");
    }

    /// Swaps the config as the kubelet updates a ConfigMap volume: a new `..<gen>` directory,
    /// a new `..data_tmp` symlink to it renamed over `..data`, then the old directory removed.
    /// Needs [`ProxyBuilder::configmap`].
    pub fn configmap_swap(&mut self, yaml: &str) {
        let old = self.configmap_generation;
        self.configmap_generation += 1;
        configmap_write(self.dir.path(), self.configmap_generation, yaml);
        let _ = fs::remove_dir_all(self.dir.path().join(configmap_gen_dir(old)));
    }

    /// The bytes of the config file as it is now.
    pub fn config_bytes(&self) -> Vec<u8> {
        fs::read(&self.config_path).expect("read routes.yaml")
    }

    /// Starts a second `strangler run` with the same arguments (a binary upgrade, when they
    /// include `--upgrade-socket`), which becomes this handle's process; returns the previous
    /// process, to wait for it to drain and exit.
    pub fn upgrade(&mut self) -> Child {
        let log = fs::OpenOptions::new()
            .append(true)
            .open(&self.log_path)
            .expect("open log file");
        let mut cmd = strangler_cmd();
        cmd.args(&self.args);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let child = cmd
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn the new strangler run");
        self.exited = None;
        std::mem::replace(&mut self.child, child)
    }

    /// Sends SIGHUP.
    pub fn reload_signal(&self) {
        self.signal("HUP");
    }

    /// Sends a signal by name (`HUP`, `TERM`...) with `kill`.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Peak resident set size (VmHWM) in KiB, from /proc.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }

    /// Waits up to `limit` for the process to exit by itself; `None` if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exited {
            return Some(status);
        }
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, a bounded wait, then SIGKILL.
    fn stop(&mut self) {
        if self.exited.is_some() {
            return;
        }
        if let Ok(Some(status)) = self.child.try_wait() {
            self.exited = Some(status);
            return;
        }
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        if self.wait_exit(Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
            if let Ok(status) = self.child.wait() {
                self.exited = Some(status);
            }
        }
    }

    /// `GET /routes` as JSON (panics unless 200).
    pub async fn routes(&self) -> serde_json::Value {
        let resp = http_client()
            .get(self.admin_url("/routes"))
            .send()
            .await
            .expect("GET /routes");
        assert_eq!(resp.status(), 200, "GET /routes status");
        resp.json().await.expect("GET /routes JSON")
    }

    /// The `version` from `GET /routes`.
    pub async fn version(&self) -> String {
        self.routes().await["version"]
            .as_str()
            .expect("version is a string")
            .to_string()
    }

    /// True when `GET /routes` reports the version of `bytes` (the full hex SHA-256 or a prefix of
    /// it at least 12 characters long).
    pub async fn has_version_of(&self, bytes: &[u8]) -> bool {
        version_matches(&self.version().await, bytes)
    }

    /// `POST /reload`: status and JSON body.
    pub async fn post_reload(&self) -> (u16, serde_json::Value) {
        let resp = http_client()
            .post(self.admin_url("/reload"))
            .send()
            .await
            .expect("POST /reload");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("POST /reload body");
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, json)
    }

    /// `GET /metrics`, parsed.
    pub async fn metrics(&self) -> Metrics {
        let resp = http_client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(resp.status(), 200, "GET /metrics status");
        Metrics::parse(&resp.text().await.expect("GET /metrics body"))
    }

    /// GETs `path` with extra headers and returns the `backend` the echo backend reported, or
    /// `status N` when the answer was not a 200 from an echo backend.
    pub async fn served_by(&self, path: &str, headers: &[(&str, &str)]) -> String {
        let mut req = http_client().get(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let json: Option<serde_json::Value> = resp.json().await.ok();
                match json.as_ref().and_then(|j| j["backend"].as_str()) {
                    Some(name) if status == 200 => name.to_string(),
                    _ => format!("status {status}"),
                }
            }
            Err(e) => format!("error {e}"),
        }
    }
}

/// True when `version` is the hex SHA-256 of `bytes`, or a prefix of it of 12 or more characters.
pub fn version_matches(version: &str, bytes: &[u8]) -> bool {
    let full = sha256_hex(bytes);
    version.len() >= 12 && full.starts_with(&version.to_ascii_lowercase())
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

fn configmap_gen_dir(generation: usize) -> String {
    format!("..2024_01_01_00_00_{generation:02}.000000001")
}

/// Writes generation `generation` of a ConfigMap volume in `dir` and points `..data` at it
/// atomically (`routes.yaml -> ..data/routes.yaml` is created on the first call).
fn configmap_write(dir: &Path, generation: usize, yaml: &str) {
    let gen_dir = configmap_gen_dir(generation);
    fs::create_dir(dir.join(&gen_dir)).expect("create ConfigMap generation dir");
    fs::write(dir.join(&gen_dir).join("routes.yaml"), yaml).expect("write ConfigMap file");
    let tmp_link = dir.join("..data_tmp");
    std::os::unix::fs::symlink(&gen_dir, &tmp_link).expect("symlink ..data_tmp");
    fs::rename(&tmp_link, dir.join("..data")).expect("rename ..data_tmp over ..data");
    let top = dir.join("routes.yaml");
    if fs::symlink_metadata(&top).is_err() {
        std::os::unix::fs::symlink("..data/routes.yaml", &top).expect("symlink routes.yaml");
    }
}
