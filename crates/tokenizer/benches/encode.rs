//! Encoding 1 MB of English text (the GPL v3, repeated) with the Mistral v1
//! tokenizer. Target: well under a second.
//!
//!     cargo bench -p mistral-tokenizer --bench encode

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mistral_gguf::GgufFile;
use mistral_tokenizer::Tokenizer;

const MB: usize = 1 << 20;

/// The GPL once (35 KB), and repeated to 1 MiB.
fn english() -> (String, String) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let gpl = std::fs::read_to_string(root.join("tests/data/text/gpl-3.txt")).expect("gpl-3.txt");
    let mut text = String::with_capacity(MB + gpl.len());
    while text.len() < MB {
        text.push_str(&gpl);
    }
    let mut end = MB;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    (gpl, text)
}

fn load(name: &str) -> Tokenizer {
    let path = mistral_test_support::vocab_path(name);
    let file = GgufFile::open(&path).expect("vocab file");
    Tokenizer::from_gguf(&file).expect("tokenizer")
}

fn encode(c: &mut Criterion) {
    let (gpl, text) = english();
    let tok = load("ggml-vocab-mistral-v1.gguf");
    let n = tok.encode(&text, true, false).expect("encode").len();
    eprintln!("1 MiB of English -> {n} tokens");
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.sample_size(10);
    g.bench_function("mistral_v1_1MiB_english", |b| {
        b.iter(|| tok.encode(&text, true, false).expect("encode"))
    });
    // One copy of the GPL (35 KB): fewer repeated words for the per-call word cache.
    g.throughput(Throughput::Bytes(gpl.len() as u64));
    g.bench_function("mistral_v1_one_gpl_copy", |b| {
        b.iter(|| tok.encode(&gpl, true, false).expect("encode"))
    });
    g.throughput(Throughput::Bytes(text.len() as u64));
    let ids = tok.encode(&text, true, false).expect("encode");
    g.bench_function("mistral_v1_decode_1MiB", |b| {
        b.iter(|| tok.decode(&ids).expect("decode"))
    });
    g.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
