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
use super::tiles::{self, run_tile, KBlockOps, Micro, Sums};
use super::{row_block_size, store_tile_512};
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

/// The operands of one k-block of one row block: the microkernel's
/// [`Micro`] (weight units are rows, activation units panels).
struct Kernel<'a, const MIN: bool> {
    ops: KBlockOps<'a, WeightBlock, ActBlock>,
    /// `(rows, n)`.
    dims: (usize, usize),
    y: OutPtr,
}

impl<const MIN: bool> Micro for Kernel<'_, MIN> {
    type Acc = __m512;
    type WPtr = *const WeightBlock;
    type APtr = *const ActBlock;

    #[inline(always)]
    unsafe fn zero() -> __m512 {
        _mm512_setzero_ps()
    }

    #[inline(always)]
    unsafe fn weights(&self, r: usize) -> *const WeightBlock {
        self.ops.weights(r)
    }

    #[inline(always)]
    unsafe fn acts(&self, p: usize) -> *const ActBlock {
        self.ops.acts(p)
    }

    #[inline(always)]
    unsafe fn tile<const TR: usize, const TH: usize>(
        &self,
        w: [*const WeightBlock; TR],
        a: [*const ActBlock; TH],
        acc: &mut [[__m512; TH]; TR],
    ) {
        tile::<TR, TH, MIN>(w, a, self.ops.nk, acc);
    }

    #[inline(always)]
    unsafe fn store<const TR: usize, const TH: usize>(
        &self,
        at: (usize, usize),
        acc: &[[__m512; TH]; TR],
    ) {
        store_tile_512(acc, self.y, self.dims, at);
    }
}

/// Every tile of one k-block of the row block `rb0..rb1`.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI available; `k` and `sums` describe buffers that
/// cover the row block (see [`run_blocks`]), whose outputs belong to this
/// worker.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn row_block<const MIN: bool>(
    k: &Kernel<'_, MIN>,
    sums: &mut Sums<'_, __m512>,
    (rb0, rb1): (usize, usize),
) {
    let np = k.dims.1.div_ceil(PANEL);
    let mut p0 = 0;
    while p0 < np {
        let wide = p0 + H <= np;
        let mut r0 = rb0;
        while r0 < rb1 {
            let tall = r0 + R <= rb1;
            match (tall, wide) {
                (true, true) => run_tile::<_, R, H>(k, sums, r0, p0),
                (true, false) => run_tile::<_, R, 1>(k, sums, r0, p0),
                (false, true) => run_tile::<_, 1, H>(k, sums, r0, p0),
                (false, false) => run_tile::<_, 1, 1>(k, sums, r0, p0),
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
    panels: &[ActBlock],
    y: &mut [f32],
) {
    if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
        run_blocks_as::<true>(ty, w, row_bytes, dims, panels, y);
    } else {
        run_blocks_as::<false>(ty, w, row_bytes, dims, panels, y);
    }
}

/// [`run_blocks`] for types with (`MIN`) or without a min.
fn run_blocks_as<const MIN: bool>(
    ty: GgmlType,
    w: LRows<'_>,
    row_bytes: usize,
    dims: (usize, usize, usize),
    panels: &[ActBlock],
    y: &mut [f32],
) {
    let (rows, n, nb) = dims;
    let np = n.div_ceil(PANEL);
    let rb = row_block_size(rows, R, RB_MAX);
    let y = OutPtr(y.as_mut_ptr());
    (0..rows.div_ceil(rb)).into_par_iter().for_each(|blk| {
        let (rb0, rb1) = (blk * rb, ((blk + 1) * rb).min(rows));
        SCRATCH.with(|cell| {
            let Scratch {
                expanded,
                wbuf,
                acc,
            } = &mut *cell.borrow_mut();
            // The AVX2 expansion covers whole rows.
            let need = (rb1 - rb0) * nb;
            if expanded.len() < need {
                expanded.resize(need, WEIGHT_ZERO);
            }
            let need = (rb1 - rb0) * KC.min(nb);
            if wbuf.len() < need {
                wbuf.resize(need, W_ZERO);
            }
            // SAFETY: the caller checked AVX2/FMA/F16C; `w` holds `rows`
            // rows of `row_bytes` (checked by `crate::matmul`) and
            // `expanded` `nb` blocks per row of the span.
            unsafe { expand_rows(ty, w, row_bytes, (rb0, rb1), nb, expanded) };
            // SAFETY: AVX-512F is available (checked by the caller); this
            // only makes a zero vector.
            let zero = unsafe { _mm512_setzero_ps() };
            tiles::k_blocks(acc, zero, rb0..rb1, np, (nb, KC), |ks, sums| {
                let nkb = ks.len();
                // SAFETY: the caller checked AVX-512 F/BW/VL/VNNI; `wbuf`
                // has `nkb` blocks per row of the span, the panels cover
                // every activation row and block, and rows rb0..rb1 of `y`
                // belong to this block alone.
                unsafe {
                    for r in 0..rb1 - rb0 {
                        convert_rows(
                            ty,
                            &expanded[r * nb + ks.start..r * nb + ks.end],
                            &mut wbuf[r * nkb..(r + 1) * nkb],
                        );
                    }
                    let k = Kernel::<MIN> {
                        ops: KBlockOps {
                            wbuf: &wbuf[..],
                            rb0,
                            panels,
                            kb: nb,
                            s0: ks.start,
                            nk: nkb,
                        },
                        dims: (rows, n),
                        y,
                    };
                    row_block(&k, sums, (rb0, rb1));
                }
            });
        });
    });
}
