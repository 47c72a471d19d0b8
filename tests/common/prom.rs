//! `/metrics` through a real Prometheus text parser: Python's
//! `prometheus_client.parser`, run from the venv `.ci/run` creates
//! (`target/ci-venv`, or the interpreter named by `WS_RELAY_TEST_PYTHON`).
//! Without it the caller skips with a visible message, except under
//! `CI=true`, where a missing parser is a failure.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::http;

/// Env var naming a Python interpreter that has `prometheus_client`.
pub const PYTHON_ENV: &str = "WS_RELAY_TEST_PYTHON";

const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": f.name, "type": f.type, "help": f.documentation,
                "samples": [{"name": s.name, "labels": s.labels, "value": s.value}
                            for s in f.samples]})
print(json.dumps(out))
"#;

#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Clone)]
pub struct Family {
    pub name: String,
    pub typ: String,
    pub help: String,
    pub samples: Vec<Sample>,
}

/// The interpreter to use, or `None` (after printing SKIP) when there is none
/// and this is not CI.
pub fn python_or_skip(test: &str) -> Option<PathBuf> {
    let candidates = [
        std::env::var_os(PYTHON_ENV).map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ci-venv/bin/python")),
    ];
    for p in candidates.into_iter().flatten() {
        let ok = Command::new(&p)
            .args(["-c", "import prometheus_client.parser"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(p);
        }
    }
    let why = format!(
        "{test}: no Python with prometheus_client (set {PYTHON_ENV} or run .ci/run, which creates target/ci-venv)"
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}");
    }
    eprintln!("SKIP: {why}");
    None
}

/// Parses exposition text with the Python parser; panics with the text when
/// the parser rejects it.
pub fn parse(python: &PathBuf, text: &str) -> Vec<Family> {
    let mut child = Command::new(python)
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("python output");
    assert!(
        out.status.success(),
        "prometheus_client rejected /metrics: {}\n--- text ---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("parser JSON");
    v.as_array()
        .unwrap()
        .iter()
        .map(|f| Family {
            name: f["name"].as_str().unwrap().into(),
            typ: f["type"].as_str().unwrap().into(),
            help: f["help"].as_str().unwrap_or("").into(),
            samples: f["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| Sample {
                    name: s["name"].as_str().unwrap().into(),
                    labels: s["labels"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect(),
                    value: s["value"].as_f64().unwrap_or(f64::NAN),
                })
                .collect(),
        })
        .collect()
}

/// One scrape, parsed.
pub struct Scrape {
    pub text: String,
    pub families: Vec<Family>,
}

impl Scrape {
    pub fn family(&self, name: &str) -> &Family {
        self.families
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no family {name} in:\n{}", self.text))
    }

    /// Sum of samples named `sample` whose labels include all of `with`.
    pub fn sum(&self, sample: &str, with: &[(&str, &str)]) -> f64 {
        let hits: Vec<&Sample> = self
            .families
            .iter()
            .flat_map(|f| &f.samples)
            .filter(|s| s.name == sample)
            .filter(|s| {
                with.iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert!(
            !hits.is_empty(),
            "no sample {sample}{with:?} in:\n{}",
            self.text
        );
        hits.iter().map(|s| s.value).sum()
    }
}

/// `GET /metrics` from loopback, checked for 200 and the 0.0.4 content type,
/// then parsed.
pub async fn scrape(python: &PathBuf, port: u16) -> Scrape {
    let resp = http::get(port, "/metrics").await.expect("GET /metrics");
    assert_eq!(resp.status, 200, "{}\n{}", resp.head, resp.body_str());
    assert_eq!(
        resp.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8"),
        "{}",
        resp.head
    );
    let text = resp.body_str();
    let families = parse(python, &text);
    Scrape { text, families }
}
