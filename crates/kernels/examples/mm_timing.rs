//! Quick timing of one matmul shape (developer tool; the real numbers come
//! from `cargo bench --bench matvec`). Usage: mm_timing TYPE ROWS COLS N [ISA]
//! (the i-quants, which have no quantizer here, take pseudo-random blocks).
//!
//! Runs the product 8 times (each run repeated for at least 20 ms) from a
//! rayon pool thread and prints wall time and process CPU time per product:
//! on a shared machine the CPU time divided by the thread count is the
//! steadier figure.
use mistral_kernels::{quantize_to_vec, GgmlType, Isa, QMatrix};
use std::time::Instant;

/// CPU time of the whole process, in seconds.
fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let ty = GgmlType::from_name(a.get(1).map(String::as_str).unwrap_or("Q4_K")).expect("type");
    let num = |i: usize, d: usize| a.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (rows, cols, n) = (num(2, 4096), num(3, 4096), num(4, 512));
    let isa = a
        .get(5)
        .and_then(|s| Isa::from_name(s))
        .unwrap_or_else(Isa::best);
    let w: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    // The i-quants have no quantizer here: pseudo-random blocks with a small
    // scale (every i-quant block starts with its f16 scale).
    let bytes = if quantize_to_vec(ty, &w[..256.min(w.len())]).is_err() {
        let n = ty.bytes_for((rows * cols) as u64).expect("size");
        let mut b: Vec<u8> = (0..n)
            .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
            .collect();
        for block in b.chunks_exact_mut(ty.type_size() as usize) {
            block[..2].copy_from_slice(&[0x00, 0x1c]); // f16 0.0039
        }
        b
    } else {
        quantize_to_vec(ty, &w).unwrap()
    };
    let m = QMatrix::new(ty, rows, cols, bytes)
        .unwrap()
        .with_isa(isa)
        .unwrap();
    let x: Vec<f32> = (0..n * cols)
        .map(|i| ((i * 104729) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let mut y = vec![0f32; n * rows];
    let threads = rayon::current_num_threads() as f64;
    // From a pool thread, as the engine calls it (`Model::forward` runs
    // there): a call from outside the pool pays ~25-60 µs to hand its work
    // over, which swamps the small products.
    let pool = rayon::ThreadPoolBuilder::new().build().expect("pool");
    pool.install(|| {
        // Each run repeats the product for at least 20 ms (one call at
        // small n takes tens of µs).
        let t = Instant::now();
        m.matmul(&x, &mut y).unwrap();
        let reps = (0.02 / t.elapsed().as_secs_f64().max(1e-7)).ceil().max(1.0) as usize;
        for it in 0..8 {
            let (t, c) = (Instant::now(), cpu_seconds());
            for _ in 0..reps {
                m.matmul(&x, &mut y).unwrap();
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            let cpu = (cpu_seconds() - c) / threads / reps as f64;
            println!(
                "{ty} {rows}x{cols} n={n} {isa:?} run {it}: {:.3} ms wall, {:.3} ms cpu/thread, {:.1} GFLOP/s",
                s * 1e3,
                cpu * 1e3,
                2.0 * (rows * cols * n) as f64 / s / 1e9
            );
        }
    });
}
