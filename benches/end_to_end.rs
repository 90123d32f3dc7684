//! End-to-end speed of the whole model: prefill (one 64-token batch from an
//! empty KV cache) and decode (32 single-token greedy steps from an empty
//! cache), reported by criterion as elements/s = tokens/s, for
//! - a 1B-shaped synthetic Mistral (2048 / 5632, 16 layers, 16 heads, 4 KV
//!   heads, a generated 32000-token vocabulary) in F16, Q8_0, Q4_K_M and Q2_K,
//! - a Mixtral-shaped model (8 experts, top-2, 1024 / 3584, 8 layers) in Q4_K_M,
//!
//! each with the `native` and `candle` kernels (a kernel choice the transformer
//! does not support yet is reported and skipped). These are the shapes of
//! tests/data/REFERENCE.md's `synth-1b-*` and `synth-moe-Q4_K_M` rows.
//!
//! The models are written by the project's synth code on first use into
//! `target/bench-models/` (or `$MISTRAL_RUN_BENCH_MODELS`) and reused after.
//!
//! Memory: after the timings, the same run starts `mistral-run bench` on the
//! models it measured (one fresh process per model and kernel choice, since
//! peak RSS is per process) and writes weight, KV-cache and peak-RSS bytes to
//! `target/criterion/end_to_end_memory.json`, printing the table.
//!
//! Threads: candle and rayon use every core unless `RAYON_NUM_THREADS` says
//! otherwise. Under `cargo test --benches` (criterion's test mode) the same code
//! runs once on tiny models instead, as a smoke test.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use mistral_gguf::GgufFile;
use mistral_transformer::synth::{
    default_vocab, synth_size, write_synth, SynthArch, SynthPreset, SynthSpec, SynthType,
};
use mistral_transformer::{KernelChoice, LoadOptions, Model, ModelConfig, Session};

/// Prompt tokens of the prefill benchmark.
const PP: usize = 64;
/// Steps of the decode benchmark.
const TG: usize = 32;

struct Case {
    name: &'static str,
    arch: SynthArch,
    ftype: SynthType,
}

const CASES: &[Case] = &[
    Case {
        name: "synth-1b-F16",
        arch: SynthArch::Mistral,
        ftype: SynthType::F16,
    },
    Case {
        name: "synth-1b-Q8_0",
        arch: SynthArch::Mistral,
        ftype: SynthType::Q8_0,
    },
    Case {
        name: "synth-1b-Q4_K_M",
        arch: SynthArch::Mistral,
        ftype: SynthType::Q4_K_M,
    },
    Case {
        name: "synth-1b-Q2_K",
        arch: SynthArch::Mistral,
        ftype: SynthType::Q2_K,
    },
    Case {
        name: "synth-moe-Q4_K_M",
        arch: SynthArch::Mixtral,
        ftype: SynthType::Q4_K_M,
    },
];

const KERNELS: [(KernelChoice, &str); 2] = [
    (KernelChoice::Native, "native"),
    (KernelChoice::Candle, "candle"),
];

fn spec(case: &Case, tiny: bool) -> SynthSpec {
    let preset = if tiny {
        SynthPreset::Tiny
    } else {
        SynthPreset::OneB
    };
    let mut s = SynthSpec::preset(case.arch, preset);
    if tiny {
        s.vocab_size = Some(512);
    } else if case.arch == SynthArch::Mixtral {
        // REFERENCE.md's synth-moe: 791M parameters.
        s.n_embd = 1024;
        s.n_ff = 3584;
        s.n_layer = 8;
        s.n_head = 8;
        s.n_head_kv = 2;
    }
    s.ftype = case.ftype;
    s
}

/// `target/bench-models` next to this benchmark's executable (target/release/deps/..).
fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MISTRAL_RUN_BENCH_MODELS") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("path of the benchmark executable");
    let target = exe
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    target.join("bench-models")
}

/// The model file of `case`, written on first use (atomically: temp file + rename).
fn ensure_model(case: &Case, tiny: bool) -> PathBuf {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let name = if tiny {
        format!("tiny-{}.gguf", case.name)
    } else {
        format!("{}.gguf", case.name)
    };
    let path = dir.join(name);
    let spec = spec(case, tiny);
    let vocab = default_vocab().expect("generated vocabulary");
    let size = synth_size(&spec, vocab.metadata()).expect("synthetic model size");
    let reusable =
        std::fs::metadata(&path).is_ok_and(|m| m.len() == size) && GgufFile::open(&path).is_ok();
    if !reusable {
        eprintln!(
            "writing {} ({:.0} MiB) ...",
            path.display(),
            size as f64 / (1 << 20) as f64
        );
        let t = Instant::now();
        let tmp = path.with_extension("gguf.tmp");
        let mut out =
            BufWriter::with_capacity(8 << 20, File::create(&tmp).expect("create model file"));
        write_synth(&spec, vocab.metadata(), &mut out, &|_| {}).expect("write synthetic model");
        out.into_inner()
            .expect("flush model file")
            .sync_all()
            .expect("sync model file");
        std::fs::rename(&tmp, &path).expect("rename model file");
        eprintln!("  done in {:.1} s", t.elapsed().as_secs_f64());
    }
    path
}

/// Whether the transformer accepts `kernels` (checked on a tiny in-memory model).
fn kernels_supported(kernels: KernelChoice) -> Result<(), String> {
    let spec = spec(&CASES[2], true);
    let vocab = default_vocab().map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    write_synth(&spec, vocab.metadata(), &mut bytes, &|_| {}).map_err(|e| e.to_string())?;
    let file = GgufFile::from_bytes(bytes, "tiny").map_err(|e| e.to_string())?;
    let opts = LoadOptions {
        kernels,
        ..LoadOptions::default()
    };
    ModelConfig::from_file(&file, &opts)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn load(path: &Path, kernels: KernelChoice) -> Session {
    let opts = LoadOptions {
        ctx_size: Some(PP.max(TG)),
        kernels,
        ..LoadOptions::default()
    };
    Model::load(path, opts)
        .unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()))
        .new_session()
}

fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}

fn prefill(model: &mut Session, prompt: &[u32]) -> Duration {
    model.reset();
    let t = Instant::now();
    let logits = model.forward(prompt, 1).expect("prefill");
    let d = t.elapsed();
    std::hint::black_box(logits);
    d
}

fn decode(model: &mut Session, first: u32, steps: usize) -> Duration {
    model.reset();
    let t = Instant::now();
    let mut tok = first;
    for _ in 0..steps {
        let logits = model.forward(&[tok], 1).expect("decode step");
        tok = argmax(&logits);
    }
    t.elapsed()
}

/// The model of `case` with `kernels`, generated and loaded on first use.
fn loaded<'a>(
    model: &'a mut Option<Session>,
    path: &mut Option<PathBuf>,
    case: &Case,
    tiny: bool,
    kernels: KernelChoice,
) -> &'a mut Session {
    let p = path.get_or_insert_with(|| ensure_model(case, tiny));
    model.get_or_insert_with(|| load(p, kernels))
}

fn end_to_end(c: &mut Criterion, tiny: bool) -> Vec<(PathBuf, Vec<&'static str>)> {
    let supported: Vec<(KernelChoice, &'static str)> = KERNELS
        .into_iter()
        .filter(|(k, name)| match kernels_supported(*k) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("skipping the {name} kernels: {e}");
                false
            }
        })
        .collect();
    let mut measured = Vec::new();
    for case in CASES {
        let mut group = c.benchmark_group(format!("e2e/{}", case.name));
        group
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(5));
        let mut path: Option<PathBuf> = None;
        let mut used = Vec::new();
        for &(kernels, kname) in &supported {
            // Loaded lazily: a filtered-out case costs nothing.
            let mut model: Option<Session> = None;
            let prompt: Vec<u32> = (0..PP as u32).map(|i| (i * 7919 + 13) % 500).collect();
            group.throughput(Throughput::Elements(PP as u64));
            group.bench_function(BenchmarkId::new(format!("prefill-pp{PP}"), kname), |b| {
                let m = loaded(&mut model, &mut path, case, tiny, kernels);
                b.iter_custom(|iters| (0..iters).map(|_| prefill(m, &prompt)).sum())
            });
            group.throughput(Throughput::Elements(TG as u64));
            group.bench_function(BenchmarkId::new(format!("decode-tg{TG}"), kname), |b| {
                let m = loaded(&mut model, &mut path, case, tiny, kernels);
                b.iter_custom(|iters| (0..iters).map(|_| decode(m, 1, TG)).sum())
            });
            if model.is_some() {
                used.push(kname);
            }
        }
        group.finish();
        if let Some(p) = path {
            measured.push((p, used));
        }
    }
    measured
}

/// Peak RSS and the other memory figures, one fresh `mistral-run bench` process per model.
fn memory_report(measured: &[(PathBuf, Vec<&'static str>)]) {
    if measured.is_empty() {
        return;
    }
    let mut kernels: Vec<&str> = Vec::new();
    for k in measured.iter().flat_map(|(_, used)| used) {
        if !kernels.contains(k) {
            kernels.push(k);
        }
    }
    let models: Vec<String> = measured
        .iter()
        .map(|(p, _)| p.display().to_string())
        .collect();
    let out = std::env::current_exe()
        .ok()
        .and_then(|e| {
            e.ancestors()
                .nth(3)
                .map(|t| t.join("criterion").join("end_to_end_memory.json"))
        })
        .unwrap_or_else(|| PathBuf::from("end_to_end_memory.json"));
    if let Some(dir) = out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    println!("\nMemory per model (one process each; speed columns: one repetition of pp{PP} / tg{TG}):\n");
    let status = Command::new(env!("CARGO_BIN_EXE_mistral-run"))
        .args([
            "bench",
            "-m",
            &models.join(","),
            "--kernels",
            &kernels.join(","),
        ])
        .args([
            "-p",
            &PP.to_string(),
            "-n",
            &TG.to_string(),
            "-r",
            "1",
            "--save-json",
        ])
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => println!("\nmemory report: {}", out.display()),
        Ok(s) => eprintln!("mistral-run bench (memory report) failed: {s}"),
        Err(e) => eprintln!("cannot start mistral-run bench for the memory report: {e}"),
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not (criterion's test mode).
    let bench_mode =
        std::env::args().any(|a| a == "--bench") && !std::env::args().any(|a| a == "--test");
    let mut c = Criterion::default().configure_from_args();
    let measured = end_to_end(&mut c, !bench_mode);
    c.final_summary();
    if bench_mode {
        memory_report(&measured);
    }
}
