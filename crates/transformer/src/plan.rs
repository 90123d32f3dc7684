//! What loading a model will take, from the file's header alone: the weights
//! as the engine holds them, the KV cache of the sessions, and the scratch
//! of one step.

use mistral_gguf::{GgmlType, GgufFile};

use crate::config::{CachePolicy, Device, KernelChoice, LoadOptions, ModelConfig, MAX_UBATCH};
use crate::error::ModelError;
use crate::kv_cache::KvLayout;

/// Memory a model will need, in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryPlan {
    /// The weights as the engine holds them (Q4_K regrouped by 16 rows
    /// takes 2368 bytes per 16 blocks of 144).
    pub weights: u64,
    /// Sessions planned for.
    pub sessions: usize,
    /// Positions each session's cache may hold.
    pub positions: usize,
    /// One session's KV cache at `positions`.
    pub kv_per_session: u64,
    /// All sessions' caches.
    pub kv_cache: u64,
    /// Activations of one step of [`MAX_UBATCH`] tokens.
    pub scratch: u64,
    /// What goes on the device, for a model on a GPU (`weights` and
    /// `kv_cache` above are then the host's part).
    pub device: Option<DevicePlan>,
}

/// The device's share of a model on a GPU: the first `layers` layers'
/// weights (in the file's layout: candle keeps it) and their f16 KV cache,
/// and the output head when every layer is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePlan {
    pub device: Device,
    /// Layers on the device (`--gpu-layers`).
    pub layers: usize,
    pub weights: u64,
    pub kv_cache: u64,
    layer_weights: Vec<u64>,
    head_weights: u64,
    kv_per_layer: u64,
}

impl DevicePlan {
    /// Weights and cache of the first `n` layers (and the head for all).
    pub fn bytes_for(&self, n: usize) -> u64 {
        let n = n.min(self.layer_weights.len());
        let head = if n == self.layer_weights.len() {
            self.head_weights
        } else {
            0
        };
        self.layer_weights[..n]
            .iter()
            .sum::<u64>()
            .saturating_add(head)
            .saturating_add(self.kv_per_layer.saturating_mul(n as u64))
    }

    /// Everything on the device.
    pub fn total(&self) -> u64 {
        self.weights.saturating_add(self.kv_cache)
    }

    /// The most layers whose share fits in `bytes`.
    pub fn most_layers_within(&self, bytes: u64) -> usize {
        (0..=self.layer_weights.len())
            .rev()
            .find(|&n| self.bytes_for(n) <= bytes)
            .unwrap_or(0)
    }
}

impl MemoryPlan {
    /// Plans `sessions` sessions of `opts`' context (the rolling window's
    /// capacity with a sliding window) over `file`, loading nothing.
    pub fn for_file(
        file: &GgufFile,
        opts: &LoadOptions,
        sessions: usize,
    ) -> Result<MemoryPlan, ModelError> {
        let on_device = opts.device.candle_capable();
        let mut cfg = ModelConfig::from_file(file, opts)?;
        let layers_there = if on_device {
            // The device path: a window is a mask over a cache of the
            // whole context, not a rolling buffer.
            if let CachePolicy::Rolling { .. } = cfg.cache {
                cfg.cache = CachePolicy::Full { ctx: cfg.ctx_size };
            }
            opts.gpu_layers.unwrap_or(usize::MAX).min(cfg.n_layer)
        } else {
            0
        };
        let all_there = layers_there == cfg.n_layer;
        let native = |t: &mistral_gguf::TensorInfo| match (t.ggml_type, cfg.kernels) {
            (GgmlType::Q4_K, KernelChoice::Native) => t.n_bytes() / 2304 * 2368,
            _ => t.n_bytes(),
        };
        let layer_of = |name: &str| -> Option<usize> {
            name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
        };
        let head = |name: &str| name.starts_with("output");
        let (mut weights, mut dev_weights, mut head_weights) = (0u64, 0u64, 0u64);
        let mut layer_weights = vec![0u64; cfg.n_layer];
        for t in file.tensors() {
            match layer_of(&t.name) {
                Some(l) if l < cfg.n_layer => {
                    layer_weights[l] += t.n_bytes();
                    if l < layers_there {
                        dev_weights += t.n_bytes();
                    } else {
                        weights += native(t);
                    }
                }
                _ if head(&t.name) => {
                    head_weights += t.n_bytes();
                    if all_there && on_device {
                        dev_weights += t.n_bytes();
                    } else {
                        weights += native(t);
                    }
                }
                _ => weights += native(t), // the token embedding: looked up on the host
            }
        }
        if cfg.tied_embeddings {
            // The output head is the token embedding, also on the device.
            let embd = file
                .tensor_info(&mistral_gguf::keys::TensorName::TokenEmbd.global())
                .map_or(0, |t| t.n_bytes());
            head_weights += embd;
            if all_there && on_device {
                dev_weights += embd;
            }
        }
        let positions = cfg.cache.capacity();
        let layout = KvLayout::new(&cfg);
        let kv_all = layout.bytes_for(positions) as u64;
        let kv_layer = kv_all / cfg.n_layer.max(1) as u64;
        let kv_per_session = kv_layer * (cfg.n_layer - layers_there) as u64;
        let kv_cache = kv_per_session.saturating_mul(sessions as u64);
        // Per token of a step: the residual, the norm, q/k/v, attention out
        // and its projection (about 6 model widths), the FFN's gate and up
        // (2 feed-forward widths, top-k of them for an MoE), and one row of
        // logits for the last token of each sequence.
        let ff = cfg.n_ff * cfg.n_expert_used.max(1);
        let per_token = 6 * cfg.n_embd + 2 * ff;
        let scratch = 4 * (MAX_UBATCH * per_token + sessions.max(1) * cfg.n_vocab) as u64;
        let device = on_device.then(|| {
            // The device cache is f16 whatever the host's types.
            let f16_layer = (positions * cfg.n_head_kv * cfg.head_dim * 2 * 2) as u64;
            let kv_per_layer = f16_layer.saturating_mul(sessions as u64);
            DevicePlan {
                device: opts.device,
                layers: layers_there,
                weights: dev_weights,
                kv_cache: kv_per_layer.saturating_mul(layers_there as u64),
                layer_weights,
                head_weights,
                kv_per_layer,
            }
        });
        Ok(MemoryPlan {
            weights,
            sessions,
            positions,
            kv_per_session,
            kv_cache,
            scratch,
            device,
        })
    }

    /// Everything together.
    pub fn total(&self) -> u64 {
        self.weights
            .saturating_add(self.kv_cache)
            .saturating_add(self.scratch)
    }
}
