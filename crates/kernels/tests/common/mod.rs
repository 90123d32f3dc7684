//! Shared helpers of the integration tests.
#![allow(dead_code)]

use rand::{Rng, SeedableRng};

/// Deterministic pseudo-Gaussian data (Box-Muller), with a few outliers like real weights.
pub fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let u1: f32 = rng.random_range(1e-7f32..1.0);
            let u2: f32 = rng.random_range(0.0f32..1.0);
            let g = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos();
            if i % 97 == 5 {
                g * 4.0
            } else {
                g
            }
        })
        .collect()
}

/// `x` rounded to bfloat16 (to nearest even) and back: the activations a
/// kernel sees when `plan::rounds_activations_to_bf16` holds.
pub fn round_to_bf16(x: &[f32]) -> Vec<f32> {
    x.iter()
        .map(|&v| half::bf16::from_f32(v).to_f32())
        .collect()
}

pub fn rmse(a: &[f32], b: &[f32]) -> f64 {
    let s: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    (s / a.len() as f64).sqrt()
}

/// Asserts two products agree bit for bit; output `k` is activation row
/// `k / rows`, weight row `k % rows`.
pub fn assert_bits_eq(what: &str, got: &[f32], want: &[f32], rows: usize) {
    assert_eq!(got.len(), want.len(), "{what}: output lengths");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits(),
            "{what} [{}, {}]: {g} vs {w}",
            k / rows,
            k % rows
        );
    }
}

/// Asserts each output `got[t·rows + r]` is within `tol · Σ_c |w·x| + 1e-6`
/// of the f64 dot product `Σ_c w[r·cols + c] · x[t·cols + c]` (`w`, `x`
/// index the row-major weights and activations).
pub fn assert_near_f64_dot(
    what: &str,
    got: &[f32],
    (rows, cols): (usize, usize),
    w: impl Fn(usize) -> f64,
    x: impl Fn(usize) -> f64,
    tol: f64,
) {
    for (k, &g) in got.iter().enumerate() {
        let (t, r) = (k / rows, k % rows);
        let (mut dot, mut mag) = (0f64, 0f64);
        for c in 0..cols {
            let p = w(r * cols + c) * x(t * cols + c);
            dot += p;
            mag += p.abs();
        }
        assert!(
            (g as f64 - dot).abs() <= tol * mag + 1e-6,
            "{what} [{t}, {r}] of {rows}x{cols}: {g} vs {dot} (mag {mag})"
        );
    }
}

/// Runs `f` on a private rayon pool of `threads` threads (3: row and token
/// splits that do not divide evenly; 1: the single-thread paths).
pub fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a test thread pool")
        .install(f)
}

/// Which instruction-set paths a test ran and which it could not (the CPU
/// lacks them), written when it ends to `target/tmp/isa-paths/<test>` for
/// `tests/isa-report.sh`, which prints them where CI's log shows them
/// (`cargo test` hides what passing tests print).
pub struct Coverage {
    test: &'static str,
    seen: std::sync::Mutex<(
        std::collections::BTreeSet<&'static str>,
        std::collections::BTreeSet<&'static str>,
    )>,
}

impl Coverage {
    pub fn new(test: &'static str) -> Coverage {
        Coverage {
            test,
            seen: Default::default(),
        }
    }

    /// `paths` split into those this CPU runs (returned, recorded as run)
    /// and those it lacks (recorded as skipped).
    pub fn paths(
        &self,
        paths: impl IntoIterator<Item = mistral_kernels::Isa>,
    ) -> Vec<mistral_kernels::Isa> {
        let mut seen = self.seen.lock().unwrap();
        let mut out = Vec::new();
        for isa in paths {
            if isa.available() {
                seen.0.insert(isa.name());
                out.push(isa);
            } else {
                seen.1.insert(isa.name());
            }
        }
        out
    }

    /// Every path of [`mistral_kernels::Isa::ALL`] this CPU runs.
    pub fn all(&self) -> Vec<mistral_kernels::Isa> {
        self.paths(mistral_kernels::Isa::ALL)
    }

    /// Whether `isa` runs here (recorded either way).
    pub fn runs(&self, isa: mistral_kernels::Isa) -> bool {
        !self.paths([isa]).is_empty()
    }
}

impl Drop for Coverage {
    fn drop(&mut self) {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("isa-paths");
        let _ = std::fs::create_dir_all(&dir);
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let join =
            |s: &std::collections::BTreeSet<&str>| s.iter().copied().collect::<Vec<_>>().join(" ");
        let text = format!("ran: {}\nskipped: {}\n", join(&seen.0), join(&seen.1));
        let _ = std::fs::write(dir.join(self.test), text);
    }
}

/// Every weight type with a matmul kernel.
pub const TYPES: [mistral_kernels::GgmlType; 21] = [
    mistral_kernels::GgmlType::Q4_0,
    mistral_kernels::GgmlType::Q4_1,
    mistral_kernels::GgmlType::Q5_0,
    mistral_kernels::GgmlType::Q5_1,
    mistral_kernels::GgmlType::Q8_0,
    mistral_kernels::GgmlType::IQ4_NL,
    mistral_kernels::GgmlType::Q2_K,
    mistral_kernels::GgmlType::Q3_K,
    mistral_kernels::GgmlType::Q4_K,
    mistral_kernels::GgmlType::Q5_K,
    mistral_kernels::GgmlType::Q6_K,
    mistral_kernels::GgmlType::IQ4_XS,
    mistral_kernels::GgmlType::IQ2_XXS,
    mistral_kernels::GgmlType::IQ2_XS,
    mistral_kernels::GgmlType::IQ2_S,
    mistral_kernels::GgmlType::IQ3_XXS,
    mistral_kernels::GgmlType::IQ3_S,
    mistral_kernels::GgmlType::IQ1_S,
    mistral_kernels::GgmlType::F16,
    mistral_kernels::GgmlType::BF16,
    mistral_kernels::GgmlType::F32,
];

/// The types of [`TYPES`] on Q8_K activations (the k-quants and the
/// 256-value i-quants): every kernel gives the scalar kernel's bits for them.
pub fn q8k_types() -> impl Iterator<Item = mistral_kernels::GgmlType> {
    use mistral_kernels::ActFormat;
    TYPES
        .into_iter()
        .filter(|&t| ActFormat::for_weights(t) == Some(ActFormat::Q8K))
}

/// Offsets of the f16 scale fields in each block type (kept small and finite
/// in random blocks; every other byte is random).
fn scale_offsets(ty: mistral_kernels::GgmlType) -> &'static [usize] {
    use mistral_kernels::GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL | IQ4_XS => &[0],
        IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S | IQ1_S => &[0],
        Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q6_K => &[208],
        _ => &[],
    }
}

/// Random weights of `ty`: raw random blocks (all bit patterns, small
/// scales) for block types, random values for float types.
pub fn random_weights(
    ty: mistral_kernels::GgmlType,
    rows: usize,
    cols: usize,
    seed: u64,
) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    if !ty.is_quantized() {
        let x = gaussian(rows * cols, seed);
        return mistral_kernels::quantize_to_vec(ty, &x).unwrap();
    }
    let mut bytes: Vec<u8> = (0..ty.bytes_for((rows * cols) as u64).unwrap())
        .map(|_| rng.random())
        .collect();
    let bs = ty.type_size() as usize;
    for block in bytes.chunks_exact_mut(bs) {
        for &o in scale_offsets(ty) {
            let v: f32 = rng.random_range(-0.02f32..0.02);
            block[o..o + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
        }
    }
    bytes
}
