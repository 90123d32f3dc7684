//! The reader allocates a bounded amount: never from an unchecked count, and in all at
//! most a small multiple of the file's size. Measured with an instrumented global
//! allocator (`stats_alloc`); the bound checked is the *total* of bytes requested
//! during a parse (every allocation plus every growth by reallocation), which is at
//! least the peak. One `#[test]` runs everything in turn, so no other test thread
//! allocates while a region is being measured.

use std::alloc::System;
use std::path::PathBuf;

use mistral_gguf::{Array, GgmlType, Gguf, GgufWriter, Metadata, TensorSpec, Value};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The bound the tests enforce: bytes requested while parsing a file of `len` bytes.
const FACTOR: usize = 16;
const SLACK: usize = 64 * 1024;

/// Parses `bytes` and returns the result's variant name ("Ok" when accepted) and the
/// bytes requested from the allocator while parsing.
fn measure(bytes: &[u8]) -> (String, usize) {
    let region = Region::new(GLOBAL);
    let result = Gguf::parse(bytes, "measured");
    let stats = region.change();
    let requested = stats.bytes_allocated + stats.bytes_reallocated.max(0) as usize;
    let name = match &result {
        Ok(_) => "Ok".to_string(),
        Err(e) => e.kind.name().to_string(),
    };
    drop(result);
    (name, requested)
}

fn assert_bounded(what: &str, bytes: &[u8]) -> (String, usize) {
    let (name, requested) = measure(bytes);
    let bound = FACTOR * bytes.len() + SLACK;
    assert!(
        requested <= bound,
        "{what}: {requested} bytes requested for a {}-byte file ({name}), bound {bound}",
        bytes.len()
    );
    (name, requested)
}

fn write(md: Metadata, tensors: &[(String, GgmlType, Vec<u64>)]) -> Vec<u8> {
    let mut w = GgufWriter::new(md);
    for (name, t, dims) in tensors {
        w.add_tensor(TensorSpec::new(name, *t, dims));
    }
    let mut out = Vec::new();
    w.write(&mut out, |_, spec, o| {
        o.write_all(&vec![0u8; spec.n_bytes().unwrap() as usize])
    })
    .unwrap();
    out
}

/// Overwrites the 8 bytes after the first occurrence of `pattern` with `value`.
fn patch_after(bytes: &mut [u8], pattern: &[u8], value: u64) {
    let at = bytes
        .windows(pattern.len())
        .position(|w| w == pattern)
        .expect("pattern in file")
        + pattern.len();
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

/// Files shaped to make the parser allocate as much per byte as it can: many tiny
/// key/values, many tiny tensors, arrays of empty arrays, arrays of empty strings.
fn dense_files() -> Vec<(&'static str, Vec<u8>)> {
    let mut kvs = Metadata::new();
    for i in 0..20_000u32 {
        kvs.set(format!("{i:x}"), Value::U8(0));
    }
    let tiny_tensors: Vec<_> = (0..5_000)
        .map(|i| (format!("{i:x}"), GgmlType::I8, vec![1]))
        .collect();
    let mut arrays = Metadata::new();
    arrays.set(
        "a",
        Value::Array(Array::Array(vec![Array::U8(vec![]); 20_000])),
    );
    let mut nested = Metadata::new();
    let mut a = Array::Array(vec![Array::Bool(vec![]); 2_000]);
    for _ in 0..2 {
        a = Array::Array(vec![a; 1]);
    }
    nested.set("n", Value::Array(a));
    let mut strings = Metadata::new();
    strings.set(
        "s",
        Value::Array(Array::String(vec![String::new(); 20_000])),
    );
    vec![
        ("20k one-byte key/values", write(kvs, &[])),
        ("5k one-byte tensors", write(Metadata::new(), &tiny_tensors)),
        ("array of 20k empty arrays", write(arrays, &[])),
        ("4-deep arrays of 2k empty arrays", write(nested, &[])),
        ("20k empty strings", write(strings, &[])),
    ]
}

/// Files whose header claims 2^60 items of each kind.
fn huge_claims() -> Vec<(&'static str, Vec<u8>)> {
    let mut md = Metadata::new();
    md.set("general.name", Value::String("huge".into()));
    md.set("u64s", Value::Array(Array::U64(vec![1, 2, 3])));
    md.set(
        "strs",
        Value::Array(Array::String(vec!["x".into(), "y".into()])),
    );
    md.set(
        "deep",
        Value::Array(Array::Array(vec![Array::U8(vec![9]); 2])),
    );
    let base = write(md, &[("t".into(), GgmlType::F32, vec![2])]);
    let n = 1u64 << 60;
    let mut out = Vec::new();
    let mut edit = |name, f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = base.clone();
        f(&mut b);
        out.push((name, b));
    };
    edit("2^60 tensors", &|b| {
        b[8..16].copy_from_slice(&n.to_le_bytes())
    });
    edit("2^60 key/values", &|b| {
        b[16..24].copy_from_slice(&n.to_le_bytes())
    });
    edit("2^60-byte string", &|b| {
        patch_after(b, b"general.name\x08\0\0\0", n)
    });
    edit("2^60 u64 items", &|b| {
        patch_after(b, b"u64s\x09\0\0\0\x0a\0\0\0", n)
    });
    edit("2^60 strings", &|b| {
        patch_after(b, b"strs\x09\0\0\0\x08\0\0\0", n)
    });
    edit("2^60 nested arrays", &|b| {
        patch_after(b, b"deep\x09\0\0\0\x09\0\0\0", n)
    });
    edit("2^60-byte tensor name", &|b| {
        let pat = [1, 0, 0, 0, 0, 0, 0, 0, b't'];
        let at = b.windows(pat.len()).position(|w| w == pat).unwrap();
        b[at..at + 8].copy_from_slice(&n.to_le_bytes());
    });
    out
}

fn corpus_files() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/gguf-corpus");
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "malformed"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn parsing_allocates_a_bounded_amount() {
    // Headers claiming 2^60 items fail at once, with next to no allocation.
    for (what, bytes) in huge_claims() {
        let (name, requested) = measure(&bytes);
        assert_eq!(name, "CountTooLarge", "{what}");
        assert!(requested < 4096, "{what}: {requested} bytes requested");
    }

    // Dense valid files: the worst ratio of allocation to file size.
    let mut worst = 0.0f64;
    for (what, bytes) in dense_files() {
        let (name, requested) = assert_bounded(what, &bytes);
        assert_eq!(name, "Ok", "{what}");
        worst = worst.max(requested as f64 / bytes.len() as f64);
        println!(
            "{what}: {} bytes, {requested} requested ({:.1}x)",
            bytes.len(),
            requested as f64 / bytes.len() as f64
        );
    }
    println!("worst ratio {worst:.1}x (bound {FACTOR}x + {SLACK})");

    // The malformed corpus, and a real tokenizer file.
    for (name, bytes) in corpus_files() {
        assert_bounded(&name, &bytes);
    }
    let vocab = mistral_test_support::vocab_path("ggml-vocab-mistral-v3.gguf");
    let bytes = std::fs::read(vocab).unwrap();
    let (name, requested) = assert_bounded("ggml-vocab-mistral-v3.gguf", &bytes);
    assert_eq!(name, "Ok");
    println!(
        "mistral v3 vocab: {} bytes, {requested} requested",
        bytes.len()
    );
}
