//! The Debezium-style offset shown in `synchdb_state_view.last_dbz_offset`,
//! and parsing of what users hand back to `synchdb_set_offset`.
//!
//! The JSON layout mirrors what the original Debezium-based synchdb showed,
//! so that existing monitoring and copy-paste habits keep working.

use serde_json::Value;
use std::fmt;

/// Shown instead of an offset before the first one has been persisted.
pub const NOT_FLUSHED: &str = "offset file not flushed yet";

/// Example used in error messages so users see the accepted form.
const LSN_EXAMPLE: &str = "0/16B3748";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MessageType {
    #[default]
    Insert,
    Update,
    Delete,
    Truncate,
    Begin,
    Commit,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Insert => "INSERT",
            MessageType::Update => "UPDATE",
            MessageType::Delete => "DELETE",
            MessageType::Truncate => "TRUNCATE",
            MessageType::Begin => "BEGIN",
            MessageType::Commit => "COMMIT",
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offset {
    /// LSN of the change last processed.
    pub lsn_proc: u64,
    /// Commit LSN of the last fully applied transaction; resuming from here
    /// never skips an unapplied change.
    pub lsn_commit: u64,
    pub lsn: u64,
    pub tx_id: u32,
    /// Unix microseconds.
    pub ts_usec: i64,
    pub message_type: MessageType,
}

impl Offset {
    /// Formatted by hand rather than through serde so the key order matches
    /// Debezium's exactly; consumers compare the string as shown.
    pub fn to_json(&self) -> String {
        format!(
            concat!(
                "{{\"lsn_proc\":{},\"messageType\":\"{}\",\"lsn_commit\":{},",
                "\"lsn\":{},\"txId\":{},\"ts_usec\":{}}}"
            ),
            self.lsn_proc, self.message_type, self.lsn_commit, self.lsn, self.tx_id, self.ts_usec
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetError(pub String);

impl fmt::Display for OffsetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OffsetError {}

/// Quotes user input for an error message, cut short so a pasted blob does
/// not flood the log.
fn quote(input: &str) -> String {
    const MAX_CHARS: usize = 80;
    if input.chars().count() <= MAX_CHARS {
        format!("{input:?}")
    } else {
        let head: String = input.chars().take(MAX_CHARS).collect();
        format!("{head:?}...")
    }
}

/// Parses PostgreSQL's textual LSN form `X/Y` (each half 1 to 8 hex digits,
/// either case), as `pg_lsn` accepts it.
pub fn parse_lsn(s: &str) -> Result<u64, OffsetError> {
    let trimmed = s.trim();
    let bad = || {
        OffsetError(format!(
            "invalid LSN {}: expected two hexadecimal numbers of at most 8 digits separated by a slash, like {LSN_EXAMPLE}",
            quote(s)
        ))
    };
    let (hi, lo) = trimmed.split_once('/').ok_or_else(bad)?;
    let half = |part: &str| -> Option<u64> {
        if part.is_empty() || part.len() > 8 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(part, 16).ok()
    };
    match (half(hi), half(lo)) {
        (Some(hi), Some(lo)) => Ok((hi << 32) | lo),
        _ => Err(bad()),
    }
}

/// Formats like PostgreSQL's `pg_lsn` output, so values can be pasted into
/// SQL and compared with `pg_current_wal_lsn()`.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Reads one LSN field of the offset JSON. Numbers are what `to_json`
/// writes; strings allow the `X/Y` form users copy from PostgreSQL.
fn lsn_field(obj: &serde_json::Map<String, Value>, key: &str) -> Result<Option<u64>, OffsetError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
            OffsetError(format!(
                "invalid offset field \"{key}\": {n} is not a non-negative integer; expected a decimal LSN like 37051152 or a string like \"{LSN_EXAMPLE}\""
            ))
        }),
        Some(Value::String(s)) => parse_lsn(s)
            .map(Some)
            .map_err(|e| OffsetError(format!("invalid offset field \"{key}\": {e}"))),
        Some(other) => Err(OffsetError(format!(
            "invalid offset field \"{key}\": {other} is neither a number nor a string; expected a decimal LSN like 37051152 or a string like \"{LSN_EXAMPLE}\""
        ))),
    }
}

/// Accepts what `synchdb_set_offset` is given: the JSON shown in the state
/// view (keys in any order, unknown keys ignored, LSNs as numbers or `X/Y`
/// strings) or a plain `X/Y` LSN.
///
/// The commit LSN is preferred because resuming from a transaction boundary
/// is what the replication slot can honour without re-sending half a
/// transaction; `lsn` and then `lsn_proc` are fallbacks for hand-written
/// offsets that only carry one of them.
pub fn parse_resume_lsn(input: &str) -> Result<u64, OffsetError> {
    let trimmed = input.trim();
    if trimmed.starts_with('{') {
        let value: Value = serde_json::from_str(trimmed).map_err(|e| {
            OffsetError(format!(
                "invalid offset {}: not valid JSON ({e}); expected an LSN like {LSN_EXAMPLE} or the JSON shown in synchdb_state_view.last_dbz_offset",
                quote(input)
            ))
        })?;
        let Value::Object(obj) = value else {
            // Unreachable in practice since the text starts with '{', but
            // kept as an error rather than a panic.
            return Err(OffsetError(format!(
                "invalid offset {}: expected a JSON object",
                quote(input)
            )));
        };
        let lsn_commit = lsn_field(&obj, "lsn_commit")?;
        let lsn = lsn_field(&obj, "lsn")?;
        let lsn_proc = lsn_field(&obj, "lsn_proc")?;
        return lsn_commit.or(lsn).or(lsn_proc).ok_or_else(|| {
            OffsetError(format!(
                "invalid offset {}: the JSON has none of \"lsn_commit\", \"lsn\" or \"lsn_proc\"; at least one is required",
                quote(input)
            ))
        });
    }
    parse_lsn(trimmed).map_err(|_| {
        OffsetError(format!(
            "invalid offset {}: expected an LSN like {LSN_EXAMPLE} or the JSON shown in synchdb_state_view.last_dbz_offset",
            quote(input)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"lsn_proc":37051152,"messageType":"INSERT","lsn_commit":36989040,"lsn":37051152,"txId":1007,"ts_usec":1767208115470483}"#;

    fn sample() -> Offset {
        Offset {
            lsn_proc: 37_051_152,
            lsn_commit: 36_989_040,
            lsn: 37_051_152,
            tx_id: 1007,
            ts_usec: 1_767_208_115_470_483,
            message_type: MessageType::Insert,
        }
    }

    #[test]
    fn exact_json() {
        assert_eq!(sample().to_json(), SAMPLE);
    }

    #[test]
    fn json_extremes_and_message_types() {
        let o = Offset {
            lsn_proc: u64::MAX,
            lsn_commit: 0,
            lsn: 1,
            tx_id: u32::MAX,
            ts_usec: -5,
            message_type: MessageType::Truncate,
        };
        assert_eq!(
            o.to_json(),
            r#"{"lsn_proc":18446744073709551615,"messageType":"TRUNCATE","lsn_commit":0,"lsn":1,"txId":4294967295,"ts_usec":-5}"#
        );
        let names: Vec<String> = [
            MessageType::Insert,
            MessageType::Update,
            MessageType::Delete,
            MessageType::Truncate,
            MessageType::Begin,
            MessageType::Commit,
        ]
        .iter()
        .map(|m| m.to_string())
        .collect();
        assert_eq!(
            names,
            ["INSERT", "UPDATE", "DELETE", "TRUNCATE", "BEGIN", "COMMIT"]
        );
        assert_eq!(MessageType::default(), MessageType::Insert);
    }

    #[test]
    fn json_is_valid_json_with_expected_values() {
        let v: Value = serde_json::from_str(&sample().to_json()).unwrap();
        assert_eq!(v["lsn_proc"], 37_051_152);
        assert_eq!(v["messageType"], "INSERT");
        assert_eq!(v["lsn_commit"], 36_989_040);
        assert_eq!(v["lsn"], 37_051_152);
        assert_eq!(v["txId"], 1007);
        assert_eq!(v["ts_usec"], 1_767_208_115_470_483_i64);
    }

    #[test]
    fn round_trip_through_resume_lsn() {
        assert_eq!(parse_resume_lsn(SAMPLE), Ok(36_989_040));
        let o = Offset {
            lsn_commit: 0x1_0000_0000,
            lsn: 0x1_0000_0040,
            lsn_proc: 0x1_0000_0040,
            ..sample()
        };
        assert_eq!(parse_resume_lsn(&o.to_json()), Ok(0x1_0000_0000));
    }

    #[test]
    fn round_trip_lsn_text() {
        for lsn in [0, 1, 0x16B_3748, 0xFFFF_FFFF, 0x1_0000_0000, u64::MAX] {
            assert_eq!(parse_lsn(&format_lsn(lsn)), Ok(lsn));
        }
    }

    #[test]
    fn json_key_order_extras_and_fallbacks() {
        let reordered =
            r#" {"ts_usec":1,"lsn":200,"extra":[1,2],"lsn_commit":100,"messageType":"COMMIT"} "#;
        assert_eq!(parse_resume_lsn(reordered), Ok(100));
        assert_eq!(parse_resume_lsn(r#"{"lsn":200,"lsn_proc":300}"#), Ok(200));
        assert_eq!(parse_resume_lsn(r#"{"lsn_proc":300}"#), Ok(300));
        assert_eq!(parse_resume_lsn(r#"{"lsn_commit":7}"#), Ok(7));
        assert_eq!(
            parse_resume_lsn(r#"{"lsn_commit":null,"lsn":"0/10"}"#),
            Ok(0x10)
        );
    }

    #[test]
    fn json_lsn_strings() {
        assert_eq!(
            parse_resume_lsn(r#"{"lsn_commit":"1/16B3748","lsn":"2/0"}"#),
            Ok(0x1_016B_3748)
        );
        assert_eq!(parse_resume_lsn(r#"{"lsn":"0/16b3748"}"#), Ok(0x16B_3748));
    }

    #[test]
    fn plain_lsns() {
        assert_eq!(parse_resume_lsn("0/16B3748"), Ok(0x16B_3748));
        assert_eq!(parse_resume_lsn("  0/16b3748\n"), Ok(0x16B_3748));
        assert_eq!(parse_resume_lsn("A/0"), Ok(0xA_0000_0000));
        assert_eq!(parse_lsn("FFFFFFFF/FFFFFFFF"), Ok(u64::MAX));
        assert_eq!(parse_lsn("ffffffff/0"), Ok(0xFFFF_FFFF_0000_0000));
        assert_eq!(parse_lsn("0/0"), Ok(0));
        assert_eq!(parse_lsn(" 1/2 "), Ok(0x1_0000_0002));
    }

    #[test]
    fn bad_lsns() {
        for bad in [
            "",
            "/",
            "0/",
            "/0",
            "0/0/0",
            "1",
            "g/1",
            "+1/1",
            "1/-1",
            "0x1/1",
            "1 /1",
            "123456789/0",
            "0/123456789",
        ] {
            let err = parse_lsn(bad).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "invalid LSN {bad:?}: expected two hexadecimal numbers of at most 8 digits separated by a slash, like 0/16B3748"
                ),
            );
        }
    }

    #[test]
    fn garbage_offsets() {
        assert_eq!(
            parse_resume_lsn("abc").unwrap_err().to_string(),
            r#"invalid offset "abc": expected an LSN like 0/16B3748 or the JSON shown in synchdb_state_view.last_dbz_offset"#
        );
        assert_eq!(
            parse_resume_lsn("37051152").unwrap_err().to_string(),
            r#"invalid offset "37051152": expected an LSN like 0/16B3748 or the JSON shown in synchdb_state_view.last_dbz_offset"#
        );
        assert_eq!(
            parse_resume_lsn(r#"{"txId":5}"#).unwrap_err().0,
            r#"invalid offset "{\"txId\":5}": the JSON has none of "lsn_commit", "lsn" or "lsn_proc"; at least one is required"#
        );
        let err = parse_resume_lsn(r#"{"lsn": 12"#).unwrap_err().0;
        assert!(
            err.starts_with(r#"invalid offset "{\"lsn\": 12": not valid JSON ("#),
            "{err}"
        );
        assert!(err.ends_with(
            "expected an LSN like 0/16B3748 or the JSON shown in synchdb_state_view.last_dbz_offset"
        ));
        assert_eq!(
            parse_resume_lsn(r#"{"lsn":-1}"#).unwrap_err().0,
            r#"invalid offset field "lsn": -1 is not a non-negative integer; expected a decimal LSN like 37051152 or a string like "0/16B3748""#
        );
        assert_eq!(
            parse_resume_lsn(r#"{"lsn_commit":1.5,"lsn":1}"#)
                .unwrap_err()
                .0,
            r#"invalid offset field "lsn_commit": 1.5 is not a non-negative integer; expected a decimal LSN like 37051152 or a string like "0/16B3748""#
        );
        assert_eq!(
            parse_resume_lsn(r#"{"lsn":true}"#).unwrap_err().0,
            r#"invalid offset field "lsn": true is neither a number nor a string; expected a decimal LSN like 37051152 or a string like "0/16B3748""#
        );
        assert_eq!(
            parse_resume_lsn(r#"{"lsn":"zz"}"#).unwrap_err().0,
            r#"invalid offset field "lsn": invalid LSN "zz": expected two hexadecimal numbers of at most 8 digits separated by a slash, like 0/16B3748"#
        );
    }

    #[test]
    fn long_garbage_is_cut_in_the_message() {
        let long = "x".repeat(500);
        let msg = parse_resume_lsn(&long).unwrap_err().0;
        assert!(msg.starts_with(&format!("invalid offset \"{}\"...:", "x".repeat(80))));
        assert!(msg.len() < 250);
    }

    #[test]
    fn format_lsn_values() {
        assert_eq!(format_lsn(0), "0/0");
        assert_eq!(format_lsn(0x16B_3748), "0/16B3748");
        assert_eq!(format_lsn(37_051_152), "0/2355B10");
        assert_eq!(format_lsn(0x1_0000_0000), "1/0");
        assert_eq!(format_lsn(0xAB_0000_00CD), "AB/CD");
        assert_eq!(format_lsn(u64::MAX), "FFFFFFFF/FFFFFFFF");
    }
}
