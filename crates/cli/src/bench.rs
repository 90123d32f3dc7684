//! `mistral-run bench`: tokens per second and memory, like llama.cpp's
//! `llama-bench`. For every model × kernels × threads combination a fresh child
//! process of this binary (`bench --worker`) loads the model and runs
//! - pp: one batch of `-p` prompt tokens from an empty KV cache,
//! - tg: `-n` single-token steps from an empty KV cache,
//!
//! each once as a warm-up and then `-r` timed times (mean ± sample stdev of the
//! per-repetition tok/s), and reports the weight and KV-cache bytes and its peak
//! resident set (VmHWM: per process, hence one process per model). The parent
//! prints a Markdown table as results arrive (`--md`, the default) or the whole
//! report as JSON (`--json`), which `mistral-run bench-plot` turns into a chart.

mod bandwidth;
pub mod machine;
pub mod report;
pub mod summary;
pub(crate) mod worker;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use mistral_transformer::KernelChoice;
use serde::{Deserialize, Serialize};

use report::{BenchFailure, BenchReport, ModelResult, SCHEMA_VERSION};

/// Kernel implementation for the weight matrices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kernels {
    /// The project's own kernels (mistral-kernels).
    Native,
    /// candle's QMatMul.
    Candle,
}

impl From<Kernels> for KernelChoice {
    fn from(k: Kernels) -> KernelChoice {
        match k {
            Kernels::Native => KernelChoice::Native,
            Kernels::Candle => KernelChoice::Candle,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// GGUF model files (comma-separated or repeated); each is measured in its own process.
    #[arg(
        short = 'm',
        long = "model",
        value_name = "FILE",
        value_delimiter = ',',
        required_unless_present = "bandwidth"
    )]
    pub models: Vec<PathBuf>,
    /// Prompt tokens of the pp test (0: skip it).
    #[arg(short = 'p', long = "n-prompt", value_name = "N", default_value_t = 512, value_parser = clap::value_parser!(u32).range(0..=MAX_TOKENS))]
    pub n_prompt: u32,
    /// Generated tokens of the tg test (0: skip it).
    #[arg(short = 'n', long = "n-gen", value_name = "N", default_value_t = 128, value_parser = clap::value_parser!(u32).range(0..=MAX_TOKENS))]
    pub n_gen: u32,
    /// Tokens already in the KV cache when each test starts (comma-separated
    /// list: every test at every depth), like llama-bench's -d.
    #[arg(short = 'd', long = "n-depth", value_name = "N", value_delimiter = ',', value_parser = clap::value_parser!(u32).range(0..=MAX_TOKENS))]
    pub depth: Vec<u32>,
    /// Timed repetitions of each test (after one warm-up).
    #[arg(short = 'r', long = "repetitions", value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub repetitions: u32,
    /// CPU threads (comma-separated list to compare; default: all logical cores).
    #[arg(short = 't', long = "threads", value_name = "N", value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Vec<u16>,
    /// Matmul kernels (comma-separated list to compare side by side; default: the engine's default).
    #[arg(long, value_name = "KERNELS", value_delimiter = ',')]
    pub kernels: Vec<Kernels>,
    /// Device: cpu, cuda, cuda:N, metal, metal:N (a build with that backend), or candle-cpu (the GPU code path on the CPU).
    #[arg(long, default_value = "cpu", value_parser = crate::model_args::parse_device)]
    pub device: mistral_transformer::Device,
    /// Print the whole report as JSON at the end.
    #[arg(long, conflicts_with = "md")]
    pub json: bool,
    /// Print a llama-bench-style Markdown table as results arrive (the default).
    #[arg(long)]
    pub md: bool,
    /// Also write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    pub save_json: Option<PathBuf>,
    /// Measure memory read bandwidth first (f32 dot product over two 256 MiB
    /// arrays, 1 thread and each --threads value); alone when no -m is given.
    #[arg(long)]
    pub bandwidth: bool,
    /// Internal: measure one model in this process and print one JSON line.
    #[arg(long, hide = true)]
    pub worker: bool,
}

/// Most prompt or generated tokens a test may ask for.
const MAX_TOKENS: i64 = 1 << 20;

/// What a worker prints on its stdout.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum WorkerOutput {
    Ok(Box<ModelResult>),
    Error(String),
}

pub fn run(args: Args) -> Result<()> {
    if args.worker {
        return run_worker(&args);
    }
    if args.n_prompt == 0 && args.n_gen == 0 {
        bail!("nothing to measure: -p and -n are both 0");
    }
    // Once here rather than once per worker.
    args.device.check()?;
    let threads: Vec<usize> = if args.threads.is_empty() {
        vec![machine::logical_cores()]
    } else {
        dedup(args.threads.iter().map(|&t| usize::from(t)).collect())
    };
    let kernels: Vec<KernelChoice> = if args.kernels.is_empty() {
        vec![KernelChoice::default()]
    } else {
        dedup(args.kernels.iter().map(|&k| k.into()).collect())
    };
    let exe = std::env::current_exe()
        .context("cannot find this program's executable to start the benchmark processes")?;

    let mut report = BenchReport {
        schema_version: SCHEMA_VERSION,
        tool: format!("mistral-run {}", env!("CARGO_PKG_VERSION")),
        date_utc: machine::now_utc(),
        machine: machine::describe(),
        n_prompt: args.n_prompt as usize,
        n_gen: args.n_gen as usize,
        repetitions: args.repetitions as usize,
        n_depth: depths(&args),
        results: Vec::new(),
        errors: Vec::new(),
    };
    let markdown = !args.json;
    let mut out = std::io::stdout().lock();
    if args.bandwidth {
        let counts = dedup(std::iter::once(1).chain(threads.iter().copied()).collect());
        let bw = bandwidth::measure(&counts, args.repetitions as usize);
        if markdown {
            writeln!(out, "{}", bandwidth::describe(&bw))?;
        }
        report.machine.bandwidth = Some(bw);
    }
    if markdown && !args.models.is_empty() {
        write!(out, "{}", report::markdown_header())?;
        out.flush()?;
    }
    for path in &args.models {
        for &k in &kernels {
            for &t in &threads {
                match spawn_worker(&exe, path, k, t, &args) {
                    Ok(r) => {
                        if markdown {
                            write!(out, "{}", report::markdown_rows(&r))?;
                            out.flush()?;
                        }
                        report.results.push(r);
                    }
                    Err(e) => {
                        let f = BenchFailure {
                            path: path.display().to_string(),
                            kernels: worker::kernels_name(k).to_string(),
                            threads: t,
                            error: format!("{e:#}"),
                        };
                        eprintln!("error: {}", f.line());
                        report.errors.push(f);
                    }
                }
            }
        }
    }
    let json = serde_json::to_string_pretty(&report)?;
    if args.json {
        writeln!(out, "{json}")?;
    }
    if let Some(p) = &args.save_json {
        std::fs::write(p, format!("{json}\n"))
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    let runs = args.models.len() * kernels.len() * threads.len();
    if !report.errors.is_empty() {
        bail!(
            "{} of {runs} benchmark runs failed (see above)",
            report.errors.len()
        );
    }
    Ok(())
}

/// The depths to measure at (0 when none were given).
fn depths(args: &Args) -> Vec<usize> {
    if args.depth.is_empty() {
        vec![0]
    } else {
        dedup(args.depth.iter().map(|&d| d as usize).collect())
    }
}

fn dedup<T: PartialEq>(v: Vec<T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(v.len());
    for x in v {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

/// Runs one combination in a fresh process of this binary and reads its result.
fn spawn_worker(
    exe: &Path,
    model: &Path,
    kernels: KernelChoice,
    threads: usize,
    args: &Args,
) -> Result<ModelResult> {
    let kernels_arg = worker::kernels_name(kernels);
    let output = Command::new(exe)
        .args([
            "bench",
            "--worker",
            "--kernels",
            kernels_arg,
            "--device",
            &args.device.to_string(),
        ])
        .arg("-m")
        .arg(model)
        .args(["-t", &threads.to_string()])
        .args([
            "-p",
            &args.n_prompt.to_string(),
            "-n",
            &args.n_gen.to_string(),
            "-r",
            &args.repetitions.to_string(),
            "-d",
            &depths(args)
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(","),
        ])
        // candle sizes its CPU thread pools from these when first used; the
        // global rayon pool (our kernels) reads RAYON_NUM_THREADS too.
        .env("RAYON_NUM_THREADS", threads.to_string())
        .env("CANDLE_NUM_THREADS", threads.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty());
    match last.map(serde_json::from_str::<WorkerOutput>) {
        Some(Ok(WorkerOutput::Ok(r))) => Ok(*r),
        Some(Ok(WorkerOutput::Error(e))) => bail!("{e}"),
        _ => bail!(
            "the benchmark process ended without a result ({})",
            output.status
        ),
    }
}

/// The `--worker` side: one model, one kernel choice, one thread count.
fn run_worker(args: &Args) -> Result<()> {
    let (Some(path), [kernels], [threads]) = (
        args.models.first(),
        args.kernels.as_slice(),
        args.threads.as_slice(),
    ) else {
        bail!("bench --worker needs exactly one -m, --kernels and -t");
    };
    let device = args.device.to_string();
    let job = worker::Job {
        path,
        kernels: (*kernels).into(),
        threads: usize::from(*threads),
        device: &device,
        n_prompt: args.n_prompt as usize,
        n_gen: args.n_gen as usize,
        depths: &depths(args),
        repetitions: args.repetitions as usize,
    };
    let out = match worker::measure(&job) {
        Ok(r) => WorkerOutput::Ok(Box::new(r)),
        Err(e) => WorkerOutput::Error(format!("{e:#}")),
    };
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}
