//! A throwaway `redis-server` for a test: the system's binary (`/usr/bin/redis-server`, which
//! `.ci/setup` installs) on a leased 127.0.0.1 port with a temp working directory, no
//! persistence, stopped (SIGKILL) on drop. [`Redis::kill`] and [`Redis::restart`] simulate an
//! outage on the same port; [`Redis::pause`] and [`Redis::resume`] a hung server (SIGSTOP /
//! SIGCONT: connections stay open, nothing answers). [`Redis::start_tls`] adds a TLS port (the
//! plain one stays for the test's own commands); [`RedisCluster::start`] makes a Redis Cluster
//! of N primaries. A missing binary fails the test when `CI=true` (CI installs it, so a skip
//! there would hide every Redis test); elsewhere it is `None`, with a loud message.

#![allow(dead_code)]

#[path = "certs.rs"]
mod certs;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    pub port: u16,
    /// The TLS port ([`Redis::start_tls`]).
    pub tls_port: Option<u16>,
    dir: PathBuf,
    child: Option<Child>,
    /// Arguments beyond the defaults (TLS, cluster).
    args: Vec<String>,
    _leases: Vec<super::PortLease>,
}

fn binary() -> Option<PathBuf> {
    ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn installed() -> bool {
    if binary().is_none() {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1"),
            "redis-server is not installed (/usr/bin/redis-server) and CI=true: the Redis tests \
             must run in CI; install the `redis-server` package (.ci/setup does)"
        );
        eprintln!(
                "\n!!!!!!!! SKIPPED: redis-server is not installed (/usr/bin/redis-server); \
                 install the `redis-server` package (.ci/setup does) to run the Redis tests !!!!!!!!\n"
        );
        return false;
    }
    true
}

impl Redis {
    pub fn start() -> Option<Redis> {
        Redis::start_with(|_, _| Vec::new())
    }

    /// A server whose extra arguments `args(dir, extra_port)` gives (a second leased port, for
    /// TLS or the cluster bus).
    fn start_with(args: impl FnOnce(&Path, u16) -> Vec<String>) -> Option<Redis> {
        if !installed() {
            return None;
        }
        let (lease, extra) = (super::reserve_port(), super::reserve_port());
        let dir = super::temp_dir();
        let mut r = Redis {
            port: lease.port,
            tls_port: None,
            args: args(&dir, extra.port),
            dir,
            child: None,
            _leases: vec![lease, extra],
        };
        if r.args.iter().any(|a| a == "--tls-port") {
            r.tls_port = Some(r._leases[1].port);
        }
        r.restart();
        Some(r)
    }

    /// A server that also speaks TLS on [`Redis::tls_port`] with a certificate for 127.0.0.1
    /// signed by a throwaway CA, whose PEM is [`Redis::ca_file`] (clients are not asked for
    /// certificates). The plain port stays open for the test's own commands.
    pub fn start_tls() -> Option<Redis> {
        Redis::start_with(|dir, tls_port| {
            certs::make_ca(dir, "redis-ca");
            let (cert, key) = certs::make_leaf(dir, "redis-ca", "redis-server", 2);
            let path = |p: &Path| p.to_str().unwrap().to_string();
            vec![
                "--tls-port".into(),
                tls_port.to_string(),
                "--tls-cert-file".into(),
                path(&cert),
                "--tls-key-file".into(),
                path(&key),
                "--tls-ca-cert-file".into(),
                path(&dir.join("redis-ca.pem")),
                "--tls-auth-clients".into(),
                "no".into(),
            ]
        })
    }

    /// The CA that signed a TLS server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("redis-ca.pem")
    }

    /// `rediss://127.0.0.1:TLS_PORT`.
    pub fn tls_url(&self) -> String {
        format!(
            "rediss://127.0.0.1:{}",
            self.tls_port.expect("a TLS server")
        )
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

    /// Freezes the server (SIGSTOP): it keeps its connections and data but answers nothing
    /// until [`Redis::resume`], as a hung or overloaded server would.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a [`Redis::pause`]d server run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("a running server").id();
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} {pid} failed");
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
            .args(&self.args)
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

/// A Redis Cluster of N primaries (no replicas) on leased ports, every slot assigned.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    /// Starts `n` (≥ 3) cluster-enabled servers, joins them with `redis-cli --cluster create`
    /// and waits until every node reports `cluster_state:ok`.
    pub fn start(n: usize) -> Option<RedisCluster> {
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            nodes.push(Redis::start_with(|_, bus| {
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-port",
                    &bus.to_string(),
                    "--cluster-node-timeout",
                    "2000",
                ]
                .map(String::from)
                .to_vec()
            })?);
        }
        let mut create = Command::new(cli());
        create.args(["--cluster", "create"]);
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("cannot run redis-cli");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let ok = |node: &Redis| {
            Command::new(cli())
                .args(["-p", &node.port.to_string(), "cluster", "info"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
        };
        while !nodes.iter().all(ok) {
            assert!(Instant::now() < deadline, "the cluster never became ok");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(RedisCluster { nodes })
    }

    /// Keys stored over all nodes.
    pub fn dbsize(&self) -> u64 {
        self.nodes
            .iter()
            .filter_map(|n| n.cmd(&["DBSIZE"])?.strip_prefix(':')?.parse::<u64>().ok())
            .sum()
    }
}

fn cli() -> PathBuf {
    ["/usr/bin/redis-cli", "/usr/local/bin/redis-cli"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("redis-cli is installed with redis-server")
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP proxy in front of a Redis that holds every chunk the client sends for a fixed delay
/// before passing it on, in order, without holding back the chunks behind it (a delay line;
/// answers come back at once). A request that needs n sequential round trips to Redis takes at
/// least n × delay and, chunks being delayed in parallel, less than (n + 1) × delay: its
/// latency counts its round trips, whatever the gateway's own counters say.
pub struct DelayProxy {
    pub port: u16,
    accept: tokio::task::JoinHandle<()>,
}

impl DelayProxy {
    /// Listens on a free loopback port and forwards each connection to `127.0.0.1:target`.
    pub async fn start(target: u16, delay: Duration) -> DelayProxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (mut client_rx, mut client_tx) = client.into_split();
                let (mut server_rx, mut server_tx) = server.into_split();
                let (line_tx, mut line_rx) =
                    tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = client_rx.read(&mut buf).await {
                        let due = tokio::time::Instant::now() + delay;
                        if line_tx.send((due, buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                });
                tokio::spawn(async move {
                    while let Some((due, bytes)) = line_rx.recv().await {
                        tokio::time::sleep_until(due).await;
                        if server_tx.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                });
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_rx, &mut client_tx).await;
                });
            }
        });
        DelayProxy { port, accept }
    }

    /// `redis://127.0.0.1:PORT` (the proxy).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Redis {
    /// `calls` and `failed_calls` of one command in `INFO commandstats` (`evalsha`,
    /// `script|load`): what reached the server, counted by the server.
    pub fn command_calls(&self, command: &str) -> (u64, u64) {
        let client = redis::Client::open(self.url()).expect("a client");
        let mut conn = client.get_connection().expect("a connection");
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut conn)
            .expect("INFO commandstats");
        let prefix = format!("cmdstat_{command}:");
        let Some(line) = info.lines().find(|l| l.starts_with(&prefix)) else {
            return (0, 0);
        };
        let field = |name: &str| {
            line[prefix.len()..]
                .split(',')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("calls"), field("failed_calls"))
    }
}
