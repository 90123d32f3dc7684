//! Prefill and decode speed of a GGUF model through `Transformer` (no tokenizer,
//! no sampling): one prompt of `PP` token ids in one batched forward, then `TG`
//! greedy one-token steps; best of `REPS` runs.
//!
//! ```text
//! RAYON_NUM_THREADS=2 CANDLE_NUM_THREADS=2 cargo run --release -p mistral-transformer \
//!     --example forward_timing -- MODEL.gguf [native|candle] [PP] [TG] [REPS]
//! ```

use std::time::Instant;

use candle_core::Device;
use mistral_gguf::GgufFile;
use mistral_transformer::{KernelChoice, LoadOptions, ModelError, Transformer};

fn main() -> Result<(), ModelError> {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: forward_timing MODEL.gguf [native|candle] [PP] [TG] [REPS]");
        std::process::exit(2);
    };
    let kernels = match args.get(2).map(String::as_str) {
        Some("native") => KernelChoice::Native,
        _ => KernelChoice::Candle,
    };
    let num = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (pp, tg, reps) = (num(3, 128), num(4, 64), num(5, 3));
    let file = GgufFile::open(path)?;
    let t = Instant::now();
    let opts = LoadOptions {
        ctx_size: Some(pp + tg + 1),
        kernels,
        ..LoadOptions::default()
    };
    let mut m = Transformer::load(&file, &Device::Cpu, &opts)?;
    let n_vocab = m.config().n_vocab as u32;
    eprintln!(
        "{path}: loaded in {:.2}s, {:.1} MiB of weights, {:.1} MiB KV cache, {kernels:?} kernels",
        t.elapsed().as_secs_f64(),
        m.weight_bytes() as f64 / 1048576.0,
        m.kv_cache_bytes() as f64 / 1048576.0
    );
    let prompt: Vec<u32> = (0..pp as u32).map(|i| (i * 7919 + 13) % n_vocab).collect();
    let (mut best_pp, mut best_tg) = (0f64, 0f64);
    for _ in 0..reps {
        m.reset();
        let t = Instant::now();
        let mut next = m.forward_last(&prompt)?.argmax(0)?.to_scalar::<u32>()?;
        best_pp = best_pp.max(pp as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        for _ in 0..tg {
            next = m.forward_last(&[next])?.argmax(0)?.to_scalar::<u32>()?;
        }
        best_tg = best_tg.max(tg as f64 / t.elapsed().as_secs_f64());
    }
    println!("pp{pp}: {best_pp:.1} tok/s, tg{tg}: {best_tg:.1} tok/s (best of {reps})");
    Ok(())
}
