//! Helpers shared by the workspace's tests: the repository root, the real
//! test model and the tokenizer test vocabularies, fetched once per test
//! process by `models/fetch-smollm2.sh` / `models/fetch-vocab.sh`, and the
//! error measure the logits comparisons use.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The repository root (where `Cargo.toml`, `models/` and `tests/` are).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs a fetch script of `models/` and returns the path it prints. Panics
/// (failing the test) with the script's stderr if it fails.
fn fetch(script: &str) -> PathBuf {
    let out = Command::new("bash")
        .arg(root().join("models").join(script))
        .output()
        .unwrap_or_else(|e| panic!("run models/{script}: {e}"));
    assert!(
        out.status.success(),
        "models/{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Path of SmolLM2-135M-Instruct Q4_1, fetched into the cache on first use.
pub fn smollm2_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| fetch("fetch-smollm2.sh")).clone()
}

/// Path of a tokenizer test vocabulary (`ggml-vocab-mistral-v1.gguf`,
/// `ggml-vocab-mistral-v3.gguf`, `ggml-vocab-llama-spm.gguf`), fetched or
/// rebuilt into the cache on first use. Their test vectors (`NAME.inp`,
/// `NAME.out`) stay in `tests/data/vocab/`.
pub fn vocab_path(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| fetch("fetch-vocab.sh")).join(name)
}

/// Largest |a - b| over a row, relative to the row's largest |b|.
pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, &x| m.max(x.abs())).max(1e-6);
    a.iter()
        .zip(b)
        .fold(0f32, |m, (&x, &y)| m.max((x - y).abs()))
        / scale
}

/// A finished command's standard output, as text.
pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A finished command's standard error, as text.
pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The command failed with exactly one non-empty stderr line, starting with
/// `error:` and containing every `needle`, and did not panic.
pub fn assert_one_line_error(o: &std::process::Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure; stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(lines[0].starts_with("error:"), "{err}");
    for n in needles {
        assert!(lines[0].contains(n), "error line lacks {n:?}: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}
