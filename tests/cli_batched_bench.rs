//! `mistral-run batched-bench` end to end on a tiny synthetic model: the JSON
//! document and the table hold one row per session count whose figures agree
//! with each other (N_KV = B·(PP+TG), S = tokens / T, T = T_PP + T_TG) and
//! whose KV-cache bytes equal the cache formula computed here from the file's
//! shape; bad input is one error line. Speed is not checked.

use mistral_test_support::{assert_one_line_error, stderr, stdout};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mistral_gguf::{GgufFile, LlamaHparams};
use mistral_transformer::synth::{
    default_vocab, write_synth, SynthArch, SynthPreset, SynthSpec, SynthType,
};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mistral-run");

fn mistral_run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "off")
        .env_remove("MISTRAL_RUN_MEM_AVAILABLE")
        .output()
        .expect("cannot start mistral-run")
}

/// A tiny random-weight model (2 layers, 256 wide, head dim 32, 512-token vocab).
fn tiny_model(dir: &Path) -> PathBuf {
    let mut spec = SynthSpec::preset(SynthArch::Mistral, SynthPreset::Tiny);
    spec.ftype = SynthType::Q8_0;
    spec.vocab_size = Some(512);
    let path = dir.join("tiny.gguf");
    let vocab = default_vocab().expect("generated vocab");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create model file"));
    write_synth(&spec, vocab.metadata(), &mut f, &|_| {}).expect("write synthetic model");
    drop(f);
    path
}

fn hparams(path: &Path) -> LlamaHparams {
    let file = GgufFile::open(path).expect("open model");
    LlamaHparams::from_metadata(file.metadata()).expect("hparams")
}

/// KV-cache bytes of `sessions` sessions holding `positions` positions each,
/// for caches of fewer than 256 positions (one page, sized to the context):
/// per layer, keys and values of every KV head, `row` bytes per head.
fn kv_bytes(hp: &LlamaHparams, sessions: u64, positions: u64, k_row: u64, v_row: u64) -> u64 {
    sessions * hp.block_count * hp.head_count_kv * positions * (k_row + v_row)
}

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not an unsigned integer in {v}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
}

#[test]
fn json_rows_are_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let hp = hparams(&model);
    let (pp, tg) = (6u64, 3u64);
    let o = mistral_run(&[
        "batched-bench",
        "-m",
        model.to_str().unwrap(),
        "-p",
        "6",
        "-n",
        "3",
        "--parallel",
        "1,2",
        "-t",
        "1",
        "--batch-size",
        "8",
        "--cache-type-k",
        "q8_0",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: Value = serde_json::from_str(&stdout(&o)).expect("one JSON document");
    assert_eq!(u(&report, "schema_version"), 1);
    assert!(report["machine"]["logical_cores"].as_u64().is_some());
    let m = &report["model"];
    assert_eq!(u(m, "n_layer"), hp.block_count);
    assert_eq!(u(m, "n_head_kv"), hp.head_count_kv);
    assert_eq!(u(m, "head_dim"), hp.head_dim);
    let s = &report["settings"];
    assert_eq!(u(s, "threads"), 1);
    assert_eq!(u(s, "batch_size"), 8);
    // The default context is PP + TG per session.
    assert_eq!(u(s, "ctx_size"), pp + tg);
    assert_eq!(s["cache_type_k"], "q8_0");
    assert_eq!(s["cache_type_v"], "f16");
    assert_eq!(s["parallel"], serde_json::json!([1, 2]));

    let rows = report["results"].as_array().expect("results");
    assert_eq!(rows.len(), 2);
    let d = hp.head_dim;
    // q8_0 keys: 34 bytes per 32 values; f16 values: 2 bytes each.
    let (k_row, v_row) = (d / 32 * 34, d * 2);
    for (r, b) in rows.iter().zip([1u64, 2]) {
        assert_eq!(u(r, "pp"), pp);
        assert_eq!(u(r, "tg"), tg);
        assert_eq!(u(r, "pl"), b);
        assert_eq!(u(r, "n_kv"), b * (pp + tg));
        let (t_pp, t_tg, t) = (f(r, "t_pp"), f(r, "t_tg"), f(r, "t"));
        assert!(t_pp > 0.0 && t_tg > 0.0, "{r}");
        assert!(close(t, t_pp + t_tg), "{r}");
        assert!(close(f(r, "speed_pp"), (b * pp) as f64 / t_pp), "{r}");
        assert!(close(f(r, "speed_tg"), (b * tg) as f64 / t_tg), "{r}");
        assert!(close(f(r, "speed"), (b * (pp + tg)) as f64 / t), "{r}");
        // B prompts of 6 tokens in steps of at most 8 tokens; one decode step per token.
        assert_eq!(u(r, "pp_steps"), (b * pp).div_ceil(8));
        assert_eq!(u(r, "tg_steps"), tg);
        assert_eq!(
            u(r, "kv_cache_bytes"),
            kv_bytes(&hp, b, pp + tg, k_row, v_row)
        );
        let weights = u(m, "weight_bytes");
        assert!(u(r, "peak_rss_bytes") >= weights, "{r}");
    }
}

/// The cells of the table's data rows.
fn table_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| l.starts_with('|') && !l.contains("---") && !l.contains("N_KV"))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

#[test]
fn table_has_llama_batched_bench_columns_and_consistent_rows() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let hp = hparams(&model);
    let o = mistral_run(&[
        "batched-bench",
        "-m",
        model.to_str().unwrap(),
        "-p",
        "5",
        "-n",
        "2,4",
        "--parallel",
        "2,1",
        "-t",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let header = text
        .lines()
        .find(|l| l.contains("N_KV"))
        .expect("table header");
    let names: Vec<&str> = header.trim_matches('|').split('|').map(str::trim).collect();
    assert_eq!(
        &names[..10],
        ["PP", "TG", "B", "N_KV", "T_PP s", "S_PP t/s", "T_TG s", "S_TG t/s", "T s", "S t/s"],
        "{header}"
    );
    assert!(text.contains("ctx_size = 9 per session"), "{text}");
    let rows = table_rows(&text);
    // PP × TG × B in that order.
    let expect = [(5, 2, 2), (5, 2, 1), (5, 4, 2), (5, 4, 1)];
    assert_eq!(rows.len(), expect.len(), "{text}");
    for (cells, (pp, tg, b)) in rows.iter().zip(expect) {
        let num = |i: usize| -> f64 {
            cells[i]
                .parse()
                .unwrap_or_else(|_| panic!("cell {i} of {cells:?}"))
        };
        assert_eq!((num(0), num(1), num(2)), (pp as f64, tg as f64, b as f64));
        assert_eq!(num(3), (b * (pp + tg)) as f64);
        // Times have 3 decimals, speeds 2: S·T equals the tokens up to that rounding.
        let (t_pp, s_pp, t_tg, s_tg, t, s) = (num(4), num(5), num(6), num(7), num(8), num(9));
        assert!((t - (t_pp + t_tg)).abs() <= 0.0016, "{cells:?}");
        for (tokens, time, speed) in [
            (b * pp, t_pp, s_pp),
            (b * tg, t_tg, s_tg),
            (b * (pp + tg), t, s),
        ] {
            let slack = speed * 0.0005 + time * 0.005 + 1e-9;
            assert!(
                (speed * time - tokens as f64).abs() <= slack,
                "{tokens} tokens, {time} s, {speed} t/s: {cells:?}"
            );
        }
        // The KV cache of the B sessions: the context is 9 positions (the
        // largest PP + TG), one page of 9 slots each, f16 keys and values.
        let kv = kv_bytes(&hp, b, 9, hp.head_dim * 2, hp.head_dim * 2);
        assert_eq!(
            cells[10],
            format!("{:.2} KiB", kv as f64 / 1024.0),
            "{cells:?}"
        );
        assert!(cells[11].ends_with("MiB"), "{cells:?}");
    }
}

#[test]
fn bad_input_is_one_line_and_a_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let m = model.to_str().unwrap();
    let base = ["batched-bench", "-m", m, "-p", "4", "-n", "2", "-t", "1"];
    let with = |extra: &[&str]| mistral_run(&[&base[..], extra].concat());

    assert_one_line_error(&with(&["--parallel", "1,0"]), &["--parallel 0"]);
    assert_one_line_error(&with(&["--parallel", "100000"]), &["--parallel 100000"]);
    assert_one_line_error(&with(&["--batch-size", "0"]), &["--batch-size 0"]);
    let o = mistral_run(&["batched-bench", "-m", m, "-p", "4", "-n", "2", "-t", "0"]);
    assert_one_line_error(&o, &["--threads 0"]);
    assert_one_line_error(&with(&["--ctx-size", "0"]), &["--ctx-size 0"]);
    let huge = "100000000000000000";
    assert_one_line_error(
        &with(&["--ctx-size", huge]),
        &["--ctx-size 100000000000000000"],
    );
    assert_one_line_error(
        &with(&["--ctx-size", "5"]),
        &["6 positions", "--ctx-size 5"],
    );
    let o = mistral_run(&["batched-bench", "-m", m, "-p", "0", "--parallel", "1"]);
    assert_one_line_error(&o, &["-p/--n-prompt 0"]);

    let missing = dir.path().join("missing.gguf");
    let o = mistral_run(&["batched-bench", "-m", missing.to_str().unwrap()]);
    assert_one_line_error(&o, &["missing.gguf"]);
    let garbage = dir.path().join("garbage.gguf");
    std::fs::write(&garbage, b"definitely not a GGUF file").unwrap();
    let o = mistral_run(&["batched-bench", "-m", garbage.to_str().unwrap()]);
    assert_one_line_error(&o, &["garbage.gguf"]);
}
