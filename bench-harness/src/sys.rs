//! Host facts: clocks, /proc sampling of the broker and of our own threads,
//! machine description for the JSON report.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// CLOCK_MONOTONIC in nanoseconds: the time base of intended send times.
/// Shared by every thread (and process) on the host.
#[inline]
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Seconds per clock tick of /proc/*/stat CPU times.
pub fn clock_tick_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1.0 / if t > 0 { t as f64 } else { 100.0 }
}

/// utime + stime, in seconds, from a /proc/.../stat file.
pub fn stat_cpu_s(path: &Path) -> Option<f64> {
    let s = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may contain spaces; fields after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) * clock_tick_s())
}

/// CPU seconds used by a process (all its threads).
pub fn proc_cpu_s(pid: u32) -> Option<f64> {
    stat_cpu_s(Path::new(&format!("/proc/{pid}/stat")))
}

/// CPU seconds used by one of our own threads.
pub fn thread_cpu_s(tid: i32) -> Option<f64> {
    stat_cpu_s(Path::new(&format!("/proc/self/task/{tid}/stat")))
}

/// Resident set size of a process in KiB (VmRSS).
pub fn proc_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// The calling thread's kernel thread id.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// CPU seconds (user + system) of this whole process so far.
pub fn self_cpu_s() -> f64 {
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is valid and writable.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Raises the open-file limit to its hard maximum; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    // SAFETY: an all-zero rlimit is a valid value to be overwritten.
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `rl` is valid and writable.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return 0;
    }
    if rl.rlim_cur < rl.rlim_max {
        rl.rlim_cur = rl.rlim_max;
        // SAFETY: `rl` is a valid rlimit; failure leaves the old limit.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) };
        // SAFETY: as above.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    }
    rl.rlim_cur
}

/// Online CPUs of this host.
pub fn nproc() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// The machine the benchmark ran on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    pub hostname: String,
    pub nproc: usize,
    pub cpu_model: String,
    pub mem_total_kib: u64,
    pub kernel: String,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name") || l.starts_with("Model"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_total_kib = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let (hostname, kernel) = uname();
        Machine { hostname, nproc: nproc(), cpu_model, mem_total_kib, kernel }
    }
}

/// (nodename, release) from uname(2).
fn uname() -> (String, String) {
    // SAFETY: an all-zero utsname is valid to be overwritten.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is valid and writable.
    if unsafe { libc::uname(&mut u) } != 0 {
        return (String::new(), String::new());
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (field(&u.nodename), field(&u.release))
}

/// `git rev-parse HEAD` of the current directory, if git and a repo exist.
pub fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// Parses a CPU list like `0-3,6,8-9`.
pub fn parse_cpu_list(s: &str) -> anyhow::Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let (a, b): (usize, usize) = (a.trim().parse()?, b.trim().parse()?);
            anyhow::ensure!(a <= b, "bad CPU range {part}");
            cpus.extend(a..=b);
        } else {
            cpus.push(part.parse()?);
        }
    }
    anyhow::ensure!(!cpus.is_empty(), "empty CPU list");
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,6").unwrap(), vec![0, 1, 2, 3, 6]);
        assert_eq!(parse_cpu_list("1").unwrap(), vec![1]);
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("").is_err());
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        assert!(proc_cpu_s(pid).is_some());
        assert!(proc_rss_kib(pid).unwrap_or(0) > 0);
        assert!(thread_cpu_s(gettid()).is_some());
        assert!(mono_ns() > 0);
    }
}
