//! A throwaway `redis-server` for a test: the system's binary (`/usr/bin/redis-server`, which
//! `.ci/setup` installs) on a leased 127.0.0.1 port with a temp working directory, no
//! persistence, stopped (SIGKILL) on drop. [`Redis::kill`] and [`Redis::restart`] simulate an
//! outage on the same port. `None`, with a loud message, only when the binary is missing.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    _lease: super::PortLease,
}

fn binary() -> Option<PathBuf> {
    ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

impl Redis {
    pub fn start() -> Option<Redis> {
        if binary().is_none() {
            eprintln!(
                "\n!!!!!!!! SKIPPED: redis-server is not installed (/usr/bin/redis-server); \
                 install the `redis-server` package (.ci/setup does) to run the Redis tests !!!!!!!!\n"
            );
            return None;
        }
        let lease = super::reserve_port();
        let dir = super::temp_dir();
        let mut r = Redis {
            port: lease.port,
            dir,
            child: None,
            _lease: lease,
        };
        r.restart();
        Some(r)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server at once (SIGKILL), as a crash would; its data is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server (again) on the same port and waits until it answers PING.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new(binary().unwrap())
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--protected-mode",
                "no",
                "--loglevel",
                "warning",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.cmd(&["PING"]).as_deref() == Some("+PONG") {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    /// Sends one command (inline protocol) and returns the first reply line, e.g. `+PONG`,
    /// `:3`, `$5` (bulk strings: see [`Redis::get`]).
    pub fn cmd(&self, args: &[&str]) -> Option<String> {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        Some(line.trim_end().to_string())
    }

    /// `GET key` as a string (`None` when absent).
    pub fn get(&self, key: &str) -> Option<String> {
        use std::io::{BufRead, BufReader, Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).as_bytes())
            .ok()?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        let len: i64 = line.trim_end().strip_prefix('$')?.parse().ok()?;
        if len < 0 {
            return None;
        }
        let mut buf = vec![0; len as usize + 2];
        r.read_exact(&mut buf).ok()?;
        buf.truncate(len as usize);
        String::from_utf8(buf).ok()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
