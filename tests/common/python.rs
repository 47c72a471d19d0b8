//! Finding a Python with the packages a test needs. `.ci/run` creates a
//! venv and points `WS_RELAY_TEST_PYTHON` at it; elsewhere `python3` is tried.
//! A missing package skips the test with a visible message, except under
//! CI (`CI=true`), where it fails: CI must run everything.

use std::process::Command;

/// The interpreter to use when it can import every module in `modules`.
pub fn python_with(modules: &[&str]) -> Option<String> {
    let python = std::env::var("WS_RELAY_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = modules
        .iter()
        .map(|m| format!("import {m}"))
        .collect::<Vec<_>>()
        .join("; ");
    let ok = Command::new(&python)
        .args(["-c", &probe])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    let why = format!("{python} cannot import {}", modules.join(", "));
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI must run every test, but {why} (does .ci/run set WS_RELAY_TEST_PYTHON?)");
    }
    skip(&format!(
        "{why}; set WS_RELAY_TEST_PYTHON to a Python that has them"
    ));
    None
}

/// Prints past the test harness's output capture, so a skip shows in a
/// plain `cargo test` run.
pub fn skip(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIP: {why}");
}
