//! Per-tensor type choice of a quantized file: llama.cpp's
//! `llama_tensor_get_type` for the file types `mistral-run quantize` writes
//! (as of the llama.cpp build the reference files were made with: rows that
//! are not a multiple of 256 fall back Q2_K/Q3_K → IQ4_NL, Q4_K → Q5_0,
//! Q5_K → Q5_1, Q6_K → Q8_0).

use mistral_gguf::{GgmlType, TensorInfo};

/// A target file type (llama.cpp's `llama_ftype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum FileType {
    F16,
    BF16,
    Q8_0,
    Q4_K_M,
    Q4_K_S,
    Q2_K,
    Q6_K,
}

impl FileType {
    /// Every supported file type.
    pub const ALL: [FileType; 7] = [
        FileType::F16,
        FileType::BF16,
        FileType::Q8_0,
        FileType::Q4_K_M,
        FileType::Q4_K_S,
        FileType::Q2_K,
        FileType::Q6_K,
    ];

    /// The `general.file_type` id.
    pub fn id(self) -> u32 {
        match self {
            FileType::F16 => 1,
            FileType::Q8_0 => 7,
            FileType::BF16 => 32,
            FileType::Q2_K => 10,
            FileType::Q4_K_S => 14,
            FileType::Q4_K_M => 15,
            FileType::Q6_K => 18,
        }
    }

    /// llama.cpp's name (`Q4_K_M`, ...).
    pub fn name(self) -> &'static str {
        match self {
            FileType::F16 => "F16",
            FileType::BF16 => "BF16",
            FileType::Q8_0 => "Q8_0",
            FileType::Q4_K_M => "Q4_K_M",
            FileType::Q4_K_S => "Q4_K_S",
            FileType::Q2_K => "Q2_K",
            FileType::Q6_K => "Q6_K",
        }
    }

    /// Parses a name case-insensitively (`q4_k_m`, `Q8_0`, ...).
    pub fn from_name(name: &str) -> Option<FileType> {
        FileType::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
    }

    /// The type of the bulk of the tensors.
    pub fn default_type(self) -> GgmlType {
        match self {
            FileType::F16 => GgmlType::F16,
            FileType::BF16 => GgmlType::BF16,
            FileType::Q8_0 => GgmlType::Q8_0,
            FileType::Q4_K_M | FileType::Q4_K_S => GgmlType::Q4_K,
            FileType::Q2_K => GgmlType::Q2_K,
            FileType::Q6_K => GgmlType::Q6_K,
        }
    }
}

/// The model facts the mix rules look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MixModel {
    pub head_count: u64,
    pub head_count_kv: u64,
    pub expert_count: u64,
}

impl MixModel {
    fn n_gqa(&self) -> u64 {
        self.head_count.checked_div(self.head_count_kv).unwrap_or(1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    AttnQ,
    AttnV,
    AttnK,
    AttnQkv,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

fn category(name: &str) -> Category {
    use Category::*;
    if name == "output.weight" {
        Output
    } else if name == "token_embd.weight" {
        TokenEmbd
    } else if name.contains("attn_qkv.weight") {
        AttnQkv
    } else if name.contains("attn_v.weight") {
        AttnV
    } else if name.contains("attn_k.weight") {
        AttnK
    } else if name.contains("attn_q.weight") {
        AttnQ
    } else if name.contains("attn_output.weight") {
        AttnOutput
    } else if name.contains("ffn_up") {
        FfnUp
    } else if name.contains("ffn_gate") && !name.contains("ffn_gate_inp") {
        FfnGate
    } else if name.contains("ffn_down") {
        FfnDown
    } else {
        Other
    }
}

/// Whether llama.cpp would quantize the tensor at all (2-D+ weights, no norms, no router).
fn allows_quantization(t: &TensorInfo) -> bool {
    t.dims.len() >= 2
        && t.name.ends_with("weight")
        && !t.name.contains("_norm.weight")
        && !t.name.contains("ffn_gate_inp.weight")
}

fn use_more_bits(i: u64, n: u64) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// Block-size fallback for rows that the chosen type cannot hold.
fn fallback(cols: u64, ty: GgmlType) -> GgmlType {
    if cols.is_multiple_of(ty.block_size()) {
        return ty;
    }
    use GgmlType::*;
    let alt = match ty {
        Q2_K | Q3_K | IQ4_XS => IQ4_NL,
        Q4_K => Q5_0,
        Q5_K => Q5_1,
        Q6_K => Q8_0,
        _ => F16,
    };
    if cols.is_multiple_of(alt.block_size()) {
        alt
    } else {
        F16
    }
}

/// The layer number in a `blk.N.` tensor name.
fn layer_of(name: &str) -> Option<u64> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// The type each tensor gets in a file of type `ftype` (same order as `tensors`).
pub fn plan(tensors: &[TensorInfo], model: &MixModel, ftype: FileType) -> Vec<GgmlType> {
    let default = ftype.default_type();
    let cats: Vec<Category> = tensors.iter().map(|t| category(&t.name)).collect();
    let count = |c: Category| cats.iter().filter(|&&x| x == c).count() as u64;
    let n_attention_wv = count(Category::AttnV) + count(Category::AttnQkv);
    let n_ffn_down = count(Category::FfnDown);
    let tied = !tensors.iter().any(|t| t.name == "output.weight");
    let moe8 = model.expert_count == 8;
    let (mut i_attention_wv, mut i_ffn_down) = (0u64, 0u64);

    tensors
        .iter()
        .zip(&cats)
        .map(|(t, &cat)| {
            if !allows_quantization(t) {
                return t.ggml_type;
            }
            if !default.is_quantized() {
                return default;
            }
            let cols = t.dims.first().copied().unwrap_or(0);
            let mut ty = default;
            use Category::*;
            use FileType as F;
            use GgmlType as G;
            match cat {
                Output | TokenEmbd if cat == Output || tied => {
                    if cols % ty.block_size() != 0 {
                        ty = G::Q8_0;
                    } else if ty != G::Q8_0 {
                        ty = G::Q6_K;
                    }
                }
                AttnV | AttnQkv => {
                    if cat == AttnQkv {
                        if ftype == F::Q4_K_M {
                            ty = G::Q5_K;
                        }
                    } else {
                        match ftype {
                            F::Q2_K => ty = if model.n_gqa() >= 4 { G::Q4_K } else { G::Q3_K },
                            F::Q4_K_M if use_more_bits(i_attention_wv, n_attention_wv) => {
                                ty = G::Q6_K
                            }
                            F::Q4_K_S if i_attention_wv < 4 => ty = G::Q5_K,
                            _ => {}
                        }
                        if moe8 {
                            ty = G::Q8_0;
                        }
                    }
                    i_attention_wv += 1;
                }
                AttnK if moe8 => ty = G::Q8_0,
                FfnDown => {
                    let i_layer = if model.expert_count > 1 {
                        layer_of(&t.name).unwrap_or(i_ffn_down)
                    } else {
                        i_ffn_down
                    };
                    let n_layer = n_ffn_down;
                    match ftype {
                        F::Q2_K => ty = G::Q3_K,
                        F::Q4_K_M if use_more_bits(i_layer, n_layer) => ty = G::Q6_K,
                        F::Q4_K_S if i_layer < n_layer / 8 => ty = G::Q5_K,
                        _ => {}
                    }
                    i_ffn_down += 1;
                }
                AttnOutput => {
                    if moe8 {
                        if matches!(ftype, F::Q2_K | F::Q4_K_S | F::Q4_K_M) {
                            ty = G::Q5_K;
                        }
                    } else if ftype == F::Q2_K {
                        ty = G::Q3_K;
                    }
                }
                _ => {}
            }
            fallback(cols, ty)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, ty: GgmlType, dims: &[u64]) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            ggml_type: ty,
            dims: dims.to_vec(),
            offset: 0,
        }
    }

    /// A llama-shaped tensor list with `n` layers.
    fn model(n: u64, embd: u64, ff: u64, tied: bool) -> Vec<TensorInfo> {
        let mut v = vec![t("token_embd.weight", GgmlType::F16, &[embd, 1000])];
        for i in 0..n {
            for (name, dims) in [
                ("attn_norm.weight", vec![embd]),
                ("attn_q.weight", vec![embd, embd]),
                ("attn_k.weight", vec![embd, embd / 4]),
                ("attn_v.weight", vec![embd, embd / 4]),
                ("attn_output.weight", vec![embd, embd]),
                ("ffn_norm.weight", vec![embd]),
                ("ffn_gate.weight", vec![embd, ff]),
                ("ffn_up.weight", vec![embd, ff]),
                ("ffn_down.weight", vec![ff, embd]),
            ] {
                let ty = if dims.len() == 1 {
                    GgmlType::F32
                } else {
                    GgmlType::F16
                };
                v.push(t(&format!("blk.{i}.{name}"), ty, &dims));
            }
        }
        v.push(t("output_norm.weight", GgmlType::F32, &[embd]));
        if !tied {
            v.push(t("output.weight", GgmlType::F16, &[embd, 1000]));
        }
        v
    }

    const M: MixModel = MixModel {
        head_count: 32,
        head_count_kv: 8,
        expert_count: 0,
    };

    fn type_of(ts: &[TensorInfo], plan: &[GgmlType], name: &str) -> GgmlType {
        plan[ts.iter().position(|t| t.name == name).unwrap()]
    }

    #[test]
    fn q4_k_m_mix_on_a_mistral_shape() {
        let ts = model(32, 4096, 14336, false);
        let p = plan(&ts, &M, FileType::Q4_K_M);
        assert_eq!(type_of(&ts, &p, "output.weight"), GgmlType::Q6_K);
        assert_eq!(type_of(&ts, &p, "token_embd.weight"), GgmlType::Q4_K);
        assert_eq!(type_of(&ts, &p, "blk.0.attn_norm.weight"), GgmlType::F32);
        assert_eq!(type_of(&ts, &p, "blk.5.attn_q.weight"), GgmlType::Q4_K);
        // use_more_bits(i, 32): i < 4, i >= 28, (i - 4) % 3 == 2.
        for i in 0..32u64 {
            let more = !(4..28).contains(&i) || (i - 4) % 3 == 2;
            let want = if more { GgmlType::Q6_K } else { GgmlType::Q4_K };
            assert_eq!(
                type_of(&ts, &p, &format!("blk.{i}.attn_v.weight")),
                want,
                "attn_v {i}"
            );
            assert_eq!(
                type_of(&ts, &p, &format!("blk.{i}.ffn_down.weight")),
                want,
                "ffn_down {i}"
            );
        }
        let n_q6 = p.iter().filter(|&&t| t == GgmlType::Q6_K).count();
        assert_eq!(n_q6, 1 + 2 * 16); // 4 first + 4 last + 8 every third layer, for attn_v and ffn_down
    }

    #[test]
    fn q2_k_and_fallbacks_on_a_576_wide_model() {
        // SmolLM2-135M: rows of 576 (not a multiple of 256), ffn 1536, tied embeddings, gqa 3.
        let ts = model(30, 576, 1536, true);
        let m = MixModel {
            head_count: 9,
            head_count_kv: 3,
            expert_count: 0,
        };
        let p = plan(&ts, &m, FileType::Q2_K);
        assert_eq!(type_of(&ts, &p, "token_embd.weight"), GgmlType::Q8_0); // tied output, 576 % 256 != 0
        assert_eq!(type_of(&ts, &p, "blk.3.attn_q.weight"), GgmlType::IQ4_NL);
        assert_eq!(type_of(&ts, &p, "blk.3.attn_v.weight"), GgmlType::IQ4_NL); // Q3_K falls back
        assert_eq!(type_of(&ts, &p, "blk.3.ffn_down.weight"), GgmlType::Q3_K); // 1536 wide rows
        assert_eq!(type_of(&ts, &p, "blk.3.ffn_up.weight"), GgmlType::IQ4_NL);
        let p = plan(&ts, &m, FileType::Q4_K_M);
        assert_eq!(type_of(&ts, &p, "blk.3.attn_q.weight"), GgmlType::Q5_0);
        assert_eq!(type_of(&ts, &p, "blk.0.attn_v.weight"), GgmlType::Q8_0); // Q6_K falls back
        assert_eq!(type_of(&ts, &p, "blk.0.ffn_down.weight"), GgmlType::Q6_K);
        assert_eq!(type_of(&ts, &p, "blk.4.ffn_down.weight"), GgmlType::Q4_K);
        let p = plan(&ts, &m, FileType::F16);
        assert_eq!(type_of(&ts, &p, "blk.0.attn_norm.weight"), GgmlType::F32);
        assert_eq!(type_of(&ts, &p, "blk.0.ffn_down.weight"), GgmlType::F16);
    }

    #[test]
    fn q4_k_s_q2_k_on_mistral_and_moe() {
        let ts = model(32, 4096, 14336, false);
        let p = plan(&ts, &M, FileType::Q4_K_S);
        assert_eq!(type_of(&ts, &p, "blk.3.attn_v.weight"), GgmlType::Q5_K);
        assert_eq!(type_of(&ts, &p, "blk.4.attn_v.weight"), GgmlType::Q4_K);
        assert_eq!(type_of(&ts, &p, "blk.3.ffn_down.weight"), GgmlType::Q5_K);
        assert_eq!(type_of(&ts, &p, "blk.4.ffn_down.weight"), GgmlType::Q4_K);
        let p = plan(&ts, &M, FileType::Q2_K);
        assert_eq!(type_of(&ts, &p, "blk.9.attn_v.weight"), GgmlType::Q4_K); // gqa 4
        assert_eq!(type_of(&ts, &p, "blk.9.attn_output.weight"), GgmlType::Q3_K);
        assert_eq!(type_of(&ts, &p, "blk.9.ffn_up.weight"), GgmlType::Q2_K);
        let moe = MixModel {
            expert_count: 8,
            ..M
        };
        let p = plan(&ts, &moe, FileType::Q4_K_M);
        assert_eq!(type_of(&ts, &p, "blk.9.attn_v.weight"), GgmlType::Q8_0);
        assert_eq!(type_of(&ts, &p, "blk.9.attn_k.weight"), GgmlType::Q8_0);
        assert_eq!(type_of(&ts, &p, "blk.9.attn_output.weight"), GgmlType::Q5_K);
        assert_eq!(FileType::from_name("q4_k_m"), Some(FileType::Q4_K_M));
        assert_eq!(FileType::Q4_K_M.id(), 15);
    }
}
