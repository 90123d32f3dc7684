//! The measuring side of `bench`: runs in a child process of its own per model
//! (so that its peak resident set belongs to that model alone), loads the model,
//! times the pp and tg tests and reports one [`ModelResult`].

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mistral_gguf::{file_type_name, keys, GgufFile};
use mistral_transformer::{Device, KernelChoice, LoadOptions, Model, Session};

use super::machine;
use super::report::{mean_stdev, size_label, ModelResult, TestKind, TestResult};

/// What one worker measures.
#[derive(Debug, Clone)]
pub struct Job<'a> {
    pub path: &'a Path,
    pub kernels: KernelChoice,
    pub threads: usize,
    pub device: &'a str,
    pub n_prompt: usize,
    pub n_gen: usize,
    /// Tokens already in the cache when each test starts (llama-bench's `-d`).
    pub depths: &'a [usize],
    pub repetitions: usize,
}

/// Tokens of the tg warm-up (enough to start every thread pool).
const TG_WARMUP: usize = 4;

/// The kernel choice as the command line and the JSON name it.
pub fn kernels_name(k: KernelChoice) -> &'static str {
    match k {
        KernelChoice::Candle => "candle",
        KernelChoice::Native => "native",
    }
}

/// `cpu`, `cuda[:N]`, `metal[:N]` → device and backend name (the report's
/// column); a device this build cannot run is refused here, before loading.
pub fn parse_device(s: &str) -> Result<(Device, &'static str)> {
    let device = Device::parse(s)?;
    device.check()?;
    let backend = match device {
        Device::Cpu => "CPU",
        Device::Cuda(_) => "CUDA",
        Device::Metal(_) => "Metal",
        Device::CandleCpu => "candle CPU",
    };
    Ok((device, backend))
}

/// Static facts about the file, read from its header.
pub(crate) struct FileFacts {
    pub arch: String,
    pub ftype: String,
    pub size_bytes: u64,
    pub params: u64,
}

/// llama-bench's model column: `llama 852M Q4_K_M`, with ` MoE 8x top-2`
/// for a mixture of experts.
pub(crate) fn model_label(facts: &FileFacts, cfg: &mistral_transformer::ModelConfig) -> String {
    let moe = if cfg.n_expert > 0 {
        format!(" MoE {}x top-{}", cfg.n_expert, cfg.n_expert_used)
    } else {
        String::new()
    };
    format!(
        "{} {}{} {}",
        facts.arch,
        size_label(facts.params),
        moe,
        facts.ftype
    )
}

pub(crate) fn file_facts(file: &GgufFile) -> FileFacts {
    let md = file.metadata();
    let arch = md
        .get_str(keys::GENERAL_ARCHITECTURE)
        .unwrap_or("unknown")
        .to_string();
    let ftype = md
        .get_u32(keys::GENERAL_FILE_TYPE)
        .ok()
        .and_then(file_type_name)
        .unwrap_or("unknown")
        .to_string();
    let tensors = file.tensors();
    FileFacts {
        arch,
        ftype,
        size_bytes: tensors.iter().map(|t| t.n_bytes()).sum(),
        params: tensors.iter().map(|t| t.n_elements()).sum(),
    }
}

/// A deterministic pseudo-random token sequence (splitmix64) below `n_vocab`.
pub(crate) fn tokens(n: usize, n_vocab: usize, seed: u64) -> Vec<u32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z % n_vocab.max(1) as u64) as u32
        })
        .collect()
}

pub(crate) fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}

/// Runs `tokens` after the context without keeping logits (the depth).
fn fill(session: &mut Session, tokens: &[u32]) -> Result<()> {
    session.reset();
    if !tokens.is_empty() {
        session.forward(tokens, 0)?;
    }
    Ok(())
}

/// One batch of the prompt after `depth` cached tokens; returns seconds.
fn run_pp(session: &mut Session, depth: usize, prompt: &[u32]) -> Result<f64> {
    session.truncate(depth)?;
    let t = Instant::now();
    let logits = session.forward(prompt, 1)?;
    let secs = t.elapsed().as_secs_f64();
    std::hint::black_box(logits);
    Ok(secs)
}

/// `n` single-token greedy steps after `depth` cached tokens; returns seconds.
fn run_tg(session: &mut Session, depth: usize, first: u32, n: usize) -> Result<f64> {
    session.truncate(depth)?;
    let t = Instant::now();
    let mut tok = first;
    for _ in 0..n {
        let logits = session.forward(&[tok], 1)?;
        tok = argmax(&logits);
    }
    Ok(t.elapsed().as_secs_f64())
}

fn test_result(
    kind: TestKind,
    n_tokens: usize,
    n_depth: usize,
    samples_seconds: Vec<f64>,
) -> TestResult {
    let tps: Vec<f64> = samples_seconds
        .iter()
        .map(|s| n_tokens as f64 / s.max(1e-12))
        .collect();
    let (mean_tps, stdev_tps) = mean_stdev(&tps);
    TestResult {
        name: kind.name(n_tokens, n_depth),
        kind,
        n_tokens,
        n_depth,
        mean_tps,
        stdev_tps,
        samples_seconds,
    }
}

fn progress_bar(job: &Job<'_>, file_name: &str) -> ProgressBar {
    let steps = job.depths.len() as u64
        * ((job.n_prompt > 0) as u64 * (job.repetitions as u64 + 1)
            + (job.n_gen > 0) as u64 * (job.repetitions as u64 + 1));
    let pb = ProgressBar::with_draw_target(Some(steps), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:20}] {pos}/{len} runs") {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(format!(
        "{file_name} ({}, {} threads)",
        kernels_name(job.kernels),
        job.threads
    ));
    pb
}

/// Loads the model of `job` and measures it.
pub fn measure(job: &Job<'_>) -> Result<ModelResult> {
    let (device, backend) = parse_device(job.device)?;
    let file_name = job.path.file_name().map_or_else(
        || job.path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let started = Instant::now();
    let file = GgufFile::open(job.path)?;
    let facts = file_facts(&file);
    let max_depth = job.depths.iter().copied().max().unwrap_or(0);
    let opts = LoadOptions {
        ctx_size: Some(max_depth + job.n_prompt.max(job.n_gen).max(1)),
        kernels: job.kernels,
        device,
        threads: Some(job.threads),
        ..LoadOptions::default()
    };
    let model = Model::from_gguf(&file, opts)?;
    drop(file); // unmap: the weights live in the model now
    let load_seconds = started.elapsed().as_secs_f64();

    let cfg = model.config().clone();
    let prompt = tokens(job.n_prompt, cfg.n_vocab, 0x5EED);
    let load_average_1m = machine::load_average_1m();
    let pb = progress_bar(job, &file_name);
    let mut session = model.new_session();
    let mut tests = Vec::new();
    let mut kv_cache_bytes = 0;
    for &depth in job.depths {
        // The depth is filled once; each run goes back to it.
        fill(&mut session, &tokens(depth, cfg.n_vocab, 0xDEE9))?;
        if job.n_prompt > 0 {
            run_pp(&mut session, depth, &prompt)?;
            pb.inc(1);
            let mut samples = Vec::with_capacity(job.repetitions);
            for _ in 0..job.repetitions {
                samples.push(run_pp(&mut session, depth, &prompt)?);
                pb.inc(1);
            }
            tests.push(test_result(TestKind::Pp, job.n_prompt, depth, samples));
        }
        if job.n_gen > 0 {
            let first = tokens(1, cfg.n_vocab, 0xF00D)[0];
            run_tg(&mut session, depth, first, job.n_gen.min(TG_WARMUP))?;
            pb.inc(1);
            let mut samples = Vec::with_capacity(job.repetitions);
            for _ in 0..job.repetitions {
                samples.push(run_tg(&mut session, depth, first, job.n_gen)?);
                pb.inc(1);
            }
            tests.push(test_result(TestKind::Tg, job.n_gen, depth, samples));
        }
        kv_cache_bytes = kv_cache_bytes.max(session.kv_cache_bytes());
    }
    pb.finish_and_clear();
    drop(session);

    Ok(ModelResult {
        path: job.path.display().to_string(),
        file_name,
        model: model_label(&facts, &cfg),
        arch: facts.arch,
        ftype: facts.ftype,
        size_bytes: facts.size_bytes,
        params: facts.params,
        n_layer: cfg.n_layer,
        n_embd: cfg.n_embd,
        n_expert: cfg.n_expert,
        n_expert_used: cfg.n_expert_used,
        backend: backend.to_string(),
        device: job.device.to_string(),
        // Off the CPU every op is candle's, whatever --kernels said.
        kernels: if device == Device::Cpu {
            kernels_name(job.kernels)
        } else {
            "candle"
        }
        .to_string(),
        isa: mistral_kernels::Isa::best().name().to_string(),
        threads: job.threads,
        weight_bytes: model.weight_bytes() as u64,
        kv_cache_bytes: kv_cache_bytes as u64,
        kv_positions: max_depth + job.n_prompt.max(job.n_gen),
        cache_type_k: cfg.cache_type_k.name().to_string(),
        cache_type_v: cfg.cache_type_v.name().to_string(),
        rss_bytes: machine::rss_bytes(),
        peak_rss_bytes: machine::peak_rss_bytes(),
        peak_device_bytes: None,
        load_seconds,
        load_average_1m,
        tests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_in_range_and_deterministic() {
        let a = tokens(1000, 37, 1);
        assert!(a.iter().all(|&t| t < 37));
        assert_eq!(a, tokens(1000, 37, 1));
        assert_ne!(a, tokens(1000, 37, 2));
        // Every id shows up: not stuck on a few values.
        let mut seen = [false; 37];
        a.iter().for_each(|&t| seen[t as usize] = true);
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn devices_parse_or_fail_clearly() {
        assert!(matches!(parse_device("cpu"), Ok((Device::Cpu, "CPU"))));
        for (name, says) in [
            ("tpu", "cpu, cuda, cuda:N, metal, metal:N or candle-cpu"),
            ("cuda:x", "a device number"),
            ("cpu:1", "the CPU is one device"),
            // This test build has neither GPU feature.
            ("cuda", "no CUDA support; rebuild with --features cuda"),
            ("metal:1", "no Metal support; rebuild with --features metal"),
        ] {
            let e = parse_device(name)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(says), "{name}: {e}");
            assert_eq!(e.lines().count(), 1, "{name}: {e}");
        }
    }

    #[test]
    fn argmax_picks_the_first_largest() {
        assert_eq!(argmax(&[0.0, 3.0, 1.0, 3.0]), 1);
        assert_eq!(argmax(&[-1.0]), 0);
    }
}
