//! `mistral-run run` end to end on SmolLM2-135M-Instruct (fetched by
//! models/fetch-smollm2.sh), and its error handling on bad input.

use mistral_test_support::smollm2_path as smollm2;
use mistral_test_support::{assert_one_line_error, stderr, stdout};
use std::process::{Command, Output};

/// SmolLM2's own default system prompt leaves the first answer token a near tie
/// between "The" and "L" (0.2 logits apart on this Q4_1 file); a plain one does not.
const SYSTEM: &str = "You are a helpful assistant.";
/// The question the tests ask (greedy SmolLM2 answers it with Paris, its
/// first token well ahead of the next: see `cli_chat.rs`).
const QUESTION: &str = "Name the capital city of France.";

fn mistral_run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mistral-run"))
        .args(args)
        .env_remove("MISTRAL_RUN_MODEL")
        .output()
        .expect("run mistral-run")
}

#[test]
fn greedy_chat_answer_is_deterministic_and_right() {
    let model = smollm2();
    let model = model.to_str().unwrap();
    let args = [
        "run",
        "-m",
        model,
        "--system",
        SYSTEM,
        "-p",
        QUESTION,
        "--temp",
        "0",
        "-n",
        "48",
        "--threads",
        "2",
    ];
    let a = mistral_run(&args);
    assert!(a.status.success(), "{}", stderr(&a));
    let b = mistral_run(&args);
    assert!(b.status.success(), "{}", stderr(&b));
    let answer = stdout(&a);
    println!("greedy answer: {answer}");
    assert_eq!(answer, stdout(&b), "greedy output differs between two runs");
    assert!(answer.contains("Paris"), "answer: {answer:?}");
    // candle's kernels (the comparison backend) answer too.
    let candle_run = mistral_run(&[&args[..], &["--kernels", "candle"]].concat());
    assert!(candle_run.status.success(), "{}", stderr(&candle_run));
    assert!(
        stdout(&candle_run).contains("Paris"),
        "candle kernels: {:?}",
        stdout(&candle_run)
    );
    // English words, not token soup: mostly ASCII letters and spaces.
    let letters = answer
        .chars()
        .filter(|c| c.is_ascii_alphabetic() || *c == ' ')
        .count();
    assert!(
        letters * 10 >= answer.chars().count() * 8,
        "answer: {answer:?}"
    );
    let err = stderr(&a);
    // The answer ended on the model's end-of-turn token, well before -n.
    let sampled: usize = err
        .split(" sampled)")
        .next()
        .and_then(|s| s.rsplit(", ").next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sampled count in: {err}"));
    assert!(sampled < 48, "no end of turn within 48 tokens: {err}");
    for needle in ["load time", "prompt", "tok/s", "kv cache", "peak memory"] {
        assert!(err.contains(needle), "stats lack {needle:?}: {err}");
    }
}

#[test]
fn seeded_sampling_reproduces() {
    let model = smollm2();
    let model = model.to_str().unwrap();
    let run = |seed: &str| {
        let o = mistral_run(&[
            "run",
            "-m",
            model,
            "-p",
            "Once upon a time",
            "--temp",
            "1.0",
            "--top-k",
            "0",
            "--top-p",
            "1",
            "--min-p",
            "0",
            "-n",
            "24",
            "--seed",
            seed,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    let first = run("1234");
    assert_eq!(first, run("1234"), "same seed, different text");
    assert_ne!(
        first,
        run("99"),
        "different seeds gave the same 24 sampled tokens"
    );
}

#[test]
fn stop_string_is_not_printed() {
    let model = smollm2();
    let model = model.to_str().unwrap();
    let full = mistral_run(&[
        "run", "-m", model, "--system", SYSTEM, "-p", QUESTION, "--temp", "0", "-n", "48",
    ]);
    assert!(full.status.success(), "{}", stderr(&full));
    let full = stdout(&full);
    let cut = full.find("Paris").expect("greedy answer names Paris");
    let stopped = mistral_run(&[
        "run", "-m", model, "--system", SYSTEM, "-p", QUESTION, "--temp", "0", "-n", "48",
        "--stop", "Paris",
    ]);
    assert!(stopped.status.success(), "{}", stderr(&stopped));
    assert_eq!(stdout(&stopped).trim_end(), full[..cut].trim_end());
}

#[test]
fn missing_file_is_one_line() {
    let o = mistral_run(&["run", "-m", "/nonexistent/model.gguf", "-p", "hi"]);
    assert_one_line_error(&o, &["/nonexistent/model.gguf"]);
}

#[test]
fn env_var_overrides_the_default_model() {
    let o = Command::new(env!("CARGO_BIN_EXE_mistral-run"))
        .args(["run", "-p", "hi"])
        .env("MISTRAL_RUN_MODEL", "/nonexistent/from-env.gguf")
        .output()
        .unwrap();
    assert_one_line_error(&o, &["/nonexistent/from-env.gguf"]);
}

#[test]
fn non_gguf_file_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.gguf");
    std::fs::write(&path, "this is a text file, not a model\n").unwrap();
    let o = mistral_run(&["run", "-m", path.to_str().unwrap(), "-p", "hi"]);
    assert_one_line_error(&o, &["notes.gguf"]);
}

#[test]
fn invalid_sampling_values_are_one_line() {
    let model = smollm2();
    let model = model.to_str().unwrap();
    let o = mistral_run(&["run", "-m", model, "-p", "hi", "--temp", "-1"]);
    assert_one_line_error(&o, &["temperature", "-1"]);
    let o = mistral_run(&["run", "-m", model, "-p", "hi", "--top-p", "2"]);
    assert_one_line_error(&o, &["top-p", "2"]);
    let o = mistral_run(&["run", "-m", model, "-p", "hi", "--min-p", "1.5"]);
    assert_one_line_error(&o, &["min-p"]);
    let o = mistral_run(&["run", "-m", model, "-p", "hi", "--repeat-penalty", "0"]);
    assert_one_line_error(&o, &["repeat-penalty"]);
}

#[test]
fn prompt_longer_than_the_context_is_one_line() {
    let model = smollm2();
    let prompt = "The quick brown fox jumps over the lazy dog. ".repeat(10);
    let o = mistral_run(&[
        "run",
        "-m",
        model.to_str().unwrap(),
        "-p",
        &prompt,
        "--ctx-size",
        "16",
    ]);
    assert_one_line_error(&o, &["16"]);
}

/// `--device` on every command that loads a model: a GPU this build was not
/// compiled for is one line naming the feature to rebuild with (the default
/// build has neither backend), a name that is no device is one line, and
/// `cpu` runs.
#[test]
fn devices_this_build_cannot_run_are_one_line() {
    let model = smollm2();
    let model = model.to_str().unwrap();
    let text = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/text/gpl-3.txt"
    );
    let commands: [&[&str]; 5] = [
        &["run", "-m", model, "-p", "hi", "-n", "1"],
        &["chat", "-m", model],
        &["perplexity", "-m", model, "-f", text],
        &["bench", "-m", model, "-p", "8", "-n", "8", "-r", "1"],
        &[
            "batched-bench",
            "-m",
            model,
            "-p",
            "8",
            "-n",
            "4",
            "--parallel",
            "1",
        ],
    ];
    for cmd in commands {
        let with = |device: &str| {
            let mut a = cmd.to_vec();
            a.extend(["--device", device]);
            mistral_run(&a)
        };
        let o = with("cuda");
        assert_one_line_error(&o, &["cuda:0", "no CUDA support", "--features cuda"]);
        let o = with("metal:1");
        assert_one_line_error(&o, &["metal:1", "no Metal support", "--features metal"]);
        let o = with("tpu");
        assert!(!o.status.success(), "{cmd:?} --device tpu");
        assert!(
            stderr(&o).contains("expected cpu, cuda, cuda:N, metal, metal:N or candle-cpu"),
            "{cmd:?}: {}",
            stderr(&o)
        );
    }
    let o = mistral_run(&["run", "-m", model, "-p", "hi", "-n", "1", "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The GPU code path on candle's CPU device: the same greedy answer.
    let answer = |device: &str| {
        let o = mistral_run(&[
            "run", "-m", model, "--system", SYSTEM, "-p", QUESTION, "--temp", "0", "-n", "8",
            "--device", device,
        ]);
        assert!(o.status.success(), "{device}: {}", stderr(&o));
        stdout(&o)
    };
    let (cpu, generic) = (answer("cpu"), answer("candle-cpu"));
    assert!(cpu.contains("Paris"), "{cpu}");
    assert_eq!(generic, cpu);
}
