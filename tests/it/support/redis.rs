//! A child `redis-server` on a free loopback port for the shared-state tests. The library's unit tests
//! include this same file with `#[path]` as `store::test_redis`.
//! Without `redis-server` and without `REQUIRE_REDIS`, `start` prints a note and returns `None`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TestRedis {
    child: Option<Child>,
    pub port: u16,
}

impl TestRedis {
    pub fn start() -> Option<TestRedis> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            let required = std::env::var("REQUIRE_REDIS").is_ok_and(|v| !v.is_empty() && v != "0");
            assert!(
                !required,
                "REQUIRE_REDIS is set but redis-server is not installed"
            );
            eprintln!("note: redis-server not installed; skipping redis test");
            return None;
        }
        for _ in 0..5 {
            let port = {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                listener.local_addr().unwrap().port()
            };
            let mut server = TestRedis { child: None, port };
            if server.spawn() {
                return Some(server);
            }
        }
        panic!("could not start redis-server on a free port");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kill the server (an outage); `restart` brings it back, empty, on the same port.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn(),
            "redis-server could not restart on port {}",
            self.port
        );
    }

    /// Keys stored under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_connection().unwrap();
        redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query(&mut conn)
            .unwrap()
    }

    fn spawn(&mut self) -> bool {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid_line = format!("process_id:{}", child.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = redis::Client::open(self.url()).unwrap();
        loop {
            if child.try_wait().unwrap().is_some() {
                return false;
            }
            if let Ok(mut conn) = client.get_connection() {
                let info: redis::RedisResult<String> =
                    redis::cmd("INFO").arg("server").query(&mut conn);
                if info.is_ok_and(|text| text.lines().any(|l| l.trim() == pid_line)) {
                    self.child = Some(child);
                    return true;
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("redis-server on port {} did not answer", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
