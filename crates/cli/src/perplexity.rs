//! `mistral-run perplexity -m FILE -f TEXT [--ctx 512]`: perplexity of a model over
//! a text, computed like llama.cpp's `llama-perplexity` (see
//! `mistral_transformer::perplexity`), printing the same per-chunk running figures
//! (`[1]12.3456,[2]...`) and `Final estimate: PPL = X +/- Y`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use mistral_gguf::GgufFile;
use mistral_transformer::perplexity::{chunk_count, perplexity};
use mistral_transformer::{LoadOptions, Model};

use crate::bench::Kernels;
use crate::model_args::CacheArgs;

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model file.
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// The text file to score (UTF-8).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Tokens per chunk (llama.cpp's -c); the second half of each chunk is scored.
    #[arg(short = 'c', long = "ctx", default_value_t = 512)]
    pub ctx: usize,
    /// Evaluate at most this many chunks (default: all whole chunks of the text).
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Matmul kernels (default: the engine's default).
    #[arg(long, value_enum)]
    pub kernels: Option<Kernels>,
    /// Worker threads (default: one per available core).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Where to run: cpu, cuda, cuda:N, metal, metal:N, or candle-cpu (the GPU code path on the CPU, for checking).
    #[arg(long, value_name = "DEVICE", default_value = "cpu", value_parser = crate::model_args::parse_device)]
    pub device: mistral_transformer::Device,
    /// With a GPU --device: run only the first N layers there (llama.cpp's -ngl).
    #[arg(long = "gpu-layers", visible_alias = "n-gpu-layers", value_name = "N")]
    pub gpu_layers: Option<usize>,
    #[command(flatten)]
    pub cache: CacheArgs,
}

pub fn run(args: Args) -> Result<()> {
    if let Some(n) = args.threads {
        anyhow::ensure!(n > 0, "--threads must be at least 1");
        crate::model_args::set_candle_threads(n);
    }
    anyhow::ensure!(args.ctx >= 4, "--ctx must be at least 4");
    let text = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let text = String::from_utf8(text)
        .with_context(|| format!("{} is not UTF-8 text", args.file.display()))?;
    let file = GgufFile::open(&args.model)?;
    let start = Instant::now();
    let mut opts = LoadOptions {
        ctx_size: Some(args.ctx),
        kernels: args.kernels.map(Into::into).unwrap_or_default(),
        device: args.device,
        gpu_layers: args.gpu_layers,
        threads: args.threads,
        ..LoadOptions::default()
    };
    args.cache.apply(&mut opts);
    crate::memory::check(&file, &opts, 1)?;
    let model = Model::from_gguf(&file, opts)?;
    drop(file);
    let tokenizer = model.tokenizer();
    let add_bos = tokenizer.adds_bos();
    let tokens = tokenizer.encode(&text, add_bos, false)?;
    let bos = if add_bos { tokenizer.bos_id() } else { None };
    let n_chunks = chunk_count(tokens.len(), args.ctx, args.chunks);
    anyhow::ensure!(
        n_chunks > 0,
        "{} has {} tokens; perplexity needs at least one chunk of --ctx {} tokens",
        args.file.display(),
        tokens.len(),
        args.ctx
    );
    eprintln!(
        "perplexity: loaded in {:.2}s; {} tokens, {} chunks of {}, scoring {} tokens each",
        start.elapsed().as_secs_f64(),
        tokens.len(),
        n_chunks,
        args.ctx,
        args.ctx - 1 - args.ctx / 2
    );
    let bar = ProgressBar::new(n_chunks as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} chunks, {elapsed} elapsed, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let t0 = Instant::now();
    let stats = perplexity(&model, &tokens, args.ctx, bos, args.chunks, |s| {
        bar.suspend(|| {
            print!("[{}]{:.4},", s.chunks, s.ppl());
            let _ = std::io::stdout().flush();
        });
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    println!();
    println!(
        "Final estimate: PPL = {:.4} +/- {:.5}",
        stats.ppl(),
        stats.stderr()
    );
    eprintln!(
        "perplexity: {} chunks in {:.1}s ({:.1} tokens/s evaluated)",
        stats.chunks,
        secs,
        (stats.chunks * args.ctx) as f64 / secs
    );
    Ok(())
}
