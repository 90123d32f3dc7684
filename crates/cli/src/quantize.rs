//! `mistral-run quantize IN.gguf OUT.gguf TYPE`: rewrites a GGUF file with its
//! weights in another type, choosing each tensor's type with llama.cpp's mix
//! rules (Q6_K output, more bits for some attn_v / ffn_down layers, fallbacks
//! for rows that are not a multiple of 256). Already quantized input is
//! dequantized first, so files can be requantized (e.g. Q4_1 → Q4_K_M).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use mistral_gguf::{keys, GgmlType, GgufFile, GgufWriter, LlamaHparams, TensorSpec, Value};
use mistral_kernels::quant::mix::{plan, FileType, MixModel};
use mistral_kernels::{dequantize, quantize, supports_dequantize, supports_quantize};

/// The file types `quantize` writes.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Target {
    #[value(name = "f16")]
    F16,
    #[value(name = "bf16")]
    BF16,
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_k_m")]
    Q4KM,
    #[value(name = "q4_k_s")]
    Q4KS,
    #[value(name = "q2_k")]
    Q2K,
    #[value(name = "q6_k")]
    Q6K,
}

impl Target {
    fn file_type(self) -> FileType {
        match self {
            Target::F16 => FileType::F16,
            Target::BF16 => FileType::BF16,
            Target::Q8_0 => FileType::Q8_0,
            Target::Q4KM => FileType::Q4_K_M,
            Target::Q4KS => FileType::Q4_K_S,
            Target::Q2K => FileType::Q2_K,
            Target::Q6K => FileType::Q6_K,
        }
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file to read.
    pub input: PathBuf,
    /// The GGUF file to write.
    pub output: PathBuf,
    /// The file type to produce.
    #[arg(value_enum)]
    pub target: Target,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let ftype = args.target.file_type();
    if args.input == args.output {
        bail!(
            "input and output are the same file: {}",
            args.input.display()
        );
    }
    let file = GgufFile::open(&args.input)?;
    let hp = LlamaHparams::from_metadata(file.metadata()).map_err(|k| file.error(k))?;
    let model = MixModel {
        head_count: hp.head_count,
        head_count_kv: hp.head_count_kv,
        expert_count: hp.expert_count,
    };
    let tensors = file.tensors();
    let types = plan(tensors, &model, ftype);

    let mut md = file.metadata().clone();
    md.set(keys::GENERAL_FILE_TYPE, Value::U32(ftype.id()));
    md.set(keys::GENERAL_QUANTIZATION_VERSION, Value::U32(2));
    let mut writer = GgufWriter::new(md);
    for (t, &ty) in tensors.iter().zip(&types) {
        if t.ggml_type != ty && !(supports_dequantize(t.ggml_type) && supports_quantize(ty)) {
            bail!(
                "tensor {}: cannot convert {} to {}",
                t.name,
                t.ggml_type,
                ty
            );
        }
        writer.add_tensor(TensorSpec::new(t.name.clone(), ty, &t.dims));
    }
    let total_in: u64 = tensors.iter().map(|t| t.n_bytes()).sum();

    let out = File::create(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let mut out = BufWriter::new(out);
    let bar = ProgressBar::new(total_in).with_style(
        ProgressStyle::with_template("{msg:>28} [{bar:40}] {bytes}/{total_bytes} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut converted = Vec::new();
    let result = writer.write(&mut out, |i, spec, w| {
        let info = &tensors[i];
        bar.set_message(info.name.clone());
        let src = file.tensor_data(info);
        if info.ggml_type == spec.ggml_type {
            w.write_all(src)?;
        } else {
            let n = info.n_elements() as usize;
            let mut f = vec![0f32; n];
            dequantize(info.ggml_type, src, &mut f).map_err(std::io::Error::other)?;
            let bytes = spec
                .ggml_type
                .bytes_for(n as u64)
                .ok_or_else(|| std::io::Error::other("size overflow"))?;
            converted.resize(bytes as usize, 0u8);
            quantize(spec.ggml_type, &f, &mut converted).map_err(std::io::Error::other)?;
            w.write_all(&converted)?;
        }
        bar.inc(info.n_bytes());
        Ok(())
    });
    bar.finish_and_clear();
    let written = match result {
        Ok(n) => n,
        Err(e) => {
            drop(out);
            let _ = std::fs::remove_file(&args.output);
            return Err(file.error(e).into());
        }
    };
    out.flush()?;

    let mut counts: Vec<(GgmlType, usize)> = Vec::new();
    for &ty in &types {
        match counts.iter_mut().find(|(t, _)| *t == ty) {
            Some((_, c)) => *c += 1,
            None => counts.push((ty, 1)),
        }
    }
    counts.sort();
    let mix: Vec<String> = counts.iter().map(|(t, c)| format!("{c} {t}")).collect();
    println!(
        "wrote {} ({}, {:.1} MiB from {:.1} MiB): {}",
        args.output.display(),
        ftype.name(),
        written as f64 / (1 << 20) as f64,
        file.bytes().len() as f64 / (1 << 20) as f64,
        mix.join(", ")
    );
    Ok(())
}
