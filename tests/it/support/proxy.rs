//! The proxy under test: in-process through the library entry point (the default), or the real
//! binary as a child process, for tests of signals, exit codes, CLI flags, process environment
//! and log lines. Both answer on loopback ports chosen by the OS and stop on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::{client, eventually, BIN};

/// Kept for tests written before the in-process runner; same type.
pub type ProxyProcess = TestProxy;

/// How the proxy was started.
#[derive(Debug, Clone, Default)]
pub enum Run {
    /// `hubspot_auth_proxy::start` on its own runtime thread, in this test process.
    #[default]
    InProcess,
    /// The binary, with these environment variables and global flags (before `serve`).
    Process {
        env: Vec<(String, String)>,
        flags: Vec<String>,
    },
}

impl Run {
    /// The binary with logs at info, as in production.
    pub fn process() -> Run {
        Run::Process {
            env: Vec::new(),
            flags: vec!["--log-level".into(), "info".into()],
        }
    }

    /// The binary with these global flags (before `serve`) and nothing else.
    pub fn binary(flags: &[&str]) -> Run {
        Run::Process {
            env: Vec::new(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
        }
    }

    /// The binary with debug logs, for tests asserting on request lines and redactions.
    pub fn process_debug() -> Run {
        Run::Process {
            env: Vec::new(),
            flags: vec!["--log-level".into(), "debug".into()],
        }
    }
}

enum Runner {
    Child {
        child: Child,
        log: Arc<Mutex<String>>,
    },
    InProcess {
        stop: Option<tokio::sync::oneshot::Sender<()>>,
    },
}

/// A running proxy; stopped on drop.
pub struct TestProxy {
    runner: Runner,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    config: tempfile::NamedTempFile,
}

impl TestProxy {
    /// The binary, logs at info, as in production.
    pub async fn start(config: &str) -> TestProxy {
        TestProxy::run(config, Run::process()).await
    }

    /// The binary, for tests that assert on debug lines (request lines, redactions).
    pub async fn start_debug(config: &str) -> TestProxy {
        TestProxy::run(config, Run::process_debug()).await
    }

    /// The binary with `env` set and global `flags` before `serve`.
    pub async fn start_with(config: &str, env: &[(&str, &str)], flags: &[&str]) -> TestProxy {
        let run = Run::Process {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
        };
        TestProxy::run(config, run).await
    }

    /// In-process through the library entry point.
    pub async fn in_process(config: &str) -> TestProxy {
        TestProxy::run(config, Run::InProcess).await
    }

    pub async fn run(config: &str, run: Run) -> TestProxy {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(config.as_bytes()).unwrap();
        let (runner, proxy, admin) = match run {
            Run::InProcess => {
                let (stop, proxy, admin) = start_in_process(file.path()).await;
                (Runner::InProcess { stop: Some(stop) }, proxy, admin)
            }
            Run::Process { env, flags } => spawn_binary(file.path(), &env, &flags).await,
        };
        TestProxy {
            runner,
            proxy,
            admin,
            config: file,
        }
    }

    /// The config file the proxy was started with.
    pub fn config_path(&self) -> &Path {
        self.config.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// GET `path` through the proxy.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        client()
            .get(self.url(path))
            .send()
            .await
            .expect("the proxy answers")
    }

    /// POST `body` to `path` through the proxy.
    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        client()
            .post(self.url(path))
            .body(body)
            .send()
            .await
            .expect("the proxy answers")
    }

    /// The status of a GET of `path` through the proxy.
    pub async fn status(&self, path: &str) -> u16 {
        self.get(path).await.status().as_u16()
    }

    /// GET `path` on the admin listener.
    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        client()
            .get(self.admin_url(path))
            .send()
            .await
            .expect("the admin listener answers")
    }

    /// The admin listener's Prometheus text.
    pub async fn metrics(&self) -> String {
        self.admin_get("/metrics")
            .await
            .text()
            .await
            .expect("metrics text")
    }

    /// `/status` as JSON.
    pub async fn status_json(&self) -> serde_json::Value {
        self.admin_get("/status")
            .await
            .json()
            .await
            .expect("status JSON")
    }

    fn child(&self) -> (&Child, &Arc<Mutex<String>>) {
        match &self.runner {
            Runner::Child { child, log } => (child, log),
            Runner::InProcess { .. } => {
                panic!(
                    "this test reads the log or signals the process: start it with Run::process()"
                )
            }
        }
    }

    /// The binary's captured stderr.
    pub fn log(&self) -> String {
        self.child().1.lock().unwrap().clone()
    }

    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child().0.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} failed");
    }

    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let Runner::Child { child, .. } = &mut self.runner else {
            panic!("only a process exits: start it with Run::process()");
        };
        eventually(limit, "proxy process to exit", || child.try_wait().unwrap()).await
    }

    /// Asserts that none of `secrets` appears anywhere in the log: the process's own, or for
    /// an in-process proxy every line any in-process proxy of this test binary has logged.
    pub fn assert_log_free_of(&self, secrets: &[&str]) {
        let log = match &self.runner {
            Runner::Child { log, .. } => log.lock().unwrap().clone(),
            Runner::InProcess { .. } => in_process_log().lock().unwrap().clone(),
        };
        assert!(!log.is_empty(), "the log should have been captured");
        for secret in secrets {
            assert!(
                !log.contains(secret),
                "secret {secret:?} leaked into the log:\n{log}"
            );
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        match &mut self.runner {
            Runner::Child { child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
            // The proxy's thread shuts it down and exits on its own; nothing waits for it here.
            Runner::InProcess { stop } => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
            }
        }
    }
}

/// The suite's one call of the library entry point, so a change of `start`'s argument stays
/// here. The proxy gets its own runtime on its own thread, as `serve` gives it: a test's
/// runtime (and its blocking raw-socket calls) never starves the proxy's control plane.
async fn start_in_process(
    config_path: &Path,
) -> (tokio::sync::oneshot::Sender<()>, SocketAddr, SocketAddr) {
    capture_in_process_logs();
    let config = hubspot_auth_proxy::settings::Settings::load(config_path)
        .unwrap_or_else(|e| panic!("the test's config is invalid: {e}"));
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("proxy runtime");
        runtime.block_on(async move {
            let running = match hubspot_auth_proxy::start(config).await {
                Ok(running) => running,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = ready_tx.send(Ok((running.proxy_addr(), running.admin_addr())));
            tokio::select! {
                _ = stop_rx => {}
                _ = running.quit_requested() => {}
            }
            running.shutdown().await;
        });
        // As `serve`: a secret read stuck on a hung file is not waited for.
        runtime.shutdown_timeout(Duration::from_secs(1));
    });
    let started = tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .expect("the in-process proxy started within 10 s")
        .expect("the proxy thread reported");
    let (proxy, admin) = started.unwrap_or_else(|e| panic!("the proxy did not start: {e}"));
    (stop_tx, proxy, admin)
}

/// Everything in-process proxies log, at info as in production. One buffer for the whole test
/// binary: tracing's subscriber is global, so lines cannot be told apart by proxy.
fn in_process_log() -> &'static Arc<Mutex<String>> {
    static LOG: OnceLock<Arc<Mutex<String>>> = OnceLock::new();
    LOG.get_or_init(Default::default)
}

fn capture_in_process_logs() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let log = in_process_log().clone();
        let writer = move || LogWriter(log.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_writer(writer)
            .with_ansi(false)
            .try_init();
    });
}

struct LogWriter(Arc<Mutex<String>>);

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(bytes);
        if std::env::var_os("SHOW_PROXY_LOG").is_some() {
            eprint!("[in-process] {text}");
        }
        self.0.lock().unwrap().push_str(&text);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn spawn_binary(
    config: &Path,
    env: &[(String, String)],
    flags: &[String],
) -> (Runner, SocketAddr, SocketAddr) {
    let mut cmd = Command::new(BIN);
    cmd.args(flags)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env_remove("HUBSPOT_AUTH_PROXY_CONFIG")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn proxy binary");
    let log = Arc::new(Mutex::new(String::new()));
    capture(child.stderr.take().unwrap(), log.clone());
    let proxy = eventually(Duration::from_secs(10), "proxy listening line", || {
        listening_addr(&log.lock().unwrap(), "proxy listening")
    })
    .await;
    let admin = eventually(Duration::from_secs(10), "admin listening line", || {
        listening_addr(&log.lock().unwrap(), "admin listening")
    })
    .await;
    (Runner::Child { child, log }, proxy, admin)
}

/// The `addr` of a "... listening" log line, in the human or the JSON format.
fn listening_addr(log: &str, message: &str) -> Option<SocketAddr> {
    let line = log.lines().find(|l| l.contains(message))?;
    let at = line
        .find("addr=")
        .map(|i| i + 5)
        .or_else(|| line.find("\"addr\":\"").map(|i| i + 8))?;
    let end = line[at..]
        .find(|c: char| c.is_whitespace() || c == '"')
        .map_or(line.len(), |e| e + at);
    line[at..end].parse().ok()
}

fn capture(stderr: impl Read + Send + 'static, log: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if std::env::var_os("SHOW_PROXY_LOG").is_some() {
                eprintln!("[proxy] {line}");
            }
            let mut log = log.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
}
