//! `--hist-dir`: one HdrHistogram percentile-distribution file per run, in
//! the text format of HdrHistogram's `outputPercentileDistribution` (the one
//! wrk2 prints and the HdrHistogram online plotter reads). Values are in
//! microseconds.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;

use super::{OutputError, Run};

/// Writes `<dir>/<run name>.hgrm` for every run with a latency histogram
/// (rate runs also get `<name>-raw.hgrm`). Returns each run's main file.
pub fn write_all(dir: &Path, runs: &[Run]) -> Result<Vec<Option<PathBuf>>, OutputError> {
    std::fs::create_dir_all(dir).map_err(|source| OutputError::Write {
        path: dir.into(),
        source,
    })?;
    let mut out = Vec::with_capacity(runs.len());
    for run in runs {
        let Some(h) = run.latency.as_ref().filter(|h| !h.is_empty()) else {
            out.push(None);
            continue;
        };
        let path = dir.join(format!("{}.hgrm", file_stem(&run.report.name)));
        write_file(&path, h)?;
        if let Some(raw) = run.raw.as_ref().filter(|h| !h.is_empty()) {
            write_file(
                &dir.join(format!("{}-raw.hgrm", file_stem(&run.report.name))),
                raw,
            )?;
        }
        out.push(Some(path));
    }
    Ok(out)
}

fn write_file(path: &Path, h: &Histogram<u64>) -> Result<(), OutputError> {
    std::fs::write(path, percentile_distribution(h, 1000.0)).map_err(|source| OutputError::Write {
        path: path.into(),
        source,
    })
}

/// A run name made safe for a file name.
pub fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The percentile distribution text, values divided by `scale`.
pub fn percentile_distribution(h: &Histogram<u64>, scale: f64) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let value = v.value_iterated_to() as f64 / scale;
        if q < 1.0 {
            let _ = writeln!(
                s,
                "{value:>12.3} {q:>14.12} {total:>10} {:>14.2}",
                1.0 / (1.0 - q)
            );
        } else {
            let _ = writeln!(s, "{value:>12.3} {q:>14.12} {total:>10}");
        }
    }
    let _ = writeln!(
        s,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        h.mean() / scale,
        h.stdev() / scale
    );
    let _ = writeln!(
        s,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        h.max() as f64 / scale,
        h.len()
    );
    let _ = writeln!(
        s,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        h.distinct_values()
    );
    let _ = writeln!(s, "#[Unit    = microseconds]");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_has_header_rows_and_footer() {
        let mut h = crate::stats::new_hist();
        for v in 1..=100u64 {
            h.record(v * 1000).unwrap();
        }
        let text = percentile_distribution(&h, 1000.0);
        let mut lines = text.lines();
        assert!(lines.next().unwrap().contains("Percentile"));
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
            .collect();
        assert!(rows.len() > 10);
        let last: Vec<&str> = rows.last().unwrap().split_whitespace().collect();
        assert_eq!(last[2], "100");
        assert!(text.contains("#[Max     =      100.031") || text.contains("#[Max"));
        assert_eq!(file_stem("ping direct/r1"), "ping-direct-r1");
    }
}
