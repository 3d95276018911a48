//! The built `ai-gateway` binary as a child process: a clean environment, a free port, and a wait until
//! its port accepts connections.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// The binary with the config-selecting variables of the test environment removed.
pub fn binary() -> Command {
    wrapped(&[])
}

/// The binary run by `wrapper` (a command and its arguments, e.g. `prlimit --nofile=…`), with the
/// config-selecting variables of the test environment removed.
fn wrapped(wrapper: &[&str]) -> Command {
    let binary = env!("CARGO_BIN_EXE_ai-gateway");
    let mut command = match wrapper {
        [] => Command::new(binary),
        [program, arguments @ ..] => {
            let mut command = Command::new(program);
            command.args(arguments).arg(binary);
            command
        }
    };
    command
        .env_remove("CONFIG_FILE")
        .env_remove("PORT")
        .env_remove("HOST")
        .env_remove("GATEWAY_ENV")
        .env_remove("LLM_URL")
        .env_remove("GATEWAY_PORT")
        .env_remove("GATEWAY_SERVER_PORT")
        .env_remove("GATEWAY_SERVER_HOST");
    command
}

/// A free loopback port (nothing listens on it once this returns).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A running binary whose log (stderr) is kept; killed when dropped.
pub struct Running {
    pub child: Child,
    pub base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Running {
    /// Start `command` (its config and environment already set) and wait until `port` accepts.
    pub fn start(mut command: Command, port: u16) -> Running {
        let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                std::thread::sleep(std::time::Duration::from_millis(100));
                panic!(
                    "gateway exited before listening: {status}\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "gateway did not listen within 30 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Running {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// The log up to the end of the first line containing `needle`, waiting up to 10 s for it.
    pub fn log_until(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let lines = self.log.lock().unwrap().clone();
            if let Some(at) = lines.iter().position(|line| line.contains(needle)) {
                return lines[..=at].join("\n");
            }
            let log = lines.join("\n");
            assert!(
                std::time::Instant::now() < deadline,
                "no log line with '{needle}' within 10 s:\n{log}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start the binary with `--config config` on a free port; returns the child and its base URL.
pub fn spawn(config: &Path) -> (Child, String) {
    let (child, base, log) = spawn_logged(config);
    // Drain the log so the pipe never fills.
    std::thread::spawn(move || for _ in log {});
    (child, base)
}

/// `spawn`, with the child's log lines (JSON) handed over as they come.
pub fn spawn_logged(config: &Path) -> (Child, String, std::sync::mpsc::Receiver<String>) {
    spawn_wrapped(config, &[])
}

/// `spawn_logged`, the binary run by `wrapper` (see `wrapped`).
pub fn spawn_wrapped(
    config: &Path,
    wrapper: &[&str],
) -> (Child, String, std::sync::mpsc::Receiver<String>) {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut child = wrapped(wrapper)
        .args(["--config"])
        .arg(config)
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1")
        .env("GATEWAY_LOGGING_FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The log is read all along so the pipe never fills; readiness is the port accepting, whatever
    // the log level.
    let stderr = child.stderr.take().unwrap();
    let (lines, log) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            // The receiver may be gone (the test no longer reads): keep draining anyway.
            let _ = lines.send(line);
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("gateway exited before listening: {status}");
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gateway did not listen within 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (child, format!("http://127.0.0.1:{port}"), log)
}

/// Send a signal by name (`TERM`, `HUP`) to a child.
pub fn signal(child: &Child, name: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .is_ok_and(|status| status.success())
}
