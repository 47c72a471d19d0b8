//! A real Chromium (the Debian package) driven headless over CDP with the
//! `headless_chrome` crate: launch with this machine's flags and a fresh
//! profile, size the viewport, poll page state, take screenshots into
//! `target/browser/`. Without Chromium the caller skips with a visible
//! message, except under `CI=true`, where a missing browser is a failure.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use headless_chrome::protocol::cdp::Emulation::SetDeviceMetricsOverride;
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};

/// Env var naming the Chromium binary (default `/usr/bin/chromium`).
pub const CHROMIUM_ENV: &str = "WS_RELAY_TEST_CHROMIUM";

pub fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    let path = std::env::var_os(CHROMIUM_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if path.is_file() {
        return Some(path);
    }
    let why = format!(
        "{test}: no Chromium at {} (apt-get install chromium, or set {CHROMIUM_ENV})",
        path.display()
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}");
    }
    eprintln!("SKIP: {why}");
    None
}

/// A running browser and its throwaway profile.
pub struct Chrome {
    pub browser: Browser,
    _profile: tempfile::TempDir,
}

pub fn launch(path: PathBuf) -> Chrome {
    let profile = tempfile::Builder::new()
        .prefix("chromium-profile-")
        .tempdir()
        .unwrap();
    let args: Vec<&OsStr> = [
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    .iter()
    .map(OsStr::new)
    .collect();
    let opts = LaunchOptions::default_builder()
        .path(Some(path))
        .headless(true)
        .sandbox(false)
        .window_size(Some((1280, 800)))
        .user_data_dir(Some(profile.path().to_path_buf()))
        .idle_browser_timeout(Duration::from_secs(120))
        .args(args)
        .build()
        .unwrap();
    let browser = Browser::new(opts).expect("launch chromium");
    Chrome {
        browser,
        _profile: profile,
    }
}

/// Sets the viewport (CSS pixels); `mobile` emulates a phone.
pub fn viewport(tab: &Tab, width: u32, height: u32, mobile: bool) {
    tab.call_method(SetDeviceMetricsOverride {
        width,
        height,
        device_scale_factor: 1.0,
        mobile,
        scale: None,
        screen_width: None,
        screen_height: None,
        position_x: None,
        position_y: None,
        dont_set_visible_size: None,
        screen_orientation: None,
        viewport: None,
        display_feature: None,
        device_posture: None,
    })
    .expect("set viewport");
}

/// Evaluates `expr` and returns its value as JSON.
pub fn eval(tab: &Tab, expr: &str) -> serde_json::Value {
    let r = tab
        .evaluate(expr, true)
        .unwrap_or_else(|e| panic!("evaluate {expr}: {e}"));
    r.value.unwrap_or(serde_json::Value::Null)
}

pub fn text_of(tab: &Tab, id: &str) -> String {
    let v = eval(tab, &format!("document.getElementById({id:?}).innerText"));
    v.as_str().unwrap_or_default().to_string()
}

/// Sets an input's value the way typing would (an `input` event follows).
pub fn set_value(tab: &Tab, id: &str, value: &str) {
    let v = serde_json::Value::from(value).to_string();
    eval(
        tab,
        &format!(
            "(() => {{ const e = document.getElementById({id:?}); e.value = {v}; e.dispatchEvent(new Event('input')); return true; }})()"
        ),
    );
}

/// A real mouse click on the element `#id`.
pub fn click(tab: &Tab, id: &str) {
    tab.wait_for_element(&format!("#{id}"))
        .unwrap_or_else(|e| panic!("#{id}: {e}"))
        .click()
        .unwrap_or_else(|e| panic!("click #{id}: {e}"));
}

/// Polls `pred` on the text of `#id` until it holds; panics with the text
/// (and the page log) after `limit`.
pub fn wait_text(
    tab: &Tab,
    id: &str,
    what: &str,
    limit: Duration,
    pred: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let t = text_of(tab, id);
        if pred(&t) {
            return t;
        }
        if Instant::now() > deadline {
            let log = text_of(tab, "log");
            panic!("page never showed {what} in #{id} within {limit:?}; it shows:\n{t}\n--- page log ---\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Saves a PNG of the viewport as `target/browser/<name>.png`.
pub fn screenshot(tab: &Tab, name: &str) -> PathBuf {
    eval(tab, "window.scrollTo(0, 0); true");
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
    path
}

/// True when nothing sticks out sideways (no horizontal scrolling).
pub fn fits_width(tab: &Tab) -> bool {
    eval(
        tab,
        "document.documentElement.scrollWidth <= window.innerWidth",
    )
    .as_bool()
    .unwrap_or(false)
}
