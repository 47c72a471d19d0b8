//! Plain HTTP responses: health, errors with a JSON body, and 101 helpers
//! live in `ws::handshake`. Every response here closes the connection.

/// Reason phrase for the statuses the relay uses.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// A complete response with a body and `Connection: close`.
pub fn with_body(status: u16, content_type: &str, body: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n{extra_headers}\r\n{body}",
        reason(status),
        body.len()
    )
    .into_bytes()
}

pub fn json(status: u16, body: &str) -> Vec<u8> {
    with_body(status, "application/json", body, "")
}

/// A JSON error in the relay's error-object shape.
pub fn error_json(status: u16, code: &str, message: &str) -> Vec<u8> {
    json(status, &error_object(code, message))
}

/// `{"status":"error","code":...,"error":...}` — the one error shape used over
/// HTTP and in first-message mode alike.
pub fn error_object(code: &str, message: &str) -> String {
    // Built by hand to keep the documented key order (docs/relay.md "Errors"); serde_json escapes the strings.
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    format!(
        r#"{{"status":"error","code":{},"error":{}}}"#,
        quote(code),
        quote(message)
    )
}

pub fn health() -> Vec<u8> {
    json(200, r#"{"status":"ok"}"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_is_valid_json_with_escaping() {
        let r = String::from_utf8(error_json(403, "target_forbidden", "quote \" here")).unwrap();
        let body = r.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "target_forbidden");
        assert_eq!(v["error"], "quote \" here");
        assert!(r.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(body.starts_with(r#"{"status":"error","code":"target_forbidden","#));
        assert!(r.contains(&format!("Content-Length: {}\r\n", body.len())));
    }
}
