//! Will a model fit? The library's [`MemoryPlan`] (from the file's header,
//! nothing loaded) against the memory the system has available
//! (`MemAvailable` in /proc/meminfo, or `$MISTRAL_RUN_MEM_AVAILABLE`).
//!
//! `run`, `chat`, `perplexity` and `batched-bench` refuse before loading when
//! the plan's total is more than what is available; `info --plan` prints it.

use anyhow::{bail, Result};
use mistral_gguf::GgufFile;
use mistral_transformer::{LoadOptions, MemoryPlan};

use crate::bench::report::human_bytes;

/// Environment variable that replaces `MemAvailable` (a byte count, with an
/// optional K/M/G/T suffix in powers of 1024): for tests, and to override
/// the check on a system whose `MemAvailable` is wrong for the purpose.
pub const MEM_AVAILABLE_ENV: &str = "MISTRAL_RUN_MEM_AVAILABLE";

/// Memory available for a model, and where the figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Available {
    pub bytes: u64,
    pub source: &'static str,
}

/// `$MISTRAL_RUN_MEM_AVAILABLE` when set (an error when it is not a byte
/// count), else `MemAvailable`; `None` where neither is known (no /proc).
pub fn available() -> Result<Option<Available>> {
    if let Some(v) = std::env::var_os(MEM_AVAILABLE_ENV) {
        let s = v.to_string_lossy();
        return match parse_bytes(&s) {
            Some(bytes) => Ok(Some(Available {
                bytes,
                source: MEM_AVAILABLE_ENV,
            })),
            None => bail!(
                "{MEM_AVAILABLE_ENV}={s:?} is not a byte count (expected e.g. 8589934592, 512M or 8G)"
            ),
        };
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    Ok(meminfo
        .as_deref()
        .and_then(mem_available)
        .map(|bytes| Available {
            bytes,
            source: "MemAvailable",
        }))
}

/// `MemAvailable:` of a /proc/meminfo text, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line
        .trim_start_matches("MemAvailable:")
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    kb.checked_mul(1024)
}

/// `123`, `512K`, `512M`, `8G`, `1T` (also `8GiB`, `8GB`: powers of 1024).
fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(digits);
    let n: u64 = num.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

/// Environment variable giving a GPU's free memory (a byte count as
/// [`MEM_AVAILABLE_ENV`]'s). This build does not query the GPU, so without
/// it the device's share of a plan is printed but not checked.
pub const GPU_MEM_AVAILABLE_ENV: &str = "MISTRAL_RUN_GPU_MEM_AVAILABLE";

/// `$MISTRAL_RUN_GPU_MEM_AVAILABLE`, when set.
pub fn gpu_available() -> Result<Option<Available>> {
    let Some(v) = std::env::var_os(GPU_MEM_AVAILABLE_ENV) else {
        return Ok(None);
    };
    let s = v.to_string_lossy();
    match parse_bytes(&s) {
        Some(bytes) => Ok(Some(Available {
            bytes,
            source: GPU_MEM_AVAILABLE_ENV,
        })),
        None => bail!("{GPU_MEM_AVAILABLE_ENV}={s:?} is not a byte count (expected e.g. 24G)"),
    }
}

/// The plan of `sessions` sessions of `opts` over `file`.
pub fn plan(file: &GgufFile, opts: &LoadOptions, sessions: usize) -> Result<MemoryPlan> {
    Ok(MemoryPlan::for_file(file, opts, sessions)?)
}

/// `weights X + KV cache Y (N sessions × P positions) + scratch Z`.
pub fn parts(p: &MemoryPlan) -> String {
    format!(
        "weights {} + KV cache {} ({} × {} positions) + scratch {}",
        human_bytes(p.weights),
        human_bytes(p.kv_cache),
        sessions(p.sessions),
        p.positions,
        human_bytes(p.scratch)
    )
}

fn sessions(n: usize) -> String {
    if n == 1 {
        "1 session".to_string()
    } else {
        format!("{n} sessions")
    }
}

/// Plans `sessions` sessions of `opts` over `file` and refuses (one line:
/// the need, its parts and what is available) when they do not fit.
pub fn check(file: &GgufFile, opts: &LoadOptions, sessions: usize) -> Result<MemoryPlan> {
    let p = plan(file, opts, sessions)?;
    if let (Some(d), Some(avail)) = (&p.device, gpu_available()?) {
        if d.total() > avail.bytes {
            let most = d.most_layers_within(avail.bytes);
            bail!(
                "not enough memory on {} for {}: its {} layers there need {} (weights {} + KV cache {}), \
                 and {} is free ({}); --gpu-layers {most} fits",
                d.device,
                file.source_name(),
                d.layers,
                human_bytes(d.total()),
                human_bytes(d.weights),
                human_bytes(d.kv_cache),
                human_bytes(avail.bytes),
                avail.source,
            );
        }
    }
    if let Some(avail) = available()? {
        if p.total() > avail.bytes {
            let hint = if p.kv_cache > p.weights {
                "; a smaller --ctx-size or a q8_0 cache (--cache-type-k/--cache-type-v) needs less"
            } else {
                ""
            };
            bail!(
                "not enough memory for {}: it needs {} = {}, and {} is available ({}){hint}",
                file.source_name(),
                human_bytes(p.total()),
                parts(&p),
                human_bytes(avail.bytes),
                avail.source,
            );
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_parse_with_binary_suffixes() {
        assert_eq!(parse_bytes("1000"), Some(1000));
        assert_eq!(parse_bytes("512K"), Some(512 << 10));
        assert_eq!(parse_bytes("3m"), Some(3 << 20));
        assert_eq!(parse_bytes("8GiB"), Some(8 << 30));
        assert_eq!(parse_bytes(" 2 G "), Some(2 << 30));
        assert_eq!(parse_bytes("1T"), Some(1 << 40));
        assert_eq!(parse_bytes(""), None);
        assert_eq!(parse_bytes("G"), None);
        assert_eq!(parse_bytes("-1"), None);
        assert_eq!(parse_bytes("8X"), None);
        assert_eq!(parse_bytes("99999999999999999999"), None);
        assert_eq!(parse_bytes("18446744073709551615T"), None);
    }

    #[test]
    fn mem_available_reads_the_kb_line() {
        let text = "MemTotal:       24730028 kB\nMemFree:  1 kB\nMemAvailable:   23346432 kB\n";
        assert_eq!(mem_available(text), Some(23_346_432 * 1024));
        assert_eq!(mem_available("MemTotal: 5 kB\n"), None);
    }
}
