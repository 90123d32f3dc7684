//! The model's configuration: hyper-parameters from the GGUF's `llama.*`
//! metadata plus the user's load options (context size, sliding window, cache
//! types, threads), and the one place the KV-cache policy is decided
//! ([`CachePolicy`]).

use mistral_gguf::keys::TensorName;
use mistral_gguf::{GgufFile, LlamaHparams, SUPPORTED_ARCHITECTURES};
pub use mistral_kernels::attention::KvType as CacheType;

use crate::error::ModelError;

/// Context size used when neither the user nor a small model context asks for less.
pub const DEFAULT_CTX_SIZE: usize = 4096;

/// Largest number of tokens run through the layers in one batch. Longer inputs are
/// split into batches of this size (like llama.cpp's `n_ubatch`); a rolling
/// sliding-window cache holds `window + MAX_UBATCH` positions so that every query
/// of a batch still sees its whole window.
pub const MAX_UBATCH: usize = 512;

/// Which quantized matmul implementation runs the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelChoice {
    /// candle's `QMatMul`, kept for side-by-side comparison.
    Candle,
    /// The project's own kernels (`mistral-kernels`), the default: AVX2 (x86-64) and NEON
    /// (AArch64) kernels chosen at run time, for every type including Q4_1 / Q5_x and IQ4_NL /
    /// IQ4_XS, which candle runs slowly or not at all.
    #[default]
    Native,
}

/// Where the model runs: `cpu`, `cuda[:N]` or `metal[:N]` as the CLI's
/// `--device` spells it ([`Device::parse`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// The CPU, with the project's own kernels.
    #[default]
    Cpu,
    /// CUDA GPU number N (a build with the `cuda` feature).
    Cuda(usize),
    /// Metal GPU number N (a build with the `metal` feature, on macOS).
    Metal(usize),
    /// candle's CPU device through the device-generic path, the code a GPU
    /// runs (`candle-cpu`): slow, for checking that path where no GPU is.
    CandleCpu,
}

impl Device {
    /// Most devices of one kind a name may number.
    const MAX_ORDINAL: usize = 1 << 10;

    /// `cpu`, `cuda`, `cuda:N`, `metal` or `metal:N` (case-insensitive).
    pub fn parse(s: &str) -> Result<Device, ModelError> {
        let bad = |expected| ModelError::InvalidOption {
            name: "device",
            value: s.to_string(),
            expected,
        };
        let lower = s.trim().to_ascii_lowercase();
        let (kind, ordinal) = match lower.split_once(':') {
            Some((k, n)) => {
                let n: usize = n
                    .parse()
                    .map_err(|_| bad("expected a device number after the colon, as in cuda:1"))?;
                if n >= Self::MAX_ORDINAL {
                    return Err(bad("expected a device number below 1024"));
                }
                (k, Some(n))
            }
            None => (lower.as_str(), None),
        };
        match (kind, ordinal) {
            ("cpu", None | Some(0)) => Ok(Device::Cpu),
            ("candle-cpu", None) => Ok(Device::CandleCpu),
            ("cuda", n) => Ok(Device::Cuda(n.unwrap_or(0))),
            ("metal", n) => Ok(Device::Metal(n.unwrap_or(0))),
            ("cpu", Some(_)) => Err(bad("expected cpu without a number (the CPU is one device)")),
            _ => Err(bad(
                "expected cpu, cuda, cuda:N, metal, metal:N or candle-cpu",
            )),
        }
    }

    /// Whether a model on this device runs the device-generic path.
    pub fn candle_capable(self) -> bool {
        self != Device::Cpu
    }

    /// Whether this build was compiled with the device's backend.
    pub fn compiled(self) -> bool {
        match self {
            Device::Cpu | Device::CandleCpu => true,
            Device::Cuda(_) => cfg!(feature = "cuda"),
            Device::Metal(_) => cfg!(feature = "metal"),
        }
    }

    /// The candle device the device-generic path runs on, `None` for the
    /// native CPU path. (A build without the backend was refused by
    /// [`Device::check`] when the configuration was made.)
    pub(crate) fn candle(self) -> Result<Option<candle_core::Device>, ModelError> {
        let unavailable = |e: candle_core::Error| ModelError::DeviceUnavailable {
            device: self.to_string(),
            reason: e.to_string(),
        };
        Ok(match self {
            Device::Cpu => None,
            Device::CandleCpu => Some(candle_core::Device::Cpu),
            Device::Cuda(n) => Some(candle_core::Device::new_cuda(n).map_err(unavailable)?),
            Device::Metal(n) => Some(candle_core::Device::new_metal(n).map_err(unavailable)?),
        })
    }

    /// `Ok` where this build can load a model on this device; otherwise the
    /// one-line reason (a build without the backend).
    pub fn check(self) -> Result<(), ModelError> {
        let (name, feature) = match self {
            Device::Cpu | Device::CandleCpu => return Ok(()),
            Device::Cuda(_) => ("CUDA", "cuda"),
            Device::Metal(_) => ("Metal", "metal"),
        };
        if self.compiled() {
            return Ok(());
        }
        Err(ModelError::DeviceUnavailable {
            device: self.to_string(),
            reason: format!("this build has no {name} support; rebuild with --features {feature}"),
        })
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            Device::Metal(n) => write!(f, "metal:{n}"),
            Device::CandleCpu => write!(f, "candle-cpu"),
        }
    }
}

impl std::str::FromStr for Device {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Device, ModelError> {
        Device::parse(s)
    }
}

/// What the user chooses at load time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Context size (positions in a session's KV cache without a sliding window).
    /// Default: the model's context length capped at [`DEFAULT_CTX_SIZE`].
    pub ctx_size: Option<usize>,
    /// Sliding attention window, used when the file does not declare one.
    pub sliding_window: Option<usize>,
    /// Matmul implementation.
    pub kernels: KernelChoice,
    /// Where to run.
    pub device: Device,
    /// Threads of the model's own pool (default: one per available core).
    pub threads: Option<usize>,
    /// How cached keys are stored (llama.cpp's `--cache-type-k`; default f16).
    pub cache_type_k: CacheType,
    /// How cached values are stored (llama.cpp's `--cache-type-v`; default f16).
    pub cache_type_v: CacheType,
    /// Without a sliding window, a session that reaches the context size
    /// drops the older half of its context (after the first `keep` tokens)
    /// and goes on, as llama.cpp does; `false` ends generation instead.
    pub context_shift: bool,
    /// Tokens at the start of a context that a context shift keeps.
    pub keep: usize,
    /// On a GPU device: how many of the first layers run there, the rest on
    /// the CPU with the native kernels (llama.cpp's `-ngl`); `None`: all.
    /// Ignored on the CPU.
    pub gpu_layers: Option<usize>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            ctx_size: None,
            sliding_window: None,
            kernels: KernelChoice::default(),
            device: Device::default(),
            threads: None,
            cache_type_k: CacheType::F16,
            cache_type_v: CacheType::F16,
            context_shift: true,
            keep: 0,
            gpu_layers: None,
        }
    }
}

/// How a session's KV cache holds positions: decided once, from the
/// hyper-parameters and the load options ([`ModelConfig::cache`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachePolicy {
    /// Sliding-window attention: a rolling buffer of `capacity` slots
    /// (`window + MAX_UBATCH`), position `p` in slot `p % capacity`, so a
    /// session runs on indefinitely in bounded memory.
    Rolling { window: usize, capacity: usize },
    /// Full attention over `ctx` positions; a session that would pass them
    /// keeps its first `keep` tokens and drops the older half of the rest.
    Shift { ctx: usize, keep: usize },
    /// Full attention over `ctx` positions; generation ends when they are used.
    Full { ctx: usize },
}

impl CachePolicy {
    /// Slots a session's cache may hold.
    pub fn capacity(&self) -> usize {
        match *self {
            CachePolicy::Rolling { capacity, .. } => capacity,
            CachePolicy::Shift { ctx, .. } | CachePolicy::Full { ctx } => ctx,
        }
    }

    /// The sliding window, if any.
    pub fn window(&self) -> Option<usize> {
        match *self {
            CachePolicy::Rolling { window, .. } => Some(window),
            _ => None,
        }
    }

    /// The most tokens a prompt may have (`None`: any, with a rolling window).
    pub fn max_prompt(&self) -> Option<usize> {
        match *self {
            CachePolicy::Rolling { .. } => None,
            CachePolicy::Shift { ctx, .. } | CachePolicy::Full { ctx } => Some(ctx),
        }
    }

    /// The most positions a session can process since a reset; `None` when
    /// it goes on indefinitely (a rolling window, or context shifts).
    pub fn max_positions(&self) -> Option<usize> {
        match *self {
            CachePolicy::Full { ctx } => Some(ctx),
            _ => None,
        }
    }
}

/// The typed configuration a [`Transformer`](crate::Transformer) runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Hyper-parameters as the file states them.
    pub hparams: LlamaHparams,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_vocab: usize,
    pub rope_freq_base: f32,
    pub rms_norm_eps: f32,
    /// Experts per MoE layer (0: dense).
    pub n_expert: usize,
    /// Experts used per token.
    pub n_expert_used: usize,
    /// The model's trained context length.
    pub context_length: usize,
    /// Positions the model may process since a reset when there is no sliding window.
    pub ctx_size: usize,
    /// Sliding attention window (`None`: full causal attention).
    pub sliding_window: Option<usize>,
    /// How sessions' caches hold positions.
    pub cache: CachePolicy,
    /// How cached keys are stored.
    pub cache_type_k: CacheType,
    /// How cached values are stored.
    pub cache_type_v: CacheType,
    /// Whether `output.weight` is absent and the embedding table is reused.
    pub tied_embeddings: bool,
    /// Matmul implementation.
    pub kernels: KernelChoice,
    /// Threads of the model's pool.
    pub threads: usize,
}

fn to_usize(v: u64, name: &'static str) -> Result<usize, ModelError> {
    usize::try_from(v).map_err(|_| ModelError::InvalidOption {
        name,
        value: v.to_string(),
        expected: "a value that fits in memory",
    })
}

impl ModelConfig {
    /// Reads the hyper-parameters of `file` and applies `opts`.
    pub fn from_file(file: &GgufFile, opts: &LoadOptions) -> Result<ModelConfig, ModelError> {
        let md = file.metadata();
        let arch = md
            .get_str(mistral_gguf::keys::GENERAL_ARCHITECTURE)
            .map_err(|k| file.error(k))?;
        if !SUPPORTED_ARCHITECTURES.contains(&arch) {
            return Err(ModelError::UnsupportedArchitecture {
                file: file.source_name().to_string(),
                arch: arch.to_string(),
                supported: SUPPORTED_ARCHITECTURES.join(", "),
            });
        }
        let hp = LlamaHparams::from_metadata(md).map_err(|k| file.error(k))?;
        let embd = file.tensor(&TensorName::TokenEmbd.global())?.0;
        let n_vocab = match embd.dims.as_slice() {
            [_, v] => to_usize(*v, "vocab")?,
            _ => {
                return Err(ModelError::BadTensorShape {
                    file: file.source_name().to_string(),
                    name: embd.name.clone(),
                    found: embd.dims.clone(),
                    expected: vec![hp.embedding_length, 0],
                })
            }
        };
        Self::from_hparams(
            hp,
            n_vocab,
            file.tensor_info(&TensorName::Output.global()).is_none(),
            opts,
        )
        .map_err(|e| match e {
            ModelError::UnsupportedConfig { what, .. } => ModelError::UnsupportedConfig {
                file: file.source_name().to_string(),
                what,
            },
            e => e,
        })
    }

    /// Builds the configuration from parsed hyper-parameters.
    pub fn from_hparams(
        hp: LlamaHparams,
        n_vocab: usize,
        tied_embeddings: bool,
        opts: &LoadOptions,
    ) -> Result<ModelConfig, ModelError> {
        opts.device.check()?;
        let unsupported = |what: String| ModelError::UnsupportedConfig {
            file: String::new(),
            what,
        };
        let n_embd = to_usize(hp.embedding_length, "embedding_length")?;
        let n_head = to_usize(hp.head_count, "head_count")?;
        let head_dim = to_usize(hp.head_dim, "head_dim")?;
        if head_dim % 2 != 0 || head_dim == 0 {
            return Err(unsupported(format!(
                "head dimension {head_dim} is not even"
            )));
        }
        if hp.rope_dimension_count != hp.head_dim {
            return Err(unsupported(format!(
                "partial RoPE (rope.dimension_count {} != head dim {})",
                hp.rope_dimension_count, hp.head_dim
            )));
        }
        if n_vocab == 0 || hp.block_count == 0 || hp.feed_forward_length == 0 {
            return Err(unsupported(
                "zero layers, vocabulary or feed-forward length".into(),
            ));
        }
        if hp.is_moe() && hp.expert_used_count == 0 {
            return Err(unsupported("an MoE model with expert_used_count 0".into()));
        }
        let context_length = to_usize(hp.context_length, "context_length")?.max(1);
        let ctx_size = match opts.ctx_size {
            Some(0) => {
                return Err(ModelError::InvalidOption {
                    name: "ctx-size",
                    value: "0".into(),
                    expected: "at least 1",
                })
            }
            Some(n) => n,
            None => context_length.min(DEFAULT_CTX_SIZE),
        };
        if opts.sliding_window == Some(0) {
            return Err(ModelError::InvalidOption {
                name: "sliding-window",
                value: "0".into(),
                expected: "at least 1",
            });
        }
        let sliding_window = match hp.sliding_window {
            Some(w) => Some(to_usize(w, "sliding_window")?),
            None => opts.sliding_window,
        };
        let cache = match sliding_window {
            Some(window) => CachePolicy::Rolling {
                window,
                capacity: window
                    .checked_add(MAX_UBATCH)
                    .ok_or(ModelError::InvalidOption {
                        name: "sliding-window",
                        value: window.to_string(),
                        expected: "a window that fits in memory",
                    })?,
            },
            None if opts.context_shift => CachePolicy::Shift {
                ctx: ctx_size,
                keep: opts.keep,
            },
            None => CachePolicy::Full { ctx: ctx_size },
        };
        if let CachePolicy::Shift { ctx, keep } = cache {
            if keep >= ctx {
                return Err(ModelError::InvalidOption {
                    name: "keep",
                    value: keep.to_string(),
                    expected: "fewer tokens than the context size",
                });
            }
        }
        for (name, t) in [
            ("cache-type-k", opts.cache_type_k),
            ("cache-type-v", opts.cache_type_v),
        ] {
            if t.row_bytes(head_dim).is_none() {
                return Err(ModelError::InvalidOption {
                    name,
                    value: t.name().into(),
                    expected: "a type that can store a head (q8_0 needs a head dimension that is a multiple of 32)",
                });
            }
        }
        let threads = match opts.threads {
            Some(0) => {
                return Err(ModelError::InvalidOption {
                    name: "threads",
                    value: "0".into(),
                    expected: "at least 1",
                })
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        Ok(ModelConfig {
            n_layer: to_usize(hp.block_count, "block_count")?,
            n_embd,
            n_ff: to_usize(hp.feed_forward_length, "feed_forward_length")?,
            n_head,
            n_head_kv: to_usize(hp.head_count_kv, "head_count_kv")?,
            head_dim,
            n_vocab,
            rope_freq_base: hp.rope_freq_base,
            rms_norm_eps: hp.rms_norm_eps,
            n_expert: to_usize(hp.expert_count, "expert_count")?,
            n_expert_used: to_usize(hp.expert_used_count, "expert_used_count")?,
            context_length,
            ctx_size,
            sliding_window,
            cache,
            cache_type_k: opts.cache_type_k,
            cache_type_v: opts.cache_type_v,
            tied_embeddings,
            kernels: opts.kernels,
            threads,
            hparams: hp,
        })
    }

    /// Query heads per KV head.
    pub fn n_group(&self) -> usize {
        self.n_head / self.n_head_kv
    }

    /// Whether the feed-forward layers are mixtures of experts.
    pub fn is_moe(&self) -> bool {
        self.n_expert > 0
    }

    /// Bytes one cached position takes in every layer (keys and values).
    pub fn kv_bytes_per_position(&self) -> usize {
        let row = |t: CacheType| t.row_bytes(self.head_dim).unwrap_or(0);
        self.n_layer * self.n_head_kv * (row(self.cache_type_k) + row(self.cache_type_v))
    }
}
