//! RESP2, incrementally: the replies and pub/sub messages a shard's own
//! Redis connections read (`shard_link.rs`), parsed from a buffer that may
//! end mid-reply. Commands are packed by `redis`'s own `Cmd`, and replies
//! come out as its `Value`, so conversions stay the crate's.
//!
//! Why not the crate's parser: it reads from a blocking `Read` (or needs
//! tokio); a shard has a buffer and must not block. Sans-I/O, no allocation
//! beyond the values themselves. Must not: panic on any input.

use redis::Value;

/// Deepest nesting accepted (a reply from our scripts is two levels).
const MAX_DEPTH: usize = 8;
/// Largest bulk string or array accepted: far above any history reply a
/// `history_size` of 1,000,000 messages gives, far below a hostile length.
const MAX_LEN: i64 = 512 * 1024 * 1024;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RespError {
    #[error("redis sent a malformed reply")]
    Malformed,
}

/// One reply: a value, or the error line Redis answered with.
pub type Reply = Result<Value, String>;

/// Parses one reply from the front of `buf`: `Ok(None)` when it is not
/// complete yet, else the reply and the bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, RespError> {
    if buf.first() == Some(&b'-') {
        let mut pos = 1;
        return Ok(line(buf, &mut pos).map(|l| (Err(String::from_utf8_lossy(l).into_owned()), pos)));
    }
    let mut pos = 0;
    match value(buf, &mut pos, 0)? {
        Some(v) => Ok(Some((Ok(v), pos))),
        None => Ok(None),
    }
}

fn line<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let rest = buf.get(*pos..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    *pos += end + 2;
    Some(&rest[..end])
}

fn int(line: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(RespError::Malformed)
}

fn value(buf: &[u8], pos: &mut usize, depth: usize) -> Result<Option<Value>, RespError> {
    if depth > MAX_DEPTH {
        return Err(RespError::Malformed);
    }
    let Some(&kind) = buf.get(*pos) else {
        return Ok(None);
    };
    *pos += 1;
    let Some(l) = line(buf, pos) else {
        return Ok(None);
    };
    match kind {
        b'+' => Ok(Some(if l == b"OK" {
            Value::Okay
        } else {
            Value::SimpleString(String::from_utf8_lossy(l).into_owned())
        })),
        b':' => Ok(Some(Value::Int(int(l)?))),
        b'$' => {
            let n = int(l)?;
            if n < 0 {
                return Ok(Some(Value::Nil));
            }
            if n > MAX_LEN {
                return Err(RespError::Malformed);
            }
            let n = n as usize;
            let Some(data) = buf.get(*pos..*pos + n) else {
                return Ok(None);
            };
            if buf.get(*pos + n..*pos + n + 2).is_none() {
                return Ok(None);
            }
            if &buf[*pos + n..*pos + n + 2] != b"\r\n" {
                return Err(RespError::Malformed);
            }
            *pos += n + 2;
            Ok(Some(Value::BulkString(data.to_vec())))
        }
        b'*' => {
            let n = int(l)?;
            if n < 0 {
                return Ok(Some(Value::Nil));
            }
            if n > MAX_LEN {
                return Err(RespError::Malformed);
            }
            let mut items = Vec::with_capacity((n as usize).min(1024));
            for _ in 0..n {
                match value(buf, pos, depth + 1)? {
                    Some(v) => items.push(v),
                    None => return Ok(None),
                }
            }
            Ok(Some(Value::Array(items)))
        }
        _ => Err(RespError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_whole_and_in_pieces() {
        let wire = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n:42\r\n+OK\r\n$-1\r\n";
        let mut pos = 0;
        let mut got = Vec::new();
        while let Some((v, n)) = parse(&wire[pos..]).unwrap() {
            got.push(v.unwrap());
            pos += n;
        }
        assert_eq!(pos, wire.len());
        assert_eq!(
            got,
            [
                Value::Array(vec![
                    Value::BulkString(b"message".to_vec()),
                    Value::BulkString(b"ch".to_vec()),
                    Value::BulkString(b"hello".to_vec()),
                ]),
                Value::Int(42),
                Value::Okay,
                Value::Nil,
            ]
        );
        // Every prefix is "not yet", never an error or a wrong value.
        for cut in 0..wire.len() {
            let first = parse(&wire[..cut]).unwrap();
            assert!(first.is_none() || first.unwrap().1 <= cut, "cut {cut}");
        }
        let err = parse(b"-NOSCRIPT No matching script\r\n").unwrap().unwrap();
        assert_eq!(err, (Err("NOSCRIPT No matching script".into()), 30));
        assert_eq!(
            parse(b"-ERR x").unwrap(),
            None,
            "an error line not complete yet"
        );
    }

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        for bad in [
            &b"?\r\n"[..],
            b":x\r\n",
            b"$99999999999\r\n",
            b"$3\r\nabcXY",
            b"*99999999999\r\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let deep = "*1\r\n".repeat(20);
        assert!(parse(deep.as_bytes()).is_err());
    }
}
