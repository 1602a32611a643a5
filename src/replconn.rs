//! Async client for PostgreSQL's streaming replication protocol in logical
//! mode (`replication=database` connections).
//!
//! tokio-postgres cannot open walsender connections, so this module speaks the
//! wire protocol itself: frontend messages are built with
//! `postgres_protocol::message::frontend`, frame headers are validated with
//! `postgres_protocol::message::backend::Header`, and the authentication
//! exchange uses `postgres_protocol::authentication` (SCRAM-SHA-256, md5,
//! cleartext, trust).
//!
//! Reading is done into one large `BytesMut`; frames are split off it in place
//! so that the payload of every XLogData message is a zero-copy `Bytes` slice
//! of the read buffer.
//!
//! TLS follows libpq's sslmode (see `tls`): over TCP an SSLRequest is sent
//! before the startup message unless ssl_mode is `disable`; `prefer` goes on
//! without TLS when the server declines, and retries once without it when the
//! SSL attempt fails. SCRAM uses channel binding over TLS when offered.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{
    ChannelBinding, ScramSha256, SCRAM_SHA_256, SCRAM_SHA_256_PLUS,
};
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::tls::{self, SslMode, TlsSettings};

/// Size of one socket read (and the amount reserved when the buffer runs low).
const READ_CHUNK: usize = 256 * 1024;
/// Reserve a fresh chunk when less than this much spare capacity remains.
const READ_LOW_WATER: usize = 32 * 1024;
/// Largest message accepted before authentication has completed.
const STARTUP_MAX_FRAME: usize = 1024 * 1024;
/// Largest message accepted afterwards (the server itself caps at 1 GiB).
const MAX_FRAME: usize = i32::MAX as usize;
/// Upper bound for `ReplStream::close`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Microseconds between 1970-01-01 and 2000-01-01 (PostgreSQL's epoch).
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

/// Session settings of every connection to the source. Values travel as text
/// (pgoutput, COPY), written with the source session's settings and read with
/// the destination's: a source whose DateStyle reads day first would turn
/// 2024-03-04 into the 3rd of April here, and a low extra_float_digits would
/// round floats. ISO dates, postgres intervals and exact floats read the same
/// everywhere; PostgreSQL's own subscriber asks for the same.
pub const SESSION_OPTIONS: &str =
    "-c datestyle=ISO -c intervalstyle=postgres -c extra_float_digits=3";

/// Where and how to connect. `host` is a hostname / IP address (TCP) or an
/// absolute path to the directory holding the server's unix socket.
#[derive(Clone)]
pub struct ConnParams {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub dbname: String,
    pub application_name: String,
    /// Bound for the whole of `ReplConnection::connect`. `Duration::ZERO`
    /// means "no limit" (like libpq's `connect_timeout=0`).
    pub connect_timeout: Duration,
    /// sslmode and certificate files (TCP hosts only).
    pub tls: TlsSettings,
    /// The server must ask for the password (a connector of a non-superuser,
    /// as PostgreSQL's password_required): connecting fails when it does not.
    pub password_required: bool,
    /// A `replication=database` session (slot commands, streaming); false for
    /// a plain SQL session (the parallel copy's COPY TO STDOUT).
    pub replication: bool,
}

impl fmt::Debug for ConnParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnParams")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"********")
            .field("dbname", &self.dbname)
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("tls", &self.tls)
            .field("password_required", &self.password_required)
            .field("replication", &self.replication)
            .finish()
    }
}

impl ConnParams {
    fn is_unix_socket(&self) -> bool {
        self.host.starts_with('/')
    }

    fn socket_path(&self) -> String {
        format!("{}/.s.PGSQL.{}", self.host.trim_end_matches('/'), self.port)
    }

    /// Human readable connection target used in `ReplError::Connect`.
    pub fn target(&self) -> String {
        if self.is_unix_socket() {
            self.socket_path()
        } else if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone)]
pub enum ReplError {
    /// A client-side problem in connecting (e.g. no password supplied, an
    /// authentication method we do not speak, SSL required but refused).
    Connect { target: String, reason: String },
    /// The server could not be reached: DNS, TCP or unix socket failure, a
    /// timeout, or the connection closed during its start. Transient.
    Unreachable { target: String, reason: String },
    /// The SSL part failed: certificate files, handshake, verification.
    Tls { target: String, reason: String },
    /// ErrorResponse from the server, fields as the server sent them.
    Server {
        severity: String,
        code: String,
        message: String,
        detail: Option<String>,
        hint: Option<String>,
    },
    /// Unexpected or malformed message, local I/O error, misuse.
    Protocol(String),
    /// The server closed the connection.
    Closed,
}

impl fmt::Display for ReplError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplError::Connect { target, reason } | ReplError::Unreachable { target, reason } => {
                write!(
                    f,
                    "could not connect to source server at {target}: {reason}"
                )
            }
            ReplError::Tls { target, reason } if target.is_empty() => {
                write!(f, "SSL error on the replication connection: {reason}")
            }
            ReplError::Tls { target, reason } => f.write_str(&tls::ssl_failed(target, reason)),
            ReplError::Server {
                severity,
                message,
                detail,
                hint,
                ..
            } => {
                write!(f, "{severity}: {message}")?;
                if let Some(d) = detail {
                    write!(f, " DETAIL: {d}")?;
                }
                if let Some(h) = hint {
                    write!(f, " HINT: {h}")?;
                }
                Ok(())
            }
            ReplError::Protocol(m) => write!(f, "replication protocol error: {m}"),
            ReplError::Closed => write!(f, "source server closed the replication connection"),
        }
    }
}

impl std::error::Error for ReplError {}

impl ReplError {
    /// Whether the error says the source is unavailable for now (unreachable,
    /// the connection lost, the server shutting down or starting up) rather
    /// than that something is wrong: the worker then connects again by itself.
    pub fn is_transient(&self) -> bool {
        match self {
            ReplError::Unreachable { .. } | ReplError::Closed => true,
            ReplError::Server { code, .. } => crate::error::transient_sqlstate(code),
            ReplError::Protocol(m) => m.starts_with("I/O error"),
            ReplError::Connect { .. } | ReplError::Tls { .. } => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    pub slot_name: String,
    pub consistent_point: u64,
    pub snapshot_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplEvent {
    XLogData {
        wal_start: u64,
        wal_end: u64,
        server_time: i64,
        data: Bytes,
    },
    Keepalive {
        wal_end: u64,
        server_time: i64,
        reply_requested: bool,
    },
}

// ---------------------------------------------------------------------------
// Transport: socket + read/write buffers + framing
// ---------------------------------------------------------------------------

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One backend message: type byte and body (length word stripped).
#[derive(Debug)]
struct Frame {
    tag: u8,
    body: BytesMut,
}

/// Splits one complete message off the front of `buf`, or returns `None`
/// when more bytes are needed (then capacity for the whole frame is reserved
/// so that a large message is read with few reallocations).
fn split_frame(buf: &mut BytesMut, max_len: usize) -> Result<Option<Frame>, ReplError> {
    let header = match backend::Header::parse(buf) {
        Ok(Some(h)) => h,
        Ok(None) => return Ok(None),
        Err(e) => return Err(ReplError::Protocol(e.to_string())),
    };
    // Header::parse guarantees len >= 4.
    let len = usize::try_from(header.len()).unwrap_or(0);
    if len < 4 || len > max_len {
        return Err(ReplError::Protocol(format!(
            "invalid length {} for message type '{}'",
            header.len(),
            char::from(header.tag()).escape_default()
        )));
    }
    let total = len + 1;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let mut body = buf.split_to(total);
    body.advance(5);
    Ok(Some(Frame {
        tag: header.tag(),
        body,
    }))
}

/// The binary format's trailer, in a message of its own: alone, or after the
/// file header when there is no row. A row starts with its field count (at
/// most 1600), a text row ends with a newline.
fn is_binary_trailer(payload: &[u8]) -> bool {
    payload == [0xff, 0xff]
        || (payload.len() == 21
            && payload.starts_with(b"PGCOPY\n\xff\r\n\0")
            && payload.ends_with(&[0xff, 0xff]))
}

/// Appends the payloads of the complete CopyData messages at the front of
/// `buf` to `out`, counting the rows among them in `rows`. Returns the bytes
/// consumed and whether a message of another type follows (the copy's end, or
/// an error).
fn take_copy_data(
    buf: &[u8],
    out: &mut BytesMut,
    rows: &mut u64,
) -> Result<(usize, bool), ReplError> {
    let mut at = 0;
    while let (Some(&tag), Some(len)) = (buf.get(at), be_i32(buf, at + 1)) {
        if tag != b'd' {
            return Ok((at, true));
        }
        if len < 4 {
            return Err(ReplError::Protocol(format!(
                "invalid length {len} for a CopyData message"
            )));
        }
        let end = at + 1 + len as usize;
        let Some(payload) = buf.get(at + 5..end) else {
            break;
        };
        out.extend_from_slice(payload);
        if !is_binary_trailer(payload) {
            *rows += 1;
        }
        at = end;
    }
    Ok((at, false))
}

fn io_error(e: io::Error) -> ReplError {
    // TLS trouble after the handshake (e.g. the server refusing our client
    // certificate, which TLS 1.3 reports on the first read); the target is
    // filled in by the caller that knows it
    if let Some(reason) = tls::tls_failure_in(&e) {
        return ReplError::Tls {
            target: String::new(),
            reason,
        };
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::WriteZero => ReplError::Closed,
        _ => ReplError::Protocol(format!("I/O error: {e}")),
    }
}

struct Transport {
    io: Box<dyn Io>,
    /// The socket under `io` (under TLS too), for what it holds unread.
    fd: Option<RawFd>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    max_frame: usize,
}

impl Transport {
    fn new(io: Box<dyn Io>, fd: Option<RawFd>) -> Transport {
        Transport {
            io,
            fd,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::with_capacity(1024),
            max_frame: STARTUP_MAX_FRAME,
        }
    }

    /// Synchronous: next complete frame already in the buffer, if any.
    fn try_frame(&mut self) -> Result<Option<Frame>, ReplError> {
        split_frame(&mut self.rbuf, self.max_frame)
    }

    /// One socket read into the buffer. Cancel-safe: if the future is dropped
    /// before completion no data has been consumed from the socket.
    async fn read_more(&mut self) -> Result<(), ReplError> {
        if self.rbuf.capacity() - self.rbuf.len() < READ_LOW_WATER {
            self.rbuf.reserve(READ_CHUNK);
        }
        let n = self.io.read_buf(&mut self.rbuf).await.map_err(io_error)?;
        if n == 0 {
            return Err(ReplError::Closed);
        }
        Ok(())
    }

    /// Cancel-safe: partial frames stay in `rbuf`.
    async fn next_frame(&mut self) -> Result<Frame, ReplError> {
        loop {
            if let Some(f) = self.try_frame()? {
                return Ok(f);
            }
            self.read_more().await?;
        }
    }

    /// Writes out everything buffered in `wbuf`. If the future is dropped
    /// midway, the unwritten rest stays buffered and goes out with the next
    /// flush, so messages are never torn.
    async fn flush(&mut self) -> Result<(), ReplError> {
        while !self.wbuf.is_empty() {
            let n = self.io.write_buf(&mut self.wbuf).await.map_err(io_error)?;
            if n == 0 {
                return Err(ReplError::Closed);
            }
        }
        self.io.flush().await.map_err(io_error)
    }

    /// Best effort Terminate + shutdown; errors are irrelevant at this point.
    async fn terminate(&mut self) {
        frontend::terminate(&mut self.wbuf);
        if self.flush().await.is_ok() {
            let _ = self.io.shutdown().await;
        }
    }
}

// ---------------------------------------------------------------------------
// Message body parsing helpers
// ---------------------------------------------------------------------------

fn be_i16(b: &[u8], at: usize) -> Option<i16> {
    b.get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .map(i16::from_be_bytes)
}

fn be_i32(b: &[u8], at: usize) -> Option<i32> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(i32::from_be_bytes)
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_be_bytes)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Reads a NUL-terminated string starting at `*pos`, advancing `*pos`.
fn cstr<'a>(b: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let rest = b.get(*pos..)?;
    let end = rest.iter().position(|&c| c == 0)?;
    *pos += end + 1;
    Some(&rest[..end])
}

fn truncated(what: &str) -> ReplError {
    ReplError::Protocol(format!("truncated {what} message"))
}

/// Parses the body of an ErrorResponse (or NoticeResponse).
fn parse_error_response(body: &[u8]) -> ReplError {
    let mut severity_localized = None;
    let mut severity = None;
    let mut code = None;
    let mut message = None;
    let mut detail = None;
    let mut hint = None;
    let mut pos = 0;
    while let Some(&t) = body.get(pos) {
        if t == 0 {
            break;
        }
        pos += 1;
        let Some(v) = cstr(body, &mut pos) else {
            break;
        };
        let v = lossy(v);
        match t {
            b'S' => severity_localized = Some(v),
            b'V' => severity = Some(v),
            b'C' => code = Some(v),
            b'M' => message = Some(v),
            b'D' => detail = Some(v),
            b'H' => hint = Some(v),
            _ => {}
        }
    }
    ReplError::Server {
        severity: severity_localized
            .or(severity)
            .unwrap_or_else(|| "ERROR".to_owned()),
        code: code.unwrap_or_default(),
        message: message.unwrap_or_default(),
        detail,
        hint,
    }
}

/// Parses a DataRow body into text columns.
fn parse_data_row(body: &[u8]) -> Result<Vec<Option<String>>, ReplError> {
    let n = be_i16(body, 0).ok_or_else(|| truncated("DataRow"))?;
    let n = usize::try_from(n).map_err(|_| truncated("DataRow"))?;
    let mut row = Vec::with_capacity(n);
    let mut pos = 2;
    for _ in 0..n {
        let len = be_i32(body, pos).ok_or_else(|| truncated("DataRow"))?;
        pos += 4;
        if len < 0 {
            row.push(None);
            continue;
        }
        let len = usize::try_from(len).map_err(|_| truncated("DataRow"))?;
        let v = body
            .get(pos..pos + len)
            .ok_or_else(|| truncated("DataRow"))?;
        pos += len;
        row.push(Some(match String::from_utf8(v.to_vec()) {
            Ok(s) => s,
            Err(e) => lossy(e.as_bytes()),
        }));
    }
    Ok(row)
}

/// Parses the payload of a CopyData message received during streaming.
/// The XLogData payload becomes a zero-copy view of the read buffer.
fn parse_copy_data(mut body: BytesMut) -> Result<ReplEvent, ReplError> {
    match body.first() {
        Some(b'w') => {
            if body.len() < 25 {
                return Err(truncated("XLogData"));
            }
            let wal_start = be_u64(&body, 1).unwrap_or(0);
            let wal_end = be_u64(&body, 9).unwrap_or(0);
            let server_time = be_u64(&body, 17).unwrap_or(0) as i64;
            body.advance(25);
            Ok(ReplEvent::XLogData {
                wal_start,
                wal_end,
                server_time,
                data: body.freeze(),
            })
        }
        Some(b'k') => {
            if body.len() < 18 {
                return Err(truncated("primary keepalive"));
            }
            Ok(ReplEvent::Keepalive {
                wal_end: be_u64(&body, 1).unwrap_or(0),
                server_time: be_u64(&body, 9).unwrap_or(0) as i64,
                reply_requested: body[17] != 0,
            })
        }
        Some(&t) => Err(ReplError::Protocol(format!(
            "unexpected CopyData message type '{}' during replication",
            char::from(t).escape_default()
        ))),
        None => Err(truncated("CopyData")),
    }
}

/// Parses "X/Y" (hex) into a 64-bit LSN.
fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some((u64::from(hi) << 32) | u64::from(lo))
}

fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// Derives a server_version_num from the `server_version` string
/// ("15.4 (Debian 15.4-1.pgdg120+1)", "9.6.24", "17beta1", "16devel").
fn version_num_from_string(v: &str) -> u32 {
    let mut parts = [0u32; 3];
    let mut idx = 0;
    let mut any = false;
    for c in v.chars() {
        if let Some(d) = c.to_digit(10) {
            parts[idx] = parts[idx].saturating_mul(10).saturating_add(d);
            any = true;
        } else if c == '.' && any && idx < 2 {
            idx += 1;
        } else {
            break;
        }
    }
    if !any {
        return 0;
    }
    if parts[0] >= 10 {
        parts[0].saturating_mul(10000).saturating_add(parts[1])
    } else {
        parts[0]
            .saturating_mul(10000)
            .saturating_add(parts[1].saturating_mul(100))
            .saturating_add(parts[2])
    }
}

/// Double-quoted identifier as understood by both the SQL and the
/// replication-command lexers.
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Single-quoted literal (standard_conforming_strings style; the replication
/// lexer only knows '' doubling).
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn create_slot_command(slot: &str, server_version_num: u32, temporary: bool) -> String {
    let temp = if temporary { " TEMPORARY" } else { "" };
    if server_version_num >= 150000 {
        format!(
            "CREATE_REPLICATION_SLOT {}{temp} LOGICAL pgoutput (SNAPSHOT 'export')",
            quote_ident(slot)
        )
    } else {
        format!(
            "CREATE_REPLICATION_SLOT {}{temp} LOGICAL pgoutput EXPORT_SNAPSHOT",
            quote_ident(slot)
        )
    }
}

fn start_replication_command(
    slot: &str,
    start_lsn: u64,
    publication: &str,
    proto_version: u32,
    messages: bool,
) -> String {
    let mut cmd = format!(
        "START_REPLICATION SLOT {} LOGICAL {} (proto_version {}, publication_names {}",
        quote_ident(slot),
        format_lsn(start_lsn),
        quote_literal(&proto_version.to_string()),
        quote_literal(&quote_ident(publication)),
    );
    if messages {
        cmd.push_str(", messages 'true'");
    }
    if proto_version >= 2 {
        cmd.push_str(", streaming 'on'");
    }
    cmd.push(')');
    cmd
}

/// Current time as microseconds since 2000-01-01 00:00:00 UTC.
fn pg_now_micros() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros())
            .unwrap_or(i64::MAX)
            .saturating_sub(PG_EPOCH_UNIX_MICROS),
        Err(_) => 0,
    }
}

fn encode_status_update(
    write: u64,
    flush: u64,
    apply: u64,
    client_time: i64,
    reply: bool,
) -> [u8; 34] {
    let mut m = [0u8; 34];
    m[0] = b'r';
    m[1..9].copy_from_slice(&write.to_be_bytes());
    m[9..17].copy_from_slice(&flush.to_be_bytes());
    m[17..25].copy_from_slice(&apply.to_be_bytes());
    m[25..33].copy_from_slice(&client_time.to_be_bytes());
    m[33] = u8::from(reply);
    m
}

fn nul_error(what: &str) -> ReplError {
    ReplError::Protocol(format!("{what} contains a NUL byte"))
}

fn unexpected(tag: u8, when: &str) -> ReplError {
    ReplError::Protocol(format!(
        "unexpected message type '{}' {when}",
        char::from(tag).escape_default()
    ))
}

// ---------------------------------------------------------------------------
// ReplConnection
// ---------------------------------------------------------------------------

/// An authenticated `replication=database` connection in the idle state.
pub struct ReplConnection {
    t: Transport,
    server_version_num: u32,
    backend_pid: i32,
    parameters: Vec<(String, String)>,
    /// A command is in flight (a previous call failed mid-way or its future
    /// was dropped): the protocol state is unknown, refuse further use.
    busy: bool,
    /// The server asked for the password (cleartext, MD5 or SCRAM).
    password_used: bool,
}

impl fmt::Debug for ReplConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplConnection")
            .field("server_version_num", &self.server_version_num)
            .field("backend_pid", &self.backend_pid)
            .field("busy", &self.busy)
            .finish_non_exhaustive()
    }
}

/// How an SSL attempt failed: for good, or in a way libpq's `prefer` retries
/// without SSL.
enum SslAttempt {
    Failed(ReplError),
    RetryPlain(ReplError),
}

/// An error's text without the "could not connect to ..." / "SSL connection
/// to ..." lead, for combining two attempts in one message.
fn bare_reason(e: &ReplError) -> String {
    match e {
        ReplError::Connect { reason, .. }
        | ReplError::Unreachable { reason, .. }
        | ReplError::Tls { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

/// Auth state during startup.
enum AuthState {
    None,
    Scram(Box<ScramSha256>),
}

impl ReplConnection {
    /// TCP (TCP_NODELAY) or unix socket; StartupMessage with user, database,
    /// replication=database, application_name, client_encoding=UTF8; handles
    /// the auth exchange; waits for ReadyForQuery. The whole thing is bounded
    /// by `connect_timeout` (zero = unbounded).
    pub async fn connect(p: &ConnParams) -> Result<ReplConnection, ReplError> {
        let target = p.target();
        if p.connect_timeout.is_zero() {
            return Self::connect_inner(p, &target).await;
        }
        match tokio::time::timeout(p.connect_timeout, Self::connect_inner(p, &target)).await {
            Ok(r) => r,
            Err(_) => Err(ReplError::Unreachable {
                target,
                reason: format!("timeout expired after {:?}", p.connect_timeout),
            }),
        }
    }

    async fn open_socket(
        p: &ConnParams,
        target: &str,
    ) -> Result<(Box<dyn Io>, Option<RawFd>), ReplError> {
        let fail = |reason: String| ReplError::Unreachable {
            target: target.to_owned(),
            reason,
        };
        if p.host.is_empty() {
            return Err(ReplError::Connect {
                target: target.to_owned(),
                reason: "no host given".to_owned(),
            });
        }
        if p.is_unix_socket() {
            #[cfg(unix)]
            {
                let s = tokio::net::UnixStream::connect(p.socket_path())
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                let fd = s.as_raw_fd();
                return Ok((Box::new(s), Some(fd)));
            }
            #[cfg(not(unix))]
            {
                return Err(fail("unix sockets are not supported here".to_owned()));
            }
        }
        let s = tokio::net::TcpStream::connect((p.host.as_str(), p.port))
            .await
            .map_err(|e| fail(e.to_string()))?;
        s.set_nodelay(true).map_err(|e| fail(e.to_string()))?;
        let fd = s.as_raw_fd();
        Ok((Box::new(s), Some(fd)))
    }

    async fn connect_inner(p: &ConnParams, target: &str) -> Result<ReplConnection, ReplError> {
        let mode = p.tls.mode_for(&p.host);
        if mode == SslMode::Disable {
            let (io, fd) = Self::open_socket(p, target).await?;
            return Self::startup(p, target, io, None, fd).await;
        }
        let ssl_error = match Self::connect_ssl(p, target, mode).await {
            Ok(conn) => return Ok(conn),
            Err(SslAttempt::Failed(e)) => return Err(e),
            Err(SslAttempt::RetryPlain(e)) if mode == SslMode::Prefer => e,
            Err(SslAttempt::RetryPlain(e)) => return Err(e),
        };
        // libpq's prefer: a failed SSL attempt is followed by one without SSL
        let plain = match Self::open_socket(p, target).await {
            Ok((io, fd)) => Self::startup(p, target, io, None, fd).await,
            Err(e) => Err(e),
        };
        plain.map_err(|e| {
            let (now, before) = (bare_reason(&e), bare_reason(&ssl_error));
            if now == before {
                return e;
            }
            let target = target.to_owned();
            let reason = format!("{now}; an SSL connection was tried first and failed: {before}");
            if e.is_transient() {
                ReplError::Unreachable { target, reason }
            } else {
                ReplError::Connect { target, reason }
            }
        })
    }

    /// SSLRequest, then the TLS handshake and the startup over TLS; or the startup
    /// in plain when the server declines and the mode allows it.
    async fn connect_ssl(
        p: &ConnParams,
        target: &str,
        mode: SslMode,
    ) -> Result<ReplConnection, SslAttempt> {
        let tls_fail = |reason: String| ReplError::Tls {
            target: target.to_owned(),
            reason,
        };
        // The files first: a broken configuration is reported before any network trouble.
        let connector = tls::Connector::new(&p.tls, &p.host)
            .map_err(|m| SslAttempt::RetryPlain(tls_fail(m)))?;
        let (mut io, fd) = Self::open_socket(p, target)
            .await
            .map_err(SslAttempt::Failed)?;
        let mut req = BytesMut::with_capacity(8);
        frontend::ssl_request(&mut req);
        let mut answer = [0u8; 1];
        let exchange = async {
            io.write_all(&req).await?;
            io.flush().await?;
            io.read_exact(&mut answer).await
        };
        if let Err(e) = exchange.await {
            return Err(SslAttempt::Failed(ReplError::Unreachable {
                target: target.to_owned(),
                reason: format!("could not send SSL negotiation packet: {e}"),
            }));
        }
        let refused = |why: &str| ReplError::Connect {
            target: target.to_owned(),
            reason: format!("{}{why}", tls::no_ssl_reason(mode)),
        };
        match answer[0] {
            b'S' => {}
            b'N' if mode.requires_tls() => return Err(SslAttempt::Failed(refused(""))),
            // prefer: go on without TLS on this connection
            b'N' => {
                return Self::startup(p, target, io, None, fd)
                    .await
                    .map_err(SslAttempt::Failed)
            }
            // An error message in reply to SSLRequest comes from an unauthenticated
            // server: it is not shown (CVE-2024-10977), the connection is dropped.
            b'E' => {
                return Err(SslAttempt::RetryPlain(refused(
                    " (the server answered the SSL request with an error)",
                )))
            }
            b => {
                return Err(SslAttempt::Failed(ReplError::Protocol(format!(
                    "received invalid response to SSL negotiation: '{}'",
                    char::from(b).escape_default()
                ))))
            }
        }
        let stream = connector
            .handshake(io)
            .await
            .map_err(|m| SslAttempt::RetryPlain(tls_fail(m)))?;
        let cb = stream.channel_binding();
        Self::startup(p, target, Box::new(stream), cb, fd)
            .await
            .map_err(|e| match e {
                ReplError::Tls { reason, .. } => SslAttempt::RetryPlain(tls_fail(reason)),
                // libpq retries a prefer connection that the server refused over SSL
                e @ ReplError::Server { .. } => SslAttempt::RetryPlain(e),
                e => SslAttempt::Failed(e),
            })
    }

    /// StartupMessage, authentication, until ReadyForQuery. `channel_binding`:
    /// tls-server-end-point data when the connection is encrypted.
    async fn startup(
        p: &ConnParams,
        target: &str,
        io: Box<dyn Io>,
        channel_binding: Option<Vec<u8>>,
        fd: Option<RawFd>,
    ) -> Result<ReplConnection, ReplError> {
        let fail = |reason: &str| ReplError::Connect {
            target: target.to_owned(),
            reason: reason.to_owned(),
        };
        let mut conn = ReplConnection {
            t: Transport::new(io, fd),
            server_version_num: 0,
            backend_pid: 0,
            parameters: Vec::new(),
            busy: true,
            password_used: false,
        };

        let dbname = if p.dbname.is_empty() {
            p.user.as_str()
        } else {
            p.dbname.as_str()
        };
        let mut params: Vec<(&str, &str)> = vec![
            ("user", p.user.as_str()),
            ("database", dbname),
            ("client_encoding", "UTF8"),
            ("options", SESSION_OPTIONS),
        ];
        if p.replication {
            params.push(("replication", "database"));
        }
        if !p.application_name.is_empty() {
            params.push(("application_name", p.application_name.as_str()));
        }
        frontend::startup_message(params, &mut conn.t.wbuf)
            .map_err(|_| nul_error("a connection parameter"))?;

        let closed = |e: ReplError| match e {
            ReplError::Closed => ReplError::Unreachable {
                target: target.to_owned(),
                reason: "server closed the connection unexpectedly".to_owned(),
            },
            other => other,
        };
        conn.t.flush().await.map_err(closed)?;

        let mut auth = AuthState::None;
        loop {
            let frame = conn.t.next_frame().await.map_err(closed)?;
            match frame.tag {
                b'R' => {
                    if matches!(be_i32(&frame.body, 0), Some(3 | 5 | 10)) {
                        conn.password_used = true;
                    }
                    Self::handle_auth(
                        &mut conn.t,
                        p,
                        &frame.body,
                        &mut auth,
                        channel_binding.as_deref(),
                        &fail,
                    )?;
                    conn.t.flush().await.map_err(closed)?;
                }
                b'E' => return Err(parse_error_response(&frame.body)),
                b'S' => conn.record_parameter(&frame.body),
                b'K' => conn.backend_pid = be_i32(&frame.body, 0).unwrap_or(0),
                // NoticeResponse, NegotiateProtocolVersion: nothing to do.
                b'N' | b'v' => {}
                b'Z' => break,
                t => return Err(unexpected(t, "during connection startup")),
            }
        }
        if p.password_required && !conn.password_used {
            return Err(fail(
                "password is required: the connector belongs to a role that is not a superuser, so the \
                 source must authenticate it by its password, but the source server did not ask for one \
                 (its pg_hba.conf trusts this connection); require scram-sha-256 for it in the source's \
                 pg_hba.conf, or have a superuser own the connector",
            ));
        }

        conn.server_version_num = conn
            .parameter("server_version_num")
            .and_then(|v| v.trim().parse().ok())
            .or_else(|| {
                conn.parameter("server_version")
                    .map(version_num_from_string)
            })
            .unwrap_or(0);
        conn.t.max_frame = MAX_FRAME;
        conn.busy = false;
        Ok(conn)
    }

    fn handle_auth(
        t: &mut Transport,
        p: &ConnParams,
        body: &[u8],
        auth: &mut AuthState,
        channel_binding: Option<&[u8]>,
        fail: &dyn Fn(&str) -> ReplError,
    ) -> Result<(), ReplError> {
        let code = be_i32(body, 0).ok_or_else(|| truncated("Authentication"))?;
        let data = &body[4..];
        let need_password = || {
            if p.password.is_empty() {
                Err(fail(
                    "server requested password authentication, but no password was supplied",
                ))
            } else {
                Ok(())
            }
        };
        match code {
            0 => Ok(()),
            3 => {
                need_password()?;
                frontend::password_message(p.password.as_bytes(), &mut t.wbuf)
                    .map_err(|_| nul_error("the password"))
            }
            5 => {
                need_password()?;
                let salt: [u8; 4] = data
                    .get(..4)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| truncated("AuthenticationMD5Password"))?;
                let hash = md5_hash(p.user.as_bytes(), p.password.as_bytes(), salt);
                frontend::password_message(hash.as_bytes(), &mut t.wbuf)
                    .map_err(|_| nul_error("the password"))
            }
            10 => {
                let mut mechanisms = Vec::new();
                let mut pos = 0;
                while let Some(m) = cstr(data, &mut pos) {
                    if m.is_empty() {
                        break;
                    }
                    mechanisms.push(lossy(m));
                }
                let offered = |name: &str| mechanisms.iter().any(|m| m == name);
                // as libpq's channel_binding=prefer: bind to the TLS connection
                // when the server offers it
                let (binding, mechanism) = match channel_binding {
                    Some(cb) if offered(SCRAM_SHA_256_PLUS) => (
                        ChannelBinding::tls_server_end_point(cb.to_vec()),
                        SCRAM_SHA_256_PLUS,
                    ),
                    Some(_) if offered(SCRAM_SHA_256) => {
                        (ChannelBinding::unrequested(), SCRAM_SHA_256)
                    }
                    None if offered(SCRAM_SHA_256) => {
                        (ChannelBinding::unsupported(), SCRAM_SHA_256)
                    }
                    _ => {
                        return Err(fail(&format!(
                            "server offered no supported SASL mechanism ({})",
                            mechanisms.join(", ")
                        )))
                    }
                };
                need_password()?;
                let scram = ScramSha256::new(p.password.as_bytes(), binding);
                frontend::sasl_initial_response(mechanism, scram.message(), &mut t.wbuf)
                    .map_err(|e| ReplError::Protocol(format!("SASL initial response: {e}")))?;
                *auth = AuthState::Scram(Box::new(scram));
                Ok(())
            }
            11 => {
                let AuthState::Scram(scram) = auth else {
                    return Err(ReplError::Protocol(
                        "unexpected SASLContinue without SASL exchange".to_owned(),
                    ));
                };
                scram
                    .update(data)
                    .map_err(|e| ReplError::Protocol(format!("SCRAM-SHA-256: {e}")))?;
                frontend::sasl_response(scram.message(), &mut t.wbuf)
                    .map_err(|e| ReplError::Protocol(format!("SASL response: {e}")))
            }
            12 => {
                let AuthState::Scram(scram) = auth else {
                    return Err(ReplError::Protocol(
                        "unexpected SASLFinal without SASL exchange".to_owned(),
                    ));
                };
                scram.finish(data).map_err(|e| {
                    ReplError::Protocol(format!(
                        "SCRAM-SHA-256 server signature verification failed: {e}"
                    ))
                })?;
                *auth = AuthState::None;
                Ok(())
            }
            2 => Err(fail("Kerberos V5 authentication is not supported")),
            6 => Err(fail("SCM credential authentication is not supported")),
            7 | 8 => Err(fail("GSSAPI authentication is not supported")),
            9 => Err(fail("SSPI authentication is not supported")),
            c => Err(fail(&format!(
                "authentication method {c} requested by server is not supported"
            ))),
        }
    }

    fn record_parameter(&mut self, body: &[u8]) {
        let mut pos = 0;
        let (Some(k), Some(v)) = (cstr(body, &mut pos), cstr(body, &mut pos)) else {
            return;
        };
        let (k, v) = (lossy(k), lossy(v));
        if let Some(slot) = self.parameters.iter_mut().find(|(n, _)| *n == k) {
            slot.1 = v;
        } else {
            self.parameters.push((k, v));
        }
    }

    /// server_version_num: from ParameterStatus `server_version_num` when
    /// reported, otherwise derived from `server_version`.
    pub fn server_version_num(&self) -> u32 {
        self.server_version_num
    }

    /// Process id of the walsender serving this connection.
    pub fn backend_pid(&self) -> i32 {
        self.backend_pid
    }

    /// Last value the server reported for a run-time parameter.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn check_idle(&self) -> Result<(), ReplError> {
        if self.busy {
            Err(ReplError::Protocol(
                "connection is not idle (an earlier command was interrupted)".to_owned(),
            ))
        } else {
            Ok(())
        }
    }

    /// Simple-query protocol; returns the rows of the last statement's result
    /// as text (None = NULL); empty when the last statement returns no rows.
    /// Works for SQL and for replication commands (IDENTIFY_SYSTEM, SHOW, ...).
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, ReplError> {
        self.check_idle()?;
        frontend::query(sql, &mut self.t.wbuf).map_err(|_| nul_error("the query"))?;
        self.busy = true;
        self.t.flush().await?;

        let mut rows: Vec<Vec<Option<String>>> = Vec::new();
        let mut statement_has_rows = false;
        let mut err: Option<ReplError> = None;
        loop {
            let frame = self.t.next_frame().await?;
            match frame.tag {
                b'T' => {
                    rows.clear();
                    statement_has_rows = true;
                }
                b'D' => {
                    if err.is_none() {
                        match parse_data_row(&frame.body) {
                            Ok(r) => rows.push(r),
                            Err(e) => err = Some(e),
                        }
                    }
                }
                b'C' | b'I' => {
                    if !statement_has_rows {
                        rows.clear();
                    }
                    statement_has_rows = false;
                }
                b'E' => {
                    if err.is_none() {
                        err = Some(parse_error_response(&frame.body));
                    }
                }
                b'S' => self.record_parameter(&frame.body),
                b'N' | b'A' => {}
                b'G' => {
                    // COPY FROM STDIN: refuse; the server answers with an error.
                    frontend::copy_fail("COPY FROM STDIN is not supported here", &mut self.t.wbuf)
                        .map_err(|_| nul_error("CopyFail"))?;
                    self.t.flush().await?;
                }
                b'H' => {
                    err.get_or_insert_with(|| {
                        ReplError::Protocol(
                            "COPY TO STDOUT is not supported by simple_query".into(),
                        )
                    });
                }
                b'W' => {
                    // Streaming started (e.g. START_REPLICATION): end it again.
                    frontend::copy_done(&mut self.t.wbuf);
                    self.t.flush().await?;
                    err.get_or_insert_with(|| {
                        ReplError::Protocol(
                            "simple_query cannot run a streaming command; use start_replication"
                                .into(),
                        )
                    });
                }
                b'd' | b'c' => {}
                b'Z' => {
                    self.busy = false;
                    return match err {
                        Some(e) => Err(e),
                        None => Ok(rows),
                    };
                }
                t => return Err(unexpected(t, "in reply to a query")),
            }
        }
    }

    /// Creates a logical slot with the pgoutput plugin and an exported
    /// snapshot. The snapshot stays valid until the next command on this
    /// connection.
    pub async fn create_logical_slot(&mut self, slot: &str) -> Result<SlotInfo, ReplError> {
        self.create_slot(slot, false).await
    }

    /// As `create_logical_slot`, but the slot lives only as long as this
    /// connection: the source drops it however the connection ends.
    pub async fn create_temporary_slot(&mut self, slot: &str) -> Result<SlotInfo, ReplError> {
        self.create_slot(slot, true).await
    }

    async fn create_slot(&mut self, slot: &str, temporary: bool) -> Result<SlotInfo, ReplError> {
        let cmd = create_slot_command(slot, self.server_version_num, temporary);
        let rows = self.simple_query(&cmd).await?;
        let row = rows.first().ok_or_else(|| {
            ReplError::Protocol("CREATE_REPLICATION_SLOT returned no row".to_owned())
        })?;
        let col = |i: usize| row.get(i).cloned().flatten();
        let slot_name = col(0).unwrap_or_else(|| slot.to_owned());
        let cp = col(1).ok_or_else(|| {
            ReplError::Protocol("CREATE_REPLICATION_SLOT returned no consistent_point".to_owned())
        })?;
        let consistent_point = parse_lsn(&cp)
            .ok_or_else(|| ReplError::Protocol(format!("invalid consistent_point \"{cp}\"")))?;
        Ok(SlotInfo {
            slot_name,
            consistent_point,
            snapshot_name: col(2),
        })
    }

    /// Sends START_REPLICATION for a pgoutput slot and waits for
    /// CopyBothResponse.
    pub async fn start_replication(
        mut self,
        slot: &str,
        start_lsn: u64,
        publication: &str,
        proto_version: u32,
        messages: bool,
    ) -> Result<ReplStream, ReplError> {
        self.check_idle()?;
        let cmd = start_replication_command(slot, start_lsn, publication, proto_version, messages);
        frontend::query(&cmd, &mut self.t.wbuf).map_err(|_| nul_error("START_REPLICATION"))?;
        self.busy = true;
        self.t.flush().await?;
        let mut err: Option<ReplError> = None;
        loop {
            let frame = self.t.next_frame().await?;
            match frame.tag {
                b'W' => {
                    if let Some(e) = err {
                        return Err(e);
                    }
                    return Ok(ReplStream {
                        t: self.t,
                        ended: false,
                        sent_copy_done: false,
                    });
                }
                b'E' => {
                    err.get_or_insert_with(|| parse_error_response(&frame.body));
                }
                b'N' | b'S' | b'T' | b'D' | b'C' => {}
                b'Z' => {
                    self.busy = false;
                    self.t.terminate().await;
                    return Err(err.unwrap_or_else(|| {
                        ReplError::Protocol(
                            "server did not start streaming in reply to START_REPLICATION"
                                .to_owned(),
                        )
                    }));
                }
                t => return Err(unexpected(t, "in reply to START_REPLICATION")),
            }
        }
    }

    /// Runs `sql`, a `COPY ... TO STDOUT`, and hands its data on: the payloads
    /// of its CopyData messages, joined, in pieces of `chunk` bytes or more (the
    /// last one smaller), each with the rows it holds (a CopyData message per
    /// row, but the binary format's trailer). Returns the rows in all. `sink`
    /// returning false (nobody reads any more) ends it early; the connection
    /// is then unusable.
    ///
    /// The messages are taken out of the read buffer in place, without a frame
    /// (and a reference-counted buffer) per row: a large table is millions of
    /// small messages, and the per-message work of a general client was a
    /// sizeable part of the copy's CPU.
    pub async fn copy_out<F, Fut>(
        &mut self,
        sql: &str,
        chunk: usize,
        mut sink: F,
    ) -> Result<u64, ReplError>
    where
        F: FnMut(Bytes, u64) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        self.check_idle()?;
        frontend::query(sql, &mut self.t.wbuf).map_err(|_| nul_error("the query"))?;
        self.busy = true;
        self.t.flush().await?;
        // until CopyOutResponse, or the statement's error
        loop {
            let frame = self.t.next_frame().await?;
            match frame.tag {
                b'H' => break,
                b'E' => {
                    // a FATAL one closes the connection: its words, not "closed"
                    let err = parse_error_response(&frame.body);
                    let _ = self.until_ready().await;
                    return Err(err);
                }
                b'S' => self.record_parameter(&frame.body),
                b'N' => {}
                b'Z' => {
                    self.busy = false;
                    return Err(ReplError::Protocol(format!("{sql} sent no COPY data")));
                }
                t => return Err(unexpected(t, "in reply to COPY TO STDOUT")),
            }
        }
        let mut out = BytesMut::with_capacity(chunk);
        let mut rows = 0u64;
        let mut total = 0u64;
        loop {
            let (used, stop) = take_copy_data(&self.t.rbuf, &mut out, &mut rows)?;
            self.t.rbuf.advance(used);
            if out.len() >= chunk || (stop && !out.is_empty()) {
                total += rows;
                let piece = std::mem::replace(&mut out, BytesMut::with_capacity(chunk)).freeze();
                if !sink(piece, std::mem::take(&mut rows)).await {
                    return Err(ReplError::Protocol("the copy's reader went away".into()));
                }
            }
            if stop {
                break;
            }
            // room for the whole of a large message whose start is here
            if let Some(len) = be_i32(&self.t.rbuf, 1) {
                let want = (len as usize).saturating_add(1);
                if want <= self.t.max_frame && want > self.t.rbuf.len() {
                    self.t.rbuf.reserve(want - self.t.rbuf.len());
                }
            }
            self.t.read_more().await?;
        }
        // CopyDone, CommandComplete, ReadyForQuery; or an error that cut it short
        let mut err = None;
        loop {
            let frame = match self.t.next_frame().await {
                Ok(f) => f,
                Err(e) => return Err(err.unwrap_or(e)),
            };
            match frame.tag {
                b'c' | b'C' | b'N' => {}
                b'S' => self.record_parameter(&frame.body),
                b'E' => {
                    err.get_or_insert_with(|| parse_error_response(&frame.body));
                }
                b'Z' => {
                    self.busy = false;
                    return match err {
                        Some(e) => Err(e),
                        None => Ok(total),
                    };
                }
                t => return Err(unexpected(t, "at the end of COPY TO STDOUT")),
            }
        }
    }

    /// Reads until ReadyForQuery (after an error).
    async fn until_ready(&mut self) -> Result<(), ReplError> {
        loop {
            let frame = self.t.next_frame().await?;
            match frame.tag {
                b'Z' => {
                    self.busy = false;
                    return Ok(());
                }
                b'S' => self.record_parameter(&frame.body),
                _ => {}
            }
        }
    }

    /// Sends Terminate and closes the socket.
    pub async fn close(mut self) -> Result<(), ReplError> {
        self.t.terminate().await;
        Ok(())
    }

    /// `close` for a connection still shared: Terminate (at any point, even
    /// in the middle of a COPY), and the socket closed; unusable afterwards.
    pub async fn terminate(&mut self) {
        self.busy = true;
        self.t.terminate().await;
    }
}

// ---------------------------------------------------------------------------
// ReplStream
// ---------------------------------------------------------------------------

/// A connection in COPY BOTH mode, streaming pgoutput messages.
pub struct ReplStream {
    t: Transport,
    /// Server ended the COPY (CopyDone / CommandComplete / ReadyForQuery).
    ended: bool,
    sent_copy_done: bool,
}

impl fmt::Debug for ReplStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplStream")
            .field("buffered", &self.t.rbuf.len())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl ReplStream {
    /// Next CopyData from the server, parsed. `Ok(None)` once the server
    /// ended the COPY. Cancel-safe: the only await point is a socket read
    /// into the internal buffer; partial frames stay buffered.
    pub async fn next_event(&mut self) -> Result<Option<ReplEvent>, ReplError> {
        loop {
            if self.ended {
                return Ok(None);
            }
            while let Some(frame) = self.t.try_frame()? {
                match frame.tag {
                    b'd' => return parse_copy_data(frame.body).map(Some),
                    b'c' | b'C' | b'Z' => {
                        self.ended = true;
                        return Ok(None);
                    }
                    b'E' => return Err(parse_error_response(&frame.body)),
                    b'N' | b'S' => {}
                    t => return Err(unexpected(t, "during replication")),
                }
            }
            self.t.read_more().await?;
        }
    }

    /// Bytes the socket holds that were not read yet (None: not known).
    pub fn unread(&self) -> Option<usize> {
        let fd = self.t.fd?;
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int; fd is the stream's open socket
        let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n as *mut libc::c_int) };
        (r == 0).then_some(n.max(0) as usize)
    }

    /// Standby status update ('r'): write, flush and apply LSNs, client time
    /// now, reply-requested flag.
    pub async fn send_status(
        &mut self,
        write: u64,
        flush: u64,
        apply: u64,
        reply_requested: bool,
    ) -> Result<(), ReplError> {
        let msg = encode_status_update(write, flush, apply, pg_now_micros(), reply_requested);
        frontend::CopyData::new(&msg[..])
            .map_err(|e| ReplError::Protocol(e.to_string()))?
            .write(&mut self.t.wbuf);
        self.t.flush().await
    }

    /// CopyDone, drain to ReadyForQuery, Terminate. Bounded by 10 seconds.
    pub async fn close(self) -> Result<(), ReplError> {
        match tokio::time::timeout(CLOSE_TIMEOUT, self.close_inner()).await {
            Ok(r) => r,
            Err(_) => Err(ReplError::Protocol(format!(
                "timed out after {CLOSE_TIMEOUT:?} waiting for the server to end replication"
            ))),
        }
    }

    async fn close_inner(mut self) -> Result<(), ReplError> {
        if !self.sent_copy_done {
            frontend::copy_done(&mut self.t.wbuf);
            self.sent_copy_done = true;
            match self.t.flush().await {
                Ok(()) => {}
                Err(ReplError::Closed) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        let mut err = None;
        loop {
            let frame = match self.t.next_frame().await {
                Ok(f) => f,
                // Server already gone: the connection is closed either way.
                Err(ReplError::Closed) => return err.map_or(Ok(()), Err),
                Err(e) => return Err(e),
            };
            match frame.tag {
                b'Z' => break,
                b'E' => {
                    err.get_or_insert_with(|| parse_error_response(&frame.body));
                }
                _ => {}
            }
        }
        self.t.terminate().await;
        err.map_or(Ok(()), Err)
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn xlogdata(start: u64, end: u64, time: i64, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![b'w'];
        b.extend_from_slice(&start.to_be_bytes());
        b.extend_from_slice(&end.to_be_bytes());
        b.extend_from_slice(&time.to_be_bytes());
        b.extend_from_slice(payload);
        frame(b'd', &b)
    }

    fn keepalive(end: u64, time: i64, reply: bool) -> Vec<u8> {
        let mut b = vec![b'k'];
        b.extend_from_slice(&end.to_be_bytes());
        b.extend_from_slice(&time.to_be_bytes());
        b.push(u8::from(reply));
        frame(b'd', &b)
    }

    fn error_body(fields: &[(u8, &str)]) -> Vec<u8> {
        let mut b = Vec::new();
        for (t, v) in fields {
            b.push(*t);
            b.extend_from_slice(v.as_bytes());
            b.push(0);
        }
        b.push(0);
        b
    }

    #[test]
    fn split_frame_whole_and_partial() {
        let mut bytes = Vec::new();
        bytes.extend(frame(b'Z', b"I"));
        bytes.extend(frame(b'C', b"SELECT 1\0"));
        // Feed one byte at a time; frames must come out intact and in order.
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for b in bytes {
            buf.put_u8(b);
            while let Some(f) = split_frame(&mut buf, MAX_FRAME).unwrap() {
                out.push((f.tag, f.body.to_vec()));
            }
        }
        assert_eq!(
            out,
            vec![(b'Z', b"I".to_vec()), (b'C', b"SELECT 1\0".to_vec())]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn copy_data_taken_in_place_however_it_arrives() {
        // a binary COPY: header with the first row, a row, the trailer, then
        // CopyDone and CommandComplete
        let mut first = b"PGCOPY\n\xff\r\n\0".to_vec();
        first.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        first.extend_from_slice(&[0, 1, 0, 0, 0, 2, 0xff, 0xff]);
        let second = [0, 1, 0xff, 0xff, 0xff, 0xff];
        let mut bytes = Vec::new();
        bytes.extend(frame(b'd', &first));
        bytes.extend(frame(b'd', &second));
        bytes.extend(frame(b'd', &[0xff, 0xff]));
        bytes.extend(frame(b'c', b""));
        bytes.extend(frame(b'C', b"COPY 2\0"));
        let mut want = first.clone();
        want.extend_from_slice(&second);
        want.extend_from_slice(&[0xff, 0xff]);
        // fed one byte at a time, as a slow socket would
        let (mut buf, mut out, mut rows, mut ended) = (BytesMut::new(), BytesMut::new(), 0, false);
        for b in bytes {
            buf.put_u8(b);
            if ended {
                continue;
            }
            let (used, stop) = take_copy_data(&buf, &mut out, &mut rows).unwrap();
            buf.advance(used);
            ended = stop;
        }
        assert!(ended);
        assert_eq!(out.to_vec(), want);
        // the rows, not the trailer (even a row ending in 0xff 0xff counts)
        assert_eq!(rows, 2);
        assert_eq!(buf[0], b'c');
        // an empty table: header and trailer in one message, no row
        let mut empty = b"PGCOPY\n\xff\r\n\0".to_vec();
        empty.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        let (mut out, mut rows) = (BytesMut::new(), 0);
        take_copy_data(&frame(b'd', &empty), &mut out, &mut rows).unwrap();
        assert_eq!(rows, 0);
        // text rows
        let (mut out, mut rows) = (BytesMut::new(), 0);
        let mut text = frame(b'd', b"1\tx\n");
        text.extend(frame(b'd', b"2\t\\N\n"));
        assert_eq!(
            take_copy_data(&text, &mut out, &mut rows).unwrap(),
            (text.len(), false)
        );
        assert_eq!((rows, &out[..]), (2, &b"1\tx\n2\t\\N\n"[..]));
        // a length below its own 4 bytes is refused
        assert!(matches!(
            take_copy_data(&[b'd', 0, 0, 0, 3], &mut out, &mut rows),
            Err(ReplError::Protocol(_))
        ));
    }

    #[test]
    fn split_frame_rejects_bad_lengths() {
        let mut buf = BytesMut::from(&[b'd', 0, 0, 0, 3][..]);
        assert!(matches!(
            split_frame(&mut buf, MAX_FRAME),
            Err(ReplError::Protocol(_))
        ));
        let mut buf = BytesMut::from(&[b'd', 0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            split_frame(&mut buf, MAX_FRAME),
            Err(ReplError::Protocol(_))
        ));
        let mut buf = BytesMut::from(&[b'R', 0, 0x20, 0, 0][..]);
        assert!(matches!(
            split_frame(&mut buf, STARTUP_MAX_FRAME),
            Err(ReplError::Protocol(_))
        ));
        // Partial header: just wait.
        let mut buf = BytesMut::from(&[b'd', 0, 0][..]);
        assert!(split_frame(&mut buf, MAX_FRAME).unwrap().is_none());
    }

    #[test]
    fn xlogdata_is_zero_copy_slice() {
        let raw = xlogdata(0x1_0000_0010, 0x1_0000_0020, 42, b"Bhello");
        let mut buf = BytesMut::from(&raw[..]);
        let base = buf.as_ptr() as usize;
        let f = split_frame(&mut buf, MAX_FRAME).unwrap().unwrap();
        assert_eq!(f.tag, b'd');
        match parse_copy_data(f.body).unwrap() {
            ReplEvent::XLogData {
                wal_start,
                wal_end,
                server_time,
                data,
            } => {
                assert_eq!(wal_start, 0x1_0000_0010);
                assert_eq!(wal_end, 0x1_0000_0020);
                assert_eq!(server_time, 42);
                assert_eq!(&data[..], b"Bhello");
                // Points into the original buffer: 5 (frame header) + 25.
                assert_eq!(data.as_ptr() as usize, base + 30);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn keepalive_and_bad_copydata() {
        let raw = keepalive(77, -5, true);
        let mut buf = BytesMut::from(&raw[..]);
        let f = split_frame(&mut buf, MAX_FRAME).unwrap().unwrap();
        assert_eq!(
            parse_copy_data(f.body).unwrap(),
            ReplEvent::Keepalive {
                wal_end: 77,
                server_time: -5,
                reply_requested: true
            }
        );
        assert!(parse_copy_data(BytesMut::from(&b"w123"[..])).is_err());
        assert!(parse_copy_data(BytesMut::from(&b"k"[..])).is_err());
        assert!(parse_copy_data(BytesMut::from(&b"x"[..])).is_err());
        assert!(parse_copy_data(BytesMut::new()).is_err());
    }

    #[test]
    fn error_response_fields_and_display() {
        let body = error_body(&[
            (b'S', "FATAL"),
            (b'V', "FATAL"),
            (b'C', "28P01"),
            (b'M', "password authentication failed for user \"bob\""),
            (b'D', "some detail"),
            (b'H', "some hint"),
            (b'R', "auth_failed"),
        ]);
        let e = parse_error_response(&body);
        match &e {
            ReplError::Server { severity, code, .. } => {
                assert_eq!(severity, "FATAL");
                assert_eq!(code, "28P01");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            e.to_string(),
            "FATAL: password authentication failed for user \"bob\" DETAIL: some detail HINT: some hint"
        );
        // Truncated body must not panic.
        let e = parse_error_response(b"SERR");
        assert!(matches!(e, ReplError::Server { .. }));
        let c = ReplError::Connect {
            target: "h:1".into(),
            reason: "Connection refused".into(),
        };
        assert_eq!(
            c.to_string(),
            "could not connect to source server at h:1: Connection refused"
        );
    }

    #[test]
    fn data_row_parsing() {
        let mut b = Vec::new();
        b.extend_from_slice(&3i16.to_be_bytes());
        b.extend_from_slice(&2i32.to_be_bytes());
        b.extend_from_slice(b"ab");
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        assert_eq!(
            parse_data_row(&b).unwrap(),
            vec![Some("ab".to_owned()), None, Some(String::new())]
        );
        assert!(parse_data_row(&b[..7]).is_err());
        assert!(parse_data_row(&[]).is_err());
    }

    #[test]
    fn lsn_version_and_commands() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("bogus"), None);
        assert_eq!(parse_lsn("1/123456789"), None);
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(
            version_num_from_string("15.4 (Debian 15.4-1.pgdg120+1)"),
            150004
        );
        assert_eq!(version_num_from_string("9.6.24"), 90624);
        assert_eq!(version_num_from_string("17beta1"), 170000);
        assert_eq!(version_num_from_string("x"), 0);
        assert_eq!(
            create_slot_command("s\"x", 150000, false),
            "CREATE_REPLICATION_SLOT \"s\"\"x\" LOGICAL pgoutput (SNAPSHOT 'export')"
        );
        assert_eq!(
            create_slot_command("s", 140005, false),
            "CREATE_REPLICATION_SLOT \"s\" LOGICAL pgoutput EXPORT_SNAPSHOT"
        );
        assert_eq!(
            create_slot_command("s", 180000, true),
            "CREATE_REPLICATION_SLOT \"s\" TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export')"
        );
        assert_eq!(
            create_slot_command("s", 140005, true),
            "CREATE_REPLICATION_SLOT \"s\" TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT"
        );
        assert_eq!(
            start_replication_command("s", 0x1_0000_0000, "p'q\"r", 1, false),
            "START_REPLICATION SLOT \"s\" LOGICAL 1/0 (proto_version '1', publication_names '\"p''q\"\"r\"')"
        );
        assert_eq!(
            start_replication_command("s", 5, "p", 2, true),
            "START_REPLICATION SLOT \"s\" LOGICAL 0/5 (proto_version '2', publication_names '\"p\"', messages 'true', streaming 'on')"
        );
    }

    #[test]
    fn status_update_encoding_and_debug() {
        let m = encode_status_update(1, 2, 3, 4, true);
        assert_eq!(m[0], b'r');
        assert_eq!(be_u64(&m, 1), Some(1));
        assert_eq!(be_u64(&m, 9), Some(2));
        assert_eq!(be_u64(&m, 17), Some(3));
        assert_eq!(be_u64(&m, 25), Some(4));
        assert_eq!(m[33], 1);
        // 2000-01-01 is well in the past.
        assert!(pg_now_micros() > 0);

        let p = ConnParams {
            host: "/tmp/sock".into(),
            port: 5433,
            user: "u".into(),
            password: "s3cr3t-pw".into(),
            dbname: "d".into(),
            application_name: "a".into(),
            connect_timeout: Duration::from_secs(1),
            tls: TlsSettings::default(),
            password_required: false,
            replication: true,
        };
        let dbg = format!("{p:?}");
        assert!(!dbg.contains("s3cr3t-pw"));
        assert!(dbg.contains("********"));
        assert_eq!(p.target(), "/tmp/sock/.s.PGSQL.5433");
    }

    fn stream_over(io: tokio::io::DuplexStream) -> ReplStream {
        let mut t = Transport::new(Box::new(io), None);
        t.max_frame = MAX_FRAME;
        ReplStream {
            t,
            ended: false,
            sent_copy_done: false,
        }
    }

    /// next_event over a fake socket: frames split across writes, a
    /// cancelled next_event in the middle, keepalive, error and CopyDone.
    #[tokio::test]
    async fn next_event_split_reads_and_cancel_safety() {
        let (client, mut server) = tokio::io::duplex(4096);
        let mut s = stream_over(client);

        let x1 = xlogdata(10, 20, 1, b"BEGIN-PAYLOAD");
        let (a, b) = x1.split_at(17);
        server.write_all(a).await.unwrap();
        // The half frame is read, then the future is cancelled.
        tokio::select! {
            r = s.next_event() => panic!("must not complete on half a frame: {r:?}"),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        assert_eq!(s.t.rbuf.len(), 17);
        server.write_all(b).await.unwrap();
        let mut more = keepalive(30, 2, false);
        more.extend(frame(b'N', &error_body(&[(b'S', "NOTICE"), (b'M', "hi")])));
        more.extend(xlogdata(30, 40, 3, b"C"));
        server.write_all(&more).await.unwrap();

        match s.next_event().await.unwrap() {
            Some(ReplEvent::XLogData {
                data, wal_start, ..
            }) => {
                assert_eq!(wal_start, 10);
                assert_eq!(&data[..], b"BEGIN-PAYLOAD");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            s.next_event().await.unwrap(),
            Some(ReplEvent::Keepalive { wal_end: 30, .. })
        ));
        assert!(matches!(
            s.next_event().await.unwrap(),
            Some(ReplEvent::XLogData { wal_end: 40, .. })
        ));

        // Status update arrives on the wire as a well-formed CopyData.
        s.send_status(1, 2, 3, true).await.unwrap();
        let mut got = [0u8; 39];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(got[0], b'd');
        assert_eq!(i32::from_be_bytes([got[1], got[2], got[3], got[4]]), 38);
        assert_eq!(got[5], b'r');
        assert_eq!(be_u64(&got, 6), Some(1));
        assert_eq!(be_u64(&got, 14), Some(2));
        assert_eq!(be_u64(&got, 22), Some(3));
        assert_eq!(got[38], 1);

        // Server error, then CopyDone ends the stream.
        server
            .write_all(&frame(
                b'E',
                &error_body(&[(b'S', "ERROR"), (b'C', "XX000"), (b'M', "boom")]),
            ))
            .await
            .unwrap();
        match s.next_event().await {
            Err(ReplError::Server { code, message, .. }) => {
                assert_eq!(code, "XX000");
                assert_eq!(message, "boom");
            }
            other => panic!("unexpected {other:?}"),
        }
        server.write_all(&frame(b'c', b"")).await.unwrap();
        assert!(s.next_event().await.unwrap().is_none());
        assert!(s.next_event().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn next_event_reports_closed() {
        let (client, server) = tokio::io::duplex(64);
        let mut s = stream_over(client);
        drop(server);
        assert!(matches!(s.next_event().await, Err(ReplError::Closed)));
    }

    #[tokio::test]
    async fn close_sends_copydone_and_terminate() {
        let (client, mut server) = tokio::io::duplex(4096);
        let s = stream_over(client);
        let mut reply = xlogdata(1, 2, 3, b"late");
        reply.extend(frame(b'c', b""));
        reply.extend(frame(b'C', b"START_STREAMING\0"));
        reply.extend(frame(b'Z', b"I"));
        server.write_all(&reply).await.unwrap();
        s.close().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, [b'c', 0, 0, 0, 4, b'X', 0, 0, 0, 4]);
    }

    // -----------------------------------------------------------------------
    // Live test against a real server (needs SYNCHDB_TEST_PG* variables).
    // -----------------------------------------------------------------------

    fn env(name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }

    async fn next_xlog(s: &mut ReplStream) -> Option<(u64, Bytes)> {
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(15), s.next_event())
                .await
                .expect("timed out waiting for replication data")
                .expect("next_event failed")?;
            if let ReplEvent::XLogData {
                wal_start, data, ..
            } = ev
            {
                return Some((wal_start, data));
            }
        }
    }

    #[tokio::test]
    async fn live_replication_roundtrip() {
        let Some(port) = env("SYNCHDB_TEST_PGPORT") else {
            println!("skipped: SYNCHDB_TEST_PGPORT not set");
            return;
        };
        let port: u16 = port.parse().expect("SYNCHDB_TEST_PGPORT");
        let params = ConnParams {
            host: env("SYNCHDB_TEST_PGHOST").unwrap_or_else(|| "127.0.0.1".into()),
            port,
            user: env("SYNCHDB_TEST_USER").unwrap_or_else(|| "postgres".into()),
            password: env("SYNCHDB_TEST_PASSWORD").unwrap_or_default(),
            dbname: env("SYNCHDB_TEST_DB").unwrap_or_else(|| "postgres".into()),
            application_name: "synchdb_replconn_test".into(),
            connect_timeout: Duration::from_secs(10),
            tls: TlsSettings::default(),
            password_required: false,
            replication: true,
        };
        let slot = "synchdb_replconn_test_slot";

        // --- connect (scram on the test cluster) + IDENTIFY_SYSTEM ---------
        let mut conn = ReplConnection::connect(&params).await.expect("connect");
        assert!(conn.server_version_num() >= 100000);
        assert!(conn.backend_pid() != 0);
        let ident = conn.simple_query("IDENTIFY_SYSTEM").await.unwrap();
        assert_eq!(ident.len(), 1);
        assert_eq!(ident[0].len(), 4);
        let xlogpos = ident[0][2].clone().unwrap();
        assert!(parse_lsn(&xlogpos).is_some(), "xlogpos {xlogpos}");
        assert_eq!(ident[0][3].as_deref(), Some(params.dbname.as_str()));
        let show = conn.simple_query("SHOW server_version_num").await.unwrap();
        assert_eq!(
            show[0][0].as_deref().map(|v| v.parse::<u32>().unwrap()),
            Some(conn.server_version_num())
        );

        // SQL errors come back verbatim and leave the connection usable.
        match conn.simple_query("SELECT 1/0").await {
            Err(ReplError::Server { code, message, .. }) => {
                assert_eq!(code, "22012");
                assert_eq!(message, "division by zero");
            }
            other => panic!("unexpected {other:?}"),
        }
        let r = conn
            .simple_query("SELECT 1, NULL::text, 'x'")
            .await
            .unwrap();
        assert_eq!(r, vec![vec![Some("1".into()), None, Some("x".into())]]);

        // --- schema ----------------------------------------------------------
        conn.simple_query(&format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name = {}",
            quote_literal(slot)
        ))
        .await
        .unwrap();
        for sql in [
            "DROP PUBLICATION IF EXISTS replconn_pub",
            "DROP TABLE IF EXISTS replconn_t",
            "CREATE TABLE replconn_t (id int PRIMARY KEY, v text)",
            "CREATE PUBLICATION replconn_pub FOR TABLE replconn_t",
        ] {
            conn.simple_query(sql).await.unwrap();
        }

        // --- slot --------------------------------------------------------------
        let info = conn.create_logical_slot(slot).await.expect("create slot");
        assert_eq!(info.slot_name, slot);
        assert!(info.consistent_point > 0);
        let snap = info.snapshot_name.clone().expect("snapshot name");
        assert!(!snap.is_empty());

        // --- changes made on a second connection --------------------------------
        let mut other = ReplConnection::connect(&params).await.expect("connect 2");
        other
            .simple_query(
                "BEGIN; INSERT INTO replconn_t VALUES (1, 'hello-replconn'), (2, NULL); COMMIT",
            )
            .await
            .unwrap();
        other
            .simple_query("SELECT pg_logical_emit_message(true, 'synchdb', 'msg-payload')")
            .await
            .unwrap();

        // --- stream ------------------------------------------------------------
        let mut s = conn
            .start_replication(slot, info.consistent_point, "replconn_pub", 1, true)
            .await
            .expect("start_replication");
        let mut kinds = Vec::new();
        let mut last = 0u64;
        let mut saw_value = false;
        let mut saw_msg = false;
        while kinds.iter().filter(|&&k| k == b'C').count() < 2 {
            let (wal_start, data) = next_xlog(&mut s).await.expect("stream ended early");
            // Relation messages carry wal_start 0; the rest must not go back.
            if wal_start != 0 {
                assert!(wal_start >= last, "wal_start went backwards");
                last = wal_start;
            }
            let kind = data[0];
            kinds.push(kind);
            if kind == b'I' && data.windows(14).any(|w| w == b"hello-replconn") {
                saw_value = true;
            }
            if kind == b'M' && data.windows(11).any(|w| w == b"msg-payload") {
                saw_msg = true;
            }
        }
        assert_eq!(
            kinds,
            vec![b'B', b'R', b'I', b'I', b'C', b'B', b'M', b'C'],
            "message kinds {:?}",
            String::from_utf8_lossy(&kinds)
        );
        assert!(saw_value && saw_msg);

        // Cancel-safety on a live socket: a dropped next_event loses nothing.
        tokio::select! {
            r = s.next_event() => {
                // A keepalive may legitimately arrive; it is not XLogData.
                assert!(!matches!(r, Ok(Some(ReplEvent::XLogData { .. }))), "{r:?}");
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        other
            .simple_query("INSERT INTO replconn_t VALUES (3, 'after-cancel')")
            .await
            .unwrap();
        let (_, d) = next_xlog(&mut s).await.unwrap();
        assert_eq!(d[0], b'B');
        let (_, d) = next_xlog(&mut s).await.unwrap();
        assert_eq!(d[0], b'I');
        assert!(d.windows(12).any(|w| w == b"after-cancel"));
        let (commit_start, d) = next_xlog(&mut s).await.unwrap();
        assert_eq!(d[0], b'C');
        // Commit message: flags(1) commit_lsn(8) end_lsn(8) ts(8).
        let end_lsn = be_u64(&d, 10).unwrap();
        assert!(end_lsn >= commit_start);

        // --- status update: confirmed_flush_lsn moves, reply is honoured -----
        s.send_status(end_lsn, end_lsn, end_lsn, true)
            .await
            .unwrap();
        let got_keepalive = loop {
            match tokio::time::timeout(Duration::from_secs(10), s.next_event()).await {
                Ok(Ok(Some(ReplEvent::Keepalive { .. }))) => break true,
                Ok(Ok(Some(_))) => continue,
                _ => break false,
            }
        };
        assert!(got_keepalive, "no keepalive after reply-requested status");
        let mut confirmed = 0;
        for _ in 0..50 {
            let r = other
                .simple_query(&format!(
                    "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = {}",
                    quote_literal(slot)
                ))
                .await
                .unwrap();
            confirmed = r[0][0].as_deref().and_then(parse_lsn).unwrap_or(0);
            if confirmed >= end_lsn {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(confirmed >= end_lsn, "confirmed_flush_lsn did not advance");

        s.close().await.expect("close stream");

        // Protocol version 2 (adds streaming 'on') is accepted; resuming
        // from the confirmed position yields nothing old.
        let c2 = ReplConnection::connect(&params).await.expect("connect 3");
        let mut s2 = c2
            .start_replication(slot, end_lsn, "replconn_pub", 2, false)
            .await
            .expect("start_replication v2");
        other
            .simple_query("INSERT INTO replconn_t VALUES (4, 'proto-two')")
            .await
            .unwrap();
        let (_, d) = next_xlog(&mut s2).await.unwrap();
        assert_eq!(d[0], b'B');
        s2.close().await.expect("close stream 2");

        // Unknown slot: the server's error comes back as-is.
        let c3 = ReplConnection::connect(&params).await.expect("connect 4");
        match c3
            .start_replication("no_such_slot", 0, "replconn_pub", 1, false)
            .await
        {
            Err(ReplError::Server { code, message, .. }) => {
                assert_eq!(code, "42704");
                assert_eq!(message, "replication slot \"no_such_slot\" does not exist");
            }
            other => panic!("unknown slot: unexpected {other:?}"),
        }

        // --- failures ------------------------------------------------------------
        let mut bad = params.clone();
        bad.password = "definitely-wrong-password".into();
        match ReplConnection::connect(&bad).await {
            Err(e @ ReplError::Server { .. }) => {
                let text = e.to_string();
                assert!(!text.contains("definitely-wrong-password"));
                if let ReplError::Server {
                    code,
                    message,
                    severity,
                    ..
                } = e
                {
                    assert_eq!(code, "28P01");
                    assert_eq!(severity, "FATAL");
                    assert_eq!(
                        message,
                        format!(
                            "password authentication failed for user \"{}\"",
                            params.user
                        )
                    );
                }
            }
            other => panic!("wrong password: unexpected {other:?}"),
        }
        let mut unreachable = params.clone();
        unreachable.host = "127.0.0.1".into();
        unreachable.port = 1;
        match ReplConnection::connect(&unreachable).await {
            Err(e @ ReplError::Unreachable { .. }) => {
                assert!(e.is_transient());
                let ReplError::Unreachable { target, reason } = e else {
                    unreachable!()
                };
                assert_eq!(target, "127.0.0.1:1");
                assert!(!reason.is_empty());
            }
            other => panic!("unreachable: unexpected {other:?}"),
        }
        let mut nohost = params.clone();
        nohost.host = "no-such-host.invalid".into();
        nohost.connect_timeout = Duration::from_secs(5);
        assert!(matches!(
            ReplConnection::connect(&nohost).await,
            Err(ReplError::Unreachable { .. })
        ));

        // md5 user (optional).
        if let (Some(u), Some(pw)) = (
            env("SYNCHDB_TEST_MD5_USER"),
            env("SYNCHDB_TEST_MD5_PASSWORD"),
        ) {
            let mut m = params.clone();
            m.user = u;
            m.password = pw;
            let mut c = ReplConnection::connect(&m).await.expect("md5 connect");
            let r = c.simple_query("SELECT current_user").await.unwrap();
            assert_eq!(r[0][0].as_deref(), Some(m.user.as_str()));
            c.close().await.unwrap();
        }
        // Unix socket (optional).
        if let Some(dir) = env("SYNCHDB_TEST_PGSOCKDIR") {
            let mut u = params.clone();
            u.host = dir;
            let mut c = ReplConnection::connect(&u).await.expect("unix connect");
            let r = c.simple_query("IDENTIFY_SYSTEM").await.unwrap();
            assert_eq!(r.len(), 1);
            c.close().await.unwrap();
        }

        // --- cleanup -----------------------------------------------------------
        other
            .simple_query(&format!("DROP_REPLICATION_SLOT {}", quote_ident(slot)))
            .await
            .expect("drop slot");
        other
            .simple_query("DROP PUBLICATION replconn_pub")
            .await
            .unwrap();
        other.simple_query("DROP TABLE replconn_t").await.unwrap();
        other.close().await.unwrap();
    }
}
