//! The Workload API socket's HTTP/2 front: every conforming gRPC client gets in, whatever
//! `:authority` it sends on the local socket.
//!
//! gRPC clients disagree on the `:authority` of a Unix-socket call. grpc-go and tonic send
//! `localhost`; grpcio (the C core under Python, Ruby, PHP and C++) sends the percent-encoded
//! socket path since 1.57; grpc-java, grpcurl and grpc-swift send the raw path. The `h2` server
//! under tonic parses `:authority` as an RFC 3986 authority and resets the stream of any value
//! that is not one (RFC 9113 §8.3.1 lets a server treat it as malformed). On a Unix socket the
//! authority names nothing: the kernel's word about the peer is what Warden trusts. So each
//! connection's bytes from the client pass through a [`Rewriter`] that decodes every header
//! block (RFC 7541), replaces an `:authority` that is not a valid authority with `localhost`,
//! and re-encodes the block; every other frame passes byte for byte, and the server's answers
//! are not touched. Nothing else is relaxed: the gRPC service still requires the
//! `workload.spiffe.io: true` header, callers are still attested from SO_PEERCRED of the real
//! socket, and the HTTP API on TCP never passes through here.
//!
//! Each connection's bytes must come from the process that connected: the listener has
//! SO_PASSCRED, so the kernel labels every message with its sender (SCM_CREDENTIALS), and a
//! connection whose bytes come from another process — one it was handed to — is dropped.
//! What the connecting process runs is sampled before the gRPC server sees the connection
//! ([`PeerInfo`]), so a call from a process that has exec'd since is refused.
//!
//! A connection is dropped — the gRPC server never sees the rest — when the client breaks the
//! framing this front relies on: a wrong connection preface, a header block interrupted or
//! carried by a frame of the wrong stream, bad padding, a header block or frame over the
//! limits below, HPACK that does not decode, or a client `PUSH_PROMISE`. A client that does not
//! complete its first request within [`Limits::handshake_timeout`] is dropped too, and at most
//! [`Limits::max_connections`] connections are served at once: the one past it is closed at
//! accept, so a local flood costs the server one file descriptor for an instant per attempt and
//! never starves the agents already connected.

use std::{
    io::{self, IoSliceMut},
    os::fd::{AsRawFd, RawFd},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, UnixCredentials, recvmsg, setsockopt, sockopt,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream, Interest, ReadBuf},
    net::{UnixListener, UnixStream},
    sync::{Semaphore, mpsc, watch},
};
use tonic::transport::server::{Connected, UdsConnectInfo};

use crate::ExeSample;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frame types this front looks at (RFC 9113 §6).
const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;
/// Frame flags of HEADERS and CONTINUATION (RFC 9113 §6.2, §6.10).
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame payload the gRPC server accepts: the SETTINGS_MAX_FRAME_SIZE default,
/// which the server keeps (RFC 9113 §4.2, §6.5.2). The re-encoded blocks are cut to it too.
pub const MAX_FRAME: usize = 16_384;
/// The largest header block (all its HEADERS and CONTINUATION fragments) a client may send.
pub const MAX_BLOCK: usize = 64 * 1024;
/// The largest decoded header list, counted as RFC 9113 §6.5.2 counts it (name + value + 32
/// per field). The gRPC server applies its own, smaller limit to what passes.
pub const MAX_LIST: usize = 64 * 1024;
/// The HPACK dynamic table size the gRPC server announces (the SETTINGS_HEADER_TABLE_SIZE
/// default, which it keeps): a client may not grow its table past it (RFC 7541 §4.2).
const TABLE_SIZE: usize = 4096;
/// The value an `:authority` that is not an authority is replaced with.
const LOCAL_AUTHORITY: &[u8] = b"localhost";

/// Why a client's connection was dropped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrontError {
    /// The first bytes are not the HTTP/2 connection preface.
    #[error("not an HTTP/2 connection preface")]
    BadPreface,
    /// A header block was interrupted by another frame, or continued on another stream.
    #[error("a header block was interrupted by a frame of type {kind:#x} on stream {stream}")]
    InterruptedBlock {
        /// The interrupting frame's type.
        kind: u8,
        /// Its stream.
        stream: u32,
    },
    /// A CONTINUATION frame with no header block to continue.
    #[error("a CONTINUATION frame continues no header block")]
    StrayContinuation,
    /// A HEADERS frame on stream 0.
    #[error("a HEADERS frame on stream 0")]
    HeadersOnStreamZero,
    /// A client sent PUSH_PROMISE, which only servers may (RFC 9113 §8.4).
    #[error("a client sent PUSH_PROMISE")]
    PushPromise,
    /// A HEADERS or CONTINUATION frame larger than [`MAX_FRAME`].
    #[error("a header frame of {0} bytes is over the {MAX_FRAME}-byte frame limit")]
    FrameTooLarge(usize),
    /// Padding or priority fields longer than the frame.
    #[error("the padding or priority fields do not fit in the frame")]
    BadPadding,
    /// A header block over [`MAX_BLOCK`].
    #[error("a header block is over the {MAX_BLOCK}-byte limit")]
    BlockTooLarge,
    /// A decoded header list over [`MAX_LIST`].
    #[error("a header list is over the {MAX_LIST}-byte limit")]
    ListTooLarge,
    /// The header block is not valid HPACK.
    #[error("the header block does not decode: {0}")]
    Hpack(String),
}

impl FrontError {
    /// A stable code for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadPreface => "h2_bad_preface",
            Self::InterruptedBlock { .. } => "h2_interrupted_block",
            Self::StrayContinuation => "h2_stray_continuation",
            Self::HeadersOnStreamZero => "h2_headers_on_stream_zero",
            Self::PushPromise => "h2_client_push_promise",
            Self::FrameTooLarge(_) => "h2_frame_too_large",
            Self::BadPadding => "h2_bad_padding",
            Self::BlockTooLarge => "h2_header_block_too_large",
            Self::ListTooLarge => "h2_header_list_too_large",
            Self::Hpack(_) => "h2_hpack",
        }
    }
}

/// A frame header (RFC 9113 §4.1).
#[derive(Clone, Copy, Debug)]
struct FrameHead {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl FrameHead {
    fn parse(b: &[u8; 9]) -> Self {
        Self {
            len: usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            // The reserved bit is ignored on receipt (RFC 9113 §4.1).
            stream: u32::from_be_bytes([b[5] & 0x7f, b[6], b[7], b[8]]),
        }
    }

    fn write(len: usize, kind: u8, flags: u8, stream: u32, out: &mut Vec<u8>) {
        // INVARIANT: `len` ≤ MAX_FRAME < 2^24, so the three bytes hold it.
        out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
        out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    }
}

/// A header block being gathered from a HEADERS frame and its CONTINUATIONs.
struct Block {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

enum State {
    /// Reading the connection preface; this many bytes of it matched so far.
    Preface(usize),
    /// Reading a frame header; this many of its 9 bytes are in hand.
    Head([u8; 9], usize),
    /// Forwarding this many more bytes of a frame's payload as they are.
    Pass(usize),
    /// Gathering the payload of a HEADERS or CONTINUATION frame.
    Gather(FrameHead, Vec<u8>),
}

/// Rewrites the client-to-server bytes of one HTTP/2 connection so that every `:authority`
/// it carries is one the gRPC server accepts. Sans I/O: bytes in, bytes out, in any pieces.
pub struct Rewriter {
    state: State,
    decoder: loona_hpack::Decoder<'static>,
    block: Option<Block>,
    requests: u64,
    rewritten: u64,
}

impl Default for Rewriter {
    fn default() -> Self {
        Self::new()
    }
}

impl Rewriter {
    /// A rewriter for a new connection, expecting the client's connection preface.
    pub fn new() -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        Self {
            state: State::Preface(0),
            decoder,
            block: None,
            requests: 0,
            rewritten: 0,
        }
    }

    /// How many complete header blocks the client has sent.
    pub fn header_blocks(&self) -> u64 {
        self.requests
    }

    /// How many `:authority` values were replaced.
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// Takes the next bytes from the client and appends what the server should get to `out`.
    /// After an error the connection must be dropped.
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), FrontError> {
        while !input.is_empty() {
            match &mut self.state {
                State::Preface(matched) => {
                    let n = (PREFACE.len() - *matched).min(input.len());
                    if input[..n] != PREFACE[*matched..*matched + n] {
                        return Err(FrontError::BadPreface);
                    }
                    out.extend_from_slice(&input[..n]);
                    *matched += n;
                    input = &input[n..];
                    if *matched == PREFACE.len() {
                        self.state = State::Head([0; 9], 0);
                    }
                }
                State::Head(buf, have) => {
                    let n = (9 - *have).min(input.len());
                    buf[*have..*have + n].copy_from_slice(&input[..n]);
                    *have += n;
                    input = &input[n..];
                    if *have == 9 {
                        let raw = *buf;
                        self.state = self.on_head(&raw, out)?;
                        if let State::Gather(head, _) = self.state
                            && head.len == 0
                        {
                            self.state = State::Head([0; 9], 0);
                            self.on_payload(head, &[], out)?;
                        }
                    }
                }
                State::Pass(remaining) => {
                    let n = (*remaining).min(input.len());
                    out.extend_from_slice(&input[..n]);
                    *remaining -= n;
                    input = &input[n..];
                    if *remaining == 0 {
                        self.state = State::Head([0; 9], 0);
                    }
                }
                State::Gather(head, payload) => {
                    let n = (head.len - payload.len()).min(input.len());
                    payload.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if payload.len() == head.len {
                        let head = *head;
                        let payload = std::mem::take(payload);
                        self.state = State::Head([0; 9], 0);
                        self.on_payload(head, &payload, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// What to do with the frame whose header is `raw`.
    fn on_head(&mut self, raw: &[u8; 9], out: &mut Vec<u8>) -> Result<State, FrontError> {
        let head = FrameHead::parse(raw);
        // RFC 9113 §6.10: a header block is a contiguous sequence of frames on one stream.
        if let Some(block) = &self.block
            && (head.kind != CONTINUATION || head.stream != block.stream)
        {
            return Err(FrontError::InterruptedBlock {
                kind: head.kind,
                stream: head.stream,
            });
        }
        match head.kind {
            HEADERS | CONTINUATION => {
                if head.kind == HEADERS && head.stream == 0 {
                    return Err(FrontError::HeadersOnStreamZero);
                }
                if head.kind == CONTINUATION && self.block.is_none() {
                    return Err(FrontError::StrayContinuation);
                }
                if head.len > MAX_FRAME {
                    return Err(FrontError::FrameTooLarge(head.len));
                }
                Ok(State::Gather(head, Vec::with_capacity(head.len)))
            }
            PUSH_PROMISE => Err(FrontError::PushPromise),
            _ => {
                out.extend_from_slice(raw);
                Ok(if head.len == 0 {
                    State::Head([0; 9], 0)
                } else {
                    State::Pass(head.len)
                })
            }
        }
    }

    /// A whole HEADERS or CONTINUATION frame has arrived.
    fn on_payload(
        &mut self,
        head: FrameHead,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), FrontError> {
        let fragment = if head.kind == HEADERS {
            // RFC 9113 §6.2: [Pad Length (8)] [Stream Dependency (32), Weight (8)] Field Block
            // Fragment [Padding].
            let mut rest = payload;
            let mut pad = 0;
            if head.flags & PADDED != 0 {
                let (&len, tail) = rest.split_first().ok_or(FrontError::BadPadding)?;
                pad = usize::from(len);
                rest = tail;
            }
            let mut priority = None;
            if head.flags & PRIORITY != 0 {
                if rest.len() < 5 {
                    return Err(FrontError::BadPadding);
                }
                let (fields, tail) = rest.split_at(5);
                priority = Some([fields[0], fields[1], fields[2], fields[3], fields[4]]);
                rest = tail;
            }
            if pad > rest.len() {
                return Err(FrontError::BadPadding);
            }
            self.block = Some(Block {
                stream: head.stream,
                end_stream: head.flags & END_STREAM != 0,
                priority,
                fragment: Vec::new(),
            });
            &rest[..rest.len() - pad]
        } else {
            payload
        };
        let Some(block) = &mut self.block else {
            return Err(FrontError::StrayContinuation);
        };
        if block.fragment.len() + fragment.len() > MAX_BLOCK {
            return Err(FrontError::BlockTooLarge);
        }
        block.fragment.extend_from_slice(fragment);
        if head.flags & END_HEADERS != 0
            && let Some(block) = self.block.take()
        {
            self.finish(block, out)?;
        }
        Ok(())
    }

    /// Decodes a complete header block, fixes its `:authority`, and writes it out as one
    /// HEADERS frame and as many CONTINUATION frames as its size needs.
    fn finish(&mut self, block: Block, out: &mut Vec<u8>) -> Result<(), FrontError> {
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut size = 0usize;
        let mut over = false;
        self.decoder
            .decode_with_cb(&block.fragment, |name, value| {
                size = size.saturating_add(name.len() + value.len() + 32);
                if size > MAX_LIST {
                    over = true;
                } else {
                    fields.push((name.into_owned(), value.into_owned()));
                }
            })
            .map_err(|e| FrontError::Hpack(e.to_string()))?;
        if over {
            return Err(FrontError::ListTooLarge);
        }
        self.requests += 1;

        let mut encoded = Vec::with_capacity(block.fragment.len() + 64);
        for (name, value) in &fields {
            let value = if name == b":authority" && !is_authority(value) {
                self.rewritten += 1;
                LOCAL_AUTHORITY
            } else {
                value.as_slice()
            };
            encode_literal(name, value, &mut encoded);
        }

        // The first frame carries the priority fields, if the client sent them.
        let first_room = MAX_FRAME - if block.priority.is_some() { 5 } else { 0 };
        let (first, mut rest) = encoded.split_at(first_room.min(encoded.len()));
        let mut flags = if block.end_stream { END_STREAM } else { 0 };
        if rest.is_empty() {
            flags |= END_HEADERS;
        }
        let mut len = first.len();
        if let Some(priority) = block.priority {
            flags |= PRIORITY;
            len += 5;
            FrameHead::write(len, HEADERS, flags, block.stream, out);
            out.extend_from_slice(&priority);
        } else {
            FrameHead::write(len, HEADERS, flags, block.stream, out);
        }
        out.extend_from_slice(first);
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(MAX_FRAME.min(rest.len()));
            let flags = if tail.is_empty() { END_HEADERS } else { 0 };
            FrameHead::write(chunk.len(), CONTINUATION, flags, block.stream, out);
            out.extend_from_slice(chunk);
            rest = tail;
        }
        Ok(())
    }
}

/// Whether `value` is an authority the gRPC server's parser accepts (the `http` crate's
/// RFC 3986 parser, the one `h2` uses).
fn is_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// One field as a literal without indexing, with a literal name and no Huffman coding
/// (RFC 7541 §6.2.2): the server's dynamic table is never used, so its state never depends on
/// the client's.
fn encode_literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0x00);
    encode_string(name, out);
    encode_string(value, out);
}

/// An HPACK string literal without Huffman coding (RFC 7541 §5.2): a 7-bit-prefix length.
fn encode_string(s: &[u8], out: &mut Vec<u8>) {
    encode_integer(s.len(), 7, 0, out);
    out.extend_from_slice(s);
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1), ORed into the first byte's
/// `high` bits.
pub(crate) fn encode_integer(mut value: usize, n: u8, high: u8, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if value < max {
        // INVARIANT: value < 2^n ≤ 2^8.
        out.push(high | value as u8);
        return;
    }
    out.push(high | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// Limits on the connections of the Workload API socket.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; one more is closed at accept.
    pub max_connections: usize,
    /// How long a new connection has to send its first complete request headers.
    pub handshake_timeout: Duration,
    /// How long connections may stay open once the server is stopping (answers in flight
    /// finish, streams end); then they are closed, so a client that never hangs up cannot
    /// hold up a shutdown.
    pub shutdown_grace: Duration,
}

impl Limits {
    /// A quarter of the process's open-file limit (so a flood of local connections never takes
    /// the descriptors the database, the HTTP API and the ledger need), at least 64 and at most
    /// 4,096; ten seconds to send the first request; five seconds to hang up at shutdown.
    pub fn for_this_process() -> Self {
        let soft = open_file_limit().unwrap_or(1024);
        Self {
            max_connections: (soft / 4).clamp(64, 4096),
            handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// The soft RLIMIT_NOFILE, as `/proc/self/limits` reports it.
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(usize::MAX);
    }
    soft.parse().ok()
}

/// What the kernel said about a client when it connected, as each of its calls sees it.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The peer's credentials (SO_PEERCRED) and address.
    pub uds: UdsConnectInfo,
    /// What the peer was running when it connected; `None` if it was gone by then.
    pub exe_at_connect: Option<ExeSample>,
}

/// One client connection as the gRPC server sees it: the rewritten byte stream, with what the
/// kernel said about the real socket's peer.
#[derive(Debug)]
pub struct Conn {
    io: DuplexStream,
    info: PeerInfo,
}

impl Connected for Conn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Binds the Workload API socket at `path` (whose directory must exist and which must not
/// exist), so that every message on every connection carries its sender's credentials: the
/// socket is bound under a temporary name beside it, given SO_PASSCRED and mode 0777 (any
/// local process may connect; the kernel says who it is), and only then renamed to `path` —
/// no client can connect before the kernel labels what it sends.
pub fn bind(path: &std::path::Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_file_name(format!(".wl{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = std::os::unix::net::UnixListener::bind(&tmp)?;
    let ready = setsockopt(&listener, sockopt::PassCred, &true)
        .map_err(io::Error::from)
        .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o777)))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = ready {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    listener.set_nonblocking(true)?;
    UnixListener::from_std(listener)
}

/// How much of one direction is buffered between the client and the gRPC server.
const PIPE: usize = 64 * 1024;

/// Accepts connections on `listener` until `shutdown` turns true, handing each to the gRPC
/// server through `conns` behind its own [`Rewriter`].
pub(crate) async fn accept(
    listener: UnixListener,
    conns: mpsc::Sender<Result<Conn, io::Error>>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    // Already set by [`bind`]; a listener made elsewhere gets it here, and a client that
    // connected before has its bytes refused (they carry no credentials).
    if let Err(e) = setsockopt(&listener, sockopt::PassCred, &true) {
        tracing::error!(error = %e, "workload API: cannot ask for sender credentials; every connection will be dropped");
    }
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut refused_since_log = 0u64;
    let mut last_log = Instant::now();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors or memory: nothing to do but wait a moment and go on.
                tracing::warn!(error = %e, "workload API: cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // Closing at once is the refusal; say so in the log at most once a second.
            drop(stream);
            refused_since_log += 1;
            if last_log.elapsed() >= Duration::from_secs(1) {
                tracing::warn!(
                    refused = refused_since_log,
                    limit = limits.max_connections,
                    "workload API: connection limit reached; closing new connections"
                );
                refused_since_log = 0;
                last_log = Instant::now();
            }
            continue;
        };
        let conns = conns.clone();
        let mut stopping = shutdown.clone();
        tokio::spawn(async move {
            let connection = async {
                let uds = UdsConnectInfo {
                    peer_addr: stream.peer_addr().ok().map(Arc::new),
                    peer_cred: stream.peer_cred().ok(),
                };
                let pid = uds.peer_cred.and_then(|cred| cred.pid());
                // Sampled before the gRPC server sees the connection (and so before it says
                // anything to the client).
                let exe_at_connect = match pid {
                    Some(pid) => tokio::task::spawn_blocking(move || ExeSample::of(pid))
                        .await
                        .ok()
                        .flatten(),
                    None => None,
                };
                let (client_side, server_side) = tokio::io::duplex(PIPE);
                let info = PeerInfo {
                    uds,
                    exe_at_connect,
                };
                if conns
                    .send(Ok(Conn {
                        io: server_side,
                        info,
                    }))
                    .await
                    .is_ok()
                {
                    relay(stream, pid, client_side, limits.handshake_timeout).await;
                }
            };
            tokio::select! {
                () = connection => {}
                () = async {
                    let _ = stopping.wait_for(|s| *s).await;
                    tokio::time::sleep(limits.shutdown_grace).await;
                } => {}
            }
            drop(slot);
        });
    }
}

/// Receives the client's next bytes and the pid of the process that sent them, from the
/// SCM_CREDENTIALS the kernel attaches to each message. Never blocks.
fn receive(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<i32>)> {
    let mut space = nix::cmsg_space!(UnixCredentials);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        fd,
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut sender = None;
    // A truncated control block (the client also sent descriptors) is an error here.
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmCredentials(cred) = cmsg {
            sender = Some(cred.pid());
        }
    }
    Ok((msg.bytes, sender))
}

/// Moves one connection's bytes: the client's through a [`Rewriter`] to the gRPC server, the
/// server's back unchanged. Ends when either side closes or the client breaks the rules; the
/// client's bytes must come from `connector`, the process that connected.
async fn relay(
    client: UnixStream,
    connector: Option<i32>,
    server: DuplexStream,
    handshake_timeout: Duration,
) {
    let (from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = tokio::io::split(server);
    let upstream = async {
        let socket: &UnixStream = from_client.as_ref();
        let fd = socket.as_raw_fd();
        let mut rewriter = Rewriter::new();
        let mut buf = vec![0u8; MAX_FRAME];
        let mut out = Vec::with_capacity(MAX_FRAME);
        let deadline = tokio::time::Instant::now() + handshake_timeout;
        loop {
            if rewriter.header_blocks() == 0 {
                tokio::time::timeout_at(deadline, socket.readable())
                    .await
                    .map_err(|_| "no request within the handshake time".to_owned())?
            } else {
                socket.readable().await
            }
            .map_err(|e| e.to_string())?;
            let (n, sender) = match socket.try_io(Interest::READABLE, || receive(fd, &mut buf)) {
                Ok(read) => read,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.to_string()),
            };
            if n == 0 {
                // The client is done sending; the server may still answer.
                let _ = to_server.shutdown().await;
                return Ok(());
            }
            if sender != connector {
                return Err(format!(
                    "bytes from process {} on a connection made by process {}",
                    sender.map_or("unknown".to_owned(), |p| p.to_string()),
                    connector.map_or("unknown".to_owned(), |p| p.to_string()),
                ));
            }
            out.clear();
            rewriter
                .push(&buf[..n], &mut out)
                .map_err(|e| format!("{} ({})", e, e.code()))?;
            to_server.write_all(&out).await.map_err(|e| e.to_string())?;
        }
    };
    let downstream = async {
        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
        let _ = to_client.shutdown().await;
    };
    tokio::pin!(upstream, downstream);
    let mut upstream_done = false;
    loop {
        tokio::select! {
            result = &mut upstream, if !upstream_done => match result {
                Ok(()) => upstream_done = true,
                Err(reason) => {
                    tracing::info!(%reason, "workload API: dropping a connection");
                    return;
                }
            },
            () = &mut downstream => return,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        reason = "tests"
    )]

    use super::*;

    /// One HEADERS frame (END_HEADERS, END_STREAM as given) with `block` as its payload.
    fn headers_frame(stream: u32, flags: u8, block: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        FrameHead::write(block.len(), HEADERS, flags, stream, &mut out);
        out.extend_from_slice(block);
        out
    }

    fn request_block(authority: Option<&[u8]>) -> Vec<u8> {
        let mut enc = loona_hpack::Encoder::new();
        let mut fields: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/SpiffeWorkloadAPI/FetchJWTSVID"),
        ];
        if let Some(a) = authority {
            fields.push((b":authority", a));
        }
        fields.push((b"content-type", b"application/grpc"));
        fields.push((b"workload.spiffe.io", b"true"));
        enc.encode(fields)
    }

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    /// Splits the rewritten output (after the preface) into frames (type, flags, stream, and
    /// the decoded fields where a header block ends) as the server would see them.
    fn server_view(out: &[u8]) -> Vec<(u8, u8, u32, Fields)> {
        assert_eq!(&out[..24], PREFACE);
        let mut rest = &out[24..];
        let mut decoder = loona_hpack::Decoder::new();
        let mut frames = Vec::new();
        let mut block = Vec::new();
        while !rest.is_empty() {
            let head = FrameHead::parse(rest[..9].try_into().unwrap());
            let payload = &rest[9..9 + head.len];
            rest = &rest[9 + head.len..];
            if head.kind == HEADERS || head.kind == CONTINUATION {
                let skip = if head.flags & PRIORITY != 0 { 5 } else { 0 };
                block.extend_from_slice(&payload[skip..]);
                if head.flags & END_HEADERS != 0 {
                    let fields = decoder.decode(&block).unwrap();
                    block.clear();
                    frames.push((head.kind, head.flags, head.stream, fields));
                } else {
                    frames.push((head.kind, head.flags, head.stream, Vec::new()));
                }
            } else {
                frames.push((head.kind, head.flags, head.stream, Vec::new()));
            }
        }
        frames
    }

    fn authority_of(fields: &Fields) -> Option<Vec<u8>> {
        fields
            .iter()
            .find(|(n, _)| n == b":authority")
            .map(|(_, v)| v.clone())
    }

    /// The `:authority` each kind of client sends, and what the server gets.
    #[test]
    fn every_client_authority_reaches_the_server_as_an_authority() {
        type Authority = Option<&'static [u8]>;
        let cases: &[(&str, Authority, Authority)] = &[
            ("grpc-go, tonic", Some(b"localhost"), Some(b"localhost")),
            (
                "grpcio ≥ 1.57: percent-encoded path",
                Some(b"%2Frun%2Fwarden%2Fworkload.sock"),
                Some(b"localhost"),
            ),
            (
                "grpc-java, grpcurl: raw path",
                Some(b"/run/warden/workload.sock"),
                Some(b"localhost"),
            ),
            ("empty", Some(b""), Some(b"localhost")),
            (
                "host and port",
                Some(b"127.0.0.1:8081"),
                Some(b"127.0.0.1:8081"),
            ),
            ("a space", Some(b"local host"), Some(b"localhost")),
            ("absent", None, None),
        ];
        for (who, sent, seen) in cases {
            let mut input = PREFACE.to_vec();
            input.extend(headers_frame(
                1,
                END_HEADERS | END_STREAM,
                &request_block(*sent),
            ));
            let mut rw = Rewriter::new();
            let mut out = Vec::new();
            rw.push(&input, &mut out).unwrap();
            let frames = server_view(&out);
            assert_eq!(frames.len(), 1, "{who}");
            let (kind, flags, stream, fields) = &frames[0];
            assert_eq!(
                (*kind, *flags, *stream),
                (HEADERS, END_HEADERS | END_STREAM, 1)
            );
            assert_eq!(authority_of(fields).as_deref(), *seen, "{who}");
            assert_eq!(fields.len(), 5 + usize::from(sent.is_some()), "{who}");
            assert_eq!(rw.header_blocks(), 1);
        }
    }

    /// The client's dynamic table is followed across requests: a second request that names
    /// its authority by index still gets it rewritten, and the other fields stay the same.
    #[test]
    fn the_clients_dynamic_table_is_followed_across_requests() {
        let mut enc = loona_hpack::Encoder::new();
        let path = b"%2Ftmp%2Fw.sock".as_slice();
        let first = enc.encode([(b":authority".as_slice(), path), (b"x-a", b"1")]);
        let second = enc.encode([(b":authority".as_slice(), path), (b"x-a", b"1")]);
        assert!(second.len() < first.len(), "the encoder indexed the fields");
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(1, END_HEADERS, &first));
        input.extend(headers_frame(3, END_HEADERS, &second));
        let mut rw = Rewriter::new();
        let mut out = Vec::new();
        rw.push(&input, &mut out).unwrap();
        let frames = server_view(&out);
        for (_, _, _, fields) in &frames {
            assert_eq!(
                fields,
                &vec![
                    (b":authority".to_vec(), b"localhost".to_vec()),
                    (b"x-a".to_vec(), b"1".to_vec())
                ]
            );
        }
        assert_eq!(rw.rewritten(), 2);
    }

    /// Bytes may come in any pieces: one at a time gives the same output as all at once.
    #[test]
    fn pieces_do_not_matter() {
        let mut input = PREFACE.to_vec();
        // SETTINGS, then a padded, prioritised HEADERS split over a CONTINUATION, DATA, PING.
        input.extend([0, 0, 6, 0x4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100]);
        let block = request_block(Some(b"/a/b.sock"));
        let (a, b) = block.split_at(7);
        let mut payload = vec![3u8]; // pad length
        payload.extend([0x80, 0, 0, 0, 15]); // exclusive dependency on 0, weight 16
        payload.extend_from_slice(a);
        payload.extend([0, 0, 0]);
        let mut frame = Vec::new();
        FrameHead::write(payload.len(), HEADERS, PADDED | PRIORITY, 1, &mut frame);
        frame.extend(payload);
        FrameHead::write(b.len(), CONTINUATION, END_HEADERS, 1, &mut frame);
        frame.extend_from_slice(b);
        input.extend(frame);
        input.extend([0, 0, 5, 0x0, 0x1, 0, 0, 0, 1, 0, 0, 0, 0, 0]);
        input.extend([0, 0, 8, 0x6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);

        let mut whole = Vec::new();
        Rewriter::new().push(&input, &mut whole).unwrap();
        let mut rw = Rewriter::new();
        let mut pieces = Vec::new();
        for byte in &input {
            rw.push(std::slice::from_ref(byte), &mut pieces).unwrap();
        }
        assert_eq!(whole, pieces);
        let frames = server_view(&whole);
        let kinds: Vec<u8> = frames.iter().map(|f| f.0).collect();
        assert_eq!(kinds, [0x4, HEADERS, 0x0, 0x6]);
        let (_, flags, _, fields) = &frames[1];
        assert_eq!(
            *flags,
            PRIORITY | END_HEADERS,
            "padding dropped, priority kept"
        );
        assert_eq!(authority_of(fields).as_deref(), Some(&b"localhost"[..]));
        // The priority fields are carried over as they were.
        let at = 24 + 15 + 9;
        assert_eq!(&whole[at..at + 5], &[0x80, 0, 0, 0, 15]);
    }

    /// A block whose re-encoding outgrows one frame is cut into CONTINUATIONs, none over the
    /// frame limit.
    #[test]
    fn a_large_block_is_cut_to_the_frame_limit() {
        let big = vec![b'v'; 12_000];
        let mut enc = loona_hpack::Encoder::new();
        let block = enc.encode([
            (b":authority".as_slice(), b"/x.sock".as_slice()),
            (b"x-big", &big),
            (b"x-big", &big),
            (b"x-big", &big),
        ]);
        let mut input = PREFACE.to_vec();
        let mut chunks = block.chunks(MAX_FRAME).peekable();
        let mut first = true;
        while let Some(chunk) = chunks.next() {
            let flags = if chunks.peek().is_none() {
                END_HEADERS
            } else {
                0
            };
            let kind = if first { HEADERS } else { CONTINUATION };
            FrameHead::write(chunk.len(), kind, flags, 5, &mut input);
            input.extend_from_slice(chunk);
            first = false;
        }
        let mut out = Vec::new();
        Rewriter::new().push(&input, &mut out).unwrap();
        let frames = server_view(&out);
        assert!(frames.len() >= 3, "{} frames", frames.len());
        let mut rest = &out[24..];
        while !rest.is_empty() {
            let head = FrameHead::parse(rest[..9].try_into().unwrap());
            assert!(head.len <= MAX_FRAME);
            rest = &rest[9 + head.len..];
        }
        let fields = &frames.last().unwrap().3;
        assert_eq!(fields.len(), 4);
        assert_eq!(authority_of(fields).as_deref(), Some(&b"localhost"[..]));
    }

    /// What drops a connection, one row per rule.
    #[test]
    fn broken_framing_drops_the_connection() {
        let ok = request_block(Some(b"localhost"));
        let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
            let mut f = Vec::new();
            FrameHead::write(payload.len(), kind, flags, stream, &mut f);
            f.extend_from_slice(payload);
            f
        };
        let mut bomb_table = loona_hpack::Encoder::new();
        let mut bomb = bomb_table.encode([(b"x-bomb".as_slice(), vec![b'b'; 4000].as_slice())]);
        bomb.extend(std::iter::repeat_n(0xbe, 100)); // index 62, again and again
        let cases: Vec<(&str, Vec<u8>, FrontError)> = vec![
            (
                "garbage",
                b"GET / HTTP/1.1\r\n\r\n".to_vec(),
                FrontError::BadPreface,
            ),
            (
                "interrupted block",
                [frame(HEADERS, 0, 1, &ok[..3]), frame(0x0, 0, 1, b"data")].concat(),
                FrontError::InterruptedBlock { kind: 0, stream: 1 },
            ),
            (
                "continued on another stream",
                [
                    frame(HEADERS, 0, 1, &ok[..3]),
                    frame(CONTINUATION, END_HEADERS, 3, &ok[3..]),
                ]
                .concat(),
                FrontError::InterruptedBlock {
                    kind: CONTINUATION,
                    stream: 3,
                },
            ),
            (
                "stray continuation",
                frame(CONTINUATION, END_HEADERS, 1, &ok),
                FrontError::StrayContinuation,
            ),
            (
                "stream 0",
                frame(HEADERS, END_HEADERS, 0, &ok),
                FrontError::HeadersOnStreamZero,
            ),
            (
                "push promise",
                frame(PUSH_PROMISE, END_HEADERS, 1, &ok),
                FrontError::PushPromise,
            ),
            (
                "padding longer than the frame",
                frame(HEADERS, END_HEADERS | PADDED, 1, &[9, 1, 2]),
                FrontError::BadPadding,
            ),
            (
                "priority cut short",
                frame(HEADERS, END_HEADERS | PRIORITY, 1, &[0, 0]),
                FrontError::BadPadding,
            ),
            (
                "oversized frame",
                {
                    let mut f = Vec::new();
                    FrameHead::write(MAX_FRAME, HEADERS, 0, 1, &mut f);
                    f[2] = 1; // one byte over
                    f
                },
                FrontError::FrameTooLarge(MAX_FRAME + 1),
            ),
            (
                "continuation flood",
                {
                    let mut f = frame(HEADERS, 0, 1, &[0x82]);
                    for _ in 0..=(MAX_BLOCK / MAX_FRAME) {
                        f.extend(frame(CONTINUATION, 0, 1, &vec![0x82; MAX_FRAME]));
                    }
                    f
                },
                FrontError::BlockTooLarge,
            ),
            (
                "hpack bomb",
                frame(HEADERS, END_HEADERS, 1, &bomb),
                FrontError::ListTooLarge,
            ),
            (
                "index out of range",
                frame(HEADERS, END_HEADERS, 1, &[0xff, 0x80, 0x01]),
                FrontError::Hpack("Header index out of bounds".to_owned()),
            ),
            (
                "table grown past the announced size",
                frame(HEADERS, END_HEADERS, 1, &[0x3f, 0xe2, 0x1f, 0x82]),
                FrontError::Hpack("Dynamic table size exceeds the maximum size".to_owned()),
            ),
        ];
        for (what, bytes, expected) in cases {
            let mut input = if what == "garbage" {
                Vec::new()
            } else {
                PREFACE.to_vec()
            };
            input.extend(bytes);
            let mut out = Vec::new();
            let got = Rewriter::new().push(&input, &mut out);
            assert_eq!(got, Err(expected), "{what}");
        }
    }

    /// Frames the front does not read pass byte for byte, however long or odd.
    #[test]
    fn other_frames_pass_as_they_are() {
        let mut input = PREFACE.to_vec();
        // A DATA frame with a length far over the limit: the server, not this front, refuses it.
        let mut f = Vec::new();
        FrameHead::write(MAX_FRAME, 0x0, 0, 1, &mut f);
        f[0] = 0x10;
        input.extend(&f);
        input.extend(vec![7u8; 1000]);
        let mut out = Vec::new();
        Rewriter::new().push(&input, &mut out).unwrap();
        assert_eq!(out, input);
    }

    #[test]
    fn integers_encode_as_rfc_7541_c_1_says() {
        // RFC 7541 Appendix C.1.1–C.1.3.
        let mut out = Vec::new();
        encode_integer(10, 5, 0, &mut out);
        assert_eq!(out, [0b0000_1010]);
        out.clear();
        encode_integer(1337, 5, 0, &mut out);
        assert_eq!(out, [0b0001_1111, 0b1001_1010, 0b0000_1010]);
        out.clear();
        encode_integer(42, 8, 0, &mut out);
        assert_eq!(out, [42]);
    }
}
