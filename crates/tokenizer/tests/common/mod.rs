//! Shared helpers for the tokenizer tests: the vocab files (fetched by
//! models/fetch-vocab.sh), their in-repo test vectors, and the SmolLM2 model
//! fetched by models/fetch-smollm2.sh.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use mistral_gguf::GgufFile;
pub use mistral_test_support::{root, smollm2_path, vocab_path};
use mistral_tokenizer::Tokenizer;

/// A test-vector file (`NAME.inp` / `NAME.out`) in tests/data/vocab/.
pub fn vectors_path(name: &str) -> PathBuf {
    root().join("tests/data/vocab").join(name)
}

pub fn load(path: &std::path::Path) -> Tokenizer {
    let file = GgufFile::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Tokenizer::from_gguf(&file).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

macro_rules! cached {
    ($name:ident, $path:expr) => {
        pub fn $name() -> &'static Tokenizer {
            static T: OnceLock<Tokenizer> = OnceLock::new();
            T.get_or_init(|| load(&$path))
        }
    };
}

cached!(mistral_v1, vocab_path("ggml-vocab-mistral-v1.gguf"));
cached!(mistral_v3, vocab_path("ggml-vocab-mistral-v3.gguf"));
cached!(llama_spm, vocab_path("ggml-vocab-llama-spm.gguf"));
cached!(smollm2, smollm2_path());

/// llama.cpp's test-tokenizer-0 format: inputs separated by
/// "\n__ggml_vocab_test__\n"; outputs one line of ids per input.
pub fn read_vectors(inp: &str, out: &str) -> Vec<(String, Vec<u32>)> {
    let raw = std::fs::read_to_string(vectors_path(inp)).unwrap();
    let sep = "\n__ggml_vocab_test__\n";
    let mut inputs = Vec::new();
    let mut pos = 0;
    while let Some(next) = raw[pos..].find(sep) {
        inputs.push(raw[pos..pos + next].to_string());
        pos += next + sep.len();
    }
    let outs: Vec<Vec<u32>> = std::fs::read_to_string(vectors_path(out))
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect();
    assert_eq!(
        inputs.len(),
        outs.len(),
        "{inp}: {} inputs, {} outputs",
        inputs.len(),
        outs.len()
    );
    inputs.into_iter().zip(outs).collect()
}
