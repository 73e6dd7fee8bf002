//! Real `redis-server` processes for tests and benches: one server, or a
//! three-master cluster, each on free loopback ports in a temporary
//! directory of its own, stopped and removed when dropped.
//!
//! A test starts with
//!
//! ```ignore
//! let Some(server) = RedisServer::start() else { return };
//! ```
//!
//! which skips the test, with a notice on stderr, where `redis-server` is
//! not installed, except under `CI=true`, where it panics: CI must install
//! it (`.ci/run` does).
//!
//! Every process started here stops when its owner is dropped, so also
//! when the test panics and unwinds. Each server also has a watchdog (a
//! `sh` blocked reading a pipe that only this process holds): if the test
//! process dies without unwinding (an abort, Ctrl-C, SIGKILL), the pipe
//! closes and the watchdog kills the server and removes its directory.
//!
//! Std only, no unsafe: signals go through `kill(1)`.

// Each crate that includes this module uses a part of it.
#![allow(dead_code)]

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a started or restarted server has to answer PING.
const START_DEADLINE: Duration = Duration::from_secs(5);
/// How long a new cluster has to report every slot assigned and served.
const CLUSTER_DEADLINE: Duration = Duration::from_secs(10);
/// How long one `redis-cli` run may take before it is killed.
const CLI_DEADLINE: Duration = Duration::from_secs(10);
/// How long `redis-cli --cluster create` may take (it waits for the
/// nodes to agree on the configuration).
const CLUSTER_CREATE_DEADLINE: Duration = Duration::from_secs(30);
/// Fresh ports to try when a server fails to start (another process took
/// the port between the probe and the server's bind).
const START_ATTEMPTS: usize = 5;
/// A cluster node's bus port is its port plus this.
const CLUSTER_BUS_OFFSET: u16 = 10_000;
/// The server's output, in its directory: the start of a failure message.
const LOG_FILE: &str = "redis.log";

/// One `redis-server` on `127.0.0.1`, in a temporary directory of its own,
/// with persistence off (`--save "" --appendonly no`).
///
/// Dropping it kills the server (resuming it first if paused), reaps it and
/// removes its directory.
pub(crate) struct RedisServer {
    port: u16,
    dir: PathBuf,
    /// The arguments after `--port P --dir D`, again on a restart.
    extra_args: Vec<String>,
    process: Mutex<Process>,
}

/// The running server, if any, and its watchdog.
struct Process {
    /// `None` after `kill`, until `restart`.
    child: Option<Child>,
    /// Kills `child` if this test process dies without dropping it.
    watchdog: Option<Child>,
    /// The current server's pid, or the last one's after `kill`.
    pid: u32,
    paused: bool,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers
    /// PING.
    ///
    /// Returns `None`, after a notice on stderr, where `redis-server` or
    /// `redis-cli` is not on `PATH`; panics instead under `CI=true`.
    /// Panics if the server does not answer within 5 s, with its log.
    pub(crate) fn start() -> Option<RedisServer> {
        if !installed() {
            return None;
        }
        Some(Self::start_with(&[], false))
    }

    /// Starts a server with `extra` arguments on a free port (whose cluster
    /// bus port is free too if `bus_port`); tries fresh ports if the server
    /// exits before answering.
    fn start_with(extra: &[&str], bus_port: bool) -> RedisServer {
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port(bus_port);
            let dir = fresh_dir(port);
            let server = RedisServer {
                port,
                dir,
                extra_args: extra.iter().map(|arg| arg.to_string()).collect(),
                process: Mutex::new(Process {
                    child: None,
                    watchdog: None,
                    pid: 0,
                    paused: false,
                }),
            };
            server.spawn_into(&mut server.lock());
            match server.wait_ready() {
                Ok(()) => return server,
                // Dropping the server removes its directory: keep the log.
                Err(failure @ StartFailure::Exited { .. }) => failures.push(failure.to_string()),
                Err(failure) => panic!("{failure}"),
            }
        }
        panic!(
            "redis-server failed to start on {START_ATTEMPTS} free ports:\n{}",
            failures.join("\n")
        );
    }

    /// The server's TCP port on 127.0.0.1.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server process's id; after `kill`, the killed one's until
    /// `restart`.
    pub(crate) fn pid(&self) -> u32 {
        self.lock().pid
    }

    /// The server's working directory (removed on drop).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Freezes the server (SIGSTOP): connections are still accepted by the
    /// kernel, but nothing is answered until `resume`.
    ///
    /// Panics if the server is not running.
    pub(crate) fn pause(&self) {
        let mut process = self.lock();
        let pid = process.running_pid("pause");
        signal(pid, "STOP");
        process.paused = true;
    }

    /// Lets a paused server go on (SIGCONT).
    ///
    /// Panics if the server is not running.
    pub(crate) fn resume(&self) {
        let mut process = self.lock();
        let pid = process.running_pid("resume");
        signal(pid, "CONT");
        process.paused = false;
    }

    /// Kills the server (SIGKILL) and reaps it; the port then refuses
    /// connections until `restart`. Does nothing if it is not running.
    pub(crate) fn kill(&self) {
        self.lock().stop();
    }

    /// Starts the server again on the same port and directory, killing it
    /// first if it is still running, and waits until it answers PING.
    ///
    /// The data is gone (no persistence); a cluster node keeps its
    /// `nodes.conf` and so rejoins its cluster. Panics if it does not
    /// answer within 5 s (for example when another process took the port
    /// meanwhile), with its log.
    pub(crate) fn restart(&self) {
        {
            let mut process = self.lock();
            process.stop();
            self.spawn_into(&mut process);
        }
        if let Err(failure) = self.wait_ready() {
            panic!("restart: {failure}");
        }
    }

    fn lock(&self) -> MutexGuard<'_, Process> {
        // A panic while the lock was held (a failed restart) leaves the
        // state usable: drop must still stop the server.
        self.process.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Spawns `redis-server` and its watchdog into `process`.
    fn spawn_into(&self, process: &mut Process) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(LOG_FILE))
            .expect("create redis-server log file");
        let log_err = log.try_clone().expect("clone redis-server log file");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--daemonize", "no"])
            .args(["--loglevel", "notice", "--logfile", ""])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .expect("spawn redis-server");
        let pid = child.id();
        // Stored before anything else can fail, so drop stops it.
        *process = Process {
            child: Some(child),
            watchdog: None,
            pid,
            paused: false,
        };
        // `read` returns at end of file: when the write end, held by this
        // process only (std's pipes are close-on-exec), closes. Then it
        // kills the server and removes its directory.
        let watchdog = Command::new("sh")
            .args(["-c", r#"read line; kill -9 "$1"; rm -rf "$2""#, "sh"])
            .arg(pid.to_string())
            .arg(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server watchdog (sh)");
        process.watchdog = Some(watchdog);
    }

    /// Polls PING until this server (not some other process on the port)
    /// answers, it exits, or `START_DEADLINE` passes.
    fn wait_ready(&self) -> Result<(), StartFailure> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let exited = {
                let mut process = self.lock();
                let pid = process.pid;
                let child = process.child.as_mut().expect("a server was just spawned");
                let exited = child.try_wait().expect("poll redis-server");
                // The pid check: another server answering on the port
                // (ours is then about to fail its bind) is not ready.
                if exited.is_none()
                    && ping(self.port, Duration::from_millis(200)).is_ok()
                    && answering_pid(self.port) == Some(pid)
                {
                    return Ok(());
                }
                exited
            };
            if let Some(status) = exited {
                self.lock().stop();
                return Err(StartFailure::Exited {
                    port: self.port,
                    status,
                    log: self.log(),
                });
            }
            if Instant::now() >= deadline {
                return Err(StartFailure::TimedOut {
                    port: self.port,
                    log: self.log(),
                });
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The server's output so far, for failure messages.
    fn log(&self) -> String {
        fs::read_to_string(self.dir.join(LOG_FILE)).unwrap_or_else(|err| format!("(no log: {err})"))
    }
}

impl Process {
    fn running_pid(&self, what: &str) -> u32 {
        assert!(
            self.child.is_some(),
            "{what}: redis-server (pid {}) is not running",
            self.pid
        );
        self.pid
    }

    /// Kills and reaps the server and its watchdog, if running.
    fn stop(&mut self) {
        // The watchdog first: once the server is reaped its pid may be
        // reused, and the watchdog must not outlive it to kill that.
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        if let Some(mut child) = self.child.take() {
            if self.paused {
                // SIGKILL ends a stopped process too; resume anyway, so
                // nothing depends on that.
                let _ = Command::new("kill")
                    .args(["-CONT", &self.pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
            // SIGKILL, unless already reaped.
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.process
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let process = self.lock();
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .field("pid", &process.pid)
            .field("running", &process.child.is_some())
            .field("paused", &process.paused)
            .field("dir", &self.dir)
            .finish()
    }
}

/// Why a server did not come up.
enum StartFailure {
    Exited {
        port: u16,
        status: ExitStatus,
        log: String,
    },
    TimedOut {
        port: u16,
        log: String,
    },
}

impl fmt::Display for StartFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartFailure::Exited { port, status, log } => write!(
                f,
                "redis-server on port {port} exited ({status}) before answering PING; its log:\n{log}"
            ),
            StartFailure::TimedOut { port, log } => write!(
                f,
                "redis-server on port {port} did not answer PING within {START_DEADLINE:?}; its log:\n{log}"
            ),
        }
    }
}

/// Three Redis Cluster masters (no replicas) covering all 16384 slots.
///
/// Dropping it stops all three.
#[derive(Debug)]
pub(crate) struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers (node timeout 2 s) on free
    /// ports whose bus ports (port + 10000) are free too, joins them with
    /// `redis-cli --cluster create`, and waits until every node reports
    /// `cluster_state:ok` with all 16384 slots assigned.
    ///
    /// Returns `None` where Redis is not installed, as
    /// [`RedisServer::start`] does (panics under `CI=true`). Panics if the
    /// cluster does not form within 10 s.
    pub(crate) fn start() -> Option<RedisCluster> {
        if !installed() {
            return None;
        }
        let cluster_args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
        ];
        let cluster = RedisCluster {
            nodes: (0..3)
                .map(|_| RedisServer::start_with(&cluster_args, true))
                .collect(),
        };
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect();
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]).args(&addresses).args([
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ]);
        let output = run_bounded(&mut create, CLUSTER_CREATE_DEADLINE);
        assert!(
            output.status.success(),
            "redis-cli --cluster create {} failed ({}):\n{}{}",
            addresses.join(" "),
            output.status,
            output.stdout,
            output.stderr
        );
        cluster.wait_ok(&output.stdout);
        Some(cluster)
    }

    /// Polls `CLUSTER INFO` on every node until each says the cluster is
    /// ok with every slot assigned.
    fn wait_ok(&self, create_output: &str) {
        let deadline = Instant::now() + CLUSTER_DEADLINE;
        loop {
            let infos: Vec<String> = self
                .nodes
                .iter()
                .map(|node| {
                    raw_command(node.port(), "CLUSTER INFO", Duration::from_millis(500))
                        .unwrap_or_else(|err| format!("(no answer: {err})"))
                })
                .collect();
            let ok = infos.iter().all(|info| {
                info.lines().any(|line| line.trim() == "cluster_state:ok")
                    && info
                        .lines()
                        .any(|line| line.trim() == "cluster_slots_assigned:16384")
            });
            if ok {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the Redis cluster on ports {:?} did not reach cluster_state:ok within \
                     {CLUSTER_DEADLINE:?}.\nredis-cli --cluster create said:\n{create_output}\n\
                     CLUSTER INFO of each node:\n{}",
                    self.ports(),
                    infos.join("\n---\n")
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The three masters.
    pub(crate) fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The masters' ports.
    pub(crate) fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// `redis://127.0.0.1:PORT/` of each master.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// How many keys matching `pattern` each master holds, in `nodes()`
    /// order (`redis-cli --scan --pattern` on each).
    pub(crate) fn keys_per_node(&self, pattern: &str) -> Vec<usize> {
        self.nodes
            .iter()
            .map(|node| {
                redis_cli(node.port(), &["--scan", "--pattern", pattern])
                    .lines()
                    .filter(|line| !line.is_empty())
                    .count()
            })
            .collect()
    }
}

/// Runs `redis-cli -p PORT ARGS...` and returns its stdout.
///
/// Panics, with its stderr, if it fails or takes over 10 s (a paused
/// server, for one).
pub(crate) fn redis_cli(port: u16, args: &[&str]) -> String {
    let mut command = Command::new("redis-cli");
    command.args(["-p", &port.to_string()]).args(args);
    let output = run_bounded(&mut command, CLI_DEADLINE);
    assert!(
        output.status.success(),
        "redis-cli -p {port} {} failed ({}):\n{}{}",
        args.join(" "),
        output.status,
        output.stderr,
        output.stdout
    );
    output.stdout
}

/// Sends `PING` over a new TCP connection to `127.0.0.1:port`; `Ok` on
/// `+PONG`. A paused server fails with `WouldBlock` or `TimedOut` after
/// `timeout`; a killed one with `ConnectionRefused`.
pub(crate) fn ping(port: u16, timeout: Duration) -> io::Result<()> {
    let reply = raw_command(port, "PING", timeout)?;
    if reply == "PONG" {
        Ok(())
    } else {
        Err(io::Error::other(format!("PING answered {reply:?}")))
    }
}

/// Whether a process `pid` exists (`kill -0`); a reaped one does not.
pub(crate) fn process_exists(pid: u32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Sends one inline command over a new connection and reads a simple,
/// integer or bulk reply (error replies are `Err`). Reads and writes time
/// out after `timeout` each.
fn raw_command(port: u16, command: &str, timeout: Duration) -> io::Result<String> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(format!("{command}\r\n").as_bytes())?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a full reply",
            ));
        }
        reply.extend_from_slice(&buf[..n]);
        if let Some(parsed) = parse_reply(&reply) {
            return parsed;
        }
    }
}

/// A complete reply from the start of `bytes`, or `None` if more is needed.
fn parse_reply(bytes: &[u8]) -> Option<io::Result<String>> {
    let line_end = bytes.windows(2).position(|pair| pair == b"\r\n")?;
    let line = String::from_utf8_lossy(&bytes[1..line_end]).into_owned();
    match bytes.first() {
        Some(b'+' | b':') => Some(Ok(line)),
        Some(b'-') => Some(Err(io::Error::other(line))),
        Some(b'$') => {
            let Ok(len) = line.parse::<i64>() else {
                return Some(Err(io::Error::other(format!("bad bulk length {line:?}"))));
            };
            let Ok(len) = usize::try_from(len) else {
                return Some(Ok(String::new())); // nil
            };
            let body = bytes.get(line_end + 2..line_end + 2 + len)?;
            Some(Ok(String::from_utf8_lossy(body).into_owned()))
        }
        _ => Some(Err(io::Error::other(format!(
            "unexpected reply {:?}",
            String::from_utf8_lossy(bytes)
        )))),
    }
}

/// The pid of the server answering on `port` (`INFO server`).
fn answering_pid(port: u16) -> Option<u32> {
    let info = raw_command(port, "INFO server", Duration::from_millis(500)).ok()?;
    info.lines()
        .find_map(|line| line.trim().strip_prefix("process_id:"))
        .and_then(|pid| pid.parse().ok())
}

/// Whether `redis-server` and `redis-cli` are on PATH; if not, panics
/// under `CI=true` and prints a notice otherwise.
fn installed() -> bool {
    let found = |program: &str| {
        Command::new(program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    if found("redis-server") && found("redis-cli") {
        return true;
    }
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!(
            "redis-server or redis-cli is not on PATH, and CI=true: CI must install \
             redis-server (apt-get install redis-server; .ci/run does)"
        );
    }
    eprintln!(
        "\n********************************************************************\n\
         *** skipping: redis-server not installed; apt-get install redis-server\n\
         ********************************************************************\n"
    );
    false
}

/// A loopback port nothing listens on now (and, if `bus_port`, port +
/// 10000 too, for a cluster node's bus).
fn free_port(bus_port: bool) -> u16 {
    for _ in 0..100 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        if !bus_port {
            return port;
        }
        let Some(bus) = port.checked_add(CLUSTER_BUS_OFFSET) else {
            continue;
        };
        if TcpListener::bind((Ipv4Addr::LOCALHOST, bus)).is_ok() {
            return port;
        }
    }
    panic!("found no free loopback port (with a free cluster bus port) in 100 tries");
}

/// A new empty directory under the temporary directory, for one server.
fn fresh_dir(port: u16) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    loop {
        // Relaxed: the counter only makes names unique; nothing is
        // published through it.
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "loadbalance-redis-{}-{n}-{nanos}-{port}",
            std::process::id()
        ));
        match fs::create_dir(&dir) {
            Ok(()) => return dir,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(err) => panic!("create {}: {err}", dir.display()),
        }
    }
}

/// Sends `SIG` to `pid` with `kill -SIG pid`.
fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid} failed ({status})");
}

/// A finished command's status and output.
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `command` with its output captured, killing it and panicking if it
/// takes longer than `deadline`.
fn run_bounded(command: &mut Command, deadline: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("spawn {command:?}: {err}"));
    // Read both pipes while waiting, so a full pipe never blocks the child.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let until = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll child") {
            break status;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} took longer than {deadline:?} and was killed; its stderr:\n{}",
                stderr.join().unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(2));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Reads a pipe to its end on a thread of its own.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
}
