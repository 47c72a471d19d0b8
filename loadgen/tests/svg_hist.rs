//! `--svg` writes well-formed XML with one curve per run, and `--hist-dir`
//! writes one HdrHistogram percentile-distribution file per run.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{at, run, Server};

const LIMIT: Duration = Duration::from_secs(60);

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loadgen-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Parses the SVG and returns the `data-run` names of its curves.
pub fn curves(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("svg written");
    let doc = roxmltree::Document::parse(&text).expect("well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants()
        .filter(|n| n.tag_name().name() == "path")
        .filter(|n| {
            n.attribute("class")
                .is_some_and(|c| c.split(' ').any(|w| w == "curve"))
        })
        .map(|n| n.attribute("data-run").unwrap_or_default().to_string())
        .collect()
}

#[test]
fn ping_plot_has_one_curve_and_a_histogram_file() {
    let echo = Server::echo(&[]);
    let dir = scratch("ping");
    let svg = dir.join("ping.svg");
    let hist = dir.join("hist");
    let f = run(
        &[
            "ping",
            &echo.addr,
            "-n",
            "300",
            "--name",
            "loopback <direct> & co",
            "--svg",
            svg.to_str().unwrap(),
            "--hist-dir",
            hist.to_str().unwrap(),
            "--json",
        ],
        LIMIT,
    );
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert_eq!(curves(&svg), vec!["loopback <direct> & co".to_string()]);
    let j = f.json();
    let file = at(&j, &["runs"])[0]["hist_file"]
        .as_str()
        .expect("hist_file set")
        .to_string();
    let text = std::fs::read_to_string(&file).expect("histogram file");
    assert!(text.lines().next().unwrap().contains("Percentile"));
    let rows = text
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .count();
    assert!(rows > 10, "{text}");
    let max_line = text
        .lines()
        .find(|l| l.starts_with("#[Max"))
        .expect("footer");
    assert!(
        max_line.replace(' ', "").ends_with("Totalcount=300]"),
        "{max_line}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls_connect_plot_has_one_curve_per_run() {
    let echo = Server::echo(&["--tls"]);
    let dir = scratch("connect");
    let svg = dir.join("connect.svg");
    let f = run(
        &[
            "connect",
            &echo.addr,
            "-n",
            "30",
            "--insecure",
            "--svg",
            svg.to_str().unwrap(),
            "--json",
        ],
        LIMIT,
    );
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    let names: Vec<String> = at(&f.json(), &["runs"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 2);
    assert_eq!(curves(&svg), names);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rate_writes_corrected_and_raw_histograms() {
    let echo = Server::echo(&[]);
    let dir = scratch("rate");
    let f = run(
        &[
            "rate",
            &echo.addr,
            "-r",
            "1000",
            "-d",
            "0.5",
            "--hist-dir",
            dir.to_str().unwrap(),
        ],
        LIMIT,
    );
    assert_eq!(f.code, Some(0), "{}", f.stderr);
    assert!(dir.join("direct.hgrm").is_file());
    assert!(dir.join("direct-raw.hgrm").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}
