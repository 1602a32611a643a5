//! Decoder for the payload of XLogData messages produced by PostgreSQL's
//! `pgoutput` plugin (logical replication protocol version 1, plus the
//! version 2 streaming messages).
//!
//! The input comes from the network, so every read is bounds-checked and any
//! malformed message becomes a [`DecodeError`] naming the byte where decoding
//! stopped; nothing here may panic on hostile or corrupt input.
//!
//! Column values are handed out as slices of the received buffer so that large
//! rows are not copied on their way to the apply side.

use bytes::Bytes;
use std::fmt;

/// A WAL position, as PostgreSQL's `XLogRecPtr`.
pub type Lsn = u64;

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01).
const PG_EPOCH_OFFSET_USEC: i64 = 946_684_800_000_000;

/// Converts a PostgreSQL timestamp to microseconds since the Unix epoch.
///
/// Saturating, because PostgreSQL encodes `infinity` as `i64::MAX` and a
/// corrupt timestamp must not abort the worker with an overflow panic.
pub fn pg_ts_to_unix_usec(ts: i64) -> i64 {
    ts.saturating_add(PG_EPOCH_OFFSET_USEC)
}

/// One column value of a TupleData.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TupleValue {
    Null,
    /// The value is an unchanged TOASTed datum the publisher did not resend;
    /// the subscriber must keep what it already has.
    UnchangedToast,
    Text(Bytes),
    Binary(Bytes),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelColumn {
    /// 1 = part of the replica identity key.
    pub flags: u8,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

/// Which image of the old row an Update or Delete carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldKind {
    /// `'K'`: only the replica identity key columns are meaningful.
    Key,
    /// `'O'`: the whole old row (REPLICA IDENTITY FULL).
    Full,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogicalMessage {
    Begin {
        final_lsn: Lsn,
        /// Microseconds since 2000-01-01.
        commit_ts: i64,
        xid: u32,
    },
    Commit {
        flags: u8,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_ts: i64,
    },
    Origin {
        commit_lsn: Lsn,
        name: String,
    },
    Relation {
        xid: Option<u32>,
        rel_id: u32,
        namespace: String,
        name: String,
        replica_identity: u8,
        columns: Vec<RelColumn>,
    },
    Type {
        xid: Option<u32>,
        type_id: u32,
        namespace: String,
        name: String,
    },
    Insert {
        xid: Option<u32>,
        rel_id: u32,
        new: Vec<TupleValue>,
    },
    Update {
        xid: Option<u32>,
        rel_id: u32,
        old: Option<(OldKind, Vec<TupleValue>)>,
        new: Vec<TupleValue>,
    },
    Delete {
        xid: Option<u32>,
        rel_id: u32,
        old: (OldKind, Vec<TupleValue>),
    },
    Truncate {
        xid: Option<u32>,
        /// Bit 1 = CASCADE, bit 2 = RESTART IDENTITY.
        options: u8,
        rel_ids: Vec<u32>,
    },
    Message {
        xid: Option<u32>,
        transactional: bool,
        lsn: Lsn,
        prefix: String,
        content: Bytes,
    },
    StreamStart {
        xid: u32,
        first_segment: bool,
    },
    StreamStop,
    StreamCommit {
        xid: u32,
        flags: u8,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_ts: i64,
    },
    StreamAbort {
        xid: u32,
        subxid: u32,
    },
}

impl LogicalMessage {
    /// The (sub)transaction a message inside a streamed transaction belongs to.
    pub fn xid(&self) -> Option<u32> {
        match self {
            LogicalMessage::Relation { xid, .. }
            | LogicalMessage::Type { xid, .. }
            | LogicalMessage::Insert { xid, .. }
            | LogicalMessage::Update { xid, .. }
            | LogicalMessage::Delete { xid, .. }
            | LogicalMessage::Truncate { xid, .. }
            | LogicalMessage::Message { xid, .. } => *xid,
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset into the XLogData payload where decoding gave up, so a
    /// dumped payload can be matched against the error.
    pub offset: usize,
    pub reason: String,
}

impl DecodeError {
    fn new(offset: usize, reason: impl Into<String>) -> Self {
        DecodeError {
            offset,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pgoutput message malformed at byte {}: {}",
            self.offset, self.reason
        )
    }
}

impl std::error::Error for DecodeError {}

/// Renders a protocol byte so that both printable tags and binary garbage are
/// recognisable in an error message.
fn describe_byte(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}' (0x{:02X})", b as char, b)
    } else {
        format!("0x{b:02X}")
    }
}

/// Bounds-checked big-endian cursor over one payload.
struct Reader<'a> {
    data: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a Bytes) -> Self {
        Reader { data, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// Reserves `n` bytes and returns where they start; `what` names the
    /// field so a truncation error says which part of the message was cut.
    fn take(&mut self, n: usize, what: &str) -> Result<usize, DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::new(
                self.pos,
                format!(
                    "truncated: {what} needs {n} byte{}, only {} remain",
                    if n == 1 { "" } else { "s" },
                    self.remaining()
                ),
            ));
        }
        let start = self.pos;
        self.pos += n;
        Ok(start)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], DecodeError> {
        let start = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.data[start..start + N]);
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn i16(&mut self, what: &str) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array(what)?))
    }

    fn i32(&mut self, what: &str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    fn i64(&mut self, what: &str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    /// Reads an Int16 count; PostgreSQL writes these from signed ints, so a
    /// negative value can only mean corruption.
    fn count16(&mut self, what: &str) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = self.i16(what)?;
        usize::try_from(n).map_err(|_| DecodeError::new(at, format!("{what} is negative ({n})")))
    }

    /// Reads an Int32 length or count, rejecting negative values for the same
    /// reason as [`Reader::count16`].
    fn count32(&mut self, what: &str) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = self.i32(what)?;
        usize::try_from(n).map_err(|_| DecodeError::new(at, format!("{what} is negative ({n})")))
    }

    /// Returns a zero-copy slice of the payload.
    fn slice(&mut self, n: usize, what: &str) -> Result<Bytes, DecodeError> {
        let start = self.take(n, what)?;
        Ok(self.data.slice(start..start + n))
    }

    fn cstr(&mut self, what: &str) -> Result<String, DecodeError> {
        let start = self.pos;
        let rest = &self.data[start..];
        let len = rest.iter().position(|&b| b == 0).ok_or_else(|| {
            DecodeError::new(
                start,
                format!("{what} is not NUL-terminated before the end of the message"),
            )
        })?;
        let s = std::str::from_utf8(&rest[..len]).map_err(|e| {
            DecodeError::new(
                start + e.valid_up_to(),
                format!("{what} is not valid UTF-8"),
            )
        })?;
        let s = s.to_owned();
        self.pos = start + len + 1;
        Ok(s)
    }

    /// Trailing bytes mean our idea of the layout differs from the sender's
    /// (wrong protocol version or stream state), which would otherwise
    /// silently misdecode later fields.
    fn finish(&self, message: &str) -> Result<(), DecodeError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(DecodeError::new(
                self.pos,
                format!(
                    "{} unexpected trailing byte{} after {message} message",
                    self.remaining(),
                    if self.remaining() == 1 { "" } else { "s" }
                ),
            ))
        }
    }
}

/// Stateful decoder for one replication connection.
///
/// State is needed because streamed transactions (protocol >= 2) prefix the
/// data messages between StreamStart and StreamStop with an xid that is not
/// otherwise present.
#[derive(Debug, Clone)]
pub struct Decoder {
    protocol_version: u32,
    in_stream: bool,
}

impl Decoder {
    pub fn new(protocol_version: u32) -> Self {
        Decoder {
            protocol_version,
            in_stream: false,
        }
    }

    /// A decoder for messages read back from inside one streamed transaction
    /// (each carries its xid).
    pub fn streamed(protocol_version: u32) -> Self {
        Decoder {
            protocol_version,
            in_stream: true,
        }
    }

    pub fn protocol_version(&self) -> u32 {
        self.protocol_version
    }

    /// Whether the next data messages belong to a streamed (in-progress)
    /// transaction.
    pub fn in_stream(&self) -> bool {
        self.in_stream
    }

    /// `data` is the XLogData payload (starting with the message type byte).
    ///
    /// The decoder's stream state only changes when a message decodes
    /// successfully, so a rejected message leaves it usable for diagnosis.
    pub fn decode(&mut self, data: Bytes) -> Result<LogicalMessage, DecodeError> {
        let mut r = Reader::new(&data);
        if data.is_empty() {
            return Err(DecodeError::new(0, "empty message: no message type byte"));
        }
        let tag = r.u8("message type")?;
        let (msg, name) = match tag {
            b'B' => (self.begin(&mut r)?, "Begin"),
            b'C' => (self.commit(&mut r)?, "Commit"),
            b'O' => (self.origin(&mut r)?, "Origin"),
            b'R' => (self.relation(&mut r)?, "Relation"),
            b'Y' => (self.type_msg(&mut r)?, "Type"),
            b'I' => (self.insert(&mut r)?, "Insert"),
            b'U' => (self.update(&mut r)?, "Update"),
            b'D' => (self.delete(&mut r)?, "Delete"),
            b'T' => (self.truncate(&mut r)?, "Truncate"),
            b'M' => (self.message(&mut r)?, "Message"),
            b'S' => (self.stream_start(&mut r)?, "Stream Start"),
            b'E' => {
                self.require_streaming("Stream Stop")?;
                (LogicalMessage::StreamStop, "Stream Stop")
            }
            b'c' => (self.stream_commit(&mut r)?, "Stream Commit"),
            b'A' => (self.stream_abort(&mut r)?, "Stream Abort"),
            other => {
                return Err(DecodeError::new(
                    0,
                    format!("unknown message type byte {}", describe_byte(other)),
                ))
            }
        };
        r.finish(name)?;
        match msg {
            LogicalMessage::StreamStart { .. } => self.in_stream = true,
            LogicalMessage::StreamStop => self.in_stream = false,
            _ => {}
        }
        Ok(msg)
    }

    /// Streaming messages cannot legitimately appear under protocol 1; if
    /// they do, the connection was negotiated with a different version than
    /// this decoder was built for and every later xid would be misread.
    fn require_streaming(&self, name: &str) -> Result<(), DecodeError> {
        if self.protocol_version >= 2 {
            Ok(())
        } else {
            Err(DecodeError::new(
                0,
                format!(
                    "{name} message requires protocol version 2 or later, decoder is at version {}",
                    self.protocol_version
                ),
            ))
        }
    }

    fn stream_xid(&self, r: &mut Reader<'_>) -> Result<Option<u32>, DecodeError> {
        if self.in_stream {
            Ok(Some(r.u32("streamed transaction xid")?))
        } else {
            Ok(None)
        }
    }

    fn begin(&self, r: &mut Reader<'_>) -> Result<LogicalMessage, DecodeError> {
        Ok(LogicalMessage::Begin {
            final_lsn: r.u64("final LSN")?,
            commit_ts: r.i64("commit timestamp")?,
            xid: r.u32("xid")?,
        })
    }

    fn commit(&self, r: &mut Reader<'_>) -> Result<LogicalMessage, DecodeError> {
        Ok(LogicalMessage::Commit {
            flags: r.u8("flags")?,
            commit_lsn: r.u64("commit LSN")?,
            end_lsn: r.u64("end LSN")?,
            commit_ts: r.i64("commit timestamp")?,
        })
    }

    fn origin(&self, r: &mut Reader<'_>) -> Result<LogicalMessage, DecodeError> {
        Ok(LogicalMessage::Origin {
            commit_lsn: r.u64("origin commit LSN")?,
            name: r.cstr("origin name")?,
        })
    }

    fn relation(&self, r: &mut Reader<'_>) -> Result<LogicalMessage, DecodeError> {
        let xid = self.stream_xid(r)?;
        let rel_id = r.u32("relation id")?;
        let namespace = r.cstr("relation namespace")?;
        let name = r.cstr("relation name")?;
        let replica_identity = r.u8("replica identity")?;
        let n = r.count16("relation column count")?;
        // Each column needs at least 10 bytes, so this bounds the allocation
        // by what the payload could actually hold.
        let mut columns = Vec::with_capacity(n.min(r.remaining() / 10));
        for _ in 0..n {
            columns.push(RelColumn {
                flags: r.u8("column flags")?,
                name: r.cstr("column name")?,
                type_oid: r.u32("column type oid")?,
                type_modifier: r.i32("column type modifier")?,
            });
        }
        Ok(LogicalMessage::Relation {
            xid,
            rel_id,
            namespace,
            name,
            replica_identity,
            columns,
        })
    }

    fn type_msg(&self, r: &mut Reader<'_>) -> Result<LogicalMessage, DecodeError> {
        Ok(LogicalMessage::Type {
            xid: self.stream_xid(r)?,
            type_id: r.u32("type id")?,
            namespace: r.cstr("type namespace")?,
            name: r.cstr("type name")?,
        })
    }

    fn insert(&self, r: &mut Reader<'_>) -> Result<LogicalMessage, DecodeError> {
        let xid = self.stream_xid(r)?;
        let rel_id = r.u32("relation id")?;
        let at = r.pos;
        let kind = r.u8("new tuple marker")?;
        if kind != b'N' {
            return Err(DecodeError::new(
                at,
                format!(
                    "Insert has tuple marker {}, expected 'N'",
                    describe_byte(kind)
                ),
            ));
        }
        Ok(LogicalMessage::Insert {
            xid,
            rel_id,
            new: tuple_data(r)?,
        })
    }

    fn update(&self, r: &mut Reader<'_>) -> Result<LogicalMessage, DecodeError> {
        let xid = self.stream_xid(r)?;
        let rel_id = r.u32("relation id")?;
        let at = r.pos;
        let mut kind = r.u8("tuple marker")?;
        let old = match kind {
            b'K' | b'O' => {
                let old_kind = if kind == b'K' {
                    OldKind::Key
                } else {
                    OldKind::Full
                };
                let old = tuple_data(r)?;
                let at = r.pos;
                kind = r.u8("new tuple marker")?;
                if kind != b'N' {
                    return Err(DecodeError::new(
                        at,
                        format!(
                            "Update has tuple marker {} after the old tuple, expected 'N'",
                            describe_byte(kind)
                        ),
                    ));
                }
                Some((old_kind, old))
            }
            b'N' => None,
            other => {
                return Err(DecodeError::new(
                    at,
                    format!(
                        "Update has tuple marker {}, expected 'K', 'O' or 'N'",
                        describe_byte(other)
                    ),
                ))
            }
        };
        Ok(LogicalMessage::Update {
            xid,
            rel_id,
            old,
            new: tuple_data(r)?,
        })
    }

    fn delete(&self, r: &mut Reader<'_>) -> Result<LogicalMessage, DecodeError> {
        let xid = self.stream_xid(r)?;
        let rel_id = r.u32("relation id")?;
        let at = r.pos;
        let kind = match r.u8("old tuple marker")? {
            b'K' => OldKind::Key,
            b'O' => OldKind::Full,
            other => {
                return Err(DecodeError::new(
                    at,
                    format!(
                        "Delete has tuple marker {}, expected 'K' or 'O'",
                        describe_byte(other)
                    ),
                ))
            }
        };
        Ok(LogicalMessage::Delete {
            xid,
            rel_id,
            old: (kind, tuple_data(r)?),
        })
    }

    fn truncate(&self, r: &mut Reader<'_>) -> Result<LogicalMessage, DecodeError> {
        let xid = self.stream_xid(r)?;
        let n = r.count32("relation count")?;
        let options = r.u8("truncate options")?;
        // Checked up front so a huge bogus count fails before allocating.
        if r.remaining() / 4 < n {
            return Err(DecodeError::new(
                r.pos,
                format!(
                    "truncated: {n} relation ids need {} bytes, only {} remain",
                    n.saturating_mul(4),
                    r.remaining()
                ),
            ));
        }
        let mut rel_ids = Vec::with_capacity(n);
        for _ in 0..n {
            rel_ids.push(r.u32("relation id")?);
        }
        Ok(LogicalMessage::Truncate {
            xid,
            options,
            rel_ids,
        })
    }

    fn message(&self, r: &mut Reader<'_>) -> Result<LogicalMessage, DecodeError> {
        let xid = self.stream_xid(r)?;
        let flags = r.u8("message flags")?;
        let lsn = r.u64("message LSN")?;
        let prefix = r.cstr("message prefix")?;
        let len = r.count32("message content length")?;
        let content = r.slice(len, "message content")?;
        Ok(LogicalMessage::Message {
            xid,
            transactional: flags & 1 != 0,
            lsn,
            prefix,
            content,
        })
    }

    fn stream_start(&self, r: &mut Reader<'_>) -> Result<LogicalMessage, DecodeError> {
        self.require_streaming("Stream Start")?;
        Ok(LogicalMessage::StreamStart {
            xid: r.u32("xid")?,
            first_segment: r.u8("first segment flag")? != 0,
        })
    }

    fn stream_commit(&self, r: &mut Reader<'_>) -> Result<LogicalMessage, DecodeError> {
        self.require_streaming("Stream Commit")?;
        Ok(LogicalMessage::StreamCommit {
            xid: r.u32("xid")?,
            flags: r.u8("flags")?,
            commit_lsn: r.u64("commit LSN")?,
            end_lsn: r.u64("end LSN")?,
            commit_ts: r.i64("commit timestamp")?,
        })
    }

    fn stream_abort(&self, r: &mut Reader<'_>) -> Result<LogicalMessage, DecodeError> {
        self.require_streaming("Stream Abort")?;
        let msg = LogicalMessage::StreamAbort {
            xid: r.u32("xid")?,
            subxid: r.u32("subtransaction xid")?,
        };
        // Protocol 4 with parallel streaming appends the abort LSN and
        // timestamp; they are not needed here, but must not be mistaken for
        // garbage.
        if self.protocol_version >= 4 && r.remaining() == 16 {
            r.take(16, "abort LSN and timestamp")?;
        }
        Ok(msg)
    }
}

fn tuple_data(r: &mut Reader<'_>) -> Result<Vec<TupleValue>, DecodeError> {
    let n = r.count16("tuple column count")?;
    // Every column takes at least its kind byte.
    let mut values = Vec::with_capacity(n.min(r.remaining()));
    for i in 0..n {
        let at = r.pos;
        let value = match r.u8("tuple column kind")? {
            b'n' => TupleValue::Null,
            b'u' => TupleValue::UnchangedToast,
            b't' => {
                let len = r.count32("text value length")?;
                TupleValue::Text(r.slice(len, "text value")?)
            }
            b'b' => {
                let len = r.count32("binary value length")?;
                TupleValue::Binary(r.slice(len, "binary value")?)
            }
            other => {
                return Err(DecodeError::new(
                    at,
                    format!(
                        "tuple column {i} has kind {}, expected 'n', 'u', 't' or 'b'",
                        describe_byte(other)
                    ),
                ))
            }
        };
        values.push(value);
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minimal big-endian writer so fixtures read like the documented layout.
    #[derive(Default)]
    struct W(Vec<u8>);

    impl W {
        fn tag(c: u8) -> Self {
            W(vec![c])
        }
        fn u8(mut self, v: u8) -> Self {
            self.0.push(v);
            self
        }
        fn i16(mut self, v: i16) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i32(mut self, v: i32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn u32(mut self, v: u32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn u64(mut self, v: u64) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i64(mut self, v: i64) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn s(mut self, v: &str) -> Self {
            self.0.extend_from_slice(v.as_bytes());
            self.0.push(0);
            self
        }
        fn raw(mut self, v: &[u8]) -> Self {
            self.0.extend_from_slice(v);
            self
        }
        fn text(self, v: &str) -> Self {
            self.u8(b't').i32(v.len() as i32).raw(v.as_bytes())
        }
        fn bin(self, v: &[u8]) -> Self {
            self.u8(b'b').i32(v.len() as i32).raw(v)
        }
        fn bytes(self) -> Bytes {
            Bytes::from(self.0)
        }
    }

    fn dec(v: u32, data: impl Into<Bytes>) -> Result<LogicalMessage, DecodeError> {
        Decoder::new(v).decode(data.into())
    }

    fn text(s: &str) -> TupleValue {
        TupleValue::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn begin_literal() {
        let data: &[u8] = &[
            b'B', // type
            0x00, 0x00, 0x00, 0x00, 0x02, 0x35, 0x5A, 0x70, // final LSN 0/2355A70
            0x00, 0x02, 0xD8, 0x6B, 0x5A, 0x1D, 0x9C, 0x40, // commit ts
            0x00, 0x00, 0x03, 0xEF, // xid 1007
        ];
        assert_eq!(
            dec(1, data).unwrap(),
            LogicalMessage::Begin {
                final_lsn: 0x0235_5A70,
                commit_ts: 0x0002_D86B_5A1D_9C40,
                xid: 1007,
            }
        );
    }

    #[test]
    fn commit_literal() {
        let data: &[u8] = &[
            b'C', 0x00, // flags
            0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x10, // commit LSN 1/10
            0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x48, // end LSN 1/48
            0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE, // ts -2
        ];
        assert_eq!(
            dec(1, data).unwrap(),
            LogicalMessage::Commit {
                flags: 0,
                commit_lsn: 0x1_0000_0010,
                end_lsn: 0x1_0000_0048,
                commit_ts: -2,
            }
        );
    }

    #[test]
    fn origin() {
        let data = W::tag(b'O').u64(0xABCD_0000_1234).s("node_a").bytes();
        assert_eq!(
            dec(1, data).unwrap(),
            LogicalMessage::Origin {
                commit_lsn: 0xABCD_0000_1234,
                name: "node_a".into(),
            }
        );
    }

    #[test]
    fn relation_with_key_and_no_typmod() {
        let data = W::tag(b'R')
            .u32(16_385)
            .s("public")
            .s("orders")
            .u8(b'd')
            .i16(3)
            .u8(1)
            .s("id")
            .u32(23)
            .i32(-1)
            .u8(0)
            .s("note")
            .u32(1043)
            .i32(68) // varchar(64): typmod includes the 4-byte header
            .u8(0)
            .s("prénom")
            .u32(25)
            .i32(-1)
            .bytes();
        assert_eq!(
            dec(1, data).unwrap(),
            LogicalMessage::Relation {
                xid: None,
                rel_id: 16_385,
                namespace: "public".into(),
                name: "orders".into(),
                replica_identity: b'd',
                columns: vec![
                    RelColumn {
                        flags: 1,
                        name: "id".into(),
                        type_oid: 23,
                        type_modifier: -1,
                    },
                    RelColumn {
                        flags: 0,
                        name: "note".into(),
                        type_oid: 1043,
                        type_modifier: 68,
                    },
                    RelColumn {
                        flags: 0,
                        name: "prénom".into(),
                        type_oid: 25,
                        type_modifier: -1,
                    },
                ],
            }
        );
    }

    #[test]
    fn relation_pg_catalog_has_empty_namespace_and_no_columns() {
        let data = W::tag(b'R').u32(7).s("").s("t").u8(b'n').i16(0).bytes();
        assert_eq!(
            dec(1, data).unwrap(),
            LogicalMessage::Relation {
                xid: None,
                rel_id: 7,
                namespace: String::new(),
                name: "t".into(),
                replica_identity: b'n',
                columns: vec![],
            }
        );
    }

    #[test]
    fn type_message() {
        let data = W::tag(b'Y').u32(16_400).s("public").s("mood").bytes();
        assert_eq!(
            dec(1, data).unwrap(),
            LogicalMessage::Type {
                xid: None,
                type_id: 16_400,
                namespace: "public".into(),
                name: "mood".into(),
            }
        );
    }

    #[test]
    fn insert_all_value_kinds() {
        let data = W::tag(b'I')
            .u32(16_385)
            .u8(b'N')
            .i16(5)
            .text("42")
            .u8(b'n')
            .u8(b'u')
            .bin(&[0x00, 0xFF, 0x10])
            .text("")
            .bytes();
        assert_eq!(
            dec(1, data).unwrap(),
            LogicalMessage::Insert {
                xid: None,
                rel_id: 16_385,
                new: vec![
                    text("42"),
                    TupleValue::Null,
                    TupleValue::UnchangedToast,
                    TupleValue::Binary(Bytes::from_static(&[0x00, 0xFF, 0x10])),
                    text(""),
                ],
            }
        );
    }

    #[test]
    fn insert_values_borrow_the_input_buffer() {
        let data = W::tag(b'I').u32(1).u8(b'N').i16(1).text("hello").bytes();
        let range = data.as_ptr_range();
        let LogicalMessage::Insert { new, .. } = dec(1, data.clone()).unwrap() else {
            panic!("not an insert");
        };
        let TupleValue::Text(v) = &new[0] else {
            panic!("not text");
        };
        assert_eq!(&v[..], b"hello");
        assert!(range.contains(&v.as_ptr()));
        // 'I' + relid(4) + 'N' + natts(2) + 't' + len(4) = 13
        assert_eq!(v.as_ptr(), data[13..].as_ptr());
    }

    #[test]
    fn update_without_old() {
        let data = W::tag(b'U')
            .u32(10)
            .u8(b'N')
            .i16(2)
            .text("1")
            .text("b")
            .bytes();
        assert_eq!(
            dec(1, data).unwrap(),
            LogicalMessage::Update {
                xid: None,
                rel_id: 10,
                old: None,
                new: vec![text("1"), text("b")],
            }
        );
    }

    #[test]
    fn update_with_key() {
        let data = W::tag(b'U')
            .u32(10)
            .u8(b'K')
            .i16(2)
            .text("1")
            .u8(b'n')
            .u8(b'N')
            .i16(2)
            .text("2")
            .u8(b'u')
            .bytes();
        assert_eq!(
            dec(1, data).unwrap(),
            LogicalMessage::Update {
                xid: None,
                rel_id: 10,
                old: Some((OldKind::Key, vec![text("1"), TupleValue::Null])),
                new: vec![text("2"), TupleValue::UnchangedToast],
            }
        );
    }

    #[test]
    fn update_with_full_old_row() {
        let data = W::tag(b'U')
            .u32(11)
            .u8(b'O')
            .i16(2)
            .text("1")
            .text("a")
            .u8(b'N')
            .i16(2)
            .text("1")
            .text("b")
            .bytes();
        assert_eq!(
            dec(1, data).unwrap(),
            LogicalMessage::Update {
                xid: None,
                rel_id: 11,
                old: Some((OldKind::Full, vec![text("1"), text("a")])),
                new: vec![text("1"), text("b")],
            }
        );
    }

    #[test]
    fn delete_key_and_full() {
        let key = W::tag(b'D')
            .u32(12)
            .u8(b'K')
            .i16(2)
            .text("7")
            .u8(b'n')
            .bytes();
        assert_eq!(
            dec(1, key).unwrap(),
            LogicalMessage::Delete {
                xid: None,
                rel_id: 12,
                old: (OldKind::Key, vec![text("7"), TupleValue::Null]),
            }
        );
        let full = W::tag(b'D')
            .u32(12)
            .u8(b'O')
            .i16(2)
            .text("7")
            .text("x")
            .bytes();
        assert_eq!(
            dec(1, full).unwrap(),
            LogicalMessage::Delete {
                xid: None,
                rel_id: 12,
                old: (OldKind::Full, vec![text("7"), text("x")]),
            }
        );
    }

    #[test]
    fn truncate_several_relations() {
        let data = W::tag(b'T')
            .i32(3)
            .u8(3)
            .u32(16_385)
            .u32(16_390)
            .u32(u32::MAX)
            .bytes();
        assert_eq!(
            dec(1, data).unwrap(),
            LogicalMessage::Truncate {
                xid: None,
                options: 3,
                rel_ids: vec![16_385, 16_390, u32::MAX],
            }
        );
    }

    #[test]
    fn message_transactional_and_not() {
        let tx = W::tag(b'M')
            .u8(1)
            .u64(0x0300_0000)
            .s("synchdb")
            .i32(3)
            .raw(b"a\0b")
            .bytes();
        assert_eq!(
            dec(1, tx).unwrap(),
            LogicalMessage::Message {
                xid: None,
                transactional: true,
                lsn: 0x0300_0000,
                prefix: "synchdb".into(),
                content: Bytes::from_static(b"a\0b"),
            }
        );
        let non_tx = W::tag(b'M').u8(0).u64(5).s("p").i32(0).bytes();
        assert_eq!(
            dec(1, non_tx).unwrap(),
            LogicalMessage::Message {
                xid: None,
                transactional: false,
                lsn: 5,
                prefix: "p".into(),
                content: Bytes::new(),
            }
        );
    }

    #[test]
    fn stream_sequence_carries_xids() {
        let mut d = Decoder::new(2);
        assert!(!d.in_stream());

        let start = W::tag(b'S').u32(900).u8(1).bytes();
        assert_eq!(
            d.decode(start).unwrap(),
            LogicalMessage::StreamStart {
                xid: 900,
                first_segment: true,
            }
        );
        assert!(d.in_stream());

        let rel = W::tag(b'R')
            .u32(900)
            .u32(5)
            .s("s")
            .s("t")
            .u8(b'f')
            .i16(1)
            .u8(1)
            .s("k")
            .u32(20)
            .i32(-1)
            .bytes();
        assert_eq!(
            d.decode(rel).unwrap(),
            LogicalMessage::Relation {
                xid: Some(900),
                rel_id: 5,
                namespace: "s".into(),
                name: "t".into(),
                replica_identity: b'f',
                columns: vec![RelColumn {
                    flags: 1,
                    name: "k".into(),
                    type_oid: 20,
                    type_modifier: -1,
                }],
            }
        );

        let ins = W::tag(b'I')
            .u32(901)
            .u32(5)
            .u8(b'N')
            .i16(1)
            .text("99")
            .bytes();
        assert_eq!(
            d.decode(ins).unwrap(),
            LogicalMessage::Insert {
                xid: Some(901),
                rel_id: 5,
                new: vec![text("99")],
            }
        );

        let upd = W::tag(b'U')
            .u32(900)
            .u32(5)
            .u8(b'N')
            .i16(1)
            .text("100")
            .bytes();
        assert_eq!(
            d.decode(upd).unwrap(),
            LogicalMessage::Update {
                xid: Some(900),
                rel_id: 5,
                old: None,
                new: vec![text("100")],
            }
        );

        let del = W::tag(b'D')
            .u32(900)
            .u32(5)
            .u8(b'K')
            .i16(1)
            .text("100")
            .bytes();
        assert_eq!(
            d.decode(del).unwrap(),
            LogicalMessage::Delete {
                xid: Some(900),
                rel_id: 5,
                old: (OldKind::Key, vec![text("100")]),
            }
        );

        let typ = W::tag(b'Y').u32(900).u32(77).s("s").s("e").bytes();
        assert_eq!(
            d.decode(typ).unwrap(),
            LogicalMessage::Type {
                xid: Some(900),
                type_id: 77,
                namespace: "s".into(),
                name: "e".into(),
            }
        );

        let tr = W::tag(b'T').u32(900).i32(1).u8(0).u32(5).bytes();
        assert_eq!(
            d.decode(tr).unwrap(),
            LogicalMessage::Truncate {
                xid: Some(900),
                options: 0,
                rel_ids: vec![5],
            }
        );

        let msg = W::tag(b'M')
            .u32(900)
            .u8(1)
            .u64(64)
            .s("x")
            .i32(1)
            .raw(b"!")
            .bytes();
        assert_eq!(
            d.decode(msg).unwrap(),
            LogicalMessage::Message {
                xid: Some(900),
                transactional: true,
                lsn: 64,
                prefix: "x".into(),
                content: Bytes::from_static(b"!"),
            }
        );

        assert_eq!(
            d.decode(Bytes::from_static(b"E")).unwrap(),
            LogicalMessage::StreamStop
        );
        assert!(!d.in_stream());

        // Outside the stream the xid prefix disappears again.
        let ins = W::tag(b'I').u32(5).u8(b'N').i16(1).u8(b'n').bytes();
        assert_eq!(
            d.decode(ins).unwrap(),
            LogicalMessage::Insert {
                xid: None,
                rel_id: 5,
                new: vec![TupleValue::Null],
            }
        );

        let second = W::tag(b'S').u32(900).u8(0).bytes();
        assert_eq!(
            d.decode(second).unwrap(),
            LogicalMessage::StreamStart {
                xid: 900,
                first_segment: false,
            }
        );
        assert_eq!(
            d.decode(Bytes::from_static(b"E")).unwrap(),
            LogicalMessage::StreamStop
        );

        let commit = W::tag(b'c')
            .u32(900)
            .u8(0)
            .u64(0x0500_0000)
            .u64(0x0500_0040)
            .i64(820_000_000_000_000)
            .bytes();
        assert_eq!(
            d.decode(commit).unwrap(),
            LogicalMessage::StreamCommit {
                xid: 900,
                flags: 0,
                commit_lsn: 0x0500_0000,
                end_lsn: 0x0500_0040,
                commit_ts: 820_000_000_000_000,
            }
        );
    }

    #[test]
    fn stream_abort() {
        let data = W::tag(b'A').u32(900).u32(905).bytes();
        assert_eq!(
            dec(2, data).unwrap(),
            LogicalMessage::StreamAbort {
                xid: 900,
                subxid: 905,
            }
        );
        // Protocol 4 parallel streaming appends abort LSN and timestamp.
        let v4 = W::tag(b'A').u32(900).u32(900).u64(1).i64(2).bytes();
        assert_eq!(
            dec(4, v4.clone()).unwrap(),
            LogicalMessage::StreamAbort {
                xid: 900,
                subxid: 900,
            }
        );
        let err = dec(2, v4).unwrap_err();
        assert_eq!(err.offset, 9);
        assert_eq!(
            err.reason,
            "16 unexpected trailing bytes after Stream Abort message"
        );
    }

    #[test]
    fn stream_messages_rejected_under_protocol_1() {
        let mut d = Decoder::new(1);
        let err = d.decode(W::tag(b'S').u32(1).u8(1).bytes()).unwrap_err();
        assert_eq!(err.offset, 0);
        assert_eq!(
            err.reason,
            "Stream Start message requires protocol version 2 or later, decoder is at version 1"
        );
        assert!(!d.in_stream());
        assert!(d.decode(Bytes::from_static(b"E")).is_err());
        assert!(d.decode(W::tag(b'A').u32(1).u32(1).bytes()).is_err());
    }

    #[test]
    fn failed_stream_start_does_not_enter_stream() {
        let mut d = Decoder::new(2);
        assert!(d.decode(W::tag(b'S').u32(1).bytes()).is_err());
        assert!(!d.in_stream());
    }

    #[test]
    fn truncated_at_several_points() {
        let err = dec(1, Bytes::new()).unwrap_err();
        assert_eq!(err.offset, 0);
        assert_eq!(err.reason, "empty message: no message type byte");

        let err = dec(1, &b"B\0\0\0"[..]).unwrap_err();
        assert_eq!(err.offset, 1);
        assert_eq!(
            err.reason,
            "truncated: final LSN needs 8 bytes, only 3 remain"
        );

        let begin = W::tag(b'B').u64(1).i64(2).u32(3).bytes();
        let err = dec(1, begin.slice(..19)).unwrap_err();
        assert_eq!(err.offset, 17);
        assert_eq!(err.reason, "truncated: xid needs 4 bytes, only 2 remain");

        // Text value claims 10 bytes but only 3 follow.
        let data = W::tag(b'I')
            .u32(1)
            .u8(b'N')
            .i16(1)
            .u8(b't')
            .i32(10)
            .raw(b"abc")
            .bytes();
        let err = dec(1, data).unwrap_err();
        assert_eq!(err.offset, 13);
        assert_eq!(
            err.reason,
            "truncated: text value needs 10 bytes, only 3 remain"
        );

        // Tuple announces two columns but carries one.
        let data = W::tag(b'I').u32(1).u8(b'N').i16(2).u8(b'n').bytes();
        let err = dec(1, data).unwrap_err();
        assert_eq!(err.offset, 9);
        assert_eq!(
            err.reason,
            "truncated: tuple column kind needs 1 byte, only 0 remain"
        );

        // Huge relation count must fail cleanly, not allocate.
        let data = W::tag(b'T').i32(i32::MAX).u8(0).u32(1).bytes();
        let err = dec(1, data).unwrap_err();
        assert_eq!(err.offset, 6);
        assert_eq!(
            err.reason,
            "truncated: 2147483647 relation ids need 8589934588 bytes, only 4 remain"
        );

        let data = W::tag(b'M').u8(0).u64(1).s("p").i32(5).raw(b"ab").bytes();
        let err = dec(1, data).unwrap_err();
        assert_eq!(err.offset, 16);
        assert_eq!(
            err.reason,
            "truncated: message content needs 5 bytes, only 2 remain"
        );
    }

    #[test]
    fn every_prefix_of_every_fixture_is_an_error() {
        let fixtures: Vec<(u32, bool, Bytes)> = vec![
            (1, false, W::tag(b'B').u64(1).i64(2).u32(3).bytes()),
            (1, false, W::tag(b'C').u8(0).u64(1).u64(2).i64(3).bytes()),
            (1, false, W::tag(b'O').u64(1).s("o").bytes()),
            (
                1,
                false,
                W::tag(b'R')
                    .u32(1)
                    .s("n")
                    .s("r")
                    .u8(b'd')
                    .i16(1)
                    .u8(1)
                    .s("c")
                    .u32(23)
                    .i32(-1)
                    .bytes(),
            ),
            (1, false, W::tag(b'Y').u32(1).s("n").s("t").bytes()),
            (
                1,
                false,
                W::tag(b'I')
                    .u32(1)
                    .u8(b'N')
                    .i16(4)
                    .text("ab")
                    .u8(b'n')
                    .u8(b'u')
                    .bin(b"\x01")
                    .bytes(),
            ),
            (
                1,
                false,
                W::tag(b'U')
                    .u32(1)
                    .u8(b'O')
                    .i16(1)
                    .text("a")
                    .u8(b'N')
                    .i16(1)
                    .text("b")
                    .bytes(),
            ),
            (
                1,
                false,
                W::tag(b'D').u32(1).u8(b'K').i16(1).text("a").bytes(),
            ),
            (1, false, W::tag(b'T').i32(2).u8(1).u32(1).u32(2).bytes()),
            (
                1,
                false,
                W::tag(b'M').u8(1).u64(1).s("p").i32(2).raw(b"xy").bytes(),
            ),
            (2, false, W::tag(b'S').u32(1).u8(1).bytes()),
            (
                2,
                false,
                W::tag(b'c').u32(1).u8(0).u64(1).u64(2).i64(3).bytes(),
            ),
            (2, false, W::tag(b'A').u32(1).u32(2).bytes()),
            (
                2,
                true,
                W::tag(b'I').u32(7).u32(1).u8(b'N').i16(1).text("a").bytes(),
            ),
        ];
        for (version, in_stream, full) in fixtures {
            let mut d = Decoder::new(version);
            if in_stream {
                d.decode(W::tag(b'S').u32(7).u8(1).bytes()).unwrap();
            }
            d.clone().decode(full.clone()).unwrap();
            for len in 0..full.len() {
                let err = d.clone().decode(full.slice(..len)).unwrap_err();
                assert!(
                    err.offset <= len,
                    "offset {} beyond prefix length {len} for {:?}",
                    err.offset,
                    &full[..]
                );
                assert!(!err.reason.is_empty());
            }
        }
    }

    #[test]
    fn unknown_type_byte() {
        let err = dec(1, &b"Z\0\0"[..]).unwrap_err();
        assert_eq!(err.offset, 0);
        assert_eq!(err.reason, "unknown message type byte 'Z' (0x5A)");
        assert_eq!(
            err.to_string(),
            "pgoutput message malformed at byte 0: unknown message type byte 'Z' (0x5A)"
        );
        let err = dec(1, &[0x00u8][..]).unwrap_err();
        assert_eq!(err.reason, "unknown message type byte 0x00");
        // Two-phase messages (protocol 3) are not supported.
        let err = dec(2, W::tag(b'P').u64(1).bytes()).unwrap_err();
        assert_eq!(err.reason, "unknown message type byte 'P' (0x50)");
    }

    #[test]
    fn bad_tuple_kind_bytes() {
        let data = W::tag(b'I')
            .u32(1)
            .u8(b'N')
            .i16(2)
            .u8(b'n')
            .u8(b'x')
            .bytes();
        let err = dec(1, data).unwrap_err();
        assert_eq!(err.offset, 9);
        assert_eq!(
            err.reason,
            "tuple column 1 has kind 'x' (0x78), expected 'n', 'u', 't' or 'b'"
        );

        let data = W::tag(b'I').u32(1).u8(b'K').i16(0).bytes();
        let err = dec(1, data).unwrap_err();
        assert_eq!(err.offset, 5);
        assert_eq!(
            err.reason,
            "Insert has tuple marker 'K' (0x4B), expected 'N'"
        );

        let data = W::tag(b'U').u32(1).u8(b'X').i16(0).bytes();
        let err = dec(1, data).unwrap_err();
        assert_eq!(err.offset, 5);
        assert_eq!(
            err.reason,
            "Update has tuple marker 'X' (0x58), expected 'K', 'O' or 'N'"
        );

        let data = W::tag(b'U').u32(1).u8(b'K').i16(0).u8(b'K').i16(0).bytes();
        let err = dec(1, data).unwrap_err();
        assert_eq!(err.offset, 8);
        assert_eq!(
            err.reason,
            "Update has tuple marker 'K' (0x4B) after the old tuple, expected 'N'"
        );

        let data = W::tag(b'D').u32(1).u8(b'N').i16(0).bytes();
        let err = dec(1, data).unwrap_err();
        assert_eq!(err.offset, 5);
        assert_eq!(
            err.reason,
            "Delete has tuple marker 'N' (0x4E), expected 'K' or 'O'"
        );
    }

    #[test]
    fn negative_lengths_and_counts() {
        let data = W::tag(b'I').u32(1).u8(b'N').i16(1).u8(b'b').i32(-1).bytes();
        let err = dec(1, data).unwrap_err();
        assert_eq!(err.offset, 9);
        assert_eq!(err.reason, "binary value length is negative (-1)");

        let data = W::tag(b'I').u32(1).u8(b'N').i16(-3).bytes();
        let err = dec(1, data).unwrap_err();
        assert_eq!(err.offset, 6);
        assert_eq!(err.reason, "tuple column count is negative (-3)");

        let data = W::tag(b'T').i32(-1).u8(0).bytes();
        let err = dec(1, data).unwrap_err();
        assert_eq!(err.offset, 1);
        assert_eq!(err.reason, "relation count is negative (-1)");
    }

    #[test]
    fn strings_must_be_terminated_and_utf8() {
        let data = W::tag(b'O').u64(1).raw(b"no_nul").bytes();
        let err = dec(1, data).unwrap_err();
        assert_eq!(err.offset, 9);
        assert_eq!(
            err.reason,
            "origin name is not NUL-terminated before the end of the message"
        );

        let data = W::tag(b'Y').u32(1).s("ok").raw(b"ab\xFFcd\0").bytes();
        let err = dec(1, data).unwrap_err();
        assert_eq!(err.offset, 10);
        assert_eq!(err.reason, "type name is not valid UTF-8");
    }

    #[test]
    fn trailing_bytes_rejected() {
        let data = W::tag(b'E').u8(0).bytes();
        let err = dec(2, data).unwrap_err();
        assert_eq!(err.offset, 1);
        assert_eq!(
            err.reason,
            "1 unexpected trailing byte after Stream Stop message"
        );

        // An xid-prefixed insert fed to a decoder that is not in a stream is
        // misaligned and must not decode silently.
        let data = W::tag(b'I').u32(7).u32(1).u8(b'N').i16(0).bytes();
        assert!(dec(2, data).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // Deterministic xorshift so failures are reproducible.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let tags = b"BCORYIUDTMSEcA";
        for i in 0..20_000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 48) as usize;
            let mut buf = Vec::with_capacity(len + 1);
            buf.push(tags[(state >> 8) as usize % tags.len()]);
            let mut s = state;
            for _ in 0..len {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                // Bias towards small bytes so counts and kinds look plausible.
                let b = (s >> 56) as u8;
                buf.push(if b < 160 { b % 8 } else { b });
            }
            let mut d = Decoder::new(1 + i % 2);
            if i % 4 == 1 {
                let _ = d.decode(W::tag(b'S').u32(1).u8(1).bytes());
            }
            let _ = d.decode(Bytes::from(buf));
        }
    }

    #[test]
    fn timestamp_conversion() {
        assert_eq!(pg_ts_to_unix_usec(0), 946_684_800_000_000);
        assert_eq!(
            pg_ts_to_unix_usec(820_523_315_470_483),
            1_767_208_115_470_483
        );
        assert_eq!(pg_ts_to_unix_usec(-946_684_800_000_000), 0);
        assert_eq!(pg_ts_to_unix_usec(i64::MAX), i64::MAX);
    }
}
