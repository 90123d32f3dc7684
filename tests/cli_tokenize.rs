//! `mistral-run tokenize` end to end: the binary against the reference
//! vectors in tests/data/vocab (ids produced by SentencePiece / llama.cpp), on
//! vocab-only files and on the SmolLM2 model file, and its error messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mistral_gguf::{keys, Array, GgufWriter, Metadata, Value};
use mistral_test_support::{root, smollm2_path};

/// A vocab GGUF (fetched by models/fetch-vocab.sh) or its test vectors (in the repo).
fn vocab(name: &str) -> PathBuf {
    if name.ends_with(".gguf") {
        mistral_test_support::vocab_path(name)
    } else {
        root().join("tests/data/vocab").join(name)
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mistral-run"))
        .arg("tokenize")
        .args(args)
        .output()
        .expect("run mistral-run")
}

fn ok_stdout(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn err_line(args: &[&str]) -> String {
    let out = run(args);
    assert!(!out.status.success(), "{args:?} should fail");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "one error line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

/// "[1, 2, 3]" -> ids.
fn parse_ids(s: &str) -> Vec<u32> {
    let inner = s
        .trim()
        .strip_prefix('[')
        .unwrap()
        .strip_suffix(']')
        .unwrap();
    inner
        .split(", ")
        .filter(|t| !t.is_empty())
        .map(|t| t.parse().unwrap())
        .collect()
}

/// llama.cpp's test-tokenizer-0 files: inputs split by "\n__ggml_vocab_test__\n",
/// expected ids (no BOS) one line each.
fn vectors(inp: &Path, out: &Path) -> Vec<(String, Vec<u32>)> {
    let raw = std::fs::read_to_string(inp).unwrap();
    let sep = "\n__ggml_vocab_test__\n";
    let mut inputs = Vec::new();
    let mut pos = 0;
    while let Some(next) = raw[pos..].find(sep) {
        inputs.push(raw[pos..pos + next].to_string());
        pos += next + sep.len();
    }
    let outs = std::fs::read_to_string(out).unwrap();
    let outs: Vec<Vec<u32>> = outs
        .lines()
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect();
    assert_eq!(inputs.len(), outs.len());
    inputs.into_iter().zip(outs).collect()
}

/// Every Mistral v1 vector through `--file` (exact bytes: newlines, tabs,
/// leading spaces, no trailing newline) matches the reference ids.
#[test]
fn file_input_matches_reference_vectors() {
    let model = vocab("ggml-vocab-mistral-v1.gguf");
    let dir = tempfile::tempdir().unwrap();
    let cases = vectors(
        &vocab("ggml-vocab-mistral-v1.gguf.inp"),
        &vocab("ggml-vocab-mistral-v1.gguf.out"),
    );
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("case{i}.txt"));
        std::fs::write(&path, text).unwrap();
        let out = ok_stdout(&[
            "-m",
            model.to_str().unwrap(),
            "--ids",
            "--no-bos",
            "--file",
            path.to_str().unwrap(),
        ]);
        assert_eq!(&parse_ids(&out), expected, "case {i}: {text:?}");
    }
}

#[test]
fn text_argument_bos_and_pieces() {
    let model = vocab("ggml-vocab-mistral-v1.gguf");
    let m = model.to_str().unwrap();
    let cases = vectors(
        &vocab("ggml-vocab-mistral-v1.gguf.inp"),
        &vocab("ggml-vocab-mistral-v1.gguf.out"),
    );
    let (text, expected) = cases.iter().find(|(t, _)| t == "Hello world").unwrap();
    assert_eq!(
        &parse_ids(&ok_stdout(&["-m", m, "--ids", "--no-bos", text])),
        expected
    );
    let with_bos = parse_ids(&ok_stdout(&["-m", m, "--ids", text]));
    assert_eq!(with_bos[0], 1);
    assert_eq!(&with_bos[1..], &expected[..]);
    // Default output: one "id -> 'piece'" line per token.
    let listing = ok_stdout(&["-m", m, text]);
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), with_bos.len());
    assert_eq!(lines[0].trim(), "1 -> '<s>'");
    assert!(
        lines[1]
            .trim()
            .starts_with(&format!("{} -> ' Hello'", expected[0])),
        "{listing}"
    );
    // A text starting with a dash is text, the same as from a file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dash.txt");
    std::fs::write(&path, "-x --y").unwrap();
    assert_eq!(
        ok_stdout(&["-m", m, "--ids", "-x --y"]),
        ok_stdout(&["-m", m, "--ids", "--file", path.to_str().unwrap()])
    );
}

#[test]
fn parse_special_only_on_request() {
    let model = vocab("ggml-vocab-mistral-v3.gguf");
    let m = model.to_str().unwrap();
    let plain = parse_ids(&ok_stdout(&[
        "-m",
        m,
        "--ids",
        "--no-bos",
        "[INST] Hi[/INST]",
    ]));
    assert!(!plain.contains(&3) && !plain.contains(&4), "{plain:?}");
    let special = parse_ids(&ok_stdout(&[
        "-m",
        m,
        "--ids",
        "--no-bos",
        "--parse-special",
        "[INST] Hi[/INST]",
    ]));
    assert_eq!(special.first(), Some(&3));
    assert_eq!(special.last(), Some(&4));
    assert!(special.len() < plain.len());
}

#[test]
fn works_on_the_smollm2_model_file() {
    let model = smollm2_path().display().to_string();
    let cases = vectors(&vocab("smollm2.inp"), &vocab("smollm2.out"));
    for (text, expected) in cases
        .iter()
        .filter(|(t, _)| t == " Hello, world!" || t == "w048 7tuijk dsdfhu")
    {
        assert_eq!(
            &parse_ids(&ok_stdout(&["-m", &model, "--ids", "--no-bos", text])),
            expected,
            "{text:?}"
        );
    }
}

#[test]
fn errors_are_one_clear_line() {
    let model = vocab("ggml-vocab-mistral-v1.gguf");
    let m = model.to_str().unwrap();
    let err = err_line(&["-m", "/no/such/model.gguf", "x"]);
    assert!(err.contains("/no/such/model.gguf"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("latin1.txt");
    std::fs::write(&bad, b"caf\xe9").unwrap();
    let err = err_line(&["-m", m, "--file", bad.to_str().unwrap()]);
    assert!(
        err.contains("not UTF-8") && err.contains("offset 3"),
        "{err}"
    );
    let err = err_line(&[
        "-m",
        m,
        "--file",
        dir.path().join("missing.txt").to_str().unwrap(),
    ]);
    assert!(err.contains("missing.txt"), "{err}");
    // A byte-level vocabulary with a pre-tokenizer we do not know.
    let mut md = Metadata::new();
    md.insert(keys::GENERAL_ARCHITECTURE, Value::String("llama".into()))
        .unwrap();
    md.insert(keys::TOKENIZER_MODEL, Value::String("gpt2".into()))
        .unwrap();
    md.insert(keys::TOKENIZER_PRE, Value::String("qwen9".into()))
        .unwrap();
    md.insert(
        keys::TOKENIZER_TOKENS,
        Value::Array(Array::String(vec!["a".into(), "b".into(), "ab".into()])),
    )
    .unwrap();
    md.insert(
        keys::TOKENIZER_MERGES,
        Value::Array(Array::String(vec!["a b".into()])),
    )
    .unwrap();
    let bytes = GgufWriter::new(md).to_bytes(&[]).unwrap();
    let path = dir.path().join("qwen9.gguf");
    std::fs::write(&path, bytes).unwrap();
    let err = err_line(&["-m", path.to_str().unwrap(), "ab"]);
    assert!(
        err.contains("qwen9") && err.contains("tokenizer.ggml.pre"),
        "{err}"
    );
    // Neither TEXT nor --file.
    let out = run(&["-m", m]);
    assert!(!out.status.success());
}
