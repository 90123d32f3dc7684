//! `mistral-run batched-bench`: aggregate throughput of several sessions run
//! together, like llama.cpp's `llama-batched-bench`.
//!
//! For every prompt length PP, generation length TG and session count B, B
//! fresh sessions each prefill a PP-token prompt of pseudo-random ids (a
//! different one per session) and then decode TG tokens each, greedily and
//! without stopping at end-of-generation tokens. Every forward pass is one
//! [`Model::step`] over the sessions: the prefill packs the prompts into steps
//! of at most `--batch-size` tokens (as llama.cpp's ubatches), every decode
//! step runs one token of each of the B sessions. The two phases are timed
//! separately: T_PP covers all the prefills, T_TG all the decode steps.
//!
//! Columns, as llama-batched-bench's: N_KV = B·(PP+TG) positions in the
//! caches at the end, S_PP = B·PP / T_PP, S_TG = B·TG / T_TG, T = T_PP + T_TG,
//! S = N_KV / T. Each row also reports the KV-cache bytes of its B sessions
//! and the peak resident set while it ran.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use mistral_gguf::GgufFile;
use mistral_transformer::{
    BatchSeq, CacheType, LoadOptions, Model, ModelConfig, Session, MAX_UBATCH,
};
use serde::{Deserialize, Serialize};

use crate::bench::machine;
use crate::bench::report::{human_bytes, Machine};
use crate::bench::worker::{argmax, file_facts, kernels_name, model_label, tokens};
use crate::bench::Kernels;
use crate::model_args::{parse_cache_type, set_candle_threads};

/// Most prompt or generated tokens per session.
const MAX_TOKENS: usize = 1 << 20;
/// Most sessions of one row (a decode step runs one token of each, and the
/// engine runs at most [`MAX_UBATCH`] tokens in one pass).
const MAX_PARALLEL: usize = MAX_UBATCH;
/// Most tokens of one prefill step.
const MAX_BATCH_SIZE: usize = 8192;
/// Most threads (as `run`'s `-t`).
const MAX_THREADS: usize = u16::MAX as usize;
/// Most positions per session (as `run`'s `--ctx-size`).
const MAX_CTX: usize = u32::MAX as usize;
/// Version of the JSON layout.
pub const SCHEMA_VERSION: u32 = 1;

/// Measure the throughput of several sessions decoding together, like llama-batched-bench.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// GGUF model file.
    #[arg(short = 'm', long = "model", value_name = "FILE")]
    pub model: PathBuf,
    /// Prompt tokens per session (comma-separated list: every combination is measured).
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_name = "N",
        value_delimiter = ',',
        default_value = "128"
    )]
    pub n_prompt: Vec<usize>,
    /// Generated tokens per session (comma-separated list).
    #[arg(
        short = 'n',
        long = "n-gen",
        value_name = "N",
        value_delimiter = ',',
        default_value = "32"
    )]
    pub n_gen: Vec<usize>,
    /// Numbers of sessions run together (comma-separated list), llama-batched-bench's -npl.
    #[arg(
        long = "parallel",
        visible_alias = "npl",
        value_name = "B",
        value_delimiter = ',',
        default_value = "1,2,4,8"
    )]
    pub parallel: Vec<usize>,
    /// Most prompt tokens of one forward pass during the prefill, all sessions
    /// together (llama.cpp's ubatch).
    #[arg(short = 'b', long = "batch-size", value_name = "N", default_value_t = MAX_UBATCH)]
    pub batch_size: usize,
    /// Number of CPU threads (default: one per available core).
    #[arg(short = 't', long, value_name = "N")]
    pub threads: Option<usize>,
    /// KV-cache positions of each session (default: the largest PP + TG).
    #[arg(short = 'c', long = "ctx-size", value_name = "N")]
    pub ctx_size: Option<usize>,
    /// Matmul kernels for the weights (default: the engine's default).
    #[arg(long, value_enum, value_name = "KIND")]
    pub kernels: Option<Kernels>,
    /// Where to run: cpu, cuda, cuda:N, metal, metal:N, or candle-cpu (the GPU code path on the CPU, for checking).
    #[arg(long, value_name = "DEVICE", default_value = "cpu", value_parser = crate::model_args::parse_device)]
    pub device: mistral_transformer::Device,
    /// Element type of cached keys: f16, q8_0 or f32.
    #[arg(long = "cache-type-k", value_name = "TYPE", default_value = "f16", value_parser = parse_cache_type)]
    pub cache_type_k: CacheType,
    /// Element type of cached values: f16, q8_0 or f32.
    #[arg(long = "cache-type-v", value_name = "TYPE", default_value = "f16", value_parser = parse_cache_type)]
    pub cache_type_v: CacheType,
    /// Print one JSON document (machine, model, settings, one row per combination) instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// The whole `--json` document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchedReport {
    pub schema_version: u32,
    /// `mistral-run X.Y.Z`.
    pub tool: String,
    pub date_utc: String,
    pub machine: Machine,
    pub model: ModelInfo,
    pub settings: Settings,
    /// One row per PP × TG × B, in the order they ran.
    pub results: Vec<Row>,
}

/// The model measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelInfo {
    pub path: String,
    /// llama-bench's model column: `llama 135M Q4_1`.
    pub model: String,
    pub arch: String,
    pub ftype: String,
    /// Bytes of tensor data in the file.
    pub size_bytes: u64,
    pub params: u64,
    pub n_layer: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_vocab: usize,
    /// Weight bytes the model holds in memory.
    pub weight_bytes: u64,
    pub load_seconds: f64,
}

/// How the rows were measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub n_prompt: Vec<usize>,
    pub n_gen: Vec<usize>,
    pub parallel: Vec<usize>,
    /// KV-cache positions of each session.
    pub ctx_size: usize,
    /// Sliding window, when the model has one (the cache then rolls).
    pub sliding_window: Option<usize>,
    /// Most prompt tokens of one prefill step.
    pub batch_size: usize,
    pub kernels: String,
    pub threads: usize,
    pub cache_type_k: String,
    pub cache_type_v: String,
    /// Whether each row's `peak_rss_bytes` is the peak while that row ran
    /// (the high-water mark was reset before it); otherwise the process's
    /// peak so far.
    pub peak_rss_per_row: bool,
}

/// One PP × TG × B measurement, with llama-batched-bench's JSON names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// Prompt tokens per session.
    pub pp: usize,
    /// Generated tokens per session.
    pub tg: usize,
    /// Sessions run together (the table's B).
    pub pl: usize,
    /// Positions in all caches at the end: pl · (pp + tg).
    pub n_kv: usize,
    /// Seconds of all the prefills.
    pub t_pp: f64,
    /// pl · pp / t_pp.
    pub speed_pp: f64,
    /// Seconds of all the decode steps.
    pub t_tg: f64,
    /// pl · tg / t_tg (0 when tg is 0).
    pub speed_tg: f64,
    /// t_pp + t_tg.
    pub t: f64,
    /// n_kv / t.
    pub speed: f64,
    /// Forward passes of the prefill.
    pub pp_steps: usize,
    /// Forward passes of the generation (tg).
    pub tg_steps: usize,
    /// KV-cache bytes of the pl sessions at the end.
    pub kv_cache_bytes: u64,
    /// Peak resident set (VmHWM) while the row ran (see `Settings::peak_rss_per_row`).
    pub peak_rss_bytes: Option<u64>,
}

/// Seed of the first session's prompt; session `i` uses `PROMPT_SEED + i`.
const PROMPT_SEED: u64 = 0x5EED;

fn check_list(name: &str, values: &[usize], min: usize, max: usize) -> Result<Vec<usize>> {
    if values.is_empty() {
        bail!("{name}: no value given");
    }
    let mut out = Vec::with_capacity(values.len());
    for &v in values {
        if v < min || v > max {
            bail!("{name} {v} is out of range (expected {min} to {max})");
        }
        if !out.contains(&v) {
            out.push(v);
        }
    }
    Ok(out)
}

pub fn run(args: Args) -> Result<()> {
    let n_prompt = check_list("-p/--n-prompt", &args.n_prompt, 1, MAX_TOKENS)?;
    let n_gen = check_list("-n/--n-gen", &args.n_gen, 0, MAX_TOKENS)?;
    let parallel = check_list("--parallel", &args.parallel, 1, MAX_PARALLEL)?;
    if !(1..=MAX_BATCH_SIZE).contains(&args.batch_size) {
        bail!(
            "--batch-size {} is out of range (expected 1 to {MAX_BATCH_SIZE})",
            args.batch_size
        );
    }
    if let Some(t) = args.threads {
        if !(1..=MAX_THREADS).contains(&t) {
            bail!("--threads {t} is out of range (expected 1 to {MAX_THREADS})");
        }
    }
    if let Some(c) = args.ctx_size {
        if !(1..=MAX_CTX).contains(&c) {
            bail!("--ctx-size {c} is out of range (expected 1 to {MAX_CTX})");
        }
    }
    let need = n_prompt.iter().max().unwrap_or(&1) + n_gen.iter().max().unwrap_or(&0);
    let opts = LoadOptions {
        ctx_size: Some(args.ctx_size.unwrap_or(need)),
        kernels: args.kernels.map(Into::into).unwrap_or_default(),
        device: args.device,
        threads: args.threads,
        cache_type_k: args.cache_type_k,
        cache_type_v: args.cache_type_v,
        // A context that would shift is refused below instead.
        context_shift: false,
        ..LoadOptions::default()
    };

    let started = Instant::now();
    let file = GgufFile::open(&args.model)?;
    let cfg = ModelConfig::from_file(&file, &opts)?;
    // Without a sliding window each session holds its whole context.
    if let Some(ctx) = cfg.cache.max_prompt() {
        if need > ctx {
            bail!(
                "the contexts do not fit: a session needs PP + TG = {need} positions, \
                 more than --ctx-size {ctx}"
            );
        }
    }
    // Refuse before loading when the largest row's sessions do not fit.
    crate::memory::check(&file, &opts, *parallel.iter().max().unwrap_or(&1))?;
    if let Some(n) = args.threads {
        set_candle_threads(n);
    }
    let facts = file_facts(&file);
    let model = Model::from_gguf(&file, opts.clone())?;
    drop(file); // the weights live in the model now
    let load_seconds = started.elapsed().as_secs_f64();
    let cfg = model.config().clone();

    let info = ModelInfo {
        path: args.model.display().to_string(),
        model: model_label(&facts, &cfg),
        arch: facts.arch,
        ftype: facts.ftype,
        size_bytes: facts.size_bytes,
        params: facts.params,
        n_layer: cfg.n_layer,
        n_head_kv: cfg.n_head_kv,
        head_dim: cfg.head_dim,
        n_vocab: cfg.n_vocab,
        weight_bytes: model.weight_bytes() as u64,
        load_seconds,
    };
    let mut settings = Settings {
        n_prompt: n_prompt.clone(),
        n_gen: n_gen.clone(),
        parallel: parallel.clone(),
        ctx_size: cfg.ctx_size,
        sliding_window: cfg.sliding_window,
        batch_size: args.batch_size,
        kernels: kernels_name(cfg.kernels).to_string(),
        threads: cfg.threads,
        cache_type_k: cfg.cache_type_k.name().to_string(),
        cache_type_v: cfg.cache_type_v.name().to_string(),
        peak_rss_per_row: true,
    };

    let mut out = std::io::stdout().lock();
    if !args.json {
        writeln!(
            out,
            "model: {} ({}), weights {}, loaded in {:.2} s",
            info.path,
            info.model,
            human_bytes(info.weight_bytes),
            load_seconds
        )?;
        writeln!(
            out,
            "settings: ctx_size = {} per session, batch_size = {}, kernels = {}, threads = {}, \
             cache_type_k = {}, cache_type_v = {}",
            settings.ctx_size,
            settings.batch_size,
            settings.kernels,
            settings.threads,
            settings.cache_type_k,
            settings.cache_type_v
        )?;
        writeln!(out)?;
        write!(out, "{}", table_header())?;
        out.flush()?;
    }

    warm_up(&model)?;
    let mut rows = Vec::new();
    for &pp in &n_prompt {
        for &tg in &n_gen {
            for &pl in &parallel {
                let (row, reset) = measure(&model, pp, tg, pl, args.batch_size)
                    .with_context(|| format!("PP {pp}, TG {tg}, B {pl}"))?;
                settings.peak_rss_per_row &= reset;
                if !args.json {
                    writeln!(out, "{}", table_row(&row))?;
                    out.flush()?;
                }
                rows.push(row);
            }
        }
    }
    if args.json {
        let report = BatchedReport {
            schema_version: SCHEMA_VERSION,
            tool: format!("mistral-run {}", env!("CARGO_PKG_VERSION")),
            date_utc: machine::now_utc(),
            machine: machine::describe(),
            model: info,
            settings,
            results: rows,
        };
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

/// A few tokens through one session, so that the thread pool and the
/// kernels' lazy set-up are not timed in the first row.
fn warm_up(model: &Model) -> Result<()> {
    let mut session = model.new_session();
    let prompt = tokens(4, model.config().n_vocab, 0xF00D);
    let logits = session.forward(&prompt, 1)?;
    session.forward(&[argmax(&logits)], 1)?;
    Ok(())
}

/// Runs one row: `pl` fresh sessions prefill `pp` tokens each, then decode
/// `tg` tokens each. Returns the row and whether the peak resident set was
/// reset before it.
fn measure(
    model: &Model,
    pp: usize,
    tg: usize,
    pl: usize,
    batch_size: usize,
) -> Result<(Row, bool)> {
    let n_vocab = model.config().n_vocab;
    let prompts: Vec<Vec<u32>> = (0..pl as u64)
        .map(|i| tokens(pp, n_vocab, PROMPT_SEED + i))
        .collect();
    let mut sessions: Vec<Session> = (0..pl).map(|_| model.new_session()).collect();
    let reset = machine::reset_peak_rss();

    let start = Instant::now();
    let (mut next, pp_steps) = prefill(model, &mut sessions, &prompts, batch_size)?;
    let t_pp = start.elapsed().as_secs_f64();

    let start = Instant::now();
    for _ in 0..tg {
        let logits = {
            let mut batch: Vec<BatchSeq<'_>> = sessions
                .iter_mut()
                .zip(&next)
                .map(|(session, t)| BatchSeq {
                    session,
                    tokens: std::slice::from_ref(t),
                    logits: 1,
                })
                .collect();
            model.step(&mut batch)?
        };
        for (t, l) in next.iter_mut().zip(&logits) {
            *t = argmax(l);
        }
    }
    let t_tg = start.elapsed().as_secs_f64();

    let held: usize = sessions.iter().map(Session::position).sum();
    let n_kv = pl * (pp + tg);
    if held != n_kv {
        bail!("the sessions hold {held} positions instead of {n_kv} (a context shifted?)");
    }
    let kv_cache_bytes = sessions.iter().map(|s| s.kv_cache_bytes() as u64).sum();
    let peak_rss_bytes = machine::peak_rss_bytes();
    let t = t_pp + t_tg;
    Ok((
        Row {
            pp,
            tg,
            pl,
            n_kv,
            t_pp,
            speed_pp: rate(pl * pp, t_pp),
            t_tg,
            speed_tg: rate(pl * tg, t_tg),
            t,
            speed: rate(n_kv, t),
            pp_steps,
            tg_steps: tg,
            kv_cache_bytes,
            peak_rss_bytes,
        },
        reset,
    ))
}

fn rate(tokens: usize, seconds: f64) -> f64 {
    if tokens == 0 || seconds <= 0.0 {
        0.0
    } else {
        tokens as f64 / seconds
    }
}

/// Runs every session's prompt, packed in order into steps of at most
/// `batch_size` tokens (a session's prompt may span steps); returns each
/// session's greedy next token and the number of steps.
fn prefill(
    model: &Model,
    sessions: &mut [Session],
    prompts: &[Vec<u32>],
    batch_size: usize,
) -> Result<(Vec<u32>, usize)> {
    let mut fed = vec![0usize; sessions.len()];
    let mut next = vec![0u32; sessions.len()];
    let mut steps = 0;
    // Sessions before `first` have run their whole prompt.
    let mut first = 0;
    while first < sessions.len() {
        // (session, start, end) of each chunk, sessions first, first + 1, ...
        let mut plan = Vec::new();
        let mut budget = batch_size;
        for (i, prompt) in prompts.iter().enumerate().skip(first) {
            if budget == 0 {
                break;
            }
            let n = (prompt.len() - fed[i]).min(budget).min(MAX_UBATCH);
            plan.push((i, fed[i], fed[i] + n));
            budget -= n;
        }
        let logits = {
            let mut batch: Vec<BatchSeq<'_>> = sessions[first..]
                .iter_mut()
                .zip(&plan)
                .map(|(session, &(i, a, b))| BatchSeq {
                    session,
                    tokens: &prompts[i][a..b],
                    logits: usize::from(b == prompts[i].len()),
                })
                .collect();
            model.step(&mut batch)?
        };
        steps += 1;
        for (&(i, _, b), l) in plan.iter().zip(&logits) {
            fed[i] = b;
            if b == prompts[i].len() {
                next[i] = argmax(l);
            }
        }
        while first < sessions.len() && fed[first] == prompts[first].len() {
            first += 1;
        }
    }
    Ok((next, steps))
}

/// llama-batched-bench's columns, then the KV cache and the peak resident set.
const COLUMNS: &[(&str, usize)] = &[
    ("PP", 6),
    ("TG", 6),
    ("B", 4),
    ("N_KV", 7),
    ("T_PP s", 8),
    ("S_PP t/s", 9),
    ("T_TG s", 8),
    ("S_TG t/s", 9),
    ("T s", 8),
    ("S t/s", 9),
    ("KV cache", 11),
    ("peak RSS", 11),
];

fn line(cells: &[String]) -> String {
    let mut s = String::from("|");
    for ((_, width), cell) in COLUMNS.iter().zip(cells) {
        s.push_str(&format!(" {cell:>width$} |"));
    }
    s
}

/// The header and separator lines of the table.
pub fn table_header() -> String {
    let names: Vec<String> = COLUMNS.iter().map(|(n, _)| n.to_string()).collect();
    let sep: String = COLUMNS
        .iter()
        .map(|(_, w)| format!("-{}:|", "-".repeat(*w)))
        .collect();
    format!("{}\n|{sep}\n", line(&names))
}

/// One row of the table (times with 3 decimals, speeds with 2, as llama-batched-bench).
pub fn table_row(r: &Row) -> String {
    line(&[
        r.pp.to_string(),
        r.tg.to_string(),
        r.pl.to_string(),
        r.n_kv.to_string(),
        format!("{:.3}", r.t_pp),
        format!("{:.2}", r.speed_pp),
        format!("{:.3}", r.t_tg),
        format!("{:.2}", r.speed_tg),
        format!("{:.3}", r.t),
        format!("{:.2}", r.speed),
        human_bytes(r.kv_cache_bytes),
        r.peak_rss_bytes
            .map_or_else(|| "-".to_string(), human_bytes),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lines_have_one_cell_per_column() {
        let header = table_header();
        for l in header.lines() {
            assert_eq!(l.matches('|').count(), COLUMNS.len() + 1, "{l}");
        }
        let row = Row {
            pp: 128,
            tg: 32,
            pl: 4,
            n_kv: 640,
            t_pp: 1.0,
            speed_pp: 512.0,
            t_tg: 2.0,
            speed_tg: 64.0,
            t: 3.0,
            speed: 640.0 / 3.0,
            pp_steps: 1,
            tg_steps: 32,
            kv_cache_bytes: 1 << 20,
            peak_rss_bytes: None,
        };
        let l = table_row(&row);
        assert_eq!(l.matches('|').count(), COLUMNS.len() + 1, "{l}");
        assert!(l.contains(" 213.33 |"), "{l}");
    }

    #[test]
    fn lists_are_checked_and_deduplicated() {
        assert_eq!(check_list("x", &[4, 1, 4], 1, 8).unwrap(), vec![4, 1]);
        let e = check_list("--parallel", &[0], 1, 8)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--parallel 0"), "{e}");
        assert!(check_list("x", &[9], 1, 8).is_err());
        assert!(check_list("x", &[], 1, 8).is_err());
    }

    #[test]
    fn rates_are_zero_without_tokens_or_time() {
        assert_eq!(rate(0, 1.0), 0.0);
        assert_eq!(rate(5, 0.0), 0.0);
        assert_eq!(rate(10, 2.0), 5.0);
    }
}
