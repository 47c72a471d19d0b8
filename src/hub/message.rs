//! The seed's push body, its token rules, and the message clients receive.
//!
//! Owns parsing and serialization only: `subject` and `token` pass through
//! byte for byte (`RawValue`), so what a backend sent is what clients get.
//! Must not: do I/O or log message contents.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::fanout::{text_frame, Audience, Frame};

/// Why a push body was refused (answered 400 with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("invalid JSON body: {0}")]
    Json(String),
    #[error("body must be a JSON object")]
    NotObject,
    #[error("event_name is required and must be a non-empty string")]
    EventName,
    #[error("subject is required (and not null)")]
    Subject,
    #[error("delay_seconds must be an integer")]
    Delay,
    #[error("{0} holds a number out of range")]
    OutOfRange(&'static str),
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
}

/// A push as accepted: what every instance needs to build the client frame.
/// Also the JSON form on the Redis channel and in the delayed sorted set.
#[derive(Debug, Serialize, Deserialize)]
pub struct Push {
    /// Unique per push (the sorted set needs distinct members).
    pub id: String,
    /// Instance that already delivered it locally ("" = nobody yet).
    #[serde(default)]
    pub origin: String,
    pub event: String,
    pub subject: Box<RawValue>,
    /// The `token` exactly as sent (absent = `null` for clients).
    pub token: Option<Box<RawValue>>,
    /// The user it resolved to; `None` = broadcast.
    pub user: Option<String>,
    /// Server timestamp (ms) for immediate pushes; delayed ones are stamped
    /// when delivered.
    #[serde(default)]
    pub ts: Option<u64>,
    /// Its place in its stream, with history on (`stream.rs`); absent
    /// otherwise, so the seed's messages are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

/// A parsed request: the push and its delay.
pub struct Request {
    pub push: Push,
    pub delay_seconds: i64,
}

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow, default)]
    event_name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    subject: Option<&'a RawValue>,
    #[serde(borrow, default)]
    delay_seconds: Option<&'a RawValue>,
    #[serde(borrow, default)]
    token: Option<&'a RawValue>,
}

/// Parses a push body by the seed's rules.
pub fn parse(body: &[u8], id: String) -> Result<Request, BodyError> {
    let text = std::str::from_utf8(body).map_err(|e| BodyError::Json(e.to_string()))?;
    let raw: &RawValue = serde_json::from_str(text).map_err(|e| BodyError::Json(e.to_string()))?;
    if !raw.get().trim_start().starts_with('{') {
        return Err(BodyError::NotObject);
    }
    // Unknown fields are ignored, as the seed does.
    let b: Body = serde_json::from_str(raw.get()).map_err(|e| BodyError::Json(e.to_string()))?;
    let event = match b.event_name.map(|r| serde_json::from_str::<Value>(r.get())) {
        Some(Ok(Value::String(s))) if !s.is_empty() => s,
        _ => return Err(BodyError::EventName),
    };
    let subject = match b.subject {
        Some(s) => s,
        None => return Err(BodyError::Subject),
    };
    // The raw value is passed on as written, but it must be JSON a client
    // can decode: numbers out of float64's range are refused, as the seed's
    // decoder refuses them.
    readable(subject, "subject")?;
    let subject = subject.to_owned();
    let delay_seconds = match b
        .delay_seconds
        .map(|r| serde_json::from_str::<Value>(r.get()))
    {
        None | Some(Ok(Value::Null)) => 0,
        Some(Ok(Value::Number(n))) => delay_of(&n)?,
        _ => return Err(BodyError::Delay),
    };
    let token = b.token.filter(|t| t.get() != "null");
    // A token that cannot be read must be refused, never taken for "no
    // token": that would broadcast a push meant for one user.
    let user = match token {
        Some(t) => resolve_user(&readable(t, "token")?),
        None => None,
    };
    Ok(Request {
        push: Push {
            id,
            origin: String::new(),
            event,
            subject,
            token: token.map(RawValue::to_owned),
            user,
            ts: None,
            offset: None,
            epoch: None,
        },
        delay_seconds,
    })
}

/// `raw` as a value, or `OutOfRange` when a number in it does not fit.
fn readable(raw: &RawValue, what: &'static str) -> Result<Value, BodyError> {
    serde_json::from_str(raw.get()).map_err(|_| BodyError::OutOfRange(what))
}

fn delay_of(n: &serde_json::Number) -> Result<i64, BodyError> {
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => Ok(f as i64),
        _ => Err(BodyError::Delay),
    }
}

/// The seed's token rules: number → decimal string, string → as is, object
/// → its `id` or `user_id` (by the same rules); anything else, or an empty
/// result, means broadcast.
pub fn resolve_user(token: &Value) -> Option<String> {
    let user = match token {
        Value::Number(n) => number_string(n),
        Value::String(s) => s.clone(),
        Value::Object(o) => {
            let inner = o
                .get("id")
                .filter(|v| !v.is_null())
                .or_else(|| o.get("user_id"))?;
            match inner {
                Value::Number(n) => number_string(n),
                Value::String(s) => s.clone(),
                _ => return None,
            }
        }
        _ => return None,
    };
    (!user.is_empty()).then_some(user)
}

/// `123` → "123", `123.0` → "123" (the seed decodes numbers as float64 and
/// prints them without a fraction), `1.5` → "1.5".
fn number_string(n: &serde_json::Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        Some(f) => format!("{f}"),
        None => n.to_string(),
    }
}

#[derive(Serialize)]
struct Out<'a> {
    event: &'a str,
    data: OutData<'a>,
}

#[derive(Serialize)]
struct OutData<'a> {
    subject: &'a RawValue,
    ts: u64,
    token: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<&'a str>,
}

impl Push {
    pub fn audience(&self) -> Audience {
        match &self.user {
            Some(u) => Audience::Group(u.as_str().into()),
            None => Audience::All,
        }
    }

    /// Its stream's kind (a user's or the broadcast one).
    pub fn kind(&self) -> Kind {
        match self.user {
            Some(_) => Kind::User,
            None => Kind::Broadcast,
        }
    }

    /// `{"event":…,"data":{"subject":…,"ts":…,"token":…}}`, framed once;
    /// with history on, `stream`, `offset` and `epoch` follow in `data`.
    pub fn frame(&self, now_ms: u64) -> Frame {
        let out = Out {
            event: &self.event,
            data: OutData {
                subject: &self.subject,
                ts: self.ts.unwrap_or(now_ms),
                token: self.token.as_deref(),
                stream: self.offset.map(|_| self.kind().as_str()),
                offset: self.offset,
                epoch: self.offset.and(self.epoch.as_deref()),
            },
        };
        // Serializing borrowed strings and raw values cannot fail.
        let text = serde_json::to_vec(&out).unwrap_or_default();
        text_frame(&text)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Which of a client's two streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The stream of the client's user token.
    User,
    Broadcast,
}

impl Kind {
    /// `data.stream` in client messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Broadcast => "broadcast",
        }
    }

    /// The fan-out lane its frames travel in (`fanout::registry::lane`).
    pub fn lane(self) -> usize {
        match self {
            Kind::User => 0,
            Kind::Broadcast => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user_of(token: Value) -> Option<String> {
        resolve_user(&token)
    }

    #[test]
    fn token_rules() {
        assert_eq!(user_of(json!(123)).as_deref(), Some("123"));
        assert_eq!(user_of(json!(123.0)).as_deref(), Some("123"));
        assert_eq!(user_of(json!(-7)).as_deref(), Some("-7"));
        assert_eq!(user_of(json!("USER_123")).as_deref(), Some("USER_123"));
        assert_eq!(user_of(json!({"id": "u1"})).as_deref(), Some("u1"));
        assert_eq!(user_of(json!({"id": 42})).as_deref(), Some("42"));
        assert_eq!(user_of(json!({"user_id": "u2"})).as_deref(), Some("u2"));
        assert_eq!(
            user_of(json!({"id": null, "user_id": 9})).as_deref(),
            Some("9")
        );
        assert_eq!(user_of(json!({"name": "x"})), None);
        assert_eq!(user_of(json!({"id": [1]})), None);
        assert_eq!(user_of(json!(null)), None);
        assert_eq!(user_of(json!(true)), None);
        assert_eq!(user_of(json!([1, 2])), None);
        assert_eq!(user_of(json!("")), None);
    }

    #[test]
    fn body_rules_and_output_shape() {
        let r = parse(
            br#"{"event_name":"e","subject":{"b":1,"a":2},"delay_seconds":0,"token":{"id":5}}"#,
            "id1".into(),
        )
        .unwrap();
        assert_eq!(r.push.user.as_deref(), Some("5"));
        let f = r.push.frame(1700);
        let text = std::str::from_utf8(&f[2..]).unwrap();
        assert_eq!(
            text,
            r#"{"event":"e","data":{"subject":{"b":1,"a":2},"ts":1700,"token":{"id":5}}}"#
        );
        // null counts as missing, as in the seed (Go decodes it to nil).
        assert_eq!(
            parse(br#"{"event_name":"e","subject":null}"#, "i".into()).err(),
            Some(BodyError::Subject)
        );
        let r = parse(
            br#"{"event_name":"e","subject":1,"token":null}"#,
            "i".into(),
        )
        .unwrap();
        assert!(r.push.user.is_none() && r.push.token.is_none());
        assert!(r.push.frame(1).ends_with(br#""token":null}}"#));
        assert_eq!(
            parse(b"{", "i".into())
                .err()
                .map(|e| matches!(e, BodyError::Json(_))),
            Some(true)
        );
        assert_eq!(parse(b"[1]", "i".into()).err(), Some(BodyError::NotObject));
        assert_eq!(
            parse(br#"{"subject":1}"#, "i".into()).err(),
            Some(BodyError::EventName)
        );
        assert_eq!(
            parse(br#"{"event_name":3,"subject":1}"#, "i".into()).err(),
            Some(BodyError::EventName)
        );
        assert_eq!(
            parse(br#"{"event_name":"e"}"#, "i".into()).err(),
            Some(BodyError::Subject)
        );
        assert_eq!(
            parse(
                br#"{"event_name":"e","subject":1,"delay_seconds":"x"}"#,
                "i".into()
            )
            .err(),
            Some(BodyError::Delay)
        );
        let r = parse(
            br#"{"event_name":"e","subject":1,"delay_seconds":2}"#,
            "i".into(),
        )
        .unwrap();
        assert_eq!(r.delay_seconds, 2);
        // Found by fuzz/hub_push: an unreadable token used to mean broadcast.
        assert_eq!(
            parse(
                br#"{"event_name":"e","subject":1,"token":1E80664666666}"#,
                "i".into()
            )
            .err(),
            Some(BodyError::OutOfRange("token"))
        );
        assert_eq!(
            parse(br#"{"event_name":"e","subject":[-1e400]}"#, "i".into()).err(),
            Some(BodyError::OutOfRange("subject"))
        );
    }

    #[test]
    fn push_round_trips_through_json() {
        let r = parse(
            br#"{"event_name":"e","subject":[1,{"x":"y"}],"token":"u"}"#,
            "i".into(),
        )
        .unwrap();
        let wire = serde_json::to_string(&r.push).unwrap();
        let back: Push = serde_json::from_str(&wire).unwrap();
        assert_eq!(back.subject.get(), r#"[1,{"x":"y"}]"#);
        assert_eq!(back.user.as_deref(), Some("u"));
        assert_eq!(back.token.unwrap().get(), r#""u""#);
    }
}
