//! Facts about the machine and this process that a benchmark result needs:
//! CPU model, cores, SIMD, memory, load, resident set, and the date.
//! Linux's /proc files; elsewhere the fields are `None` / "unknown".

use std::time::{SystemTime, UNIX_EPOCH};

use super::report::Machine;

/// The machine as seen now (no bandwidth measurement).
pub fn describe() -> Machine {
    Machine {
        cpu: cpu_model().unwrap_or_else(|| "unknown".to_string()),
        logical_cores: logical_cores(),
        simd: simd_features(),
        memory_bytes: proc_kb_field("/proc/meminfo", "MemTotal:"),
        os: os_release(),
        load_average_1m: load_average_1m(),
        bandwidth: None,
    }
}

/// Logical CPUs this process may run on.
pub fn logical_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

fn simd_features() -> Vec<String> {
    #[allow(unused_mut)]
    let mut v: Vec<String> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        let checks: [(&str, bool); 6] = [
            ("avx2", is_x86_feature_detected!("avx2")),
            ("fma", is_x86_feature_detected!("fma")),
            ("f16c", is_x86_feature_detected!("f16c")),
            ("avx512f", is_x86_feature_detected!("avx512f")),
            ("avx512bw", is_x86_feature_detected!("avx512bw")),
            ("avx512vnni", is_x86_feature_detected!("avx512vnni")),
        ];
        v.extend(
            checks
                .iter()
                .filter(|(_, on)| *on)
                .map(|(n, _)| n.to_string()),
        );
    }
    #[cfg(target_arch = "aarch64")]
    v.push("neon".to_string());
    v
}

fn os_release() -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok();
    match release {
        Some(r) => format!("{} {}", std::env::consts::OS, r.trim()),
        None => std::env::consts::OS.to_string(),
    }
}

/// The first number of /proc/loadavg.
pub fn load_average_1m() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// A `Key:   123 kB` line of a /proc file, in bytes.
fn proc_kb_field(path: &str, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    parse_kb_field(&s, key)
}

fn parse_kb_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    kb.checked_mul(1024)
}

/// Peak resident set of this process (VmHWM).
pub fn peak_rss_bytes() -> Option<u64> {
    proc_kb_field("/proc/self/status", "VmHWM:")
}

/// Resets this process's peak resident set (VmHWM) to its current
/// resident set (Linux 4.0 and later: `5` into /proc/self/clear_refs), so
/// that the next [`peak_rss_bytes`] is the peak since now. Returns whether it
/// worked.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Current resident set of this process (VmRSS).
pub fn rss_bytes() -> Option<u64> {
    proc_kb_field("/proc/self/status", "VmRSS:")
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn now_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs)
}

/// Seconds since the Unix epoch as an ISO 8601 UTC time (proleptic Gregorian).
fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_match_known_timestamps() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        // `date -u -d @951782400` (a leap day).
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        // `date -u -d @1795430803`.
        assert_eq!(format_utc(1_795_430_803), "2026-11-23T10:46:43Z");
    }

    #[test]
    fn kb_fields_parse_to_bytes() {
        let status = "Name:\tx\nVmHWM:\t  1234 kB\nVmRSS:\t 12 kB\n";
        assert_eq!(parse_kb_field(status, "VmHWM:"), Some(1234 * 1024));
        assert_eq!(parse_kb_field(status, "VmRSS:"), Some(12 * 1024));
        assert_eq!(parse_kb_field(status, "VmSwap:"), None);
    }
}
