//! The built `ai-gateway` binary as a child process: a clean environment, a free port, and a wait until
//! it says it is listening (its log line is only printed once reload triggers and routes are ready).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The binary with the config-selecting variables of the test environment removed.
pub fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ai-gateway"));
    command
        .env_remove("CONFIG_FILE")
        .env_remove("PORT")
        .env_remove("HOST")
        .env_remove("GATEWAY_ENV");
    command
}

/// Start the binary with `--config config` on a free port; returns the child and its base URL.
pub fn spawn(config: &Path) -> (Child, String) {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut child = binary()
        .args(["--config"])
        .arg(config)
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1")
        .env("GATEWAY_LOGGING_FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("gateway exited before listening"))
            .unwrap();
        if line.contains("ai-gateway listening") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (child, format!("http://127.0.0.1:{port}"))
}

/// Send a signal by name (`TERM`, `HUP`) to a child.
pub fn signal(child: &Child, name: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .is_ok_and(|status| status.success())
}
