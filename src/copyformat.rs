//! Counting the rows of a COPY stream as it passes, in either format, for the
//! snapshot's progress: text has one line per row; binary has a header, then
//! per row a 16-bit field count and per field a 32-bit length (-1: NULL) and
//! that many bytes, and a trailer of field count -1.

/// Where a binary stream's reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// The fixed header: 11-byte signature, flags, extension length.
    Header { left: usize },
    /// The header extension area.
    Extension { left: u64 },
    /// A row's field count (`have` of its 2 bytes read).
    FieldCount { have: usize, buf: [u8; 2] },
    /// A field's length, `fields` more fields to go after this one.
    FieldLen {
        fields: u16,
        have: usize,
        buf: [u8; 4],
    },
    /// A field's bytes.
    FieldData { fields: u16, left: u64 },
    /// After the trailer.
    End,
}

/// Counts rows of a COPY stream fed in arbitrary pieces.
#[derive(Debug, Clone)]
pub struct RowCounter {
    binary: bool,
    at: At,
    ext_len: [u8; 4],
}

const HEADER_LEN: usize = 11 + 4 + 4;

impl RowCounter {
    pub fn new(binary: bool) -> Self {
        RowCounter {
            binary,
            at: At::Header { left: HEADER_LEN },
            ext_len: [0; 4],
        }
    }

    /// The rows that end in `b`, the next piece of the stream.
    pub fn feed(&mut self, b: &[u8]) -> u64 {
        if !self.binary {
            return b.iter().filter(|&&c| c == b'\n').count() as u64;
        }
        let mut rows = 0;
        let mut i = 0;
        while i < b.len() {
            match self.at {
                At::Header { left } => {
                    let take = left.min(b.len() - i);
                    // the extension length is the header's last 4 bytes
                    for k in 0..take {
                        let pos = HEADER_LEN - left + k;
                        if pos >= HEADER_LEN - 4 {
                            self.ext_len[pos - (HEADER_LEN - 4)] = b[i + k];
                        }
                    }
                    i += take;
                    self.at = if left == take {
                        match u32::from_be_bytes(self.ext_len) {
                            0 => At::FieldCount {
                                have: 0,
                                buf: [0; 2],
                            },
                            n => At::Extension { left: n as u64 },
                        }
                    } else {
                        At::Header { left: left - take }
                    };
                }
                At::Extension { left } => {
                    let take = left.min((b.len() - i) as u64);
                    i += take as usize;
                    self.at = if left == take {
                        At::FieldCount {
                            have: 0,
                            buf: [0; 2],
                        }
                    } else {
                        At::Extension { left: left - take }
                    };
                }
                At::FieldCount { mut have, mut buf } => {
                    while have < 2 && i < b.len() {
                        buf[have] = b[i];
                        have += 1;
                        i += 1;
                    }
                    self.at = if have < 2 {
                        At::FieldCount { have, buf }
                    } else {
                        match i16::from_be_bytes(buf) {
                            n if n < 0 => At::End,
                            0 => {
                                rows += 1;
                                At::FieldCount {
                                    have: 0,
                                    buf: [0; 2],
                                }
                            }
                            n => At::FieldLen {
                                fields: n as u16 - 1,
                                have: 0,
                                buf: [0; 4],
                            },
                        }
                    };
                }
                At::FieldLen {
                    fields,
                    mut have,
                    mut buf,
                } => {
                    while have < 4 && i < b.len() {
                        buf[have] = b[i];
                        have += 1;
                        i += 1;
                    }
                    self.at = if have < 4 {
                        At::FieldLen { fields, have, buf }
                    } else {
                        match i32::from_be_bytes(buf) {
                            n if n > 0 => At::FieldData {
                                fields,
                                left: n as u64,
                            },
                            // NULL or empty: the field is complete
                            _ => self.field_done(fields, &mut rows),
                        }
                    };
                }
                At::FieldData { fields, left } => {
                    let take = left.min((b.len() - i) as u64);
                    i += take as usize;
                    self.at = if left == take {
                        self.field_done(fields, &mut rows)
                    } else {
                        At::FieldData {
                            fields,
                            left: left - take,
                        }
                    };
                }
                At::End => break,
            }
        }
        rows
    }

    fn field_done(&self, fields: u16, rows: &mut u64) -> At {
        if fields == 0 {
            *rows += 1;
            At::FieldCount {
                have: 0,
                buf: [0; 2],
            }
        } else {
            At::FieldLen {
                fields: fields - 1,
                have: 0,
                buf: [0; 4],
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary_stream(rows: &[Vec<Option<&[u8]>>], ext: &[u8]) -> Vec<u8> {
        let mut v = b"PGCOPY\n\xff\r\n\0".to_vec();
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(&(ext.len() as u32).to_be_bytes());
        v.extend_from_slice(ext);
        for r in rows {
            v.extend_from_slice(&(r.len() as i16).to_be_bytes());
            for f in r {
                match f {
                    None => v.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(d) => {
                        v.extend_from_slice(&(d.len() as i32).to_be_bytes());
                        v.extend_from_slice(d);
                    }
                }
            }
        }
        v.extend_from_slice(&(-1i16).to_be_bytes());
        v
    }

    #[test]
    fn text_counts_lines() {
        let mut c = RowCounter::new(false);
        assert_eq!(c.feed(b"1\ta\n2\tb\n3"), 2);
        assert_eq!(c.feed(b"\tc\n"), 1);
    }

    #[test]
    fn binary_counts_rows_whatever_the_pieces() {
        let rows: Vec<Vec<Option<&[u8]>>> = vec![
            vec![Some(b"\0\0\0\x01"), None, Some(b"")],
            vec![Some(b"\0\0\0\x02"), Some(b"\n\n\n"), Some(b"xyz")],
            vec![],
            vec![None, None, None],
        ];
        for ext in [&b""[..], &b"abc"[..]] {
            let s = binary_stream(&rows, ext);
            for piece in 1..=s.len() {
                let mut c = RowCounter::new(true);
                let n: u64 = s.chunks(piece).map(|p| c.feed(p)).sum();
                assert_eq!(n, 4, "pieces of {piece} bytes, extension {ext:?}");
                assert_eq!(c.at, At::End);
            }
        }
    }
}
