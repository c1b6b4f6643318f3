//! A small fault-injecting HTTP/1.1 proxy for the faults the emulator cannot produce:
//! slow answers, error statuses and requests that hang. It sits between the worker and
//! the emulator, forwards each request as is, and records the operation of each one
//! (`Action=` for IAM/STS query requests, `X-Amz-Target` for SQS JSON requests).
//!
//! It can also forward some requests one at a time ([`FaultProxy::serialize_matching`]):
//! the emulator's DynamoDB does not isolate concurrent writes to an item (moto's backend
//! takes no lock), where DynamoDB serializes them (DynamoDB Developer Guide, "Amazon
//! DynamoDB Transactions: How it works", isolation levels: serializable between
//! transactional and standard writes); one at a time is what DynamoDB's answers look like.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to the requests it applies to.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Forward untouched.
    None,
    /// Wait, then forward.
    Delay(Duration),
    /// Answer with this status and body instead of forwarding.
    Status(u16, String),
    /// Never answer.
    Hang,
    /// The inner fault for `n` out of every ten requests it applies to (deterministic:
    /// the first `n` of each ten), the others forwarded untouched.
    TenthsOf(u32, Box<Fault>),
}

/// Which requests a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scope {
    /// IAM (and STS) query-protocol requests only; SQS passes untouched.
    Iam,
    /// Every request.
    All,
}

#[derive(Debug)]
struct State {
    fault: Fault,
    scope: Scope,
    /// Faults for one operation only, over the general one.
    by_operation: std::collections::HashMap<String, Fault>,
    /// Faults for requests whose text contains every one of some strings (an operation
    /// and a key id, say), over all others.
    by_content: Vec<(Vec<String>, Fault)>,
    operations: Vec<String>,
    /// Every request's text, in order.
    requests: Vec<String>,
    /// Requests a `TenthsOf` fault has seen.
    counted: u32,
    /// Requests received and not yet answered, and the most there ever were.
    open: usize,
    max_open: usize,
    /// Requests containing one of these are forwarded one at a time.
    serialized: Vec<String>,
}

/// Marks one request as open until dropped, whichever way its handling ends.
struct Open(Arc<Mutex<State>>);

impl Open {
    fn new(state: &Arc<Mutex<State>>) -> Self {
        let mut s = state.lock().unwrap();
        s.open += 1;
        s.max_open = s.max_open.max(s.open);
        Self(state.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.lock().unwrap().open -= 1;
    }
}

/// A running proxy; it stops when the test's runtime ends.
#[derive(Debug, Clone)]
pub struct FaultProxy {
    pub url: String,
    state: Arc<Mutex<State>>,
}

/// Held while a serialized request is forwarded.
type OneAtATime = Arc<tokio::sync::Mutex<()>>;

/// An IAM query-protocol error body.
pub fn iam_error(code: &str) -> String {
    format!(
        "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>injected</Message></Error><RequestId>proxy</RequestId></ErrorResponse>"
    )
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` (an `http://host:port` URL).
    pub async fn start(upstream: &str, scope: Scope) -> Self {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            fault: Fault::None,
            scope,
            by_operation: std::collections::HashMap::new(),
            by_content: Vec::new(),
            requests: Vec::new(),
            operations: Vec::new(),
            counted: 0,
            open: 0,
            max_open: 0,
            serialized: Vec::new(),
        }));
        let shared = state.clone();
        let one = OneAtATime::default();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, upstream.clone(), shared.clone(), one.clone()));
            }
        });
        Self { url, state }
    }

    /// Forwards requests whose text contains `needle` one at a time.
    pub fn serialize_matching(&self, needle: &str) {
        self.state
            .lock()
            .unwrap()
            .serialized
            .push(needle.to_owned());
    }

    pub fn set_fault(&self, fault: Fault) {
        self.state.lock().unwrap().fault = fault;
    }

    /// A fault for `operation` only (whatever the scope).
    pub fn set_fault_for(&self, operation: &str, fault: Fault) {
        self.state
            .lock()
            .unwrap()
            .by_operation
            .insert(operation.to_owned(), fault);
    }

    /// A fault for requests whose text contains every one of `needles` (e.g.
    /// `Action=DeleteAccessKey` and `AccessKeyId=AKIA…`), over every other fault;
    /// `Fault::None` takes it back.
    pub fn set_fault_matching(&self, needles: &[String], fault: Fault) {
        let mut s = self.state.lock().unwrap();
        s.by_content.retain(|(n, _)| n != needles);
        if fault != Fault::None {
            s.by_content.push((needles.to_vec(), fault));
        }
    }

    /// The text of every request seen so far that contains `needle`.
    pub fn requests_containing(&self, needle: &str) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.contains(needle))
            .cloned()
            .collect()
    }

    /// Operations seen so far, in order.
    pub fn operations(&self) -> Vec<String> {
        self.state.lock().unwrap().operations.clone()
    }

    /// The most requests the proxy was ever working on at once.
    pub fn max_concurrent(&self) -> usize {
        self.state.lock().unwrap().max_open
    }

    /// How many requests of `operation` were seen.
    pub fn count(&self, operation: &str) -> usize {
        self.operations().iter().filter(|o| *o == operation).count()
    }
}

async fn serve(client: TcpStream, upstream: String, state: Arc<Mutex<State>>, one: OneAtATime) {
    let (read, mut write) = client.into_split();
    let mut read = BufReader::new(read);
    while let Some(request) = read_message(&mut read).await {
        let _open = Open::new(&state);
        let (operation, is_query) = operation_of(&request);
        let (fault, serialized) = {
            let mut s = state.lock().unwrap();
            let text = String::from_utf8_lossy(&request);
            let serialized = s.serialized.iter().any(|n| text.contains(n.as_str()));
            let matching = s
                .by_content
                .iter()
                .find(|(needles, _)| needles.iter().all(|n| text.contains(n.as_str())))
                .map(|(_, fault)| fault.clone());
            let specific = matching.or_else(|| s.by_operation.get(&operation).cloned());
            s.operations.push(operation);
            s.requests.push(text.into_owned());
            let fault = if let Some(fault) = specific {
                fault
            } else if s.scope == Scope::All || is_query {
                s.fault.clone()
            } else {
                Fault::None
            };
            (fault, serialized)
        };
        let _turn = match serialized {
            true => Some(one.lock().await),
            false => None,
        };
        let fault = match fault {
            Fault::TenthsOf(n, inner) => {
                let mut s = state.lock().unwrap();
                s.counted += 1;
                if (s.counted - 1) % 10 < n {
                    *inner
                } else {
                    Fault::None
                }
            }
            other => other,
        };
        let response =
            match fault {
                Fault::Hang => {
                    tokio::time::sleep(Duration::from_secs(3_600)).await;
                    return;
                }
                Fault::Status(code, body) => format!(
                "HTTP/1.1 {code} Injected\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n{body}",
                if body.starts_with('{') { "application/json" } else { "text/xml" },
                body.len()
            )
                .into_bytes(),
                Fault::Delay(delay) => {
                    tokio::time::sleep(delay).await;
                    match forward(&upstream, &request).await {
                        Some(r) => r,
                        None => return,
                    }
                }
                Fault::None | Fault::TenthsOf(..) => match forward(&upstream, &request).await {
                    Some(r) => r,
                    None => return,
                },
            };
        if write.write_all(&response).await.is_err() {
            return;
        }
    }
}

async fn forward(upstream: &str, request: &[u8]) -> Option<Vec<u8>> {
    let stream = TcpStream::connect(upstream).await.ok()?;
    let (read, mut write) = stream.into_split();
    write.write_all(request).await.ok()?;
    read_message(&mut BufReader::new(read)).await
}

/// Reads one HTTP/1.1 message (head and body) as raw bytes.
async fn read_message<R: AsyncBufRead + Unpin>(read: &mut R) -> Option<Vec<u8>> {
    let mut raw = Vec::new();
    let mut content_length = 0usize;
    let mut chunked = false;
    loop {
        let mut line = Vec::new();
        if read.read_until(b'\n', &mut line).await.ok()? == 0 {
            return None;
        }
        raw.extend_from_slice(&line);
        let text = String::from_utf8_lossy(&line).to_ascii_lowercase();
        if let Some(v) = text.strip_prefix("content-length:") {
            content_length = v.trim().parse().ok()?;
        }
        if text.starts_with("transfer-encoding:") && text.contains("chunked") {
            chunked = true;
        }
        if line == b"\r\n" {
            break;
        }
    }
    if chunked {
        loop {
            let mut size_line = Vec::new();
            read.read_until(b'\n', &mut size_line).await.ok()?;
            raw.extend_from_slice(&size_line);
            let size =
                usize::from_str_radix(String::from_utf8_lossy(&size_line).trim(), 16).ok()?;
            let mut chunk = vec![0; size + 2];
            read.read_exact(&mut chunk).await.ok()?;
            raw.extend_from_slice(&chunk);
            if size == 0 {
                return Some(raw);
            }
        }
    }
    let mut body = vec![0; content_length];
    read.read_exact(&mut body).await.ok()?;
    raw.extend_from_slice(&body);
    Some(raw)
}

/// The operation a request calls, and whether it is a query-protocol (IAM/STS) request.
fn operation_of(request: &[u8]) -> (String, bool) {
    let text = String::from_utf8_lossy(request);
    if let Some(target) = text.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .starts_with("x-amz-target:")
            .then(|| l.to_owned())
    }) {
        let op = target
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        return (op, false);
    }
    let op = text
        .split(['&', '\n'])
        .find_map(|part| part.trim().strip_prefix("Action="))
        .unwrap_or("unknown")
        .to_owned();
    (op, true)
}
