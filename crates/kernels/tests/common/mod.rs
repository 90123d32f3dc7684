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
