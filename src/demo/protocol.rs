//! The Axum seed's JSON protocol, byte for byte in field order: requests
//! `{"id","type":"request","action","payload"}`, responses
//! `{"id","type":"response","data":{…}}`, notifications
//! `{"type":"notification","data":{"event",…}}`, and this engine's error
//! shape `{"id","type":"error","data":{"code","message"}}` (the `id` is kept
//! whenever the request was a JSON object with one; otherwise `null`).
//!
//! Must not: do I/O, or fail on any input (every input maps to a reply).

use serde::Serialize;
use serde_json::Value;

/// What a client asked for.
#[derive(Debug, PartialEq)]
pub enum Request {
    Echo { id: Value, message: Value },
    Broadcast { id: Value, message: Value },
    GetConnections { id: Value },
}

/// A request that gets an error response.
#[derive(Debug, PartialEq)]
pub struct Refusal {
    pub id: Value,
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(id: Value, code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            id,
            code,
            message: message.into(),
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a, D: Serialize> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Value>,
    #[serde(rename = "type")]
    kind: &'static str,
    data: D,
}

fn to_json<D: Serialize>(id: Option<&Value>, kind: &'static str, data: D) -> String {
    // Serializing plain structs and `Value`s cannot fail.
    serde_json::to_string(&Envelope { id, kind, data }).unwrap_or_default()
}

/// `{"type":"notification","data":{"event":"connected","connection_id":…}}`
pub fn connected(connection_id: &str) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        event: &'static str,
        connection_id: &'a str,
    }
    to_json(
        None,
        "notification",
        Data {
            event: "connected",
            connection_id,
        },
    )
}

/// What every demo connection receives for a broadcast:
/// `{"type":"notification","data":{"event":"broadcast","from":…,"message":…}}`
pub fn broadcast_notification(from: &str, message: &Value) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        event: &'static str,
        from: &'a str,
        message: &'a Value,
    }
    to_json(
        None,
        "notification",
        Data {
            event: "broadcast",
            from,
            message,
        },
    )
}

/// `{"id":…,"type":"response","data":{"echo":…}}`
pub fn echo_response(id: &Value, message: &Value) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        echo: &'a Value,
    }
    to_json(Some(id), "response", Data { echo: message })
}

/// `{"id":…,"type":"response","data":{"broadcast":true,"recipients":N}}`:
/// N demo connections (process-wide, the sender included) were open when
/// the broadcast left.
pub fn broadcast_response(id: &Value, recipients: usize) -> String {
    #[derive(Serialize)]
    struct Data {
        broadcast: bool,
        recipients: usize,
    }
    let data = Data {
        broadcast: true,
        recipients,
    };
    to_json(Some(id), "response", data)
}

/// `{"id":…,"type":"response","data":{"connections":N}}`
pub fn connections_response(id: &Value, connections: usize) -> String {
    #[derive(Serialize)]
    struct Data {
        connections: usize,
    }
    to_json(Some(id), "response", Data { connections })
}

/// `{"id":…,"type":"error","data":{"code":…,"message":…}}`
pub fn error_response(r: &Refusal) -> String {
    #[derive(Serialize)]
    struct Data<'a> {
        code: &'static str,
        message: &'a str,
    }
    let data = Data {
        code: r.code,
        message: &r.message,
    };
    to_json(Some(&r.id), "error", data)
}

/// Parses one text message into a request, or the error to answer.
pub fn parse(text: &[u8]) -> Result<Request, Refusal> {
    let v: Value = serde_json::from_slice(text)
        .map_err(|e| Refusal::new(Value::Null, "invalid_json", format!("not JSON: {e}")))?;
    let Value::Object(mut obj) = v else {
        let msg = "a request must be a JSON object";
        return Err(Refusal::new(Value::Null, "invalid_json", msg));
    };
    let id = obj.remove("id").unwrap_or(Value::Null);
    if obj.get("type").and_then(Value::as_str) != Some("request") {
        let msg = r#""type" must be "request""#;
        return Err(Refusal::new(id, "bad_request", msg));
    }
    let Some(action) = obj.get("action").and_then(Value::as_str).map(str::to_owned) else {
        let msg = r#""action" must be a string"#;
        return Err(Refusal::new(id, "bad_request", msg));
    };
    let mut payload = match obj.remove("payload") {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => {
            let msg = r#""payload" must be an object"#;
            return Err(Refusal::new(id, "bad_request", msg));
        }
    };
    let mut message = || {
        payload
            .remove("message")
            .ok_or("payload.message is required")
    };
    match action.as_str() {
        "echo" => match message() {
            Ok(message) => Ok(Request::Echo { id, message }),
            Err(m) => Err(Refusal::new(id, "bad_request", m)),
        },
        "broadcast" => match message() {
            Ok(message) => Ok(Request::Broadcast { id, message }),
            Err(m) => Err(Refusal::new(id, "bad_request", m)),
        },
        "get_connections" => Ok(Request::GetConnections { id }),
        other => {
            let msg = format!("unknown action {other:?} (echo, broadcast, get_connections)");
            Err(Refusal::new(id, "unknown_action", msg))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn seed_examples_byte_for_byte() {
        let req =
            br#"{"id":"msg-123","type":"request","action":"echo","payload":{"message":"Hello"}}"#;
        let Ok(Request::Echo { id, message }) = parse(req) else {
            panic!()
        };
        assert_eq!(
            echo_response(&id, &message),
            r#"{"id":"msg-123","type":"response","data":{"echo":"Hello"}}"#
        );
        assert_eq!(
            connected("uuid"),
            r#"{"type":"notification","data":{"event":"connected","connection_id":"uuid"}}"#
        );
        let req = br#"{"id":"3","type":"request","action":"get_connections","payload":{}}"#;
        assert_eq!(parse(req), Ok(Request::GetConnections { id: json!("3") }));
        assert_eq!(
            connections_response(&json!("3"), 7),
            r#"{"id":"3","type":"response","data":{"connections":7}}"#
        );
        assert_eq!(
            broadcast_notification("c1", &json!("Hello everyone!")),
            r#"{"type":"notification","data":{"event":"broadcast","from":"c1","message":"Hello everyone!"}}"#
        );
    }

    #[test]
    fn every_bad_input_keeps_the_id_where_it_can() {
        let cases: [(&[u8], Value, &str); 9] = [
            (b"not json", Value::Null, "invalid_json"),
            (b"[1,2]", Value::Null, "invalid_json"),
            (b"\xff\xfe", Value::Null, "invalid_json"),
            (br#"{"id":"a","action":"echo"}"#, json!("a"), "bad_request"),
            (br#"{"id":5,"type":"request"}"#, json!(5), "bad_request"),
            (
                br#"{"id":"b","type":"request","action":"nope"}"#,
                json!("b"),
                "unknown_action",
            ),
            (
                br#"{"id":"c","type":"request","action":"echo","payload":{}}"#,
                json!("c"),
                "bad_request",
            ),
            (
                br#"{"id":"d","type":"request","action":"echo","payload":3}"#,
                json!("d"),
                "bad_request",
            ),
            (
                br#"{"type":"request","action":"broadcast"}"#,
                Value::Null,
                "bad_request",
            ),
        ];
        for (input, id, code) in cases {
            let r = parse(input).unwrap_err();
            assert_eq!(
                (&r.id, r.code),
                (&id, code),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            let text = error_response(&r);
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["id"], id);
            assert_eq!(v["type"], "error");
            assert_eq!(v["data"]["code"], code);
            assert!(v["data"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }
}
