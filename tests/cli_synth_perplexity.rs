//! End-to-end tests of `mistral-run synth` and `mistral-run perplexity` on tiny
//! synthetic models: the written file has Mistral's / Mixtral's tensor layout and
//! metadata, the perplexity command prints llama.cpp's running and final figures,
//! and bad input gives one error line and a non-zero exit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mistral-run"))
        .args(args)
        .output()
        .expect("run mistral-run")
}

fn synth(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let mut args = vec!["synth", "--preset", "tiny", "-o", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = cli(&args);
    assert!(
        o.status.success(),
        "synth failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn info_json(file: &Path) -> Value {
    let o = cli(&["info", "--json", "--tensors", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn synth_writes_mistral_and_mixtral_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let m = info_json(&synth(
        dir.path(),
        "m.gguf",
        &["--type", "q8_0", "--n-layer", "3"],
    ));
    assert_eq!(m["architecture"], "llama");
    assert_eq!(m["block_count"], 3);
    assert_eq!(m["vocab_size"], 32000);
    assert_eq!(m["file_type"], "Q8_0");
    // token_embd + 9 per layer + output_norm + output.
    assert_eq!(m["tensor_count"], 1 + 9 * 3 + 2);

    let x = info_json(&synth(
        dir.path(),
        "x.gguf",
        &["--arch", "mixtral", "--type", "q4_k_m", "--n-expert", "8"],
    ));
    assert_eq!(x["expert_count"], 8);
    assert_eq!(x["expert_used_count"], 2);
    let text = serde_json::to_string(&x).unwrap();
    assert!(
        text.contains("blk.1.ffn_down_exps.weight") && text.contains("blk.0.ffn_gate_inp.weight")
    );
    // 8 experts: attn_k / attn_v at Q8_0 like llama.cpp's Q4_K_M for Mixtral.
    assert!(text.contains("Q8_0") && text.contains("Q6_K") && text.contains("Q4_K"));
}

#[test]
fn perplexity_prints_running_and_final_figures() {
    let dir = tempfile::tempdir().unwrap();
    let model = synth(dir.path(), "m.gguf", &["--type", "f16"]);
    let text = root().join("tests/data/text/gpl-3.txt");
    let o = cli(&[
        "perplexity",
        "-m",
        model.to_str().unwrap(),
        "-f",
        text.to_str().unwrap(),
        "--ctx",
        "64",
        "--chunks",
        "3",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.starts_with("[1]") && out.contains(",[2]") && out.contains(",[3]"),
        "{out}"
    );
    let fin = out
        .lines()
        .find(|l| l.starts_with("Final estimate: PPL = "))
        .expect("final line");
    let ppl: f64 = fin["Final estimate: PPL = ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // Random weights: close to uniform over the 32000-token vocabulary, but finite.
    assert!(ppl.is_finite() && ppl > 1000.0 && ppl < 1e6, "{ppl}");
}

#[test]
fn bad_input_is_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = synth(dir.path(), "m.gguf", &["--type", "f32", "--n-layer", "1"]);
    let short = dir.path().join("short.txt");
    std::fs::write(&short, "too short").unwrap();
    for args in [
        vec![
            "perplexity",
            "-m",
            "/nonexistent.gguf",
            "-f",
            short.to_str().unwrap(),
        ],
        vec![
            "perplexity",
            "-m",
            model.to_str().unwrap(),
            "-f",
            short.to_str().unwrap(),
        ],
        vec![
            "perplexity",
            "-m",
            model.to_str().unwrap(),
            "-f",
            "/nonexistent.txt",
        ],
        vec![
            "synth",
            "--n-head",
            "7",
            "-o",
            dir.path().join("bad.gguf").to_str().unwrap(),
        ],
    ] {
        let o = cli(&args);
        assert!(!o.status.success(), "{args:?} succeeded");
        let err = String::from_utf8(o.stderr).unwrap();
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{err}");
    }
}
