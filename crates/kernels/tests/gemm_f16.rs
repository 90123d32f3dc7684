//! The tiled F16 / BF16 × f32 prefill kernel (crate::gemm, AVX2 from 8
//! activation rows) against a plain f64 loop, at shapes that hit every tail of its
//! tiling: weight rows not a multiple of the 16-row panel or of a row block,
//! activation rows not a multiple of the 6-row tile, depths shorter than one
//! 8-wide conversion, not a multiple of 8, and over several k-blocks; more
//! activation rows than one pass over the weights takes.

mod common;

use common::{assert_near_f64_dot, gaussian, on_threads, round_to_bf16};
use mistral_kernels::plan;
use mistral_kernels::{dequantize, matmul, quantize_to_vec, GgmlType, Isa};

/// Relative tolerance against the f64 reference, as a fraction of the sum of
/// |products| (f32 accumulation in a different order).
const REL_TOL: f64 = 2e-5;

/// Multiplies through the public entry point, F16 and BF16 weights, and
/// checks every output against the f64 product of the rounded weights.
/// `w_offset` shifts the weight bytes inside their buffer (as in an mmapped
/// file, any alignment).
fn check(rows: usize, cols: usize, n: usize, w_offset: usize, seed: u64) {
    for ty in [GgmlType::F16, GgmlType::BF16] {
        check_type(ty, rows, cols, n, w_offset, seed);
    }
}

fn check_type(ty: GgmlType, rows: usize, cols: usize, n: usize, w_offset: usize, seed: u64) {
    let wf = gaussian(rows * cols, seed);
    let w16 = quantize_to_vec(ty, &wf).unwrap();
    let mut buf = vec![0u8; w_offset];
    buf.extend_from_slice(&w16);
    let w = &buf[w_offset..];
    // The weights the kernel actually sees (rounded to 16 bits).
    let mut wr = vec![0f32; rows * cols];
    dequantize(ty, &w16, &mut wr).unwrap();
    let x = gaussian(n * cols, seed + 1);
    // The activations rounded to bfloat16, for the `vdpbf16ps` kernel.
    let xb = round_to_bf16(&x);
    // Every x86 path: the AVX2 microkernel, and AVX-512's where it runs.
    let cov = common::Coverage::new(match ty {
        GgmlType::BF16 => "gemm_f16::check_type(bf16)",
        _ => "gemm_f16::check_type(f16)",
    });
    for isa in cov.paths([Isa::Avx2, Isa::Avx512, Isa::Amx]) {
        // Garbage in y: the kernel must overwrite, not accumulate into it.
        let mut y = vec![f32::NAN; n * rows];
        matmul(ty, isa, w, rows, cols, &x, &mut y).unwrap();
        let bf = plan::rounds_activations_to_bf16(ty, isa, n, (rows, cols));
        let xs = if bf { &xb } else { &x };
        assert_near_f64_dot(
            &format!("{ty} {isa:?} {rows}x{cols} n={n} bf16 activations: {bf}"),
            &y,
            (rows, cols),
            |i| wr[i] as f64,
            |i| xs[i] as f64,
            REL_TOL,
        );
    }
}

#[test]
fn tiled_f16_matches_f64_reference_at_every_tail() {
    if !Isa::Avx2.available() {
        eprintln!("no AVX2 + FMA + F16C: the tiled F16 kernel is not used here");
        return;
    }
    // 3 threads: row blocks and token groups do not divide evenly.
    on_threads(3, || {
        let mut seed = 0;
        for rows in [1, 15, 17, 33] {
            for n in [8, 9, 13] {
                for cols in [7, 8, 300, 1000] {
                    check(rows, cols, n, seed as usize % 3, seed);
                    seed += 1;
                }
            }
        }
        // Several full row blocks plus a partial one, several k-blocks, more
        // tiles than threads.
        check(300, 600, 20, 1, 100);
        check(257, 513, 31, 0, 101);
        // More activation rows than one pass takes (512): three passes.
        check(20, 40, 1030, 1, 102);
    });
}

#[test]
fn tiled_f16_on_one_thread_and_concurrent_calls() {
    if !Isa::Avx2.available() {
        return;
    }
    // One thread: every task on the same worker (one packing buffer).
    on_threads(1, || check(40, 260, 14, 1, 200));
    // Two calls at once from outside the pool share the pooled buffers.
    std::thread::scope(|s| {
        s.spawn(|| check(33, 300, 9, 0, 201));
        s.spawn(|| check(48, 1000, 16, 1, 202));
    });
}

/// The AMX tile kernel (`Isa::Amx`, whole 16-row weight tiles and 32-value
/// steps) at its tails: one and an odd number of weight tiles per row
/// block, several row blocks, one step, k-blocks of 16 steps plus a partial
/// one, activation rows short of a tile, an odd number of tiles, and more
/// than one pass (512 rows). The BF16 reference takes the activations
/// unrounded, so a BF16 product that fell back to the `vdpbf16ps` kernel
/// (bfloat16 activations, errors near 2^-9) fails here too.
#[test]
fn amx_tile_kernel_matches_f64_reference_at_every_tail() {
    let cov =
        common::Coverage::new("gemm_f16::amx_tile_kernel_matches_f64_reference_at_every_tail");
    if !cov.runs(Isa::Amx) {
        // Reported as skipped by tests/isa-report.sh.
        return;
    }
    on_threads(3, || {
        let mut seed = 300;
        for (rows, cols) in [(16, 32), (48, 544), (144, 96), (272, 1056)] {
            for n in [1, 15, 17, 40] {
                check(rows, cols, n, seed as usize % 3, seed);
                seed += 1;
            }
        }
        check(32, 64, 530, 0, 320);
    });
}
