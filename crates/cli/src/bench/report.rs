//! What `mistral-run bench` measures, as serde types (the `--json` output and
//! what `bench-plot` reads back), and the llama-bench-style Markdown table.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Version of the JSON layout below; bumped when a field changes meaning.
pub const SCHEMA_VERSION: u32 = 1;

/// A whole `bench` run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    pub schema_version: u32,
    /// `mistral-run X.Y.Z`.
    pub tool: String,
    /// When the run started, `YYYY-MM-DDTHH:MM:SSZ`.
    pub date_utc: String,
    pub machine: Machine,
    /// Prompt tokens of the pp test (0: no pp test).
    pub n_prompt: usize,
    /// Generated tokens of the tg test (0: no tg test).
    pub n_gen: usize,
    /// Timed repetitions of each test (after one warm-up).
    pub repetitions: usize,
    /// Depths each test ran at (tokens already in the KV cache).
    #[serde(default)]
    pub n_depth: Vec<usize>,
    /// One entry per model × kernels × threads that ran.
    pub results: Vec<ModelResult>,
    /// The combinations that could not run, with the reason.
    pub errors: Vec<BenchFailure>,
}

/// The machine the run was measured on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// `model name` from /proc/cpuinfo.
    pub cpu: String,
    /// Logical CPUs this process may use.
    pub logical_cores: usize,
    /// SIMD extensions detected at run time (x86: avx2, fma, f16c, avx512f, avx512vnni).
    pub simd: Vec<String>,
    /// MemTotal from /proc/meminfo.
    pub memory_bytes: Option<u64>,
    /// `uname -sr`-like: OS and kernel release.
    pub os: String,
    /// 1-minute load average when the run started (other processes competing for the cores).
    pub load_average_1m: Option<f64>,
    /// Memory read bandwidth, when measured in the same run (`--bandwidth`).
    pub bandwidth: Option<Bandwidth>,
}

/// Memory read bandwidth: an f32 dot product over two arrays.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bandwidth {
    /// Size of each array.
    pub array_bytes: u64,
    pub repetitions: usize,
    /// One entry per thread count measured.
    pub runs: Vec<BandwidthRun>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BandwidthRun {
    pub threads: usize,
    /// Bytes read per second (both arrays), 1e9 = 1 GB/s; mean over the repetitions.
    pub mean_gb_s: f64,
    pub stdev_gb_s: f64,
}

/// Prompt processing or text generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TestKind {
    /// One batch of `n_tokens` prompt tokens from an empty KV cache.
    Pp,
    /// `n_tokens` single-token steps from an empty KV cache.
    Tg,
}

impl TestKind {
    /// llama-bench's test name: `pp512`, `tg128`, `tg128 @ d2048`.
    pub fn name(self, n_tokens: usize, n_depth: usize) -> String {
        let base = match self {
            TestKind::Pp => format!("pp{n_tokens}"),
            TestKind::Tg => format!("tg{n_tokens}"),
        };
        if n_depth > 0 {
            format!("{base} @ d{n_depth}")
        } else {
            base
        }
    }
}

/// One test of one model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestResult {
    /// `pp512`, `tg128` (llama-bench's names).
    pub name: String,
    pub kind: TestKind,
    pub n_tokens: usize,
    /// Tokens already in the KV cache when the test ran (llama-bench's `-d`).
    #[serde(default)]
    pub n_depth: usize,
    /// Tokens per second, mean over the repetitions.
    pub mean_tps: f64,
    /// Sample standard deviation of the per-repetition tokens per second.
    pub stdev_tps: f64,
    /// Wall time of each timed repetition.
    pub samples_seconds: Vec<f64>,
}

/// Everything measured for one model with one kernel choice and thread count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelResult {
    /// The file as given on the command line.
    pub path: String,
    pub file_name: String,
    /// llama-bench's model column: `llama 852M Q4_K_M`, `llama 8x?? MoE Q4_K_M`.
    pub model: String,
    /// `general.architecture`.
    pub arch: String,
    /// llama.cpp file type name (`general.file_type`), `unknown` when absent.
    pub ftype: String,
    /// Bytes of tensor data in the file (llama-bench's size column).
    pub size_bytes: u64,
    /// Parameters (elements of all tensors).
    pub params: u64,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_expert: usize,
    pub n_expert_used: usize,
    /// `CPU` (or the accelerator's name).
    pub backend: String,
    /// The device string (`cpu`, `cuda:0`).
    pub device: String,
    /// Matmul kernels: `candle` or `native`.
    pub kernels: String,
    /// The instruction-set path our kernels ran (`avx512`, `avx2`, `neon-dot`…:
    /// the CPU's best unless `MISTRAL_KERNELS_ISA` chose a lower one); empty in
    /// reports written before it was recorded.
    #[serde(default)]
    pub isa: String,
    pub threads: usize,
    /// Weight bytes the model holds in memory.
    pub weight_bytes: u64,
    /// Bytes of KV cache the session held at its largest.
    pub kv_cache_bytes: u64,
    /// The most positions a test put in the cache (depth + prompt or generated tokens).
    pub kv_positions: usize,
    /// Element types of the cached keys and values (`f16`, `q8_0`, `f32`).
    #[serde(default)]
    pub cache_type_k: String,
    #[serde(default)]
    pub cache_type_v: String,
    /// Resident set after the tests (VmRSS).
    pub rss_bytes: Option<u64>,
    /// Peak resident set of the process that loaded and ran this model alone (VmHWM).
    pub peak_rss_bytes: Option<u64>,
    /// Peak device memory (accelerators; not measured on the CPU).
    pub peak_device_bytes: Option<u64>,
    /// Time to open and load the file.
    pub load_seconds: f64,
    /// 1-minute load average just before this model's tests.
    pub load_average_1m: Option<f64>,
    pub tests: Vec<TestResult>,
}

/// A combination that did not produce a result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchFailure {
    pub path: String,
    pub kernels: String,
    pub threads: usize,
    pub error: String,
}

impl BenchFailure {
    /// One line for stderr.
    pub fn line(&self) -> String {
        format!(
            "{} (kernels {}, {} threads): {}",
            self.path, self.kernels, self.threads, self.error
        )
    }
}

/// Bytes the way llama-bench prints model sizes: `468.64 MiB`, `1.58 GiB`.
pub fn human_bytes(n: u64) -> String {
    let f = n as f64;
    const KIB: f64 = 1024.0;
    if f >= KIB * KIB * KIB {
        format!("{:.2} GiB", f / (KIB * KIB * KIB))
    } else if f >= KIB * KIB {
        format!("{:.2} MiB", f / (KIB * KIB))
    } else if f >= KIB {
        format!("{:.2} KiB", f / KIB)
    } else {
        format!("{n} B")
    }
}

/// Parameters the way llama-bench prints them: `852.37 M`, `7.24 B`.
pub fn human_params(n: u64) -> String {
    let f = n as f64;
    if f >= 1e9 {
        format!("{:.2} B", f / 1e9)
    } else if f >= 1e6 {
        format!("{:.2} M", f / 1e6)
    } else if f >= 1e3 {
        format!("{:.2} K", f / 1e3)
    } else {
        n.to_string()
    }
}

/// Short size label of a parameter count for the model column (`852M`, `7B`).
pub fn size_label(n: u64) -> String {
    let f = n as f64;
    if f >= 1e9 {
        format!("{:.0}B", f / 1e9)
    } else if f >= 1e6 {
        format!("{:.0}M", f / 1e6)
    } else if f >= 1e3 {
        format!("{:.0}K", f / 1e3)
    } else {
        n.to_string()
    }
}

/// Columns of the Markdown table: name, width, right-aligned.
const COLUMNS: &[(&str, usize, bool)] = &[
    ("model", 30, false),
    ("size", 10, true),
    ("params", 10, true),
    ("backend", 7, false),
    ("kernels", 7, false),
    ("threads", 7, true),
    ("test", 6, true),
    ("t/s", 16, true),
    ("weights", 10, true),
    ("KV cache", 10, true),
    ("peak RSS", 10, true),
];

fn row(cells: &[String]) -> String {
    let mut s = String::from("|");
    for ((_, width, right), cell) in COLUMNS.iter().zip(cells) {
        if *right {
            let _ = write!(s, " {cell:>width$} |");
        } else {
            let _ = write!(s, " {cell:<width$} |");
        }
    }
    s
}

/// The header and separator lines.
pub fn markdown_header() -> String {
    let names: Vec<String> = COLUMNS.iter().map(|(n, _, _)| n.to_string()).collect();
    let mut sep = String::from("|");
    for (_, width, right) in COLUMNS {
        if *right {
            let _ = write!(sep, " {}: |", "-".repeat(width - 1));
        } else {
            let _ = write!(sep, " {} |", "-".repeat(*width));
        }
    }
    format!("{}\n{}\n", row(&names), sep)
}

/// One line per test of `r`.
pub fn markdown_rows(r: &ModelResult) -> String {
    let opt_bytes = |b: Option<u64>| b.map_or_else(|| "-".to_string(), human_bytes);
    let mut s = String::new();
    for t in &r.tests {
        let cells = [
            r.model.clone(),
            human_bytes(r.size_bytes),
            human_params(r.params),
            r.backend.clone(),
            r.kernels.clone(),
            r.threads.to_string(),
            t.name.clone(),
            format!("{:.2} ± {:.2}", t.mean_tps, t.stdev_tps),
            human_bytes(r.weight_bytes),
            human_bytes(r.kv_cache_bytes),
            opt_bytes(r.peak_rss_bytes.or(r.peak_device_bytes)),
        ];
        s.push_str(&row(&cells));
        s.push('\n');
    }
    s
}

/// Mean and sample standard deviation (n - 1; 0 for fewer than two values).
pub fn mean_stdev(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (0.0, 0.0);
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (mean, 0.0);
    }
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_match_the_textbook_formula() {
        let (m, s) = mean_stdev(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert!((m - 5.0).abs() < 1e-12);
        // Sample variance 32 / 7.
        assert!((s - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_stdev(&[3.0]), (3.0, 0.0));
    }

    #[test]
    fn units_print_like_llama_bench() {
        assert_eq!(human_bytes(491_406_336), "468.64 MiB");
        assert_eq!(human_bytes(3 << 30), "3.00 GiB");
        assert_eq!(human_params(852_370_000), "852.37 M");
        assert_eq!(human_params(7_241_732_096), "7.24 B");
        assert_eq!(size_label(852_370_000), "852M");
    }

    #[test]
    fn table_lines_have_one_cell_per_column() {
        let header = markdown_header();
        for line in header.lines() {
            assert_eq!(line.matches('|').count(), COLUMNS.len() + 1, "{line}");
        }
        assert!(header.lines().nth(1).is_some_and(|l| l.contains("---:")));
    }
}
