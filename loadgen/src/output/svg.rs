//! `--svg`: a self-contained latency-percentile plot, the HdrHistogram way:
//! the x axis is in "nines" (log10 of 1/(1−p): 90%, 99%, 99.9%, ...), the y
//! axis is latency in µs, one curve per run, direct runs in blues and
//! relayed runs in oranges. Plain SVG 1.1, opens in any browser.

use std::fmt::Write as _;

use super::Run;

const W: f64 = 960.0;
const H: f64 = 540.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = W - 250.0;
const TOP: f64 = 56.0;
const BOTTOM: f64 = H - 64.0;

const BLUES: [&str; 6] = [
    "#1f77b4", "#6baed6", "#08519c", "#4292c6", "#2171b5", "#9ecae1",
];
const ORANGES: [&str; 6] = [
    "#ff7f0e", "#e6550d", "#fdae6b", "#a63603", "#fd8d3c", "#d94801",
];
const GREENS: [&str; 6] = [
    "#2ca02c", "#74c476", "#006d2c", "#41ab5d", "#238b45", "#a1d99b",
];

/// One curve: (nines, µs) points.
#[derive(Debug, Clone)]
pub struct Curve {
    pub name: String,
    /// "direct", "relayed" (or anything else: drawn in greens).
    pub kind: String,
    pub points: Vec<(f64, f64)>,
    pub p50: f64,
    pub p99: f64,
}

impl Curve {
    /// The curve of a run's latency histogram; None without one.
    pub fn from_run(run: &Run) -> Option<Self> {
        let h = run.latency.as_ref().filter(|h| !h.is_empty())?;
        let count = h.len() as f64;
        let x_max = count.log10().max(1.0);
        let mut points = Vec::new();
        let mut x = 0.0;
        while x < x_max {
            let q = 1.0 - 10f64.powf(-x);
            points.push((x, h.value_at_quantile(q) as f64 / 1000.0));
            x += 0.02;
        }
        points.push((x_max, h.max() as f64 / 1000.0));
        Some(Self {
            name: run.report.name.clone(),
            kind: run.report.route.kind.clone(),
            points,
            p50: h.value_at_quantile(0.5) as f64 / 1000.0,
            p99: h.value_at_quantile(0.99) as f64 / 1000.0,
        })
    }
}

/// Escapes text for XML content and attributes.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// A "nice" axis step (1, 2 or 5 × 10^k) giving at most `max_ticks` ticks.
fn nice_step(range: f64, max_ticks: f64) -> f64 {
    let raw = (range / max_ticks).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

fn nines_label(n: u32) -> String {
    match n {
        0 => "0%".into(),
        1 => "90%".into(),
        n => format!("99.{}%", "9".repeat(n as usize - 2)).replace("99.%", "99%"),
    }
}

fn fmt_us(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} ms", v / 1000.0)
    } else if v >= 1000.0 {
        format!("{:.2} ms", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0} µs")
    } else {
        format!("{v:.1} µs")
    }
}

/// Renders the plot.
pub fn render(title: &str, curves: &[Curve]) -> String {
    let x_max = curves
        .iter()
        .flat_map(|c| c.points.last().map(|p| p.0))
        .fold(2.0f64, f64::max)
        .ceil();
    let axis = YAxis::fit(curves.iter().flat_map(|c| c.points.iter().map(|p| p.1)));
    let sx = |x: f64| LEFT + x / x_max * (RIGHT - LEFT);
    let sy = |y: f64| BOTTOM - axis.frac(y) * (BOTTOM - TOP);
    let y_ticks = axis.ticks();

    let mut s = String::new();
    let _ = writeln!(s, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, "<title>{}</title>", escape(title));
    let _ = writeln!(
        s,
        r##"<rect x="0" y="0" width="{W}" height="{H}" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" font-size="16" font-weight="bold">{}</text>"#,
        LEFT,
        escape(title)
    );

    // Grid and axes.
    let _ = writeln!(s, r##"<g class="grid" stroke="#e0e0e0" stroke-width="1">"##);
    let mut ticks: Vec<(f64, String)> = (0..=x_max as u32)
        .map(|n| (n as f64, nines_label(n)))
        .collect();
    ticks.push((2f64.log10(), "50%".into()));
    for (x, _) in &ticks {
        let _ = writeln!(
            s,
            r#"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{BOTTOM}"/>"#,
            sx(*x)
        );
    }
    for y in &y_ticks {
        let _ = writeln!(
            s,
            r#"<line x1="{LEFT}" y1="{0:.1}" x2="{RIGHT}" y2="{0:.1}"/>"#,
            sy(*y)
        );
    }
    let _ = writeln!(s, "</g>");
    let _ = writeln!(s, r##"<g class="axes" fill="#333333">"##);
    for (x, label) in &ticks {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            sx(*x),
            BOTTOM + 18.0,
            escape(label)
        );
    }
    for y in &y_ticks {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            sy(*y) + 4.0,
            escape(&trim_num(*y))
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{}" text-anchor="middle">percentile (log scale of 1/(1−p): each step one more nine)</text>"#,
        (LEFT + RIGHT) / 2.0,
        H - 20.0
    );
    let _ = writeln!(
        s,
        r#"<text x="20" y="{:.1}" text-anchor="middle" transform="rotate(-90 20 {:.1})">latency (µs{})</text>"#,
        (TOP + BOTTOM) / 2.0,
        (TOP + BOTTOM) / 2.0,
        if axis.log { ", log scale" } else { "" }
    );
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="#999999"/>"##,
        RIGHT - LEFT,
        BOTTOM - TOP
    );
    let _ = writeln!(s, "</g>");

    // Curves and legend.
    let (mut nb, mut no, mut ng) = (0usize, 0usize, 0usize);
    let _ = writeln!(s, r#"<g class="curves" fill="none" stroke-width="1.8">"#);
    let mut legend = String::new();
    for (i, c) in curves.iter().enumerate() {
        let color = match c.kind.as_str() {
            "direct" => {
                nb += 1;
                BLUES[(nb - 1) % BLUES.len()]
            }
            "relayed" => {
                no += 1;
                ORANGES[(no - 1) % ORANGES.len()]
            }
            _ => {
                ng += 1;
                GREENS[(ng - 1) % GREENS.len()]
            }
        };
        let mut d = String::new();
        for (j, (x, y)) in c.points.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1} ",
                if j == 0 { "M" } else { "L" },
                sx(*x),
                sy(*y)
            );
        }
        let name = escape(&c.name);
        let _ = writeln!(
            s,
            r#"<path class="curve {}" data-run="{name}" stroke="{color}" d="{}"><title>{name}: p50 {}, p99 {}</title></path>"#,
            escape(&c.kind),
            d.trim_end(),
            fmt_us(c.p50),
            fmt_us(c.p99)
        );
        let ly = TOP + 8.0 + i as f64 * 18.0;
        let _ = writeln!(
            legend,
            r#"<line x1="{0}" y1="{ly:.1}" x2="{1}" y2="{ly:.1}" stroke="{color}" stroke-width="3"/><text x="{2}" y="{3:.1}">{name} (p50 {4})</text>"#,
            RIGHT + 14.0,
            RIGHT + 34.0,
            RIGHT + 40.0,
            ly + 4.0,
            escape(&fmt_us(c.p50)),
        );
    }
    let _ = writeln!(s, "</g>");
    let _ = writeln!(s, r#"<g class="legend" font-size="11">"#);
    s.push_str(&legend);
    let _ = writeln!(s, "</g>");
    let _ = writeln!(s, "</svg>");
    s
}

/// The latency axis: logarithmic when the values span more than a decade
/// (a tail of milliseconds would flatten a body of microseconds), else
/// linear over a "nice" range around the data.
#[derive(Debug, Clone, Copy)]
struct YAxis {
    log: bool,
    lo: f64,
    hi: f64,
    step: f64,
}

impl YAxis {
    fn fit(values: impl Iterator<Item = f64>) -> Self {
        let (mut min, mut max) = (f64::MAX, 0.0f64);
        for v in values.filter(|v| v.is_finite() && *v > 0.0) {
            min = min.min(v);
            max = max.max(v);
        }
        if max <= 0.0 {
            return Self {
                log: false,
                lo: 0.0,
                hi: 1.0,
                step: 0.2,
            };
        }
        if max / min > 10.0 {
            return Self {
                log: true,
                lo: one_two_five(min, false),
                hi: one_two_five(max * 1.05, true),
                step: 0.0,
            };
        }
        let step = nice_step((max - min).max(max * 0.05), 8.0);
        Self {
            log: false,
            lo: ((min / step).floor() - 1.0).max(0.0) * step,
            hi: ((max * 1.02) / step).ceil() * step,
            step,
        }
    }

    /// Position of `y` between the bottom (0) and the top (1).
    fn frac(&self, y: f64) -> f64 {
        let f = if self.log {
            (y.max(self.lo).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (y - self.lo) / (self.hi - self.lo)
        };
        f.clamp(0.0, 1.0)
    }

    /// Tick values: 1-2-5 per decade (log), or every step (linear).
    fn ticks(&self) -> Vec<f64> {
        let mut t = Vec::new();
        if self.log {
            let mut decade = 10f64.powf(self.lo.log10().floor());
            while decade <= self.hi * 1.0001 {
                for m in [1.0, 2.0, 5.0] {
                    let v = decade * m;
                    if v >= self.lo * 0.9999 && v <= self.hi * 1.0001 {
                        t.push(v);
                    }
                }
                decade *= 10.0;
            }
        } else {
            let mut v = self.lo;
            while v <= self.hi + self.step / 2.0 {
                t.push(v);
                v += self.step;
            }
        }
        t
    }
}

/// The nearest 1, 2 or 5 × 10^k at or below `v` (`up`: at or above).
fn one_two_five(v: f64, up: bool) -> f64 {
    let decade = 10f64.powf(v.log10().floor());
    let steps = [1.0, 2.0, 5.0, 10.0].map(|m| m * decade);
    if up {
        steps
            .into_iter()
            .find(|s| *s >= v * 0.9999)
            .unwrap_or(10.0 * decade)
    } else {
        steps
            .into_iter()
            .rev()
            .find(|s| *s <= v * 1.0001)
            .unwrap_or(decade)
    }
}

fn trim_num(v: f64) -> String {
    if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        let t = format!("{v:.3}");
        t.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(name: &str, kind: &str, scale: f64) -> Curve {
        let points = (0..=150)
            .map(|i| (i as f64 * 0.02, scale * (1.0 + i as f64)))
            .collect();
        Curve {
            name: name.into(),
            kind: kind.into(),
            points,
            p50: scale,
            p99: scale * 100.0,
        }
    }

    #[test]
    fn labels_and_steps() {
        assert_eq!(nines_label(1), "90%");
        assert_eq!(nines_label(2), "99%");
        assert_eq!(nines_label(4), "99.99%");
        assert_eq!(nice_step(97.0, 8.0), 20.0);
        assert_eq!(nice_step(0.9, 8.0), 0.2);
    }

    #[test]
    fn axis_is_log_only_for_wide_ranges() {
        let wide = YAxis::fit([8.0, 20.0, 4800.0].into_iter());
        assert!(wide.log);
        assert_eq!((wide.lo, wide.hi), (5.0, 10_000.0));
        assert_eq!(wide.ticks()[..4], [5.0, 10.0, 20.0, 50.0]);
        assert!((wide.frac(wide.hi) - 1.0).abs() < 1e-9);
        assert_eq!(one_two_five(7.8, false), 5.0);
        assert_eq!(one_two_five(5040.0, true), 10_000.0);
        let narrow = YAxis::fit([48_100.0, 56_000.0].into_iter());
        assert!(!narrow.log);
        assert!(narrow.lo > 40_000.0 && narrow.lo <= 48_100.0, "{narrow:?}");
        assert!(narrow.hi >= 56_000.0);
    }

    #[test]
    fn one_path_per_curve_and_escaped_names() {
        let curves = vec![
            curve("ping-direct-r1", "direct", 1.0),
            curve("ping-relayed-r1 <&>", "relayed", 2.0),
            curve("other", "x", 3.0),
        ];
        let doc = render("t & t", &curves);
        assert_eq!(doc.matches("<path class=\"curve ").count(), 3);
        assert!(doc.contains("&lt;&amp;&gt;"));
        assert!(!doc.contains("<&>"));
    }
}
