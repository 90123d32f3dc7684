//! 32-value block weights × Q8_0 activations, register-tiled with AVX-512
//! VNNI.
//!
//! The sums of the AVX2 kernel ([`super::legacy`]), per 32-value block
//!
//! ```text
//! dot = d_w·d_a · Σ w·a  +  m_w · d_a·Σ a
//! ```
//!
//! with signed weight values `w` (Q4_0's `q − 8`, Q5_0's `q − 16`, Q8_0's
//! and IQ4_NL's values; Q4_1/Q5_1's unsigned levels, whose min is `m_w`), but
//! through `vpdpbusd` (4 unsigned × signed byte products added into an i32
//! lane): the activations are its unsigned operand, stored as `a + 128` in
//! [`ActBlock`]s of 16 rows (one per lane), the weights its signed operand,
//! 4 values broadcast to every lane. The offset adds `128·Σ w` to a block's
//! sum, a constant of the weight block ([`WeightBlock::wcorr`]), subtracted
//! before the float steps. Those are the AVX2 kernel's (one fused
//! multiply-add per block and row), so results agree with the row-at-a-time
//! kernels to f32 rounding.

use super::legacy::{expand_rows, LRows, WeightBlock as Expanded, WEIGHT_ZERO};
use super::{row_block_size, store_lanes};
use crate::blocks::*;
use crate::shared::{OutPtr, Pool};
use mistral_gguf::GgmlType;
use rayon::prelude::*;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Activation rows per panel: one per i32 lane of a `__m512i`.
const PANEL: usize = 16;
/// Weight rows per microkernel tile.
const R: usize = 4;
/// Panels per microkernel tile.
const H: usize = 2;
/// Blocks per k-block: the `H` panels of a tile (640 bytes per panel and
/// block) stay in L1 while the row block's weights stream past. 8 is the
/// fastest of 4, 8, 12 and 24, and 4×2 tiles are faster than 6×2 or 4×3
/// (measurements: benches/journal/kernel-dispatch.md).
const KC: usize = 8;
/// Most weight rows per row block.
const RB_MAX: usize = 64;

/// One block of one weight row, as the microkernel reads it.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct WeightBlock {
    /// Signed values, in order.
    qs: [i8; 32],
    /// `128·Σ w`: what the activations' offset adds.
    wcorr: i32,
    d: f32,
    /// The min (Q4_1 / Q5_1), else unused.
    m: f32,
}

const W_ZERO: WeightBlock = WeightBlock {
    qs: [0; 32],
    wcorr: 0,
    d: 0.0,
    m: 0.0,
};

/// One block of 16 activation rows.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct ActBlock {
    /// 4-value group `j`: row `c`'s values `4j..4j+4`, plus 128, in bytes `4c..4c+4`.
    qs: [[u8; 64]; 8],
    /// Per row: its scale.
    d: [f32; PANEL],
    /// Per row: scale × the sum of its quants.
    sd: [f32; PANEL],
}

const ACT_ZERO: ActBlock = ActBlock {
    qs: [[128; 64]; 8],
    d: [0.0; PANEL],
    sd: [0.0; PANEL],
};

/// The activation panels of one call, reused across calls.
static PANELS: Pool<Vec<ActBlock>> = Pool::new();

/// A worker's buffers: weight rows expanded by the AVX2 code, the same in
/// this kernel's form, and running sums.
#[derive(Default)]
struct Scratch {
    expanded: Vec<Expanded>,
    wbuf: Vec<WeightBlock>,
    acc: Vec<__m512>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Converts the AVX2 expansion of a block into this kernel's form.
#[inline(always)]
fn convert(ty: GgmlType, e: &Expanded, out: &mut WeightBlock) {
    let off = match ty {
        GgmlType::Q4_0 => 8,
        GgmlType::Q5_0 => 16,
        _ => 0,
    };
    let signed = matches!(ty, GgmlType::Q8_0 | GgmlType::IQ4_NL);
    let mut sum = 0i32;
    for k in 0..32 {
        // Levels are below 32, the signed values are bytes already.
        let v = if signed {
            e.sgn[k]
        } else {
            e.qs[k] as i8 - off
        };
        out.qs[k] = v;
        sum += v as i32;
    }
    out.wcorr = 128 * sum;
    out.d = e.d;
    out.m = e.m;
}

/// [`convert`] for a run of blocks, compiled for AVX-512 (its byte sums
/// vectorize).
///
/// # Safety
/// AVX-512 F/BW available.
#[target_feature(enable = "avx2,avx512f,avx512bw")]
unsafe fn convert_rows(ty: GgmlType, e: &[Expanded], out: &mut [WeightBlock]) {
    for (e, o) in e.iter().zip(out) {
        convert(ty, e, o);
    }
}

/// Quantizes activation rows `16p..16p+16` (zeros past `n`) into panel row `p`.
fn fill_panels(x: &[f32], cols: usize, n: usize, p: usize, out: &mut [ActBlock]) {
    for (b, blk) in out.iter_mut().enumerate() {
        *blk = ACT_ZERO;
        for c in 0..PANEL {
            let t = p * PANEL + c;
            if t >= n {
                break;
            }
            let q =
                crate::quant::quantize_block_q8_0(&x[t * cols + b * QK..t * cols + (b + 1) * QK]);
            for j in 0..8 {
                for k in 0..4 {
                    // a + 128 in 0..=255 (two's complement: flip the sign bit).
                    blk.qs[j][4 * c + k] = q.qs[4 * j + k] as u8 ^ 0x80;
                }
            }
            let sum: i32 = q.qs.iter().map(|&v| v as i32).sum();
            let d = q.d.to_f32();
            blk.d[c] = d;
            blk.sd[c] = d * sum as f32;
        }
    }
}

/// The microkernel: `acc[r][h] += dot(weight row r, panel h)` over `nb`
/// blocks (`w[r]`, `a[h]` point at the first).
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI available; `w[r]` and `a[h]` valid for `nb` elements.
#[inline(always)]
unsafe fn tile<const TR: usize, const TH: usize, const MIN: bool>(
    w: [*const WeightBlock; TR],
    a: [*const ActBlock; TH],
    nb: usize,
    acc: &mut [[__m512; TH]; TR],
) {
    for b in 0..nb {
        let mut isum = [[_mm512_setzero_si512(); TH]; TR];
        for j in 0..8 {
            let mut av = [_mm512_setzero_si512(); TH];
            for h in 0..TH {
                av[h] = _mm512_load_si512((*a[h].add(b)).qs[j].as_ptr() as *const __m512i);
            }
            for r in 0..TR {
                let wp = (*w[r].add(b)).qs.as_ptr().add(4 * j) as *const i32;
                let wv = _mm512_set1_epi32(wp.read_unaligned());
                for h in 0..TH {
                    isum[r][h] = _mm512_dpbusd_epi32(isum[r][h], av[h], wv);
                }
            }
        }
        for h in 0..TH {
            let ab = &*a[h].add(b);
            let da = _mm512_load_ps(ab.d.as_ptr());
            let sd = _mm512_load_ps(ab.sd.as_ptr());
            for r in 0..TR {
                let wb = &*w[r].add(b);
                let iv = _mm512_sub_epi32(isum[r][h], _mm512_set1_epi32(wb.wcorr));
                let dd = _mm512_mul_ps(_mm512_set1_ps(wb.d), da);
                acc[r][h] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iv), dd, acc[r][h]);
                if MIN {
                    acc[r][h] = _mm512_fmadd_ps(_mm512_set1_ps(wb.m), sd, acc[r][h]);
                }
            }
        }
    }
}

/// One k-block of one row block: what every tile of it needs.
struct Block<'a> {
    /// `(rows, n, blocks per row)`.
    dims: (usize, usize, usize),
    /// Weights of rows `rb0..`, `nkb` blocks per row.
    wbuf: &'a [WeightBlock],
    /// Running sums between k-blocks: `(row - rb0) * panels + panel`.
    acc: &'a mut [__m512],
    rb0: usize,
    rb1: usize,
    panels: &'a [ActBlock],
    /// The k-block: blocks `s0..s0 + nkb`.
    s0: usize,
    nkb: usize,
    y: OutPtr,
}

/// One tile of `TR` rows (`r0..`) × `TH` panels (`p0..`) over the k-block:
/// continues the running sums (zero at the first k-block) and stores them,
/// into `y` after the last k-block.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI available; `blk` describes buffers that cover the
/// tile (see [`matmul`]) and rows whose outputs belong to this worker.
#[inline(always)]
unsafe fn run_tile<const TR: usize, const TH: usize, const MIN: bool>(
    blk: &mut Block<'_>,
    r0: usize,
    p0: usize,
) {
    let (rows, n, nb) = blk.dims;
    let np = n.div_ceil(PANEL);
    let slot = |r: usize, h: usize| (r0 + r - blk.rb0) * np + p0 + h;
    let mut acc = [[_mm512_setzero_ps(); TH]; TR];
    if blk.s0 > 0 {
        for r in 0..TR {
            for h in 0..TH {
                acc[r][h] = blk.acc[slot(r, h)];
            }
        }
    }
    let w: [*const WeightBlock; TR] =
        std::array::from_fn(|r| blk.wbuf.as_ptr().add((r0 + r - blk.rb0) * blk.nkb));
    let a: [*const ActBlock; TH] =
        std::array::from_fn(|h| blk.panels.as_ptr().add((p0 + h) * nb + blk.s0));
    tile::<TR, TH, MIN>(w, a, blk.nkb, &mut acc);
    if blk.s0 + blk.nkb < nb {
        for r in 0..TR {
            for h in 0..TH {
                blk.acc[slot(r, h)] = acc[r][h];
            }
        }
        return;
    }
    let mut lanes = [[0f32; PANEL]; TR];
    for h in 0..TH {
        for r in 0..TR {
            _mm512_storeu_ps(lanes[r].as_mut_ptr(), acc[r][h]);
        }
        store_lanes(&lanes, blk.y, (rows, n), (r0, (p0 + h) * PANEL));
    }
}

/// Every tile of one k-block of one row block.
///
/// # Safety
/// As [`run_tile`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn row_block<const MIN: bool>(blk: &mut Block<'_>) {
    let np = blk.dims.1.div_ceil(PANEL);
    let mut p0 = 0;
    while p0 < np {
        let wide = p0 + H <= np;
        let mut r0 = blk.rb0;
        while r0 < blk.rb1 {
            let tall = r0 + R <= blk.rb1;
            match (tall, wide) {
                (true, true) => run_tile::<R, H, MIN>(blk, r0, p0),
                (true, false) => run_tile::<R, 1, MIN>(blk, r0, p0),
                (false, true) => run_tile::<1, H, MIN>(blk, r0, p0),
                (false, false) => run_tile::<1, 1, MIN>(blk, r0, p0),
            }
            r0 += if tall { R } else { 1 };
        }
        p0 += if wide { H } else { 1 };
    }
}

/// See [`super::try_matmul`]; the caller has checked AVX-512 F/BW/VL/VNNI
/// (and AVX2 + FMA + F16C) and the shapes.
pub(crate) fn matmul(
    ty: GgmlType,
    w: LRows<'_>,
    rows: usize,
    cols: usize,
    x: &[f32],
    y: &mut [f32],
) -> bool {
    if cols == 0 || !cols.is_multiple_of(QK) {
        return false;
    }
    let nb = cols / QK;
    let n = x.len() / cols;
    let Ok(row_bytes) = bytes_for(ty, cols) else {
        return false;
    };
    let np = n.div_ceil(PANEL);
    super::with_panels(
        &PANELS,
        ACT_ZERO,
        (np, nb),
        |p, out| fill_panels(x, cols, n, p, out),
        |panels| run_blocks(ty, w, row_bytes, (rows, n, nb), panels, y),
    );
    true
}

/// Every row block of one call, in parallel, on filled activation panels.
fn run_blocks(
    ty: GgmlType,
    w: LRows<'_>,
    row_bytes: usize,
    dims: (usize, usize, usize),
    panels_ref: &[ActBlock],
    y: &mut [f32],
) {
    let (rows, n, nb) = dims;
    let np = n.div_ceil(PANEL);
    let min = matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1);
    let rb = row_block_size(rows, R, RB_MAX);
    let y_out = OutPtr(y.as_mut_ptr());
    (0..rows.div_ceil(rb)).into_par_iter().for_each(|blk| {
        let (rb0, rb1) = (blk * rb, ((blk + 1) * rb).min(rows));
        SCRATCH.with(|cell| {
            let scratch = &mut *cell.borrow_mut();
            // The AVX2 expansion covers whole rows.
            let need = (rb1 - rb0) * nb;
            if scratch.expanded.len() < need {
                scratch.expanded.resize(need, WEIGHT_ZERO);
            }
            let need = (rb1 - rb0) * KC.min(nb);
            if scratch.wbuf.len() < need {
                scratch.wbuf.resize(need, W_ZERO);
            }
            let need = (rb1 - rb0) * np;
            if scratch.acc.len() < need {
                // SAFETY: AVX-512F is available (checked by the caller);
                // this only makes a zero vector.
                scratch.acc.resize(need, unsafe { _mm512_setzero_ps() });
            }
            // SAFETY: the caller checked AVX2/FMA/F16C and AVX-512
            // F/BW/VL/VNNI; `w` holds `rows` rows of `row_bytes` (checked by
            // `crate::matmul`), `expanded` has `nb` blocks per row of the
            // span, `wbuf` `nkb` per row and `acc` `(rb1 - rb0) * np`
            // entries, the panels cover every activation row and block, and
            // rows rb0..rb1 of `y` belong to this block alone.
            unsafe {
                expand_rows(ty, w, row_bytes, (rb0, rb1), nb, &mut scratch.expanded);
                for s0 in (0..nb).step_by(KC) {
                    let nkb = KC.min(nb - s0);
                    for r in 0..rb1 - rb0 {
                        convert_rows(
                            ty,
                            &scratch.expanded[r * nb + s0..r * nb + s0 + nkb],
                            &mut scratch.wbuf[r * nkb..(r + 1) * nkb],
                        );
                    }
                    let mut blk = Block {
                        dims,
                        wbuf: &scratch.wbuf,
                        acc: &mut scratch.acc,
                        rb0,
                        rb1,
                        panels: panels_ref,
                        s0,
                        nkb,
                        y: y_out,
                    };
                    if min {
                        row_block::<true>(&mut blk);
                    } else {
                        row_block::<false>(&mut blk);
                    }
                }
            }
        });
    });
}
