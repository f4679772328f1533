//! Shared helpers: the controller as a real process on a free loopback port.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct ControllerProcess {
    child: Option<Child>,
    dir: std::path::PathBuf,
    pub port: u16,
}

impl ControllerProcess {
    pub fn start(dir: &std::path::Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut c = Self {
            child: None,
            dir: dir.to_path_buf(),
            port,
        };
        c.spawn();
        c
    }
    pub fn spawn(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_operator"))
            .args(["local", "--session-timeout-ms", "1500", "--listen"])
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--state-dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "controller did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
