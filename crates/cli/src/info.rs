//! `mistral-run info FILE`: what a user wants to know about a GGUF file before
//! running it. Reads only the header (the tensor data stays unmapped-in).
//!
//! Every field is optional except what the header always has, so vocab-only files
//! and other architectures print what they carry instead of failing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use mistral_gguf::keys::{self, ArchKey, TensorName};
use mistral_gguf::{ErrorKind, GgmlType, GgufFile, Metadata};
use mistral_transformer::{CacheType, LoadOptions, MemoryPlan};
use serde::Serialize;

use crate::bench::Kernels;
use crate::memory;
use crate::model_args::parse_cache_type;

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file.
    pub file: PathBuf,
    /// Print JSON instead of text (the same content).
    #[arg(long)]
    pub json: bool,
    /// List every tensor (name, type, dims in GGML order, file offset, bytes).
    #[arg(long, conflicts_with = "plan")]
    pub tensors: bool,
    /// Print the memory a run would need instead (weights, KV cache, scratch;
    /// computed from the header, nothing loaded), the memory available
    /// (MemAvailable, or $MISTRAL_RUN_MEM_AVAILABLE when set) and whether it fits.
    #[arg(long)]
    pub plan: bool,
    /// With --plan: KV-cache positions per session (default: the model's
    /// context length, capped at 4096).
    #[arg(short = 'c', long = "ctx-size", value_name = "N", requires = "plan", value_parser = clap::value_parser!(u32).range(1..))]
    pub ctx_size: Option<u32>,
    /// With --plan: element type of cached keys (f16 (default), q8_0 or f32).
    #[arg(long = "cache-type-k", value_name = "TYPE", requires = "plan", value_parser = parse_cache_type)]
    pub cache_type_k: Option<CacheType>,
    /// With --plan: element type of cached values (f16 (default), q8_0 or f32).
    #[arg(long = "cache-type-v", value_name = "TYPE", requires = "plan", value_parser = parse_cache_type)]
    pub cache_type_v: Option<CacheType>,
    /// With --plan: sessions planned for (each with a whole context).
    #[arg(long, value_name = "P", default_value_t = 1, requires = "plan", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub parallel: u32,
    /// With --plan: matmul kernels (the native ones regroup Q4_K weights, 2.8% larger).
    #[arg(long, value_enum, value_name = "KIND", requires = "plan")]
    pub kernels: Option<Kernels>,
    /// With --plan: the device the model would run on (its share is shown
    /// apart; a GPU's free memory from $MISTRAL_RUN_GPU_MEM_AVAILABLE).
    #[arg(long, value_name = "DEVICE", default_value = "cpu", requires = "plan", value_parser = crate::model_args::parse_device)]
    pub device: mistral_transformer::Device,
    /// With --plan and a GPU --device: layers on it (default: all).
    #[arg(
        long = "gpu-layers",
        visible_alias = "n-gpu-layers",
        value_name = "N",
        requires = "plan"
    )]
    pub gpu_layers: Option<usize>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let file = GgufFile::open(&args.file)?;
    if args.plan {
        let opts = LoadOptions {
            ctx_size: args.ctx_size.map(|n| n as usize),
            kernels: args.kernels.map(Into::into).unwrap_or_default(),
            cache_type_k: args.cache_type_k.unwrap_or(CacheType::F16),
            cache_type_v: args.cache_type_v.unwrap_or(CacheType::F16),
            device: args.device,
            gpu_layers: args.gpu_layers,
            ..LoadOptions::default()
        };
        let plan = memory::plan(&file, &opts, args.parallel as usize)?;
        let mut report = PlanReport::new(&file, &opts, &plan, memory::available()?);
        let gpu = memory::gpu_available()?;
        report.device = plan.device.as_ref().map(|d| DeviceReport::new(d, gpu));
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", report.to_text());
        }
        return Ok(());
    }
    let report = Report::new(&file, args.tensors)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

/// Tensors of one GGML type.
#[derive(Serialize)]
struct TypeCount {
    #[serde(rename = "type")]
    ggml_type: GgmlType,
    count: usize,
    bytes: u64,
}

#[derive(Serialize)]
struct TensorRow {
    name: String,
    #[serde(rename = "type")]
    ggml_type: GgmlType,
    /// GGML order: row length first (as llama.cpp prints them).
    dims: Vec<u64>,
    /// Row-major order (as PyTorch and candle print them).
    shape: Vec<u64>,
    /// Absolute offset of the data in the file.
    offset: u64,
    bytes: u64,
}

/// Everything `info` prints, text and JSON alike.
#[derive(Serialize)]
struct Report {
    file: String,
    file_bytes: u64,
    gguf_version: u32,
    alignment: u64,
    /// Where the data section starts; the header is everything before it.
    data_offset: u64,
    metadata_keys: usize,
    architecture: Option<String>,
    name: Option<String>,
    /// Sum of the elements of every tensor.
    parameters: u64,
    parameters_human: String,
    /// `general.file_type` by llama.cpp's name (`Q4_K_M`, ...).
    file_type: Option<String>,
    file_type_id: Option<u32>,
    context_length: Option<u64>,
    block_count: Option<u64>,
    head_count: Option<u64>,
    head_count_kv: Option<u64>,
    head_dim: Option<u64>,
    embedding_length: Option<u64>,
    feed_forward_length: Option<u64>,
    expert_count: Option<u64>,
    expert_used_count: Option<u64>,
    rope_freq_base: Option<f32>,
    rms_norm_eps: Option<f32>,
    sliding_window: Option<u64>,
    vocab_size: Option<u64>,
    tokenizer_model: Option<String>,
    tokenizer_pre: Option<String>,
    chat_template: bool,
    /// The output projection reuses the token embedding (no `output.weight`);
    /// absent when the file has no token embedding at all.
    tied_embeddings: Option<bool>,
    tensor_count: usize,
    tensor_types: Vec<TypeCount>,
    weight_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    tensors: Option<Vec<TensorRow>>,
}

impl Report {
    fn new(file: &GgufFile, with_tensors: bool) -> anyhow::Result<Report> {
        let md = file.metadata();
        let h = file.header();
        let err = |k: ErrorKind| file.error(k);
        let string = |key: &str| {
            md.opt(key, |m, k| m.get_str(k).map(str::to_string))
                .map_err(err)
        };
        let architecture = string(keys::GENERAL_ARCHITECTURE)?;
        // Architecture keys are read for the file's own architecture (`llama.*`, ...).
        let arch_u64 = |key: ArchKey| -> anyhow::Result<Option<u64>> {
            match &architecture {
                Some(a) => Ok(md.opt(&key.key(a), Metadata::get_u64).map_err(err)?),
                None => Ok(None),
            }
        };
        let arch_f32 = |key: ArchKey| -> anyhow::Result<Option<f32>> {
            match &architecture {
                Some(a) => Ok(md.opt(&key.key(a), Metadata::get_f32).map_err(err)?),
                None => Ok(None),
            }
        };

        let embedding_length = arch_u64(ArchKey::EmbeddingLength)?;
        let head_count = arch_u64(ArchKey::HeadCount)?;
        let head_dim = match arch_u64(ArchKey::KeyLength)? {
            Some(d) => Some(d),
            None => match (embedding_length, head_count) {
                (Some(e), Some(h)) if h > 0 => Some(e / h),
                _ => None,
            },
        };
        let vocab_size = match arch_u64(ArchKey::VocabSize)? {
            Some(v) => Some(v),
            None => md
                .opt(keys::TOKENIZER_TOKENS, |m, k| {
                    m.get_string_array(k).map(|t| t.len() as u64)
                })
                .map_err(err)?,
        };
        let file_type_id = md
            .opt(keys::GENERAL_FILE_TYPE, Metadata::get_u32)
            .map_err(err)?;
        let file_type = file_type_id.map(|id| match mistral_gguf::file_type_name(id) {
            Some(n) => n.to_string(),
            None => format!("unknown ({id})"),
        });

        let tensors = file.tensors();
        let parameters = tensors.iter().map(|t| t.n_elements()).sum();
        let mut by_type: BTreeMap<GgmlType, (usize, u64)> = BTreeMap::new();
        for t in tensors {
            let e = by_type.entry(t.ggml_type).or_default();
            e.0 += 1;
            e.1 += t.n_bytes();
        }
        let has = |name: TensorName| file.tensor_info(&name.global()).is_some();
        let tied_embeddings = has(TensorName::TokenEmbd).then(|| !has(TensorName::Output));

        Ok(Report {
            file: file.source_name().to_string(),
            file_bytes: file.bytes().len() as u64,
            gguf_version: h.version,
            alignment: h.alignment,
            data_offset: h.data_offset,
            metadata_keys: md.len(),
            name: string(keys::GENERAL_NAME)?,
            parameters,
            parameters_human: human_count(parameters),
            file_type,
            file_type_id,
            context_length: arch_u64(ArchKey::ContextLength)?,
            block_count: arch_u64(ArchKey::BlockCount)?,
            head_count,
            head_count_kv: arch_u64(ArchKey::HeadCountKv)?,
            head_dim,
            embedding_length,
            feed_forward_length: arch_u64(ArchKey::FeedForwardLength)?,
            expert_count: arch_u64(ArchKey::ExpertCount)?,
            expert_used_count: arch_u64(ArchKey::ExpertUsedCount)?,
            rope_freq_base: arch_f32(ArchKey::RopeFreqBase)?,
            rms_norm_eps: arch_f32(ArchKey::RmsEpsilon)?,
            sliding_window: arch_u64(ArchKey::SlidingWindow)?,
            vocab_size,
            tokenizer_model: string(keys::TOKENIZER_MODEL)?,
            tokenizer_pre: string(keys::TOKENIZER_PRE)?,
            chat_template: md.contains(keys::TOKENIZER_CHAT_TEMPLATE),
            tied_embeddings,
            tensor_count: tensors.len(),
            tensor_types: by_type
                .into_iter()
                .map(|(ggml_type, (count, bytes))| TypeCount {
                    ggml_type,
                    count,
                    bytes,
                })
                .collect(),
            weight_bytes: h.tensor_data_bytes(),
            tensors: with_tensors.then(|| {
                tensors
                    .iter()
                    .map(|t| TensorRow {
                        name: t.name.clone(),
                        ggml_type: t.ggml_type,
                        dims: t.dims.clone(),
                        shape: t.dims.iter().rev().copied().collect(),
                        offset: h.data_offset + t.offset,
                        bytes: t.n_bytes(),
                    })
                    .collect()
            }),
            architecture,
        })
    }

    fn to_text(&self) -> String {
        let mut s = String::new();
        let mut line = |label: &str, value: Option<String>| {
            if let Some(v) = value {
                let _ = writeln!(s, "{:<20} {v}", format!("{label}:"));
            }
        };
        let num = |v: Option<u64>| v.map(|v| v.to_string());
        line("file", Some(self.file.clone()));
        line(
            "format",
            Some(format!(
                "GGUF v{}, {}, {} metadata keys, {} tensors, alignment {}",
                self.gguf_version,
                human_bytes(self.file_bytes),
                self.metadata_keys,
                self.tensor_count,
                self.alignment
            )),
        );
        line("architecture", self.architecture.clone());
        line("name", self.name.clone());
        if self.tensor_count > 0 {
            line(
                "parameters",
                Some(format!("{} ({})", self.parameters_human, self.parameters)),
            );
        }
        line("file type", self.file_type.clone());
        line("context length", num(self.context_length));
        line("layers", num(self.block_count));
        line("heads", num(self.head_count));
        line("kv heads", num(self.head_count_kv));
        line("head dim", num(self.head_dim));
        line("embedding", num(self.embedding_length));
        line("feed-forward", num(self.feed_forward_length));
        if self.expert_count.is_some_and(|n| n > 0) {
            line(
                "experts",
                Some(format!(
                    "{} ({} used per token)",
                    self.expert_count.unwrap_or(0),
                    self.expert_used_count
                        .map_or("?".to_string(), |n| n.to_string())
                )),
            );
        }
        line("rope base", self.rope_freq_base.map(|v| v.to_string()));
        line("rms eps", self.rms_norm_eps.map(|v| format!("{v:e}")));
        line("sliding window", num(self.sliding_window));
        line("vocab size", num(self.vocab_size));
        line(
            "tokenizer",
            self.tokenizer_model
                .as_ref()
                .map(|m| match &self.tokenizer_pre {
                    Some(p) => format!("{m} (pre-tokenizer {p})"),
                    None => m.clone(),
                }),
        );
        line(
            "chat template",
            Some(if self.chat_template { "yes" } else { "no" }.to_string()),
        );
        line(
            "tied embeddings",
            self.tied_embeddings
                .map(|t| if t { "yes (no output.weight)" } else { "no" }.to_string()),
        );
        line(
            "weights",
            Some(format!(
                "{} bytes ({})",
                self.weight_bytes,
                human_bytes(self.weight_bytes)
            )),
        );
        for t in &self.tensor_types {
            let _ = writeln!(
                s,
                "  {:<8} {:>5} tensors {:>14} bytes ({})",
                t.ggml_type.name(),
                t.count,
                t.bytes,
                human_bytes(t.bytes)
            );
        }
        if let Some(rows) = &self.tensors {
            let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
            let _ = writeln!(s, "\ntensors (dims in GGML order, row length first; offsets from the start of the file):");
            let _ = writeln!(
                s,
                "  {:<w$} {:<8} {:<24} {:>12} {:>12}",
                "name", "type", "dims", "offset", "bytes"
            );
            for r in rows {
                let dims = r
                    .dims
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(" x ");
                let _ = writeln!(
                    s,
                    "  {:<w$} {:<8} {:<24} {:>12} {:>12}",
                    r.name,
                    r.ggml_type.name(),
                    dims,
                    r.offset,
                    r.bytes
                );
            }
        }
        s
    }
}

/// What `info --plan` prints, text and JSON alike.
#[derive(Serialize)]
struct PlanReport {
    file: String,
    /// Sessions planned for.
    sessions: usize,
    /// Positions each session's cache may hold.
    positions: usize,
    cache_type_k: &'static str,
    cache_type_v: &'static str,
    kernels: &'static str,
    weights_bytes: u64,
    kv_per_session_bytes: u64,
    /// All sessions' caches.
    kv_cache_bytes: u64,
    scratch_bytes: u64,
    total_bytes: u64,
    /// Memory available now (`None`: unknown on this system).
    available_bytes: Option<u64>,
    /// `MemAvailable`, or the environment variable that replaced it.
    available_source: Option<&'static str>,
    /// Whether the total fits in what is available (`None`: unknown).
    fits: Option<bool>,
    /// A GPU's share (the figures above are then the host's).
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<DeviceReport>,
}

/// The device's share of a plan.
#[derive(Serialize)]
struct DeviceReport {
    device: String,
    gpu_layers: usize,
    weights_bytes: u64,
    kv_cache_bytes: u64,
    total_bytes: u64,
    /// `$MISTRAL_RUN_GPU_MEM_AVAILABLE` (`None`: not given; not queried).
    available_bytes: Option<u64>,
    fits: Option<bool>,
    /// The most `--gpu-layers` that fit in `available_bytes`.
    max_gpu_layers: Option<usize>,
}

impl DeviceReport {
    fn new(d: &mistral_transformer::DevicePlan, avail: Option<memory::Available>) -> DeviceReport {
        DeviceReport {
            device: d.device.to_string(),
            gpu_layers: d.layers,
            weights_bytes: d.weights,
            kv_cache_bytes: d.kv_cache,
            total_bytes: d.total(),
            available_bytes: avail.map(|a| a.bytes),
            fits: avail.map(|a| d.total() <= a.bytes),
            max_gpu_layers: avail.map(|a| d.most_layers_within(a.bytes)),
        }
    }
}

impl PlanReport {
    fn new(
        file: &GgufFile,
        opts: &LoadOptions,
        plan: &MemoryPlan,
        available: Option<memory::Available>,
    ) -> PlanReport {
        PlanReport {
            file: file.source_name().to_string(),
            sessions: plan.sessions,
            positions: plan.positions,
            cache_type_k: opts.cache_type_k.name(),
            cache_type_v: opts.cache_type_v.name(),
            kernels: crate::bench::worker::kernels_name(opts.kernels),
            weights_bytes: plan.weights,
            kv_per_session_bytes: plan.kv_per_session,
            kv_cache_bytes: plan.kv_cache,
            scratch_bytes: plan.scratch,
            total_bytes: plan.total(),
            available_bytes: available.map(|a| a.bytes),
            available_source: available.map(|a| a.source),
            fits: available.map(|a| plan.total() <= a.bytes),
            device: None,
        }
    }

    fn to_text(&self) -> String {
        let mut s = String::new();
        let bytes = |n: u64| format!("{n} bytes ({})", human_bytes(n));
        let mut line = |label: &str, value: String| {
            let _ = writeln!(s, "{:<20} {value}", format!("{label}:"));
        };
        line("file", self.file.clone());
        line(
            "plan",
            format!(
                "{} session{} of {} positions, K {}, V {}, {} kernels",
                self.sessions,
                if self.sessions == 1 { "" } else { "s" },
                self.positions,
                self.cache_type_k,
                self.cache_type_v,
                self.kernels
            ),
        );
        line("weights", bytes(self.weights_bytes));
        line("kv cache / session", bytes(self.kv_per_session_bytes));
        line(
            "kv cache",
            format!(
                "{} bytes ({}, {} session{})",
                self.kv_cache_bytes,
                human_bytes(self.kv_cache_bytes),
                self.sessions,
                if self.sessions == 1 { "" } else { "s" }
            ),
        );
        line("scratch", bytes(self.scratch_bytes));
        line("total", bytes(self.total_bytes));
        match (self.available_bytes, self.available_source) {
            (Some(n), Some(src)) => line(
                "available",
                format!("{n} bytes ({}, {src})", human_bytes(n)),
            ),
            _ => line("available", "unknown (no /proc/meminfo)".to_string()),
        }
        line(
            "fits",
            match self.fits {
                Some(true) => "yes".to_string(),
                Some(false) => format!(
                    "no ({} short)",
                    human_bytes(
                        self.total_bytes
                            .saturating_sub(self.available_bytes.unwrap_or(0))
                    )
                ),
                None => "unknown".to_string(),
            },
        );
        if let Some(d) = &self.device {
            line(
                "device",
                format!(
                    "{}, {} layers there (the figures above are the host's)",
                    d.device, d.gpu_layers
                ),
            );
            line("device weights", bytes(d.weights_bytes));
            line("device kv cache", bytes(d.kv_cache_bytes));
            line("device total", bytes(d.total_bytes));
            match (d.available_bytes, d.fits, d.max_gpu_layers) {
                (Some(n), Some(fits), Some(most)) => {
                    line(
                        "device available",
                        format!(
                            "{n} bytes ({}, {})",
                            human_bytes(n),
                            memory::GPU_MEM_AVAILABLE_ENV
                        ),
                    );
                    line("device fits", if fits { "yes".into() } else { "no".into() });
                    line("max --gpu-layers", most.to_string());
                }
                _ => line(
                    "device available",
                    format!("unknown (set {})", memory::GPU_MEM_AVAILABLE_ENV),
                ),
            }
        }
        s
    }
}

/// A count as llama.cpp prints model sizes: `134.5M`, `7.24B`.
fn human_count(n: u64) -> String {
    let f = n as f64;
    if f >= 1e9 {
        format!("{:.2}B", f / 1e9)
    } else if f >= 1e6 {
        format!("{:.1}M", f / 1e6)
    } else if f >= 1e3 {
        format!("{:.1}K", f / 1e3)
    } else {
        n.to_string()
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut f = n as f64;
    let mut u = 0;
    while f >= 1024.0 && u + 1 < UNITS.len() {
        f /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{f:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_print_like_llama_cpp() {
        assert_eq!(human_count(134_515_008), "134.5M");
        assert_eq!(human_count(7_241_732_096), "7.24B");
        assert_eq!(human_count(46_702_792_704), "46.70B");
        assert_eq!(human_count(999), "999");
        assert_eq!(human_bytes(98_362_432), "93.8 MiB");
        assert_eq!(human_bytes(512), "512 B");
    }
}
