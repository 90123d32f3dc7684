//! The reference vectors in tests/data/vocab: Mistral v1/v3 produced by
//! SentencePiece from mistral-common's tokenizer files, llama-spm and smollm2
//! by llama.cpp. Every case must encode exactly, and decode back to its input.

mod common;

use common::*;
use mistral_tokenizer::Tokenizer;

/// Runs one vector set; returns (passed, total) after asserting all passed.
fn check(tok: &Tokenizer, inp: &str, out: &str) -> (usize, usize) {
    let cases = read_vectors(inp, out);
    let mut failures = Vec::new();
    for (text, expected) in &cases {
        let got = tok.encode(text, false, false).unwrap();
        if &got != expected {
            failures.push(format!(
                "encode {text:?}\n  expected {expected:?}\n  got      {got:?}"
            ));
            continue;
        }
        // Every tokenizer here is lossless on these inputs (SentencePiece's
        // added leading space is dropped again by decode).
        let back = tok.decode(expected).unwrap();
        if &back != text {
            failures.push(format!(
                "decode {expected:?}\n  expected {text:?}\n  got      {back:?}"
            ));
        }
    }
    let passed = cases.len() - failures.len();
    eprintln!("{inp}: {passed}/{} cases pass", cases.len());
    assert!(
        failures.is_empty(),
        "{inp}: {} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    (passed, cases.len())
}

#[test]
fn mistral_v1_vectors() {
    let (p, n) = check(
        mistral_v1(),
        "ggml-vocab-mistral-v1.gguf.inp",
        "ggml-vocab-mistral-v1.gguf.out",
    );
    assert_eq!((p, n), (n, 47));
}

#[test]
fn mistral_v3_vectors() {
    let (p, n) = check(
        mistral_v3(),
        "ggml-vocab-mistral-v3.gguf.inp",
        "ggml-vocab-mistral-v3.gguf.out",
    );
    assert_eq!((p, n), (n, 47));
}

#[test]
fn llama_spm_vectors() {
    let (p, n) = check(
        llama_spm(),
        "ggml-vocab-llama-spm.gguf.inp",
        "ggml-vocab-llama-spm.gguf.out",
    );
    assert_eq!((p, n), (n, 46));
}

#[test]
fn smollm2_vectors() {
    let (p, n) = check(smollm2(), "smollm2.inp", "smollm2.out");
    assert_eq!((p, n), (n, 47));
}
