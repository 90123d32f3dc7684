//! End-to-end tests of `mistral-run info`: the real SmolLM2 file (fetched by
//! models/fetch-smollm2.sh), a vocab-only file, and broken files.

use std::path::Path;
use std::process::{Command, Output};

use mistral_test_support::{root, smollm2_path as smollm2};
use serde_json::Value;

fn info(args: &[&str], file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mistral-run"))
        .arg("info")
        .args(args)
        .arg(file)
        .output()
        .expect("run mistral-run")
}

fn json(file: &Path) -> Value {
    let out = info(&["--json", "--tensors"], file);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

#[test]
fn smollm2_info() {
    let path = smollm2();
    let j = json(&path);
    assert_eq!(j["architecture"], "llama");
    assert_eq!(j["block_count"], 30);
    assert_eq!(j["embedding_length"], 576);
    assert_eq!(j["head_count"], 9);
    assert_eq!(j["head_count_kv"], 3);
    assert_eq!(j["vocab_size"], 49152);
    assert_eq!(j["file_type"], "Q4_1");
    assert_eq!(j["chat_template"], true);

    // The tensor list, checked against the summary fields it must agree with.
    let tensors = j["tensors"].as_array().expect("--tensors lists tensors");
    assert_eq!(tensors.len(), 272);
    assert_eq!(j["tensor_count"], 272);
    let names: Vec<&str> = tensors
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"token_embd.weight"));
    assert!(
        !names.contains(&"output.weight"),
        "SmolLM2 ties its embeddings"
    );
    assert_eq!(j["tied_embeddings"], true);
    let blocks: std::collections::BTreeSet<&str> = names
        .iter()
        .filter_map(|n| n.strip_prefix("blk.")?.split('.').next())
        .collect();
    assert_eq!(blocks.len(), 30);

    // Parameter count = sum of products of dims; weight bytes = sum of tensor bytes,
    // and the per-type table adds up to both the tensor count and the bytes.
    let product = |t: &Value| {
        t["dims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .product::<u64>()
    };
    let params: u64 = tensors.iter().map(product).sum();
    assert_eq!(j["parameters"], params);
    assert_eq!(
        j["parameters_human"],
        format!("{:.1}M", params as f64 / 1e6)
    );
    let bytes: u64 = tensors.iter().map(|t| t["bytes"].as_u64().unwrap()).sum();
    assert_eq!(j["weight_bytes"], bytes);
    let types = j["tensor_types"].as_array().unwrap();
    assert_eq!(
        types
            .iter()
            .map(|t| t["count"].as_u64().unwrap())
            .sum::<u64>(),
        272
    );
    assert_eq!(
        types
            .iter()
            .map(|t| t["bytes"].as_u64().unwrap())
            .sum::<u64>(),
        bytes
    );
    // Offsets are absolute and the last tensor ends at the end of the file.
    let end = tensors
        .iter()
        .map(|t| t["offset"].as_u64().unwrap() + t["bytes"].as_u64().unwrap())
        .max()
        .unwrap();
    assert_eq!(end, std::fs::metadata(&path).unwrap().len());
    let emb = &tensors[names
        .iter()
        .position(|n| *n == "token_embd.weight")
        .unwrap()];
    assert_eq!(emb["dims"], serde_json::json!([576, 49152]));
    assert_eq!(emb["shape"], serde_json::json!([49152, 576]));

    // The text form carries the same facts.
    let out = info(&[], &path);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "architecture:        llama",
        "layers:              30",
        "embedding:           576",
        "vocab size:          49152",
        "272 tensors",
        "134.5M",
        "Q4_1",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}

/// A vocab-only file (no `llama.*` hyper-parameters, no tensors) prints what it has.
#[test]
fn vocab_only_file() {
    let path = mistral_test_support::vocab_path("ggml-vocab-mistral-v1.gguf");
    let j = json(&path);
    assert_eq!(j["tensor_count"], 0);
    assert_eq!(j["vocab_size"], 32000);
    assert_eq!(j["tokenizer_model"], "llama");
    assert_eq!(j["block_count"], Value::Null);
    let out = info(&[], &path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Broken files: non-zero exit, exactly one line on stderr naming the file, no panic.
#[test]
fn broken_files_fail_with_one_line() {
    let dir = std::env::temp_dir().join(format!("mistral-run-cli-info-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let valid = std::fs::read(root().join("tests/gguf-corpus/base.valid")).unwrap();

    // A truncated copy of the real model (its header and the start of its data).
    let mut truncated = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(std::fs::File::open(smollm2()).unwrap(), 4 << 20),
        &mut truncated,
    )
    .unwrap();
    // Pseudo-random bytes.
    let mut x = 0x9e3779b97f4a7c15u64;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    // A valid file whose first key's length claims 2^62 bytes.
    let mut huge = valid.clone();
    huge[24..32].copy_from_slice(&(1u64 << 62).to_le_bytes());

    for (name, bytes, expect) in [
        ("truncated.gguf", truncated, "file truncated"),
        ("random.gguf", random, "not a GGUF file"),
        ("huge-string.gguf", huge, "cannot fit"),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, &bytes).unwrap();
        let out = info(&[], &path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: exit 0");
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(name) && stderr.contains(expect),
            "{name}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert!(
            out.stdout.is_empty(),
            "{name}: printed {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // The unedited file is fine.
    let path = dir.join("valid.gguf");
    std::fs::write(&path, &valid).unwrap();
    assert!(info(&["--tensors"], &path).status.success());
    std::fs::remove_dir_all(&dir).ok();
}
