//! Peak throughput of the multiply-add instructions the kernels are built
//! on (developer tool: the ceilings BENCHMARKS.md compares the kernels
//! with). Usage: peak [THREADS] (default: 2)
//!
//! Each instruction runs in 12 independent dependency chains, so only its
//! throughput limits it, on THREADS threads at once (one per core on the
//! 2-core machines these figures come from); prints the instructions per
//! second per thread and the multiply-adds × 2 ("GFLOP/s", or integer
//! operations for `vpdpbusd`) summed over the threads.
use std::time::Instant;

/// Chains per instruction.
const CHAINS: usize = 12;
/// Iterations per measurement (`ROUNDS` × `CHAINS` instructions each).
const ITERS: u64 = 12_500_000;
/// Rounds over the chains per iteration (the operand's trip through
/// `black_box` each iteration must not set the pace).
const ROUNDS: usize = 4;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{CHAINS, ITERS, ROUNDS};
    use std::arch::x86_64::*;
    use std::hint::black_box;

    /// Runs `step` on `CHAINS` accumulators `ITERS × ROUNDS` times; the
    /// operand goes through `black_box` once per iteration so nothing is
    /// hoisted.
    macro_rules! chains {
        ($acc:expr, $op:expr, $step:expr) => {{
            let mut acc = [$acc; CHAINS];
            let mut op = $op;
            for _ in 0..ITERS {
                for _ in 0..ROUNDS {
                    for a in acc.iter_mut() {
                        *a = $step(*a, op);
                    }
                }
                op = black_box(op);
            }
            black_box(acc);
        }};
    }

    /// # Safety
    /// AVX2 and FMA available.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma_ymm() {
        chains!(_mm256_set1_ps(0.5), _mm256_set1_ps(0.999), |a, b| {
            _mm256_fmadd_ps(a, b, b)
        })
    }

    /// # Safety
    /// AVX-512F available.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma_zmm() {
        chains!(_mm512_set1_ps(0.5), _mm512_set1_ps(0.999), |a, b| {
            _mm512_fmadd_ps(a, b, b)
        })
    }

    /// # Safety
    /// AVX-512 VNNI and VL available.
    #[target_feature(enable = "avx512f,avx512vl,avx512vnni")]
    pub unsafe fn dpbusd_ymm() {
        chains!(_mm256_set1_epi32(1), _mm256_set1_epi8(3), |a, b| {
            _mm256_dpbusd_epi32(a, b, b)
        })
    }

    /// # Safety
    /// AVX-512 VNNI available.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub unsafe fn dpbusd_zmm() {
        chains!(_mm512_set1_epi32(1), _mm512_set1_epi8(3), |a, b| {
            _mm512_dpbusd_epi32(a, b, b)
        })
    }

    /// # Safety
    /// AVX-512 BF16 available.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn dpbf16_zmm() {
        let one = _mm512_set1_epi16(0x3f80);
        // SAFETY: 32 bfloat16 in 64 bytes, any bits valid.
        let b = unsafe { std::mem::transmute::<__m512i, __m512bh>(one) };
        chains!(_mm512_set1_ps(0.5), b, |a, b| _mm512_dpbf16_ps(a, b, b))
    }
}

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    #[cfg(target_arch = "x86_64")]
    {
        let has = |f: &str| match f {
            "avx2" => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            "avx512f" => is_x86_feature_detected!("avx512f"),
            "vnni" => {
                is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl")
            }
            _ => is_x86_feature_detected!("avx512bf16"),
        };
        // (name, feature, multiply-adds per instruction, kernel)
        type Kernel = unsafe fn();
        let cases: [(&str, &str, f64, Kernel); 5] = [
            ("vfmadd231ps ymm", "avx2", 8.0, x86::fma_ymm),
            ("vfmadd231ps zmm", "avx512f", 16.0, x86::fma_zmm),
            ("vpdpbusd ymm", "vnni", 32.0, x86::dpbusd_ymm),
            ("vpdpbusd zmm", "vnni", 64.0, x86::dpbusd_zmm),
            ("vdpbf16ps zmm", "bf16", 32.0, x86::dpbf16_zmm),
        ];
        for (name, feature, macs, kernel) in cases {
            if !has(feature) {
                println!("{name}: not on this CPU");
                continue;
            }
            let t = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..threads {
                    // SAFETY: the CPU has the kernel's features (checked above).
                    s.spawn(move || unsafe { kernel() });
                }
            });
            let secs = t.elapsed().as_secs_f64();
            let per_thread = (ITERS * (ROUNDS * CHAINS) as u64) as f64 / secs;
            println!(
                "{name}: {:.2} G/s per thread, {:.0} G(FL)OP/s on {threads} threads",
                per_thread / 1e9,
                per_thread * threads as f64 * macs * 2.0 / 1e9
            );
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (threads, Instant::now(), CHAINS, ITERS, ROUNDS);
        println!("x86-64 only");
    }
}
