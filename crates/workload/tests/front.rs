//! The Workload API socket speaks to any gRPC client, whatever `:authority` it sends, and
//! drops clients that break HTTP/2 without disturbing the others. The client here is written
//! frame by frame (RFC 9113), so it can send what no library lets one send: an empty or absent
//! authority, a raw or percent-encoded socket path, garbage, a truncated preface, a flood of
//! CONTINUATION frames, an HPACK bomb, and thousands of connections.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod common;

use std::{path::Path, time::Duration};

use prost::Message;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{UnixListener, UnixStream},
};
use workload::{
    api::proto::{JwtsvidRequest, ValidateJwtsvidRequest},
    front::Limits,
};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DEADLINE: Duration = Duration::from_secs(20);

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// How a call ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The gRPC status and message, from the trailers.
    Status(u32, String),
    /// The server reset the stream with this HTTP/2 error code.
    Reset(u32),
    /// The connection ended first.
    Closed,
}

/// A hand-written HTTP/2 client for unary gRPC calls.
struct RawClient<S = UnixStream> {
    stream: S,
    encoder: loona_hpack::Encoder<'static>,
    decoder: loona_hpack::Decoder<'static>,
    next_stream: u32,
}

impl RawClient {
    async fn connect(sock: &Path) -> Self {
        RawClient::over(UnixStream::connect(sock).await.unwrap(), true).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawClient<S> {
    /// A client on `stream`, sending the connection preface first if `hello` (else someone
    /// already did).
    async fn over(mut stream: S, hello: bool) -> Self {
        if hello {
            let mut hello = PREFACE.to_vec();
            hello.extend(frame(0x4, 0, 0, &[])); // SETTINGS, all defaults
            stream.write_all(&hello).await.unwrap();
        }
        Self {
            stream,
            encoder: loona_hpack::Encoder::new(),
            decoder: loona_hpack::Decoder::new(),
            next_stream: 1,
        }
    }

    async fn read_frame(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
        let mut head = [0u8; 9];
        self.stream.read_exact(&mut head).await.ok()?;
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0; len];
        self.stream.read_exact(&mut payload).await.ok()?;
        let stream = u32::from_be_bytes([head[5] & 0x7f, head[6], head[7], head[8]]);
        Some((head[3], head[4], stream, payload))
    }

    /// Calls `method` with `body`, sending `authority` (none: no `:authority` at all) and the
    /// security header if `secure`.
    async fn call(
        &mut self,
        authority: Option<&[u8]>,
        secure: bool,
        method: &str,
        body: &[u8],
    ) -> Outcome {
        let id = self.next_stream;
        self.next_stream += 2;
        let path = format!("/SpiffeWorkloadAPI/{method}");
        let mut fields: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path.as_bytes()),
        ];
        if let Some(a) = authority {
            fields.push((b":authority", a));
        }
        fields.extend([
            (b"content-type".as_slice(), b"application/grpc".as_slice()),
            (b"te", b"trailers"),
        ]);
        if secure {
            fields.push((b"workload.spiffe.io", b"true"));
        }
        let block = self.encoder.encode(fields);
        let mut message = vec![0u8];
        message.extend((body.len() as u32).to_be_bytes());
        message.extend_from_slice(body);
        let mut out = frame(0x1, 0x4, id, &block); // HEADERS, END_HEADERS
        out.extend(frame(0x0, 0x1, id, &message)); // DATA, END_STREAM
        if self.stream.write_all(&out).await.is_err() {
            return Outcome::Closed;
        }
        tokio::time::timeout(DEADLINE, self.answer(id))
            .await
            .expect("an answer in time")
    }

    async fn answer(&mut self, id: u32) -> Outcome {
        let mut status = None;
        let mut message = String::new();
        let mut block = Vec::new();
        loop {
            let Some((kind, flags, stream, payload)) = self.read_frame().await else {
                return Outcome::Closed;
            };
            match kind {
                // SETTINGS and PING: acknowledge.
                0x4 if flags & 0x1 == 0 => {
                    let _ = self.stream.write_all(&frame(0x4, 0x1, 0, &[])).await;
                }
                0x6 if flags & 0x1 == 0 => {
                    let _ = self.stream.write_all(&frame(0x6, 0x1, 0, &payload)).await;
                }
                0x1 | 0x9 => {
                    let mut fragment = payload.as_slice();
                    if kind == 0x1 && flags & 0x8 != 0 {
                        let pad = usize::from(fragment[0]);
                        fragment = &fragment[1..fragment.len() - pad];
                    }
                    if kind == 0x1 && flags & 0x20 != 0 {
                        fragment = &fragment[5..];
                    }
                    block.extend_from_slice(fragment);
                    if flags & 0x4 != 0 {
                        for (name, value) in self.decoder.decode(&block).unwrap() {
                            let value = String::from_utf8_lossy(&value).into_owned();
                            match name.as_slice() {
                                b"grpc-status" => status = value.parse().ok(),
                                b"grpc-message" => message = percent_decoded(&value),
                                _ => {}
                            }
                        }
                        block.clear();
                    }
                    if stream == id && flags & 0x1 != 0 {
                        return match status {
                            Some(code) => Outcome::Status(code, message),
                            None => Outcome::Closed,
                        };
                    }
                }
                0x3 if stream == id => {
                    return Outcome::Reset(u32::from_be_bytes(payload[..4].try_into().unwrap()));
                }
                0x7 => return Outcome::Closed,
                _ => {}
            }
        }
    }

    /// FetchJWTSVID for `warden-test`: an identity if the caller is entitled to one.
    async fn fetch_jwt(&mut self) -> Outcome {
        let body = JwtsvidRequest {
            audience: vec!["warden-test".into()],
            spiffe_id: String::new(),
        }
        .encode_to_vec();
        self.call(Some(b"localhost"), true, "FetchJWTSVID", &body)
            .await
    }

    /// ValidateJWTSVID with a token that is not one: an answer from Warden's own code.
    async fn validate_garbage(&mut self, authority: Option<&[u8]>, secure: bool) -> Outcome {
        let body = ValidateJwtsvidRequest {
            audience: "warden-test".into(),
            svid: "not-a-jwt".into(),
        }
        .encode_to_vec();
        self.call(authority, secure, "ValidateJWTSVID", &body).await
    }
}

/// A `grpc-message` as sent: percent-encoded (gRPC over HTTP/2, "Responses").
fn percent_decoded(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the server closes `stream` (or resets it) within the deadline.
async fn closed_by_server(stream: &mut UnixStream) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(DEADLINE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap_or(false)
}

fn is_invalid_token(outcome: &Outcome) -> bool {
    // InvalidArgument from the JWT check, not from the security-header check.
    matches!(outcome, Outcome::Status(3, m) if !m.contains("security"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_authority_a_grpc_client_sends_reaches_the_api() {
    let running = common::Running::start(Limits {
        shutdown_grace: Duration::from_millis(500),
        ..Limits::for_this_process()
    })
    .await;
    let socket = running.sock.display().to_string();
    let encoded = socket.replace('/', "%2F");
    // One connection for all: the client's HPACK encoder indexes the authorities it has sent,
    // so later requests name them from its dynamic table.
    let mut client = RawClient::connect(&running.sock).await;
    let authorities: [(&str, Option<&[u8]>); 7] = [
        ("grpc-go, tonic", Some(b"localhost")),
        ("grpcio ≥ 1.57", Some(encoded.as_bytes())),
        ("grpc-java, grpcurl", Some(socket.as_bytes())),
        ("empty", Some(b"")),
        ("absent", None),
        (
            "grpcio again, from the dynamic table",
            Some(encoded.as_bytes()),
        ),
        ("grpc-java again", Some(socket.as_bytes())),
    ];
    for (who, authority) in authorities {
        let outcome = client.validate_garbage(authority, true).await;
        assert!(is_invalid_token(&outcome), "{who}: {outcome:?}");
    }

    // Nothing else is relaxed. The security header stays mandatory (InvalidArgument, as the
    // SPIFFE Workload Endpoint spec §6 prescribes), whatever the authority …
    for authority in [Some(encoded.as_bytes()), Some(b"localhost".as_slice())] {
        let outcome = client.validate_garbage(authority, false).await;
        assert_eq!(
            outcome,
            Outcome::Status(3, "security header missing from request".into())
        );
    }
    // … and a caller the kernel attests but no entry matches gets PermissionDenied.
    let body = JwtsvidRequest {
        audience: vec!["warden-test".into()],
        spiffe_id: String::new(),
    }
    .encode_to_vec();
    let outcome = client
        .call(Some(encoded.as_bytes()), true, "FetchJWTSVID", &body)
        .await;
    assert!(
        matches!(&outcome, Outcome::Status(7, m) if m.contains("no identity issued")),
        "{outcome:?}"
    );
    // A client that keeps its connection open does not hold up a shutdown.
    tokio::time::timeout(DEADLINE, running.stop())
        .await
        .expect("the server stops with a client still connected");
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_clients_are_dropped_and_the_others_served() {
    let limits = Limits {
        max_connections: 32,
        handshake_timeout: Duration::from_millis(500),
        shutdown_grace: Duration::from_millis(500),
    };
    let running = common::Running::start(limits).await;
    let sock = running.sock.clone();
    let mut agent = RawClient::connect(&sock).await;
    assert!(is_invalid_token(&agent.validate_garbage(None, true).await));

    let mut attempts: Vec<(&str, Vec<u8>)> = vec![
        (
            "garbage",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "random bytes",
            (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(),
        ),
        ("a truncated preface, then silence", PREFACE[..10].to_vec()),
        ("a preface, then silence", PREFACE.to_vec()),
    ];
    // A header block that never ends: HEADERS without END_HEADERS, then CONTINUATIONs.
    let mut flood = PREFACE.to_vec();
    flood.extend(frame(0x1, 0, 1, &[0x82]));
    for _ in 0..8 {
        flood.extend(frame(0x9, 0, 1, &[0x82; 16_384]));
    }
    attempts.push(("a CONTINUATION flood", flood));
    // A header block far over any limit once decoded: one 4 KB field indexed, then named by
    // index eight thousand times.
    let mut bomb_encoder = loona_hpack::Encoder::new();
    let mut bomb = bomb_encoder.encode([(b"x-bomb".as_slice(), vec![b'b'; 4000].as_slice())]);
    bomb.extend([0xbe; 8000]);
    let mut hpack_bomb = PREFACE.to_vec();
    hpack_bomb.extend(frame(0x1, 0x4, 1, &bomb));
    attempts.push(("an HPACK bomb", hpack_bomb));
    for (what, bytes) in attempts {
        let mut conn = UnixStream::connect(&sock).await.unwrap();
        // The server may close while we are still writing: that is a refusal too.
        let _ = conn.write_all(&bytes).await;
        assert!(closed_by_server(&mut conn).await, "{what}: still open");
        assert!(
            is_invalid_token(&agent.validate_garbage(None, true).await),
            "after {what}, the agent already connected is still served"
        );
    }

    // Thousands of connections at once: those past the limit are closed at accept, those
    // within it when they send nothing; the agent already connected is served throughout.
    let mut flood = Vec::new();
    for _ in 0..2000 {
        flood.push(UnixStream::connect(&sock).await.unwrap());
    }
    assert!(is_invalid_token(&agent.validate_garbage(None, true).await));
    for conn in &mut flood {
        assert!(
            closed_by_server(conn).await,
            "a flooding connection stays open"
        );
    }
    // With the flood still held open on the client side, a new agent gets in.
    let mut newcomer = RawClient::connect(&sock).await;
    assert!(is_invalid_token(
        &newcomer.validate_garbage(Some(b"/any/path"), true).await
    ));
    drop(flood);
    tokio::time::timeout(DEADLINE, running.stop())
        .await
        .expect("the server stops with clients still connected");
}

/// The Python helper that hands a Workload API connection to another program.
const HANDOFF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/handoff.py");

/// The real path of the `python3` on PATH, or `None` (then the test says it skipped, unless
/// in CI).
fn python3() -> Option<std::path::PathBuf> {
    let out = std::process::Command::new("python3")
        .args(["-c", "import os; print(os.path.realpath('/proc/self/exe'))"])
        .output();
    match out {
        Ok(out) if out.status.success() => Some(
            String::from_utf8(out.stdout)
                .unwrap()
                .trim()
                .to_owned()
                .into(),
        ),
        _ => {
            assert!(std::env::var_os("CI").is_none(), "python3 is needed in CI");
            eprintln!("skipped: python3 is not available");
            None
        }
    }
}

/// A process running `program handoff.py ARGS… RELAY` that ends up relaying a Workload API
/// connection to this test over a Unix socket; the client on it sends the connection
/// preface if `hello` (else the program did). Keep the child until the test is done.
async fn handed_off(
    running: &common::Running,
    program: &Path,
    args: &[&std::ffi::OsStr],
    stdin: std::process::Stdio,
    hello: bool,
) -> (RawClient<UnixStream>, tokio::process::Child) {
    let relay_path = running.dir.path().join("relay.sock");
    let _ = std::fs::remove_file(&relay_path);
    let relay = UnixListener::bind(&relay_path).unwrap();
    let child = tokio::process::Command::new(program)
        .arg(HANDOFF)
        .args(args)
        .arg(&relay_path)
        .stdin(stdin)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (relayed, _) = tokio::time::timeout(DEADLINE, relay.accept())
        .await
        .unwrap()
        .unwrap();
    (RawClient::over(relayed, hello).await, child)
}

/// A connection made by one process but used by another is dropped: SO_PEERCRED names the
/// process that connected, and the bytes must come from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_handed_to_another_process_is_dropped() {
    let Some(python) = python3() else { return };
    let running = common::Running::start(Limits::for_this_process()).await;
    // This test process is entitled to an identity.
    let me = std::fs::canonicalize("/proc/self/exe").unwrap();
    running
        .register("spiffe://example.org/agent/test", &me)
        .await;
    let mut own = RawClient::connect(&running.sock).await;
    assert!(
        matches!(own.fetch_jwt().await, Outcome::Status(0, _)),
        "the registered process itself gets its identity"
    );

    // It connects, then hands the connection to a Python process (as its standard input),
    // which is entitled to nothing and relays our frames onto it.
    let connection = std::os::unix::net::UnixStream::connect(&running.sock).unwrap();
    let stdin = std::process::Stdio::from(std::os::fd::OwnedFd::from(connection));
    let (mut borrowed, _child) =
        handed_off(&running, &python, &["relay".as_ref()], stdin, true).await;
    assert_eq!(borrowed.fetch_jwt().await, Outcome::Closed);
    running.stop().await;
}

/// A process that connects and then execs a program entitled to an identity gets nothing:
/// what it ran when it connected is what counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_execs_after_connecting_is_refused() {
    let Some(python) = python3() else { return };
    // Another Python executable, the one entitled to an identity.
    let Some(trusted) = ["/usr/bin/python3", "/usr/local/bin/python3"]
        .iter()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .find(|p| *p != python)
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "a second python3 (Debian's /usr/bin/python3) is needed in CI"
        );
        eprintln!("skipped: no second python3 executable to exec into");
        return;
    };
    let running = common::Running::start(Limits::for_this_process()).await;
    running
        .register("spiffe://example.org/agent/trusted", &trusted)
        .await;
    // The untrusted interpreter connects, says hello, waits until Warden has accepted the
    // connection (its first frame), then execs the trusted one, which relays our frames.
    let sock = running.sock.as_os_str();
    let args = ["exec".as_ref(), sock, trusted.as_os_str()];
    let (mut execd, _child) =
        handed_off(&running, &python, &args, std::process::Stdio::null(), false).await;
    let outcome = execd.fetch_jwt().await;
    assert!(
        matches!(&outcome, Outcome::Status(7, m) if m.contains("another executable")),
        "{outcome:?}"
    );
    // The trusted program connecting by itself is entitled (the entry is right).
    let args = ["connect".as_ref(), sock];
    let (mut honest, _child) = handed_off(
        &running,
        &trusted,
        &args,
        std::process::Stdio::null(),
        false,
    )
    .await;
    assert!(matches!(honest.fetch_jwt().await, Outcome::Status(0, _)));
    running.stop().await;
}
