//! `mistral-run bench` end to end on tiny synthetic models: the JSON report
//! parses and holds every field, with memory figures checked against values
//! computed independently from the file (tensor bytes, element counts) and the
//! model shape (KV-cache bytes); the Markdown table; per-model processes; clear
//! errors; and `bench-plot` writing a PNG of the report. Speed is not checked.

use mistral_test_support::{stderr, stdout};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mistral_gguf::GgufFile;
use mistral_transformer::synth::{
    default_vocab, write_synth, SynthArch, SynthPreset, SynthSpec, SynthType,
};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mistral-run");

fn mistral_run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("cannot start mistral-run")
}

/// A tiny random-weight model (2 layers, 256 wide, 512-token vocab).
fn tiny_model(dir: &Path, arch: SynthArch, ftype: SynthType, name: &str) -> PathBuf {
    let mut spec = SynthSpec::preset(arch, SynthPreset::Tiny);
    spec.ftype = ftype;
    spec.vocab_size = Some(512);
    let path = dir.join(name);
    let vocab = default_vocab().expect("generated vocab");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create model file"));
    write_synth(&spec, vocab.metadata(), &mut f, &|_| {}).expect("write synthetic model");
    drop(f);
    path
}

fn u64_field(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not an unsigned integer in {v}"))
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
}

/// Checks one model result against the file it was measured on.
fn check_result(
    r: &Value,
    path: &Path,
    kernels: &str,
    threads: u64,
    n_prompt: u64,
    n_gen: u64,
    reps: usize,
) {
    let file = GgufFile::open(path).expect("open model");
    let tensors = file.tensors();
    let size: u64 = tensors.iter().map(|t| t.n_bytes()).sum();
    let params: u64 = tensors.iter().map(|t| t.n_elements()).sum();
    let hp = mistral_gguf::LlamaHparams::from_metadata(file.metadata()).expect("hparams");

    assert_eq!(str_field(r, "path"), path.display().to_string());
    assert_eq!(
        str_field(r, "file_name"),
        path.file_name().unwrap().to_string_lossy()
    );
    assert_eq!(str_field(r, "arch"), "llama");
    assert!(str_field(r, "model").starts_with("llama "), "{r}");
    assert_eq!(str_field(r, "backend"), "CPU");
    assert_eq!(str_field(r, "device"), "cpu");
    assert_eq!(str_field(r, "kernels"), kernels);
    assert_eq!(u64_field(r, "threads"), threads);
    assert_eq!(u64_field(r, "size_bytes"), size);
    assert_eq!(u64_field(r, "params"), params);
    assert_eq!(u64_field(r, "n_layer"), hp.block_count);
    assert_eq!(u64_field(r, "n_embd"), hp.embedding_length);
    assert_eq!(u64_field(r, "n_expert"), hp.expert_count);
    assert_eq!(u64_field(r, "n_expert_used"), hp.expert_used_count);
    // Every tensor is loaded once.
    assert_eq!(u64_field(r, "weight_bytes"), size);
    // The default f16 K and V, per layer: n_head_kv * positions * head_dim
    // each (the context of these small tests is less than one 256-slot page).
    let positions = u64_field(r, "kv_positions");
    assert!(positions >= n_prompt.max(n_gen), "{r}");
    assert_eq!(str_field(r, "cache_type_k"), "f16");
    assert_eq!(str_field(r, "cache_type_v"), "f16");
    assert_eq!(
        u64_field(r, "kv_cache_bytes"),
        hp.block_count * 2 * hp.head_count_kv * positions * hp.head_dim * 2
    );
    let peak = u64_field(r, "peak_rss_bytes");
    let rss = u64_field(r, "rss_bytes");
    assert!(
        peak >= rss && rss >= size,
        "peak {peak}, rss {rss}, weights {size}"
    );
    assert!(r["peak_device_bytes"].is_null());
    assert!(r["load_seconds"].as_f64().is_some_and(|s| s > 0.0), "{r}");
    assert!(r["load_average_1m"].is_null() || r["load_average_1m"].as_f64().is_some());

    let tests = r["tests"].as_array().expect("tests array");
    let mut expect = Vec::new();
    if n_prompt > 0 {
        expect.push(("pp", n_prompt));
    }
    if n_gen > 0 {
        expect.push(("tg", n_gen));
    }
    assert_eq!(tests.len(), expect.len(), "{r}");
    for (t, (kind, n)) in tests.iter().zip(expect) {
        assert_eq!(str_field(t, "kind"), kind);
        assert_eq!(str_field(t, "name"), format!("{kind}{n}"));
        assert_eq!(u64_field(t, "n_tokens"), n);
        let samples: Vec<f64> = t["samples_seconds"]
            .as_array()
            .expect("samples")
            .iter()
            .map(|s| s.as_f64().expect("sample seconds"))
            .collect();
        assert_eq!(samples.len(), reps);
        assert!(samples.iter().all(|s| s.is_finite() && *s > 0.0));
        // mean/stdev are those of n / seconds (independent recomputation).
        let tps: Vec<f64> = samples.iter().map(|s| n as f64 / s).collect();
        let mean = tps.iter().sum::<f64>() / tps.len() as f64;
        // Sample standard deviation; 0 for a single repetition.
        let var = match tps.len() {
            0 | 1 => 0.0,
            k => tps.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (k as f64 - 1.0),
        };
        let got_mean = t["mean_tps"].as_f64().expect("mean_tps");
        let got_stdev = t["stdev_tps"].as_f64().expect("stdev_tps");
        assert!(
            (got_mean - mean).abs() <= 1e-9 * mean,
            "{got_mean} vs {mean}"
        );
        assert!(
            (got_stdev - var.sqrt()).abs() <= 1e-9 * mean,
            "{got_stdev} vs {}",
            var.sqrt()
        );
    }
}

#[test]
fn json_report_holds_every_field_for_each_model() {
    let dir = tempfile::tempdir().unwrap();
    let dense = tiny_model(
        dir.path(),
        SynthArch::Mistral,
        SynthType::Q4_K_M,
        "tiny-q4km.gguf",
    );
    let moe = tiny_model(
        dir.path(),
        SynthArch::Mixtral,
        SynthType::Q8_0,
        "tiny-moe-q8.gguf",
    );
    let models = format!("{},{}", dense.display(), moe.display());
    let saved_file = dir.path().join("saved.json");
    let o = mistral_run(&[
        "bench",
        "-m",
        &models,
        "-p",
        "8",
        "-n",
        "4",
        "-r",
        "2",
        "-t",
        "1",
        "--kernels",
        "candle",
        "--json",
        "--save-json",
        saved_file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let report: Value = serde_json::from_str(&stdout(&o)).expect("stdout is one JSON document");
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(&saved_file).unwrap()).unwrap();
    assert_eq!(report, saved, "--save-json writes the printed report");

    assert_eq!(u64_field(&report, "schema_version"), 1);
    assert!(str_field(&report, "tool").starts_with("mistral-run "));
    let date = str_field(&report, "date_utc");
    assert!(
        date.len() == 20 && date.ends_with('Z') && date.as_bytes()[10] == b'T',
        "{date}"
    );
    assert_eq!(u64_field(&report, "n_prompt"), 8);
    assert_eq!(u64_field(&report, "n_gen"), 4);
    assert_eq!(u64_field(&report, "repetitions"), 2);
    let m = &report["machine"];
    assert!(!str_field(m, "cpu").is_empty());
    assert!(u64_field(m, "logical_cores") >= 1);
    assert!(m["simd"].is_array());
    assert!(!str_field(m, "os").is_empty());
    assert!(m["memory_bytes"].is_null() || m["memory_bytes"].as_u64().is_some());
    assert!(m["bandwidth"].is_null());
    assert_eq!(report["errors"].as_array().map(Vec::len), Some(0));

    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    check_result(&results[0], &dense, "candle", 1, 8, 4, 2);
    check_result(&results[1], &moe, "candle", 1, 8, 4, 2);
    assert!(str_field(&results[1], "model").contains("MoE 4x top-2"));
    // Each model ran in its own process: the dense model's peak does not carry
    // over to the MoE run, whose weights are bigger.
    assert!(u64_field(&results[1], "weight_bytes") > u64_field(&results[0], "weight_bytes"));

    // The chart of that report.
    let png = dir.path().join("chart.png");
    let o = mistral_run(&[
        "bench-plot",
        saved_file.to_str().unwrap(),
        "-o",
        png.to_str().unwrap(),
        "--width",
        "900",
        "--height",
        "400",
    ]);
    if stderr(&o).contains("no font found") {
        eprintln!("skipping the chart check: this machine has no system font");
        return;
    }
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let bytes = std::fs::read(&png).expect("chart written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    // IHDR: width and height, big-endian, at bytes 16..24.
    assert_eq!(u32::from_be_bytes(bytes[16..20].try_into().unwrap()), 900);
    assert_eq!(u32::from_be_bytes(bytes[20..24].try_into().unwrap()), 400);
}

#[test]
fn markdown_table_has_llama_bench_columns_and_one_row_per_test() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(
        dir.path(),
        SynthArch::Mistral,
        SynthType::F16,
        "tiny-f16.gguf",
    );
    let o = mistral_run(&[
        "bench",
        "-m",
        model.to_str().unwrap(),
        "-p",
        "4",
        "-n",
        "2",
        "-r",
        "1",
        "-t",
        "1",
        "--kernels",
        "candle",
    ]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    let header: Vec<&str> = lines[0]
        .split('|')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        header,
        [
            "model", "size", "params", "backend", "kernels", "threads", "test", "t/s", "weights",
            "KV cache", "peak RSS"
        ]
    );
    assert!(lines[1].starts_with("| ---") && lines[1].contains("---: |"));
    for (line, test) in lines[2..].iter().zip(["pp4", "tg2"]) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(cells.len(), header.len() + 2, "{line}");
        assert!(
            cells[1].starts_with("llama ") && cells[1].ends_with(" F16"),
            "{line}"
        );
        assert_eq!(cells[4], "CPU");
        assert_eq!(cells[5], "candle");
        assert_eq!(cells[6], "1");
        assert_eq!(cells[7], test);
        assert!(cells[8].contains(" ± "), "{line}");
        assert!(cells[11].ends_with("iB"), "{line}");
    }
}

#[test]
fn failures_are_one_clear_line_and_a_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(
        dir.path(),
        SynthArch::Mistral,
        SynthType::Q8_0,
        "tiny-q8.gguf",
    );
    let missing = dir.path().join("missing.gguf");
    let garbage = dir.path().join("garbage.gguf");
    std::fs::write(&garbage, b"definitely not a GGUF file").unwrap();
    let models = format!(
        "{},{},{}",
        missing.display(),
        garbage.display(),
        model.display()
    );
    let o = mistral_run(&[
        "bench",
        "-m",
        &models,
        "-p",
        "4",
        "-n",
        "0",
        "-r",
        "1",
        "-t",
        "1",
        "--kernels",
        "candle",
        "--json",
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(lines[0].contains("missing.gguf"), "{err}");
    assert!(lines[1].contains("garbage.gguf"), "{err}");
    assert!(lines[2].contains("2 of 3 benchmark runs failed"), "{err}");
    // The run that worked is still reported, with the failures listed.
    let report: Value = serde_json::from_str(&stdout(&o)).expect("JSON report");
    assert_eq!(report["results"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        report["results"][0]["tests"].as_array().map(Vec::len),
        Some(1)
    );
    let errors = report["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 2);
    for e in errors {
        assert!(!str_field(e, "error").is_empty());
        assert_eq!(str_field(e, "kernels"), "candle");
    }

    // Bad flags are rejected before anything runs.
    for args in [
        &["bench", "-m", "x.gguf", "-r", "0"][..],
        &["bench", "-m", "x.gguf", "-p", "0", "-n", "0"],
        &["bench", "-m", "x.gguf", "--kernels", "fast"],
        &["bench"],
    ] {
        let o = mistral_run(args);
        assert!(!o.status.success(), "{args:?}");
        assert!(stderr(&o).contains("error"), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn native_kernels_either_run_or_say_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(
        dir.path(),
        SynthArch::Mistral,
        SynthType::Q4_K_M,
        "tiny-q4km.gguf",
    );
    let o = mistral_run(&[
        "bench",
        "-m",
        model.to_str().unwrap(),
        "-p",
        "4",
        "-n",
        "2",
        "-r",
        "1",
        "-t",
        "1",
        "--kernels",
        "native,candle",
        "--json",
    ]);
    let report: Value = serde_json::from_str(&stdout(&o)).expect("JSON report");
    let results = report["results"].as_array().expect("results");
    let errors = report["errors"].as_array().expect("errors");
    assert_eq!(results.len() + errors.len(), 2);
    // candle always works.
    assert!(results.iter().any(|r| r["kernels"] == "candle"));
    match results.iter().find(|r| r["kernels"] == "native") {
        Some(r) => {
            assert!(o.status.success(), "{}", stderr(&o));
            check_result(r, &model, "native", 1, 4, 2, 1);
        }
        None => {
            // Never silently measured with candle instead: an error naming native.
            assert!(!o.status.success());
            assert_eq!(errors.len(), 1);
            assert_eq!(str_field(&errors[0], "kernels"), "native");
            assert!(stderr(&o).contains("native"), "{}", stderr(&o));
        }
    }
}

#[test]
fn bandwidth_mode_reports_one_and_n_threads() {
    let o = mistral_run(&["bench", "--bandwidth", "-t", "2", "-r", "1", "--json"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let report: Value = serde_json::from_str(&stdout(&o)).expect("JSON report");
    let bw = &report["machine"]["bandwidth"];
    assert_eq!(u64_field(bw, "array_bytes"), 256 << 20);
    let runs = bw["runs"].as_array().expect("runs");
    let threads: Vec<u64> = runs.iter().map(|r| u64_field(r, "threads")).collect();
    assert_eq!(threads, [1, 2]);
    for r in runs {
        assert!(r["mean_gb_s"]
            .as_f64()
            .is_some_and(|g| g > 0.0 && g.is_finite()));
    }
    assert_eq!(report["results"].as_array().map(Vec::len), Some(0));
}
