//! Reading the live state doctor compares: files under the proc root, the
//! process's rlimits, and the io_uring_setup probe.
//!
//! Owns: every read doctor does. Nothing here judges a value; odd or missing
//! input comes back as [`Read::Absent`] / [`Read::Unreadable`] or a parse
//! error, never a panic. Under a fake proc root (tests) rlimits come from
//! `<root>/proc/self/limits`, the file the kernel writes in the same format,
//! so no check depends on the limits of the process running the tests.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// One value read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// The trimmed contents.
    Value(String),
    /// No such file: key unknown to this kernel, module not loaded, or hidden
    /// inside this network namespace.
    Absent,
    /// The file exists but could not be read (permission, I/O).
    Unreadable(String),
}

/// Where live values come from.
#[derive(Debug, Clone)]
pub struct Source {
    root: PathBuf,
    /// True when the root is the real `/`: only then are the process's own
    /// rlimits and the io_uring probe meaningful.
    pub live: bool,
}

impl Source {
    pub fn new(root: &Path) -> Source {
        let live = std::fs::canonicalize(root).is_ok_and(|p| p == Path::new("/"));
        Source {
            root: root.to_path_buf(),
            live,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads `rel` (relative, e.g. `proc/sys/net/core/somaxconn`) under the root.
    pub fn read(&self, rel: &str) -> Read {
        match std::fs::read(self.root.join(rel)) {
            Ok(bytes) => Read::Value(String::from_utf8_lossy(&bytes).trim().to_string()),
            Err(e) if e.kind() == ErrorKind::NotFound => Read::Absent,
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Read::Absent,
            Err(e) => Read::Unreadable(e.to_string()),
        }
    }

    /// Reads a sysctl by its dotted name.
    pub fn sysctl(&self, key: &str) -> Read {
        self.read(&format!("proc/sys/{}", super::table::proc_path(key)))
    }

    /// Names of the entries of directory `rel` under the root, sorted; empty
    /// when it does not exist or cannot be listed.
    pub fn list(&self, rel: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.root.join(rel))
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort_by_key(|a| natural_key(a));
        names
    }

    /// `RLIMIT_NOFILE` and `RLIMIT_MEMLOCK` of this process (live) or from
    /// `<root>/proc/self/limits` (fake tree).
    pub fn limits(&self) -> Limits {
        if self.live {
            return Limits {
                origin: "this doctor process".into(),
                nofile: getrlimit(true),
                memlock: getrlimit(false),
            };
        }
        let origin = format!("{}", self.root.join("proc/self/limits").display());
        match self.read("proc/self/limits") {
            Read::Value(text) => Limits {
                origin,
                nofile: limit_line(&text, "Max open files"),
                memlock: limit_line(&text, "Max locked memory"),
            },
            Read::Absent => Limits {
                origin,
                nofile: Limit::Absent,
                memlock: Limit::Absent,
            },
            Read::Unreadable(e) => Limits {
                origin,
                nofile: Limit::Unparsable(e.clone()),
                memlock: Limit::Unparsable(e),
            },
        }
    }
}

/// Sort key that orders `cpu2` before `cpu10`.
fn natural_key(s: &str) -> (String, u64) {
    let digits = s.len() - s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (head, tail) = s.split_at(s.len() - digits);
    (head.to_string(), tail.parse().unwrap_or(0))
}

/// One resource limit; `u64::MAX` means unlimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limit {
    Value { soft: u64, hard: u64 },
    Absent,
    Unparsable(String),
}

#[derive(Debug, Clone)]
pub struct Limits {
    /// Where the numbers came from, for the report.
    pub origin: String,
    pub nofile: Limit,
    pub memlock: Limit,
}

/// `RLIMIT_NOFILE` when `nofile`, else `RLIMIT_MEMLOCK`.
fn getrlimit(nofile: bool) -> Limit {
    let resource = if nofile {
        libc::RLIMIT_NOFILE
    } else {
        libc::RLIMIT_MEMLOCK
    };
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `struct rlimit` to a valid, owned pointer.
    let rc = unsafe { libc::getrlimit(resource, &mut rl) };
    if rc != 0 {
        return Limit::Unparsable(std::io::Error::last_os_error().to_string());
    }
    let conv = |v: libc::rlim_t| {
        if v == libc::RLIM_INFINITY {
            u64::MAX
        } else {
            v
        }
    };
    Limit::Value {
        soft: conv(rl.rlim_cur),
        hard: conv(rl.rlim_max),
    }
}

/// Parses one row of `/proc/<pid>/limits`, e.g.
/// `Max open files            20000                20000                files`.
pub fn limit_line(text: &str, name: &str) -> Limit {
    let Some(line) = text.lines().find(|l| l.starts_with(name)) else {
        return Limit::Absent;
    };
    let mut fields = line[name.len()..].split_whitespace();
    let parse = |f: Option<&str>| match f {
        Some("unlimited") => Some(u64::MAX),
        Some(v) => v.parse::<u64>().ok(),
        None => None,
    };
    match (parse(fields.next()), parse(fields.next())) {
        (Some(soft), Some(hard)) => Limit::Value { soft, hard },
        _ => Limit::Unparsable(line.trim().to_string()),
    }
}

/// Parses a kernel cpu list (`0-3,8,10-11`) into the number of CPUs.
pub fn cpulist_count(list: &str) -> Option<usize> {
    let list = list.trim();
    if list.is_empty() {
        return Some(0);
    }
    let mut n = 0usize;
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.trim().parse().ok()?;
                let b: usize = b.trim().parse().ok()?;
                n = n.checked_add(b.checked_sub(a)? + 1)?;
            }
            None => {
                part.trim().parse::<usize>().ok()?;
                n = n.checked_add(1)?;
            }
        }
    }
    Some(n)
}

/// Whether a hex CPU mask (`00000000,0000000f`) has any bit set.
pub fn mask_nonzero(mask: &str) -> bool {
    mask.chars().any(|c| c.is_ascii_hexdigit() && c != '0')
}

/// `6.18.44-fc-v595` → (6, 18).
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The `Seccomp:` mode from `/proc/self/status` (0 off, 1 strict, 2 filter).
pub fn seccomp_mode(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Tries to create a 2-entry io_uring and closes it again. `Ok` means this
/// process may use io_uring right now (sysctl, seccomp and memlock allowing).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn probe_io_uring() -> Result<(), std::io::Error> {
    /// `struct io_uring_params`: 120 bytes the kernel reads and fills in.
    #[repr(C)]
    struct Params([u32; 30]);
    let mut params = Params([0; 30]);
    // SAFETY: io_uring_setup(entries, params) reads and writes exactly one
    // io_uring_params through the pointer, which stays valid for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_io_uring_setup,
            2 as libc::c_long,
            &mut params as *mut Params,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is the ring descriptor just returned to us and owned here.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub fn probe_io_uring() -> Result<(), std::io::Error> {
    Err(std::io::Error::from_raw_os_error(libc::ENOSYS))
}
