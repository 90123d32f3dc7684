//! Arguments shared by the commands that run a model (`run`, `chat`): which file,
//! how many threads, context and window sizes, and the sampling settings; plus the
//! default model and the end-of-run statistics.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mistral_gguf::GgufFile;
use mistral_transformer::{
    CacheType, Constraint, Device, GenerateOptions, LoadOptions, Model, SamplingParams,
};

use crate::bench::Kernels;

/// The script that fetches the default model, embedded so the binary works outside the repository.
const FETCH_SMOLLM2: &str = include_str!("../../../models/fetch-smollm2.sh");

/// Environment variable naming the model to use when `-m` is not given.
pub const MODEL_ENV: &str = "MISTRAL_RUN_MODEL";

/// Which model to load and how.
#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    /// GGUF model file. Default: $MISTRAL_RUN_MODEL, else SmolLM2-135M-Instruct Q4_1,
    /// downloaded on first use into ~/.cache/mistral-run (needs python3 with pip).
    #[arg(short = 'm', long = "model", value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Number of CPU threads for the matrix products (default: one per available core).
    #[arg(short = 't', long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// KV-cache size in tokens (default: the model's context length, capped at 4096).
    #[arg(short = 'c', long = "ctx-size", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub ctx_size: Option<u32>,
    /// Sliding attention window in tokens when the file declares none
    /// (Mistral 7B v0.1 uses 4096). Default: the file's, else full attention.
    #[arg(long = "sliding-window", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub sliding_window: Option<u32>,
    /// Matmul kernels for the weights (default: the engine's default).
    #[arg(long, value_enum, value_name = "KIND")]
    pub kernels: Option<Kernels>,
    /// Where to run: cpu, cuda, cuda:N, metal or metal:N (a GPU needs a
    /// build with that backend), or candle-cpu (the GPU code path on the
    /// CPU, for checking it).
    #[arg(long, value_name = "DEVICE", default_value = "cpu", value_parser = parse_device)]
    pub device: Device,
    /// With a GPU --device: run only the first N layers there and the rest
    /// on the CPU with the native kernels (llama.cpp's -ngl; default: all).
    #[arg(long = "gpu-layers", visible_alias = "n-gpu-layers", value_name = "N")]
    pub gpu_layers: Option<usize>,
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// `--device`'s parser (the engine's names and messages).
pub(crate) fn parse_device(s: &str) -> Result<Device, String> {
    Device::parse(s).map_err(|e| e.to_string())
}

/// How sessions' KV caches are stored and shifted (llama.cpp's flag names).
#[derive(clap::Args, Debug, Clone)]
pub struct CacheArgs {
    /// Element type of cached keys: f16, q8_0 or f32.
    #[arg(long = "cache-type-k", value_name = "TYPE", default_value = "f16", value_parser = parse_cache_type)]
    pub cache_type_k: CacheType,
    /// Element type of cached values: f16, q8_0 or f32.
    #[arg(long = "cache-type-v", value_name = "TYPE", default_value = "f16", value_parser = parse_cache_type)]
    pub cache_type_v: CacheType,
    /// Tokens of the prompt (after BOS) kept when a full context shifts.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep: usize,
    /// End generation when the context is full instead of dropping its older half.
    #[arg(long = "no-context-shift")]
    pub no_context_shift: bool,
}

pub(crate) fn parse_cache_type(s: &str) -> Result<CacheType, String> {
    CacheType::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = CacheType::ALL.iter().map(|t| t.name()).collect();
        format!("unknown cache type {s:?} (expected {})", names.join(", "))
    })
}

impl CacheArgs {
    /// Applies these settings to `opts`.
    pub fn apply(&self, opts: &mut LoadOptions) {
        opts.cache_type_k = self.cache_type_k;
        opts.cache_type_v = self.cache_type_v;
        opts.keep = self.keep;
        opts.context_shift = !self.no_context_shift;
    }
}

impl ModelArgs {
    /// The path to load: `-m`, else `$MISTRAL_RUN_MODEL`, else the default
    /// model (fetched on first use).
    pub fn path(&self) -> Result<PathBuf> {
        match &self.model {
            Some(p) => Ok(p.clone()),
            None => default_model(),
        }
    }

    /// The load options these flags ask for.
    pub fn options(&self) -> LoadOptions {
        let mut opts = LoadOptions {
            ctx_size: self.ctx_size.map(|n| n as usize),
            sliding_window: self.sliding_window.map(|n| n as usize),
            kernels: self.kernels.map(Into::into).unwrap_or_default(),
            device: self.device,
            gpu_layers: self.gpu_layers,
            threads: self.threads.map(usize::from),
            ..LoadOptions::default()
        };
        self.cache.apply(&mut opts);
        opts
    }

    /// Resolves the model path, checks that the model and one session's KV
    /// cache fit in the available memory, and loads the model. Returns the
    /// model and the load time.
    pub fn load(&self) -> Result<(Model, Duration)> {
        self.load_for(1)
    }

    /// [`ModelArgs::load`], checking memory for `sessions` full contexts.
    pub fn load_for(&self, sessions: usize) -> Result<(Model, Duration)> {
        if let Some(n) = self.threads {
            set_candle_threads(usize::from(n));
        }
        let path = self.path()?;
        let start = Instant::now();
        let file = GgufFile::open(&path)?;
        let opts = self.options();
        // Refuse before loading when one session's plan does not fit.
        crate::memory::check(&file, &opts, sessions)?;
        let model = Model::from_gguf(&file, opts)?;
        drop(file); // the weights live in the model now
        Ok((model, start.elapsed()))
    }
}

/// candle 0.11 sizes its CPU pools (used by `--kernels candle`) from
/// `RAYON_NUM_THREADS` / `CANDLE_NUM_THREADS` the first time they are used;
/// the engine's own pool takes the thread count from the load options.
pub fn set_candle_threads(n: usize) {
    // Called from the main thread, before any tensor work.
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
}

/// Spins of candle's CPU barrier pool after each op before its workers
/// park: candle 0.11 spins 25,000 times, and a spinning worker takes a core
/// from the engine's kernels
/// (benches/journal/2026-12-04-evening-zen4-packed-q4k-16-rows.md).
const CANDLE_SPIN_LIMIT: u32 = 1000;

/// Sets `CANDLE_BARRIER_POOL_SPIN_LIMIT` unless the user has. Called at the
/// start of `main`, before any other thread exists.
pub fn limit_candle_spinning() {
    const VAR: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";
    if std::env::var_os(VAR).is_none() {
        std::env::set_var(VAR, CANDLE_SPIN_LIMIT.to_string());
    }
}

/// `$MISTRAL_RUN_MODEL`, else the SmolLM2 file the embedded fetch script prints
/// (downloading it on first use).
fn default_model() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(MODEL_ENV) {
        return Ok(PathBuf::from(p));
    }
    let out = Command::new("bash")
        .arg("-c")
        .arg(FETCH_SMOLLM2)
        .arg("fetch-smollm2")
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("no -m given and cannot run bash to fetch the default model (SmolLM2)")?;
    if !out.status.success() {
        bail!("no -m given and fetching the default model (SmolLM2) failed (see above)");
    }
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if path.is_empty() {
        bail!("no -m given and the fetch script for the default model printed no path");
    }
    Ok(PathBuf::from(path))
}

/// Sampling settings, llama.cpp's flags and defaults.
#[derive(clap::Args, Debug)]
pub struct SamplingArgs {
    /// Temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    pub temp: f32,
    /// Keep the K most likely tokens; 0 = off.
    #[arg(long = "top-k", default_value_t = 40, value_name = "K")]
    pub top_k: usize,
    /// Nucleus sampling threshold in (0, 1]; 1 = off.
    #[arg(
        long = "top-p",
        default_value_t = 0.95,
        allow_negative_numbers = true,
        value_name = "P"
    )]
    pub top_p: f32,
    /// Minimum probability relative to the most likely token, in [0, 1]; 0 = off.
    #[arg(
        long = "min-p",
        default_value_t = 0.05,
        allow_negative_numbers = true,
        value_name = "P"
    )]
    pub min_p: f32,
    /// Repetition penalty (> 0); 1 = off.
    #[arg(
        long = "repeat-penalty",
        default_value_t = 1.0,
        allow_negative_numbers = true,
        value_name = "X"
    )]
    pub repeat_penalty: f32,
    /// How many recent tokens the repetition penalty looks at; 0 = off.
    #[arg(long = "repeat-last-n", default_value_t = 64, value_name = "N")]
    pub repeat_last_n: usize,
    /// RNG seed for reproducible sampling (default: random).
    #[arg(short = 's', long)]
    pub seed: Option<u64>,
    /// Stop when the output contains this text (repeatable); it is not printed.
    #[arg(long = "stop", value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens (for benchmarks with a fixed -n).
    #[arg(long = "ignore-eos")]
    pub ignore_eos: bool,
}

impl SamplingArgs {
    /// The validated parameters.
    pub fn params(&self, max_tokens: Option<usize>) -> Result<SamplingParams> {
        let p = SamplingParams {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed: self.seed,
            max_tokens,
            stop: self.stop.clone(),
            ignore_eos: self.ignore_eos,
        };
        p.validate()?;
        Ok(p)
    }
}

/// Peak resident memory of this process (`VmHWM` in /proc/self/status), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Structured output: what the generated text must match, enforced while
/// sampling (at most one of them).
#[derive(clap::Args, Debug, Default)]
#[group(id = "constraint", multiple = false)]
pub struct ConstraintArgs {
    /// Output one JSON value (any).
    #[arg(long)]
    pub json: bool,
    /// Output JSON conforming to the JSON Schema in FILE.
    #[arg(long = "json-schema", value_name = "FILE")]
    pub json_schema: Option<PathBuf>,
    /// Output text matching the Lark grammar in FILE (llguidance's syntax, `start: ...`).
    #[arg(long, value_name = "FILE")]
    pub grammar: Option<PathBuf>,
    /// Output text matching the regular expression R (the whole output).
    #[arg(long, value_name = "R")]
    pub regex: Option<String>,
}

impl ConstraintArgs {
    /// The constraint asked for, if any (files read and parsed).
    pub fn constraint(&self) -> Result<Option<Constraint>> {
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
        };
        Ok(if self.json {
            Some(Constraint::Json)
        } else if let Some(p) = &self.json_schema {
            let schema = serde_json::from_str(&read(p)?)
                .with_context(|| format!("{} is not JSON", p.display()))?;
            Some(Constraint::JsonSchema(schema))
        } else if let Some(p) = &self.grammar {
            Some(Constraint::Lark(read(p)?))
        } else {
            self.regex.clone().map(Constraint::Regex)
        })
    }

    /// Generation options holding `model`'s output to the constraint.
    pub fn options(&self, model: &Model) -> Result<GenerateOptions> {
        let mut opts = GenerateOptions::default();
        if let Some(c) = self.constraint()? {
            opts.processor = Some(Box::new(model.constraint(&c)?));
        }
        Ok(opts)
    }
}
