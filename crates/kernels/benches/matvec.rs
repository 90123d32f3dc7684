//! Quantized matrix × vector (decode) and matrix × matrix (prefill) at
//! Mistral-7B / synth-1B shapes: our kernels (`native`, through the candle
//! `Module` interface the transformer uses) next to candle's `QMatMul`
//! (`candle`) on the same weight bytes, in the same run. Plus the machine's
//! memory read bandwidth measured the way REFERENCE.md does (a 2-thread
//! f32 dot product over two 256 MiB arrays).
//!
//! Threads: both engines use the machine's cores (RAYON_NUM_THREADS caps
//! both); run with `RAYON_NUM_THREADS=2` to match REFERENCE.md. Ours are
//! timed from a rayon pool thread, as the engine calls them ([`in_pool`]).
//!
//! Matrix × vector throughput is reported as bytes of weights streamed per
//! second; matrix × matrix as elements = floating-point operations (2·rows·cols·n).
//! `matvec/*` repeats one matrix, which then sits in the L3 cache (the
//! kernels' compute speed); `matvec-stream/*` cycles through copies larger
//! than the caches (what a decode step sees).

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{Device, Module, Tensor};
use criterion::{criterion_group, criterion_main, Bencher, BenchmarkId, Criterion, Throughput};
use mistral_kernels::{quantize_to_vec, GgmlType, Isa, QMatrix};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use std::borrow::Cow;
use std::hint::black_box;
use std::time::{Duration, Instant};

fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let u1: f32 = rng.random_range(1e-7f32..1.0);
            let u2: f32 = rng.random_range(0.0f32..1.0);
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
        })
        .collect()
}

/// candle's type for `ty` (every type benchmarked has one).
fn dtype(ty: GgmlType) -> GgmlDType {
    mistral_kernels::candle_op::candle_dtype(ty).expect("a type candle supports")
}

/// The same weights for both engines: 256 quantized random rows repeated.
fn weights(ty: GgmlType, rows: usize, cols: usize) -> (QMatrix, QMatMul, usize) {
    let base_rows = 256.min(rows);
    let base = quantize_to_vec(ty, &gaussian(base_rows * cols, 1)).unwrap();
    let mut bytes = Vec::with_capacity(base.len() * rows.div_ceil(base_rows));
    while bytes.len() < base.len() / base_rows * rows {
        bytes.extend_from_slice(&base);
    }
    bytes.truncate(base.len() / base_rows * rows);
    let n_bytes = bytes.len();
    let storage = QStorage::from_data(Cow::Borrowed(&bytes), &Device::Cpu, dtype(ty)).unwrap();
    let qt = QTensor::new(storage, (rows, cols)).unwrap();
    let theirs = QMatMul::from_qtensor(qt).unwrap();
    let ours = QMatrix::new(ty, rows, cols, bytes).unwrap();
    (ours, theirs, n_bytes)
}

/// Times `f(k)` for iterations `k = 0..` the way the engine calls our
/// kernels: from a rayon pool thread (`Model::forward` runs there), so every
/// product forks and joins inside the pool instead of handing its work over
/// from outside (tens of µs per call). candle's quantized kernels run on their
/// own spinning thread pool joined by the caller, and are called from the
/// main thread as candle's users call them.
fn in_pool<R>(b: &mut Bencher<'_>, f: impl Fn(usize) -> R + Sync) {
    b.iter_custom(|iters| {
        rayon::scope(|_| {
            let t = Instant::now();
            for k in 0..iters as usize {
                black_box(f(k));
            }
            t.elapsed()
        })
    })
}

fn bench_matvec(c: &mut Criterion) {
    let shapes_main: &[(usize, usize)] = &[
        (4096, 4096),
        (1024, 4096),
        (2048, 5632),
        (14336, 4096),
        (4096, 14336),
        (32000, 4096),
    ];
    let shapes_rest: &[(usize, usize)] = &[(4096, 4096), (14336, 4096)];
    let cases: &[(GgmlType, &[(usize, usize)])] = &[
        (GgmlType::Q4_K, shapes_main),
        (GgmlType::Q6_K, shapes_main),
        (GgmlType::Q2_K, shapes_rest),
        (GgmlType::Q3_K, &[(4096, 4096)]),
        (GgmlType::Q5_K, &[(4096, 4096)]),
        (GgmlType::Q8_0, shapes_rest),
        (GgmlType::Q4_0, &[(4096, 4096)]),
        (GgmlType::Q4_1, &[(4096, 4096)]),
        (GgmlType::Q5_0, &[(4096, 4096)]),
        (GgmlType::Q5_1, &[(4096, 4096)]),
        (GgmlType::F16, shapes_rest),
        (GgmlType::BF16, &[(4096, 4096)]),
    ];
    for &(ty, shapes) in cases {
        let mut group = c.benchmark_group(format!("matvec/{ty}"));
        group
            .sample_size(20)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        for &(rows, cols) in shapes {
            let (ours, theirs, n_bytes) = weights(ty, rows, cols);
            let x = Tensor::from_vec(gaussian(cols, 2), (1, cols), &Device::Cpu).unwrap();
            group.throughput(Throughput::Bytes(n_bytes as u64));
            let id = format!("{rows}x{cols}");
            group.bench_with_input(BenchmarkId::new("native", &id), &x, |b, x| {
                in_pool(b, |_| ours.forward(x).unwrap())
            });
            group.bench_with_input(BenchmarkId::new("candle", &id), &x, |b, x| {
                b.iter(|| theirs.forward(x).unwrap())
            });
        }
        group.finish();
    }
}

/// Matrix × vector with the weights streamed from memory, as in a real
/// model's decode step (each layer's matrices are read once per token and
/// the whole model does not fit in the caches): every call takes the next of
/// several copies of the matrix, together 4× this machine's 32 MiB L3.
fn bench_matvec_streaming(c: &mut Criterion) {
    for ty in [
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::Q8_0,
        GgmlType::F16,
    ] {
        let (rows, cols) = (4096, 4096);
        let mut group = c.benchmark_group(format!("matvec-stream/{ty}"));
        group
            .sample_size(20)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        let (ours0, theirs0, n_bytes) = weights(ty, rows, cols);
        let copies = (128usize << 20).div_ceil(n_bytes).max(2);
        let (mut ours, mut theirs) = (vec![ours0], vec![theirs0]);
        while ours.len() < copies {
            let (o, t, _) = weights(ty, rows, cols);
            ours.push(o);
            theirs.push(t);
        }
        let x = Tensor::from_vec(gaussian(cols, 2), (1, cols), &Device::Cpu).unwrap();
        group.throughput(Throughput::Bytes(n_bytes as u64));
        let id = format!("{rows}x{cols}");
        group.bench_with_input(BenchmarkId::new("native", &id), &x, |b, x| {
            in_pool(b, |k| ours[k % copies].forward(x).unwrap())
        });
        let mut i = 0usize;
        group.bench_with_input(BenchmarkId::new("candle", &id), &x, |b, x| {
            b.iter(|| {
                i += 1;
                theirs[i % copies].forward(x).unwrap()
            })
        });
        group.finish();
    }
}

fn bench_matmul(c: &mut Criterion) {
    let n = 512;
    let (rows, cols) = (4096, 4096);
    for ty in [
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q5_K,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::F16,
        GgmlType::BF16,
    ] {
        let mut group = c.benchmark_group(format!("matmul{n}/{ty}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(4));
        let (ours, theirs, _) = weights(ty, rows, cols);
        let x = Tensor::from_vec(gaussian(n * cols, 3), (n, cols), &Device::Cpu).unwrap();
        group.throughput(Throughput::Elements((2 * rows * cols * n) as u64));
        let id = format!("{rows}x{cols}");
        group.bench_with_input(BenchmarkId::new("native", &id), &x, |b, x| {
            in_pool(b, |_| ours.forward(x).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("candle", &id), &x, |b, x| {
            b.iter(|| theirs.forward(x).unwrap())
        });
        // Where the AVX-512 VNNI k-quant kernel runs, the AVX2 one beside it.
        let kquant = matches!(
            ty,
            GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K
        );
        if kquant && Isa::best().has_avx512() {
            let avx2 = ours.clone().with_isa(Isa::Avx2).unwrap();
            group.bench_with_input(BenchmarkId::new("native-avx2", &id), &x, |b, x| {
                in_pool(b, |_| avx2.forward(x).unwrap())
            });
        }
        // Where the AMX tile kernels run (F16, BF16, the k-quants, Q8_0),
        // the AVX-512 ones beside them.
        let amx = kquant || matches!(ty, GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_0);
        if amx && Isa::best() == Isa::Amx {
            let avx512 = ours.clone().with_isa(Isa::Avx512).unwrap();
            group.bench_with_input(BenchmarkId::new("native-avx512", &id), &x, |b, x| {
                in_pool(b, |_| avx512.forward(x).unwrap())
            });
        }
        group.finish();
    }
}

/// Memory read bandwidth: an f32 dot product of two 256 MiB arrays on the
/// rayon pool (bytes read = 512 MiB per iteration).
fn bench_bandwidth(c: &mut Criterion) {
    let n = 256 << 20 >> 2;
    let a: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let b: Vec<f32> = (0..n).map(|i| (i % 5) as f32).collect();
    let mut group = c.benchmark_group("bandwidth");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Bytes((2 * n * 4) as u64));
    group.bench_function("dot-2x256MiB", |bch| {
        bch.iter(|| {
            a.par_chunks(1 << 16)
                .zip(b.par_chunks(1 << 16))
                .map(|(x, y)| {
                    let mut s = [0f32; 8];
                    for (cx, cy) in x.chunks_exact(8).zip(y.chunks_exact(8)) {
                        for k in 0..8 {
                            s[k] += cx[k] * cy[k];
                        }
                    }
                    s.iter().sum::<f32>()
                })
                .sum::<f32>()
        })
    });
    // The kernels' own access pattern: each thread reads one contiguous part
    // and prefetches 2 KiB ahead (the dot product above leaves the hardware
    // prefetcher alone and restarts it every 256 KiB).
    let words: Vec<u64> = (0..(512usize << 20) / 8).map(|i| i as u64).collect();
    group.throughput(Throughput::Bytes((words.len() * 8) as u64));
    group.bench_function("sum-512MiB-prefetch", |bch| {
        let threads = rayon::current_num_threads().max(1);
        let part = words.len().div_ceil(threads);
        bch.iter(|| {
            words
                .par_chunks(part)
                .map(|w| {
                    let mut s = [0u64; 4];
                    for c in w.chunks_exact(8) {
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: a prefetch is a hint that never faults; the
                        // address is only computed (wrapping), never read.
                        unsafe {
                            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                            let p = (c.as_ptr() as *const i8).wrapping_add(2048);
                            _mm_prefetch::<_MM_HINT_T0>(p);
                        }
                        for k in 0..4 {
                            s[k] = s[k].wrapping_add(c[k] ^ c[k + 4]);
                        }
                    }
                    s.iter().fold(0u64, |a, &b| a.wrapping_add(b))
                })
                .reduce(|| 0, |a, b| a.wrapping_add(b))
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_bandwidth,
    bench_matvec,
    bench_matvec_streaming,
    bench_matmul
);
criterion_main!(benches);
