//! Memory read bandwidth the way tests/data/REFERENCE.md measures it: an f32
//! dot product over two 256 MiB arrays, split over `threads` threads. Decode
//! speed on a CPU is bounded by weight bytes / this bandwidth.

use std::time::Instant;

use super::report::{mean_stdev, Bandwidth, BandwidthRun};

/// Bytes of each array.
pub const ARRAY_BYTES: usize = 256 << 20;

/// Sixteen independent accumulators so the compiler can keep several vector
/// registers of partial sums in flight (a single f32 sum cannot be reordered).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    for (x, y) in a.chunks_exact(16).zip(b.chunks_exact(16)) {
        for k in 0..16 {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f32 = a
        .chunks_exact(16)
        .remainder()
        .iter()
        .zip(b.chunks_exact(16).remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// The dot product of `a` and `b` on `threads` scoped threads (contiguous halves, thirds, ...).
fn parallel_dot(a: &[f32], b: &[f32], threads: usize) -> f32 {
    let chunk = a.len().div_ceil(threads.max(1));
    std::thread::scope(|s| {
        let handles: Vec<_> = a
            .chunks(chunk)
            .zip(b.chunks(chunk))
            .map(|(x, y)| s.spawn(move || dot(x, y)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(f32::NAN))
            .sum()
    })
}

/// Measures read bandwidth for each thread count: one warm-up, then `repetitions` timed runs.
pub fn measure(thread_counts: &[usize], repetitions: usize) -> Bandwidth {
    let n = ARRAY_BYTES / 4;
    // Non-zero contents so every page is really allocated and read.
    let a: Vec<f32> = (0..n).map(|i| (i % 7) as f32 * 0.5).collect();
    let b: Vec<f32> = (0..n).map(|i| (i % 5) as f32 * 0.25).collect();
    let bytes = (2 * ARRAY_BYTES) as f64;
    let runs = thread_counts
        .iter()
        .map(|&threads| {
            std::hint::black_box(parallel_dot(&a, &b, threads));
            let samples: Vec<f64> = (0..repetitions.max(1))
                .map(|_| {
                    let t = Instant::now();
                    std::hint::black_box(parallel_dot(
                        std::hint::black_box(&a),
                        std::hint::black_box(&b),
                        threads,
                    ));
                    bytes / t.elapsed().as_secs_f64() / 1e9
                })
                .collect();
            let (mean_gb_s, stdev_gb_s) = mean_stdev(&samples);
            BandwidthRun {
                threads,
                mean_gb_s,
                stdev_gb_s,
            }
        })
        .collect();
    Bandwidth {
        array_bytes: ARRAY_BYTES as u64,
        repetitions: repetitions.max(1),
        runs,
    }
}

/// Human-readable lines.
pub fn describe(bw: &Bandwidth) -> String {
    let mut s = format!(
        "memory read bandwidth (f32 dot product over two {} MiB arrays, mean of {} runs):\n",
        bw.array_bytes >> 20,
        bw.repetitions
    );
    for r in &bw.runs {
        s.push_str(&format!(
            "  {} thread(s): {:.1} ± {:.1} GB/s\n",
            r.threads, r.mean_gb_s, r.stdev_gb_s
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_dot_matches_a_plain_loop() {
        let a: Vec<f32> = (0..1003).map(|i| (i % 13) as f32 - 6.0).collect();
        let b: Vec<f32> = (0..1003).map(|i| (i % 11) as f32 * 0.5).collect();
        let mut want = 0f64;
        for i in 0..a.len() {
            want += f64::from(a[i]) * f64::from(b[i]);
        }
        for threads in [1, 2, 3, 7] {
            let got = parallel_dot(&a, &b, threads);
            assert!(
                (f64::from(got) - want).abs() < 1e-3 * want.abs().max(1.0),
                "{threads}: {got} vs {want}"
            );
        }
    }
}
