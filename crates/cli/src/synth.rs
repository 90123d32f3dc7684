//! `mistral-run synth`: write a random-weight GGUF with the exact tensor names,
//! shapes and metadata of a Mistral / Mixtral model (see
//! `mistral_transformer::synth` for the values and the per-tensor type mix).

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use mistral_gguf::GgufFile;
use mistral_transformer::synth::{
    default_vocab, synth_size, write_synth, ExpertLayout, SynthArch, SynthPreset, SynthSpec,
    SynthType,
};

#[derive(Clone, Copy, ValueEnum)]
pub enum Arch {
    Mistral,
    Mixtral,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Preset {
    Tiny,
    #[value(name = "1b")]
    OneB,
    #[value(name = "7b")]
    SevenB,
    #[value(name = "8x7b")]
    EightX7B,
}

#[derive(Clone, Copy, ValueEnum)]
#[allow(non_camel_case_types)]
pub enum Type {
    F32,
    F16,
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_0")]
    Q4_0,
    #[value(name = "q4_k_m")]
    Q4_K_M,
    #[value(name = "q2_k")]
    Q2_K,
}

#[derive(clap::Args)]
pub struct Args {
    /// Dense Mistral or Mixtral (MoE).
    #[arg(long, value_enum, default_value_t = Arch::Mistral)]
    pub arch: Arch,
    /// Shape preset: tiny (tests), 1b, 7b (Mistral 7B), 8x7b (Mixtral 8x7B).
    #[arg(long, value_enum, default_value_t = Preset::Tiny)]
    pub preset: Preset,
    /// File type (llama.cpp's per-tensor mix for q4_0 / q4_k_m / q2_k).
    #[arg(long = "type", value_enum, default_value_t = Type::F16)]
    pub ftype: Type,
    /// Output file.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    /// Vocab GGUF whose tokenizer is copied (default: a generated 32000-token vocabulary with Mistral v1's layout).
    #[arg(long)]
    pub vocab: Option<PathBuf>,
    /// Keep only the first N tokens of the vocabulary.
    #[arg(long)]
    pub vocab_size: Option<usize>,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub n_embd: Option<usize>,
    #[arg(long)]
    pub n_ff: Option<usize>,
    #[arg(long)]
    pub n_layer: Option<usize>,
    #[arg(long)]
    pub n_head: Option<usize>,
    #[arg(long)]
    pub n_head_kv: Option<usize>,
    #[arg(long)]
    pub n_expert: Option<usize>,
    #[arg(long)]
    pub n_expert_used: Option<usize>,
    #[arg(long)]
    pub n_ctx: Option<usize>,
    /// Sliding window written to the metadata; 0 = none.
    #[arg(long)]
    pub sliding_window: Option<usize>,
    /// Write MoE experts as per-expert `ffn_*.E` tensors instead of stacked `ffn_*_exps`.
    #[arg(long)]
    pub per_expert: bool,
}

pub fn run(args: Args) -> Result<()> {
    let arch = match args.arch {
        Arch::Mistral => SynthArch::Mistral,
        Arch::Mixtral => SynthArch::Mixtral,
    };
    let preset = match args.preset {
        Preset::Tiny => SynthPreset::Tiny,
        Preset::OneB => SynthPreset::OneB,
        Preset::SevenB => SynthPreset::SevenB,
        Preset::EightX7B => SynthPreset::EightX7B,
    };
    let mut spec = SynthSpec::preset(arch, preset);
    spec.ftype = match args.ftype {
        Type::F32 => SynthType::F32,
        Type::F16 => SynthType::F16,
        Type::Q8_0 => SynthType::Q8_0,
        Type::Q4_0 => SynthType::Q4_0,
        Type::Q4_K_M => SynthType::Q4_K_M,
        Type::Q2_K => SynthType::Q2_K,
    };
    spec.seed = args.seed;
    spec.vocab_size = args.vocab_size;
    let set = |field: &mut usize, v: Option<usize>| {
        if let Some(v) = v {
            *field = v;
        }
    };
    set(&mut spec.n_embd, args.n_embd);
    set(&mut spec.n_ff, args.n_ff);
    set(&mut spec.n_layer, args.n_layer);
    set(&mut spec.n_head, args.n_head);
    set(&mut spec.n_head_kv, args.n_head_kv);
    set(&mut spec.n_expert, args.n_expert);
    set(&mut spec.n_expert_used, args.n_expert_used);
    set(&mut spec.n_ctx, args.n_ctx);
    if let Some(w) = args.sliding_window {
        spec.sliding_window = (w > 0).then_some(w);
    }
    if args.per_expert {
        spec.expert_layout = ExpertLayout::PerExpert;
    }
    let vocab = match &args.vocab {
        Some(p) => GgufFile::open(p)?,
        None => default_vocab()?,
    };
    let total = synth_size(&spec, vocab.metadata())?;
    let out = File::create(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let mut out = BufWriter::with_capacity(8 << 20, out);
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let n = write_synth(&spec, vocab.metadata(), &mut out, &|b| bar.inc(b))?;
    drop(out);
    bar.finish_and_clear();
    eprintln!(
        "wrote {} ({:.2} GiB)",
        args.output.display(),
        n as f64 / (1u64 << 30) as f64
    );
    Ok(())
}
