//! End-to-end tests of `mistral-run quantize` on a tiny synthetic llama model:
//! the per-tensor mix, the values, requantizing quantized input, and errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mistral_gguf::keys::{self, ArchKey};
use mistral_gguf::{GgmlType, GgufFile, GgufWriter, Metadata, TensorSpec, Value};

const EMBD: u64 = 256;
const FF: u64 = 512;
const VOCAB: u64 = 64;
const LAYERS: u64 = 2;

/// Deterministic pseudo-Gaussian values (sum of uniforms from an LCG).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            let mut acc = 0f32;
            for _ in 0..4 {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                acc += (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            }
            acc
        })
        .collect()
}

/// Tensors (name, GGML dims) of the synthetic model.
fn tensor_list() -> Vec<(String, Vec<u64>)> {
    let mut v = vec![("token_embd.weight".to_string(), vec![EMBD, VOCAB])];
    for i in 0..LAYERS {
        for (name, dims) in [
            ("attn_norm.weight", vec![EMBD]),
            ("attn_q.weight", vec![EMBD, EMBD]),
            ("attn_k.weight", vec![EMBD, EMBD / 4]),
            ("attn_v.weight", vec![EMBD, EMBD / 4]),
            ("attn_output.weight", vec![EMBD, EMBD]),
            ("ffn_norm.weight", vec![EMBD]),
            ("ffn_gate.weight", vec![EMBD, FF]),
            ("ffn_up.weight", vec![EMBD, FF]),
            ("ffn_down.weight", vec![FF, EMBD]),
        ] {
            v.push((format!("blk.{i}.{name}"), dims));
        }
    }
    v.push(("output_norm.weight".into(), vec![EMBD]));
    v.push(("output.weight".into(), vec![EMBD, VOCAB]));
    v
}

fn write_model(path: &Path) -> Vec<Vec<f32>> {
    let mut md = Metadata::new();
    let arch = "llama";
    md.set(keys::GENERAL_ARCHITECTURE, Value::String(arch.into()));
    for (k, v) in [
        (ArchKey::ContextLength, 128u32),
        (ArchKey::EmbeddingLength, EMBD as u32),
        (ArchKey::BlockCount, LAYERS as u32),
        (ArchKey::FeedForwardLength, FF as u32),
        (ArchKey::HeadCount, 4),
        (ArchKey::HeadCountKv, 1),
    ] {
        md.set(k.key(arch), Value::U32(v));
    }
    md.set(keys::GENERAL_FILE_TYPE, Value::U32(0));
    let mut w = GgufWriter::new(md);
    let mut data = Vec::new();
    for (i, (name, dims)) in tensor_list().into_iter().enumerate() {
        let n = dims.iter().product::<u64>() as usize;
        data.push(values(n, i as u64));
        w.add_tensor(TensorSpec::new(name, GgmlType::F32, &dims));
    }
    let bytes: Vec<Vec<u8>> = data
        .iter()
        .map(|v| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let refs: Vec<&[u8]> = bytes.iter().map(|b| b.as_slice()).collect();
    std::fs::write(path, w.to_bytes(&refs).unwrap()).unwrap();
    data
}

fn quantize(input: &Path, output: &Path, ty: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mistral-run"))
        .arg("quantize")
        .arg(input)
        .arg(output)
        .arg(ty)
        .output()
        .expect("run mistral-run")
}

/// `name` in the test's own temporary directory (removed when `dir` drops).
fn tmp(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

fn type_of(f: &GgufFile, name: &str) -> GgmlType {
    f.tensor_info(name).unwrap().ggml_type
}

/// Relative RMS error of every tensor of `f` against the original values.
fn check_values(f: &GgufFile, orig: &[Vec<f32>], max_rel: f64) {
    for ((name, _), want) in tensor_list().iter().zip(orig) {
        let (info, data) = f.tensor(name).unwrap();
        let mut got = vec![0f32; want.len()];
        mistral_kernels::dequantize(info.ggml_type, data, &mut got).unwrap();
        let err: f64 = got
            .iter()
            .zip(want)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let norm: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
        let rel = (err / norm).sqrt();
        assert!(
            rel < max_rel,
            "{name} ({}): relative error {rel}",
            info.ggml_type
        );
    }
}

#[test]
fn quantize_mixes_and_requantizes() {
    let dir = tempfile::tempdir().unwrap();
    let src = tmp(&dir, "f32.gguf");
    let orig = write_model(&src);

    let q4 = tmp(&dir, "q4_k_m.gguf");
    let out = quantize(&src, &q4, "q4_k_m");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = GgufFile::open(&q4).unwrap();
    assert_eq!(f.metadata().get_u32(keys::GENERAL_FILE_TYPE).unwrap(), 15);
    assert_eq!(type_of(&f, "output.weight"), GgmlType::Q6_K);
    assert_eq!(type_of(&f, "token_embd.weight"), GgmlType::Q4_K);
    assert_eq!(type_of(&f, "blk.0.attn_q.weight"), GgmlType::Q4_K);
    // use_more_bits(i, 2) is false for layer 0 and true for layer 1 (1 >= 7 * 2 / 8).
    assert_eq!(type_of(&f, "blk.0.attn_v.weight"), GgmlType::Q4_K);
    assert_eq!(type_of(&f, "blk.1.attn_v.weight"), GgmlType::Q6_K);
    assert_eq!(type_of(&f, "blk.0.ffn_down.weight"), GgmlType::Q4_K);
    assert_eq!(type_of(&f, "blk.1.ffn_down.weight"), GgmlType::Q6_K);
    assert_eq!(type_of(&f, "blk.1.ffn_norm.weight"), GgmlType::F32);
    check_values(&f, &orig, 0.12);

    let q2 = tmp(&dir, "q2_k.gguf");
    let out = quantize(&src, &q2, "q2_k");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = GgufFile::open(&q2).unwrap();
    assert_eq!(type_of(&f, "blk.0.attn_q.weight"), GgmlType::Q2_K);
    assert_eq!(type_of(&f, "blk.0.attn_v.weight"), GgmlType::Q4_K); // gqa 4
    assert_eq!(type_of(&f, "blk.0.ffn_down.weight"), GgmlType::Q3_K);
    assert_eq!(type_of(&f, "blk.0.attn_output.weight"), GgmlType::Q3_K);
    check_values(&f, &orig, 0.45);

    // Requantize a quantized file: Q8_0 -> Q4_K_M (dequantized first) and -> F16.
    let q8 = tmp(&dir, "q8_0.gguf");
    assert!(quantize(&src, &q8, "q8_0").status.success());
    let f = GgufFile::open(&q8).unwrap();
    assert_eq!(type_of(&f, "blk.0.ffn_up.weight"), GgmlType::Q8_0);
    assert_eq!(type_of(&f, "output.weight"), GgmlType::Q8_0);
    check_values(&f, &orig, 0.01);
    let re = tmp(&dir, "re_q4_k_m.gguf");
    let out = quantize(&q8, &re, "q4_k_m");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = GgufFile::open(&re).unwrap();
    assert_eq!(type_of(&f, "blk.0.attn_q.weight"), GgmlType::Q4_K);
    check_values(&f, &orig, 0.12);
    let f16 = tmp(&dir, "f16.gguf");
    assert!(quantize(&q8, &f16, "f16").status.success());
    let f = GgufFile::open(&f16).unwrap();
    assert_eq!(type_of(&f, "blk.0.attn_q.weight"), GgmlType::F16);
    assert_eq!(type_of(&f, "blk.0.attn_norm.weight"), GgmlType::F32);
    check_values(&f, &orig, 0.01);
    // BF16: 8 significant bits, relative error per value ≤ 2^-9.
    let bf16 = tmp(&dir, "bf16.gguf");
    assert!(quantize(&src, &bf16, "bf16").status.success());
    let f = GgufFile::open(&bf16).unwrap();
    assert_eq!(f.metadata().get_u32(keys::GENERAL_FILE_TYPE).unwrap(), 32);
    assert_eq!(type_of(&f, "blk.0.attn_q.weight"), GgmlType::BF16);
    assert_eq!(type_of(&f, "output.weight"), GgmlType::BF16);
    assert_eq!(type_of(&f, "blk.0.attn_norm.weight"), GgmlType::F32);
    check_values(&f, &orig, 0.004);
}

#[test]
fn quantize_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = tmp(&dir, "does-not-exist.gguf");
    let out = quantize(&missing, &tmp(&dir, "x.gguf"), "q4_k_m");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("does-not-exist"), "{err}");

    let src = tmp(&dir, "errors-src.gguf");
    write_model(&src);
    let out = quantize(&src, &tmp(&dir, "y.gguf"), "q9_k");
    assert!(!out.status.success());
    let out = quantize(&src, &src, "q8_0");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("same file"));

    // Not a GGUF file at all.
    let junk = tmp(&dir, "junk.gguf");
    std::fs::write(&junk, b"not a gguf file").unwrap();
    let out = quantize(&junk, &tmp(&dir, "z.gguf"), "q8_0");
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim().lines().count(),
        1
    );
}
