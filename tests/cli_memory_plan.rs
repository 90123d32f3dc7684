//! `mistral-run info --plan` prints the library's `MemoryPlan` (checked here
//! against `MemoryPlan::for_file` and against the KV-cache formula
//! n_layer · 2 · n_head_kv · positions · row bytes for each cache type), and
//! `run`, `chat` and `batched-bench` refuse before loading when the plan is
//! more than the memory available (faked with `$MISTRAL_RUN_MEM_AVAILABLE`).

use mistral_test_support::{assert_one_line_error, stderr, stdout};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use mistral_gguf::{GgufFile, LlamaHparams};
use mistral_transformer::synth::{
    default_vocab, write_synth, SynthArch, SynthPreset, SynthSpec, SynthType,
};
use mistral_transformer::{CacheType, LoadOptions, MemoryPlan};
use serde_json::Value;

const ENV: &str = "MISTRAL_RUN_MEM_AVAILABLE";

fn mistral_run(args: &[&str], available: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mistral-run"));
    c.args(args)
        .env("RUST_LOG", "off")
        .env_remove("MISTRAL_RUN_MODEL")
        .stdin(Stdio::null());
    match available {
        Some(v) => c.env(ENV, v),
        None => c.env_remove(ENV),
    };
    c.output().expect("cannot start mistral-run")
}

/// A tiny random-weight model (2 layers, 4 KV heads of 32, 512-token vocab).
fn tiny_model(dir: &Path) -> PathBuf {
    let mut spec = SynthSpec::preset(SynthArch::Mistral, SynthPreset::Tiny);
    spec.ftype = SynthType::Q4_K_M;
    spec.vocab_size = Some(512);
    let path = dir.join("tiny.gguf");
    let vocab = default_vocab().expect("generated vocab");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create model file"));
    write_synth(&spec, vocab.metadata(), &mut f, &|_| {}).expect("write synthetic model");
    drop(f);
    path
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not an unsigned integer in {v}"))
}

/// Bytes of one cached row of `head_dim` values.
fn row_bytes(t: CacheType, head_dim: u64) -> u64 {
    match t {
        CacheType::F32 => head_dim * 4,
        CacheType::F16 => head_dim * 2,
        // Blocks of 32 values: 32 int8 and an f16 scale.
        CacheType::Q8_0 => head_dim / 32 * 34,
    }
}

/// `info --plan --json` for one cache type, checked against the library.
fn plan_json(model: &Path, t: CacheType, ctx: usize, sessions: usize) -> Value {
    let o = mistral_run(
        &[
            "info",
            "--plan",
            "--json",
            model.to_str().unwrap(),
            "--ctx-size",
            &ctx.to_string(),
            "--cache-type-k",
            t.name(),
            "--cache-type-v",
            t.name(),
            "--parallel",
            &sessions.to_string(),
        ],
        Some("5G"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let j: Value = serde_json::from_str(&stdout(&o)).expect("one JSON document");

    let file = GgufFile::open(model).unwrap();
    let opts = LoadOptions {
        ctx_size: Some(ctx),
        cache_type_k: t,
        cache_type_v: t,
        ..LoadOptions::default()
    };
    let plan = MemoryPlan::for_file(&file, &opts, sessions).unwrap();
    assert_eq!(u(&j, "weights_bytes"), plan.weights, "{j}");
    assert_eq!(u(&j, "kv_per_session_bytes"), plan.kv_per_session, "{j}");
    assert_eq!(u(&j, "kv_cache_bytes"), plan.kv_cache, "{j}");
    assert_eq!(u(&j, "scratch_bytes"), plan.scratch, "{j}");
    assert_eq!(u(&j, "total_bytes"), plan.total(), "{j}");
    assert_eq!(u(&j, "sessions"), sessions as u64);
    assert_eq!(u(&j, "positions"), ctx as u64);
    assert_eq!(j["cache_type_k"], t.name());
    assert_eq!(j["cache_type_v"], t.name());
    assert_eq!(u(&j, "available_bytes"), 5 << 30);
    assert_eq!(j["available_source"], ENV);
    assert_eq!(j["fits"], true);

    // The KV cache from the shape alone.
    let hp = LlamaHparams::from_metadata(file.metadata()).unwrap();
    let per_session =
        hp.block_count * 2 * hp.head_count_kv * ctx as u64 * row_bytes(t, hp.head_dim);
    assert_eq!(u(&j, "kv_per_session_bytes"), per_session, "{j}");
    assert_eq!(u(&j, "kv_cache_bytes"), per_session * sessions as u64);
    assert_eq!(
        u(&j, "total_bytes"),
        u(&j, "weights_bytes") + u(&j, "kv_cache_bytes") + u(&j, "scratch_bytes")
    );
    j
}

#[test]
fn info_plan_prints_the_memory_plan_for_each_cache_type() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    // 300 positions: a whole page of 256 slots and a shorter one.
    let f32 = plan_json(&model, CacheType::F32, 300, 3);
    let f16 = plan_json(&model, CacheType::F16, 300, 3);
    let q8 = plan_json(&model, CacheType::Q8_0, 300, 3);
    let kv = |j: &Value| u(j, "kv_per_session_bytes");
    assert_eq!(kv(&f16) * 2, kv(&f32));
    assert_eq!(kv(&q8) * 64, kv(&f16) * 34);
    // The weights and scratch do not depend on the cache.
    assert_eq!(u(&f16, "weights_bytes"), u(&q8, "weights_bytes"));
    assert_eq!(u(&f16, "scratch_bytes"), u(&f32, "scratch_bytes"));

    // The text form shows the same figures, and what does not fit.
    let o = mistral_run(
        &[
            "info",
            "--plan",
            model.to_str().unwrap(),
            "--ctx-size",
            "300",
            "--parallel",
            "3",
        ],
        Some("1000"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let value = |label: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{label}:")))
            .unwrap_or_else(|| panic!("no {label} line in {text}"));
        line[label.len() + 1..]
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no byte count in {line:?}"))
    };
    assert_eq!(value("weights"), u(&f16, "weights_bytes"), "{text}");
    assert_eq!(value("kv cache / session"), kv(&f16), "{text}");
    assert_eq!(value("kv cache"), u(&f16, "kv_cache_bytes"), "{text}");
    assert_eq!(value("scratch"), u(&f16, "scratch_bytes"), "{text}");
    assert_eq!(value("total"), u(&f16, "total_bytes"), "{text}");
    assert_eq!(value("available"), 1000, "{text}");
    assert!(text.contains(&format!(" B, {ENV})")), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("fits:") && l.contains("no")),
        "{text}"
    );
    assert!(
        text.contains("3 sessions of 300 positions, K f16, V f16"),
        "{text}"
    );

    // Plan options without --plan are refused.
    let o = mistral_run(&["info", model.to_str().unwrap(), "--ctx-size", "8"], None);
    assert!(!o.status.success());
    // The real MemAvailable is read when the variable is unset.
    let o = mistral_run(&["info", "--plan", "--json", model.to_str().unwrap()], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(j["available_source"], "MemAvailable");
}

/// Bytes as the CLI prints them: `1.23 MiB`.
fn human(n: u64) -> String {
    let f = n as f64;
    if f >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", f / (1u64 << 30) as f64)
    } else if f >= (1u64 << 20) as f64 {
        format!("{:.2} MiB", f / (1u64 << 20) as f64)
    } else if f >= 1024.0 {
        format!("{:.2} KiB", f / 1024.0)
    } else {
        format!("{n} B")
    }
}

#[test]
fn run_chat_and_batched_bench_refuse_what_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let m = model.to_str().unwrap();
    let file = GgufFile::open(&model).unwrap();
    let plan = |ctx: Option<usize>, sessions: usize| {
        let opts = LoadOptions {
            ctx_size: ctx,
            ..LoadOptions::default()
        };
        MemoryPlan::for_file(&file, &opts, sessions).unwrap()
    };

    // One session of the default context.
    let p = plan(None, 1);
    let need = [
        "not enough memory for",
        "tiny.gguf",
        &format!("needs {} =", human(p.total())),
        &format!("weights {}", human(p.weights)),
        &format!(
            "KV cache {} (1 session × {} positions)",
            human(p.kv_cache),
            p.positions
        ),
        &format!("scratch {}", human(p.scratch)),
        "1000 B is available (MISTRAL_RUN_MEM_AVAILABLE)",
    ];
    let o = mistral_run(&["run", "-m", m, "-p", "hi", "-n", "1"], Some("1000"));
    assert_one_line_error(&o, &need);
    let o = mistral_run(&["chat", "-m", m, "-n", "1"], Some("1000"));
    assert_one_line_error(&o, &need);

    // Exactly the total fits; a byte less does not.
    let total = p.total().to_string();
    let o = mistral_run(
        &["run", "-m", m, "-p", "hi", "-n", "2", "-t", "1"],
        Some(&total),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let less = (p.total() - 1).to_string();
    let o = mistral_run(&["run", "-m", m, "-p", "hi", "-n", "2"], Some(&less));
    assert_one_line_error(&o, &["not enough memory"]);

    // batched-bench plans its largest row: 4 sessions of PP + TG positions.
    let p4 = plan(Some(6), 4);
    let o = mistral_run(
        &[
            "batched-bench",
            "-m",
            m,
            "-p",
            "4",
            "-n",
            "2",
            "--parallel",
            "1,4",
        ],
        Some(&(p4.total() - 1).to_string()),
    );
    assert_one_line_error(
        &o,
        &[
            &format!("needs {}", human(p4.total())),
            "(4 sessions × 6 positions)",
        ],
    );

    // A bad override is named.
    let o = mistral_run(&["run", "-m", m, "-p", "hi"], Some("lots"));
    assert_one_line_error(&o, &["MISTRAL_RUN_MEM_AVAILABLE", "lots"]);
}

/// With a GPU device (`candle-cpu` stands in: the same device path), the
/// plan puts the first `--gpu-layers` layers' weights (the file's bytes of
/// their `blk.N.` tensors) and their f16 cache there, and the rest on the
/// host; given the GPU's free memory, it names the most layers that fit, and
/// `run` refuses a model whose share does not fit in one line naming it.
#[test]
fn the_device_share_is_the_offloaded_layers_and_their_f16_cache() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let m = model.to_str().unwrap();
    let info = mistral_run(&["info", "--json", "--tensors", m], None);
    let info: Value = serde_json::from_str(&stdout(&info)).unwrap();
    let layer_bytes = |l: u64| -> u64 {
        info["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| {
                t["name"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("blk.{l}."))
            })
            .map(|t| u(t, "bytes"))
            .sum()
    };
    let (n_layer, kv, hd) = (
        u(&info, "block_count"),
        u(&info, "head_count_kv"),
        u(&info, "head_dim"),
    );
    let ctx = 64u64;
    let kv_layer = ctx * kv * hd * 2 * 2; // K and V, f16
    let plan = |n: u64, gpu_mem: Option<&str>| -> Value {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mistral-run"));
        c.args(["info", "--plan", "--json", m, "-c", &ctx.to_string()])
            .args(["--device", "candle-cpu", "--gpu-layers", &n.to_string()])
            .env_remove(ENV);
        match gpu_mem {
            Some(v) => c.env("MISTRAL_RUN_GPU_MEM_AVAILABLE", v),
            None => c.env_remove("MISTRAL_RUN_GPU_MEM_AVAILABLE"),
        };
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_str(&stdout(&o)).unwrap()
    };
    for n in 1..n_layer {
        let p = plan(n, None);
        let d = &p["device"];
        let want: u64 = (0..n).map(layer_bytes).sum();
        assert_eq!(u(d, "weights_bytes"), want, "{n} layers");
        assert_eq!(u(d, "kv_cache_bytes"), n * kv_layer, "{n} layers");
        assert!(d["available_bytes"].is_null());
    }
    // Free memory for exactly one layer and its cache: one layer fits.
    let one = (layer_bytes(0) + kv_layer).to_string();
    let p = plan(n_layer, Some(&one));
    assert_eq!(u(&p["device"], "max_gpu_layers"), 1, "{p}");
    assert_eq!(p["device"]["fits"], Value::Bool(false));
    let mut c = Command::new(env!("CARGO_BIN_EXE_mistral-run"));
    let o = c
        .args([
            "run",
            "-m",
            m,
            "-p",
            "hi",
            "-n",
            "1",
            "-c",
            &ctx.to_string(),
            "--device",
            "candle-cpu",
        ])
        .env("MISTRAL_RUN_GPU_MEM_AVAILABLE", &one)
        .env_remove(ENV)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("not enough memory on candle-cpu") && err.contains("--gpu-layers 1 fits"),
        "{err}"
    );
}
