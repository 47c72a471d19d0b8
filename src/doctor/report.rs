//! Rendering doctor's findings: the table, the fixes for each warning, the
//! notes for info/missing rows, and the summary line.
//!
//! Owns: [`Status`], [`Row`] and the text layout. Must not: read the system
//! or decide statuses (that is `checks.rs`).

use std::io::{self, Write};

/// The verdict on one row. Only `Warn` fails `--strict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    /// Shown for reference, or a trade-off the operator decides.
    Info,
    /// Not present on this host (module not loaded, older kernel, hidden in a
    /// container's network namespace).
    Missing,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Info => "info",
            Status::Missing => "missing",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Row {
    pub setting: String,
    pub current: String,
    pub recommended: String,
    pub status: Status,
    /// Why it matters or what the value means (printed for non-ok rows).
    pub note: String,
    /// Exact commands: the fix for a warning, the suggestion for info.
    pub fixes: Vec<String>,
}

impl Row {
    pub fn new(setting: impl Into<String>, status: Status) -> Row {
        Row {
            setting: setting.into(),
            current: String::new(),
            recommended: String::new(),
            status,
            note: String::new(),
            fixes: Vec::new(),
        }
    }

    pub fn status(mut self, s: Status) -> Row {
        self.status = s;
        self
    }

    pub fn current(mut self, v: impl Into<String>) -> Row {
        self.current = v.into();
        self
    }

    pub fn recommended(mut self, v: impl Into<String>) -> Row {
        self.recommended = v.into();
        self
    }

    pub fn note(mut self, v: impl Into<String>) -> Row {
        self.note = v.into();
        self
    }

    pub fn fix(mut self, v: impl Into<String>) -> Row {
        self.fixes.push(v.into());
        self
    }
}

/// Longest cell shown in the table; longer values are cut with "…" (the
/// full text is in the row's note).
const MAX_CELL: usize = 34;

fn cell(s: &str) -> String {
    if s.chars().count() <= MAX_CELL {
        s.to_string()
    } else {
        let cut: String = s.chars().take(MAX_CELL - 1).collect();
        format!("{cut}…")
    }
}

fn width(rows: &[Row], f: impl Fn(&Row) -> &str, title: &str) -> usize {
    rows.iter()
        .map(|r| cell(f(r)).chars().count())
        .chain([title.len()])
        .max()
        .unwrap_or(0)
}

fn pad(s: &str, w: usize) -> String {
    let n = s.chars().count();
    format!("{s}{}", " ".repeat(w.saturating_sub(n)))
}

/// Writes the whole report and returns the exit code.
pub fn render(
    out: &mut dyn Write,
    header: &[String],
    rows: &[Row],
    footer: &[String],
    strict: bool,
) -> io::Result<i32> {
    for line in header {
        writeln!(out, "{line}")?;
    }
    writeln!(out)?;
    let ws = width(rows, |r| &r.setting, "SETTING");
    let wc = width(rows, |r| &r.current, "CURRENT");
    let wr = width(rows, |r| &r.recommended, "RECOMMENDED");
    writeln!(
        out,
        "{}  {}  {}  STATUS",
        pad("SETTING", ws),
        pad("CURRENT", wc),
        pad("RECOMMENDED", wr)
    )?;
    for r in rows {
        writeln!(
            out,
            "{}  {}  {}  {}",
            pad(&cell(&r.setting), ws),
            pad(&cell(&r.current), wc),
            pad(&cell(&r.recommended), wr),
            r.status.label()
        )?;
    }

    let warns: Vec<&Row> = rows.iter().filter(|r| r.status == Status::Warn).collect();
    if !warns.is_empty() {
        writeln!(out)?;
        writeln!(out, "Warnings, and the command that fixes each (as root):")?;
        for r in &warns {
            write_item(out, r)?;
        }
        for line in footer {
            writeln!(out, "{line}")?;
        }
    }

    let notes: Vec<&Row> = rows
        .iter()
        .filter(|r| matches!(r.status, Status::Info | Status::Missing) && !r.note.is_empty())
        .collect();
    if !notes.is_empty() {
        writeln!(out)?;
        writeln!(out, "Notes (info/missing: not failures):")?;
        for r in &notes {
            write_item(out, r)?;
        }
    }

    let count = |s: Status| rows.iter().filter(|r| r.status == s).count();
    let code = if strict && !warns.is_empty() { 1 } else { 0 };
    writeln!(out)?;
    writeln!(
        out,
        "summary: {} ok, {} warn, {} info, {} missing -> exit {code}{}",
        count(Status::Ok),
        count(Status::Warn),
        count(Status::Info),
        count(Status::Missing),
        if strict || warns.is_empty() {
            ""
        } else {
            " (--strict exits 1 on warnings)"
        }
    )?;
    Ok(code)
}

fn write_item(out: &mut dyn Write, r: &Row) -> io::Result<()> {
    let mut head = format!("- {} [{}]", r.setting, r.status.label());
    if !r.note.is_empty() {
        head.push_str(": ");
        head.push_str(&r.note);
    }
    writeln!(out, "{head}")?;
    for f in &r.fixes {
        writeln!(out, "    {f}")?;
    }
    Ok(())
}
