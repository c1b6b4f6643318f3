//! Running the `iam-key-revoker` binary the way operators do: configured by
//! environment variables, stopped with SIGTERM.

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::TestEnv;

pub const BIN: &str = env!("CARGO_BIN_EXE_iam-key-revoker");

/// The binary with nothing but the emulator's credentials, `endpoint` and `queue_url`
/// in its environment.
pub fn command(endpoint: &str, queue_url: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("IAM_KEY_REVOKER__AWS__REGION", super::REGION)
        .env("IAM_KEY_REVOKER__AWS__ENDPOINT_URL", endpoint)
        .env("IAM_KEY_REVOKER__SQS__QUEUE_URL", queue_url)
        .env("IAM_KEY_REVOKER__IAM__MAX_REQUESTS_PER_SECOND", "1000")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// `iam-key-revoker run` for `env`'s queue, talking to `endpoint`, serving metrics on
/// `metrics_port` (0: any free port).
pub fn worker_command(env: &TestEnv, endpoint: &str, metrics_port: u16) -> Command {
    let mut cmd = command(endpoint, &env.queue_url);
    if let Some(key) = &env.config.continuation.mac_key_id {
        cmd.env("IAM_KEY_REVOKER__CONTINUATION__MAC_KEY_ID", key);
    }
    cmd.arg("run")
        .env("IAM_KEY_REVOKER__SQS__WAIT_TIME_SECONDS", "1")
        .env(
            "IAM_KEY_REVOKER__METRICS__LISTEN",
            format!("127.0.0.1:{metrics_port}"),
        );
    cmd
}

/// The port the worker process `child` listens on (its metrics listener, bound to port 0
/// by `worker_command(.., 0)`): the port the system gave it, read from `/proc` (a
/// listening socket among the process's open files), waited for up to 15 s. No port
/// chosen beforehand that another process could take first.
pub async fn listening_port(child: &Child) -> u16 {
    let pid = child.id();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(port) = listening_port_of(pid) {
            return port;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "process {pid} listens on no TCP port"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn listening_port_of(pid: u32) -> Option<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).ok()?;
    // Columns: sl local_address rem_address st ... inode; state 0A is LISTEN.
    table.lines().skip(1).find_map(|line| {
        let columns: Vec<&str> = line.split_whitespace().collect();
        let listening = columns.get(3) == Some(&"0A");
        let ours = columns
            .get(9)
            .is_some_and(|inode| inodes.iter().any(|i| i == inode));
        if !(listening && ours) {
            return None;
        }
        let port = columns.get(1)?.rsplit(':').next()?;
        u16::from_str_radix(port, 16).ok()
    })
}

/// A TCP port free right now on 127.0.0.1 (for an address nothing listens on).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Waits for the process to end (at most `limit`) and returns its output.
pub async fn wait(child: Child, limit: Duration) -> Output {
    tokio::time::timeout(
        limit,
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .expect("process exits in time")
    .unwrap()
    .unwrap()
}

/// A plain HTTP GET to the worker's listener; the status and body, or None if nothing
/// answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

pub fn http_status(port: u16, path: &str) -> Option<u16> {
    http_get(port, path).map(|(status, _)| status)
}

pub fn http_body(port: u16, path: &str) -> Option<String> {
    http_get(port, path).map(|(_, body)| body)
}

/// Series value from a Prometheus exposition, 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// The JSON audit lines ("Job finished") of a run.
pub fn audit_lines(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("every log line is JSON"))
        .filter(|v| v["message"] == "Job finished")
        .collect()
}
