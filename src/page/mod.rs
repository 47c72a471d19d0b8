//! The browser test page (docs/browser.md "Try it in a browser"): one self-contained HTML file,
//! embedded in the binary, served on plain GETs to `[page] path` (and to the
//! relay path when the page is enabled).
//!
//! Its Content-Security-Policy allows nothing but the page itself and
//! same-origin connections, so a CDN or an external fetch could not load
//! even if one crept into the file.
//! Must not: read files at run time, or template anything into the page
//! (it learns everything from its own URL).

/// The page, as shipped.
pub const INDEX_HTML: &str = include_str!("index.html");

const HEADERS: &str = "Cache-Control: no-cache\r\n\
X-Content-Type-Options: nosniff\r\n\
Referrer-Policy: no-referrer\r\n\
Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n";

/// The full HTTP response; `head_only` for `HEAD`.
pub fn response(head_only: bool) -> Vec<u8> {
    let mut out =
        crate::http::response::with_body(200, "text/html; charset=utf-8", INDEX_HTML, HEADERS);
    if head_only {
        out.truncate(out.len() - INDEX_HTML.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_is_self_contained() {
        for banned in [
            "http://",
            "https://",
            "//cdn",
            "<link ",
            "src=\"http",
            "@import",
        ] {
            assert!(!INDEX_HTML.contains(banned), "page contains {banned:?}");
        }
        let r = String::from_utf8(response(true)).unwrap();
        assert!(r.contains(&format!("Content-Length: {}\r\n", INDEX_HTML.len())));
        assert!(r.ends_with("\r\n\r\n"));
    }
}
