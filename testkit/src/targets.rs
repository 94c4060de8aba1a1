//! Real broken dependencies on loopback, from Debian's packages (`redis-server`, `postgresql`;
//! `scripts/setup-test-tools.sh` installs them): a Redis that really hits `maxmemory` with
//! `noeviction`, and a PostgreSQL where one session really holds a lock that blocks writers.
//! The demo service sits in front of them (`demo_service::Backend`), the shipped runbooks fix
//! them, and each target writes the credentials a workspace would find in the service's mounted
//! secret (`secrets_dir`, what `SELFHEAL_TARGET_SECRETS` points at).
//!
//! Every server binds 127.0.0.1 on a free port and is stopped when its value is dropped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// A free TCP port on loopback (bound and released: another process may take it first, which
/// the start-up then reports).
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// `start` up to three times: `free_port` releases the port before the server binds it, so a
/// parallel test may take it in between (the failed attempt cleans up after itself).
async fn with_retries<T, F, Fut>(start: F) -> Result<T, String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let mut last = String::new();
    for _ in 0..3 {
        match start().await {
            Ok(t) => return Ok(t),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn temp_dir(kind: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("selfheal-{kind}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

async fn output(cmd: &mut Command, what: &str) -> Result<std::process::Output, String> {
    match tokio::time::timeout(Duration::from_secs(60), cmd.output()).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer in 60 s")),
    }
}

async fn succeed(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = output(cmd, what).await?;
    if !out.status.success() {
        return Err(format!("{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Redis 7 with 2 MB of memory, `noeviction`, a password, and filled until writes are refused
/// with `OOM command not allowed when used memory > 'maxmemory'`.
pub struct RedisTarget {
    pub port: u16,
    pub password: String,
    /// Holds `redis_password`, as the service's secret mounted in the workspace would.
    pub secrets_dir: PathBuf,
    _server: Child,
}

impl RedisTarget {
    /// Start it (on another free port if another process took the first one meanwhile).
    pub async fn start() -> Result<Self, String> {
        with_retries(Self::start_once).await
    }

    async fn start_once() -> Result<Self, String> {
        let port = free_port()?;
        let password = format!("target-{}", uuid::Uuid::new_v4().simple());
        let server = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .args(["--maxmemory", "2mb", "--maxmemory-policy", "noeviction", "--requirepass", &password])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                format!("redis-server: {e} (apt-get install redis-server; scripts/setup-test-tools.sh does)")
            })?;
        let secrets_dir = temp_dir("redis-secrets")?;
        std::fs::write(secrets_dir.join("redis_password"), &password).map_err(|e| e.to_string())?;
        let target = Self { port, password, secrets_dir, _server: server };
        let mut up = false;
        for _ in 0..100 {
            if target.cli(&["PING"]).await.is_ok_and(|o| o == "PONG") {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !up {
            return Err(format!("redis-server did not answer on 127.0.0.1:{port}"));
        }
        target.fill().await?;
        Ok(target)
    }

    /// One `redis-cli` command; its reply (an error reply is returned as text, as redis-cli
    /// prints it: redis-cli exits 0 on those).
    pub async fn cli(&self, args: &[&str]) -> Result<String, String> {
        cli(self.port, &self.password, args).await
    }

    /// Write 64 KiB carts until Redis refuses one with OOM, then settle `maxmemory` just under
    /// what the data uses (a write's own buffers are freed after it, so a full cache can still
    /// take a small write): from then on every write is refused, small ones too.
    async fn fill(&self) -> Result<(), String> {
        let big = "x".repeat(65_536);
        let mut full = false;
        for i in 0..200 {
            if self.cli(&["SET", &format!("cart:{i}"), &big]).await?.contains("OOM") {
                full = true;
                break;
            }
        }
        if !full {
            return Err("Redis never reached maxmemory".into());
        }
        let info = self.cli(&["INFO", "memory"]).await?;
        let used: u64 = info
            .lines()
            .find_map(|l| l.trim().strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or("INFO memory has no used_memory")?;
        let limit = used.saturating_sub(256 * 1024).max(1024 * 1024);
        self.cli(&["CONFIG", "SET", "maxmemory", &limit.to_string()]).await?;
        let probe = self.cli(&["SET", "cart:probe", "x"]).await?;
        if !probe.contains("OOM") {
            return Err(format!("Redis still takes writes at maxmemory {limit} (used {used}): {probe}"));
        }
        Ok(())
    }
}

/// `redis-cli -h 127.0.0.1 -p PORT ARGS…` with the password in `REDISCLI_AUTH` (never on the
/// command line).
pub async fn cli(port: u16, password: &str, args: &[&str]) -> Result<String, String> {
    let out = output(
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .env("REDISCLI_AUTH", password)
            .stdin(Stdio::null())
            .kill_on_drop(true),
        "redis-cli",
    )
    .await?;
    if !out.status.success() {
        return Err(format!("redis-cli: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Drop for RedisTarget {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.secrets_dir);
    }
}

/// PostgreSQL (Debian's, `/usr/lib/postgresql/<v>/bin`) with a table `orders`, and one session
/// that opened a transaction, locked `orders` and keeps running a query: every writer waits
/// behind it. PostgreSQL refuses to run as root, so as root the server runs as `postgres`.
pub struct PostgresTarget {
    pub port: u16,
    /// The blocking backend's PID (`pg_stat_activity.pid`), what an investigator reports.
    pub blocker_pid: u32,
    /// Holds `pg_service.conf` with a `[target]` section, as the service's secret would.
    pub secrets_dir: PathBuf,
    // Dropped in this order: the clients, then the server.
    _waiting_writer: Child,
    _blocker: Child,
    _server: PgServer,
}

/// A server's data directory; dropping it stops the server (if it runs) and removes it.
struct PgServer {
    bin: PathBuf,
    root: PathBuf,
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let mut stop = if is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&pg_ctl);
            c
        } else {
            std::process::Command::new(&pg_ctl)
        };
        let _ = stop
            .arg("-D")
            .arg(self.root.join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn postgres_bin() -> Result<PathBuf, String> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "PostgreSQL is not installed (apt-get install postgresql)".to_string())?
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| "no PostgreSQL server binaries in /usr/lib/postgresql".into())
}

fn is_root() -> bool {
    // `id -u` without a libc dependency: root's processes have uid 0 in /proc/self/status.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// A server command, as `postgres` when we are root.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl PostgresTarget {
    /// Start it (on another free port if another process took the first one meanwhile).
    pub async fn start() -> Result<Self, String> {
        with_retries(Self::start_once).await
    }

    async fn start_once() -> Result<Self, String> {
        let bin = postgres_bin()?;
        let port = free_port()?;
        let server = PgServer { bin: bin.clone(), root: temp_dir("postgres")? };
        let (root, data) = (server.root.clone(), server.root.join("data"));
        std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
        if is_root() {
            succeed(Command::new("chown").args(["-R", "postgres"]).arg(&root), "chown").await?;
        }
        succeed(
            as_postgres(&bin.join("initdb")).arg("-D").arg(&data).args(["-A", "trust", "-U", "postgres"]),
            "initdb",
        )
        .await?;
        succeed(
            as_postgres(&bin.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .arg("-w")
                .arg("-l")
                .arg(root.join("log"))
                .arg("-o")
                .arg(format!("-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off", root.display()))
                .arg("start"),
            "pg_ctl start",
        )
        .await?;
        let secrets_dir = temp_dir("postgres-secrets")?;
        std::fs::write(
            secrets_dir.join("pg_service.conf"),
            format!("[target]\nhost=127.0.0.1\nport={port}\ndbname=postgres\nuser=postgres\n"),
        )
        .map_err(|e| e.to_string())?;
        psql(port, "CREATE TABLE orders (id serial PRIMARY KEY, placed_at timestamptz DEFAULT now())").await?;
        // The blocker: an open transaction holding the table lock, busy in a long query (as a
        // stuck batch job would be). Its connection ends when its query is canceled.
        let blocker = Command::new("psql")
            .args(["-X", "-q", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
            .args(["-c", "BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(600);"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("psql: {e}"))?;
        let mut blocker_pid = None;
        for _ in 0..100 {
            let pid = psql(
                port,
                "SELECT pid FROM pg_locks WHERE relation = 'orders'::regclass AND mode = 'AccessExclusiveLock' AND granted",
            )
            .await?;
            if let Ok(pid) = pid.parse() {
                blocker_pid = Some(pid);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let blocker_pid = blocker_pid.ok_or("the blocking session never took its lock")?;
        // The application's order insert, stuck behind it (no lock timeout, as a request whose
        // connection waits): what makes the blocker a blocker in `pg_blocking_pids`.
        let waiting_writer = Command::new("psql")
            .args(["-X", "-q", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
            .args(["-c", "INSERT INTO orders DEFAULT VALUES"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("psql: {e}"))?;
        let mut waiting = false;
        for _ in 0..100 {
            let blocked = psql(
                port,
                &format!("SELECT count(*) FROM pg_stat_activity WHERE {blocker_pid} = ANY(pg_blocking_pids(pid))"),
            )
            .await?;
            if blocked != "0" {
                waiting = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !waiting {
            return Err("no writer ever waited behind the blocking session".into());
        }
        Ok(Self { port, blocker_pid, secrets_dir, _waiting_writer: waiting_writer, _blocker: blocker, _server: server })
    }

    /// One statement through `psql` as `postgres`; its output (tuples only, unaligned).
    pub async fn psql(&self, sql: &str) -> Result<String, String> {
        psql(self.port, sql).await
    }

    /// Is the blocking session still there?
    pub async fn blocker_alive(&self) -> Result<bool, String> {
        Ok(self.psql(&format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {}", self.blocker_pid)).await? == "1")
    }
}

/// `psql -c SQL` against 127.0.0.1:PORT as `postgres`, stopping on the first error.
pub async fn psql(port: u16, sql: &str) -> Result<String, String> {
    succeed(
        Command::new("psql")
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-U", "postgres", "-c", sql])
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(Stdio::null())
            .kill_on_drop(true),
        "psql",
    )
    .await
}

impl Drop for PostgresTarget {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.secrets_dir);
    }
}
