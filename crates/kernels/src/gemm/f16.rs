//! F16 and BF16 weights × f32 activations, register-tiled (AVX2 + FMA +
//! F16C), in the style of BLIS (the two formats differ only in how a weight
//! panel is widened to f32, [`Half`]):
//!
//! - the activations are packed once per pass (of at most [`X_CHUNK`] rows)
//!   into tiles of 4–6 rows laid out `[k][row]`, so a tile's values for one
//!   `k` are adjacent (one sequential stream for the microkernel, no 4 KiB
//!   set aliasing between rows);
//! - the weight rows are split into row blocks over the rayon threads; each
//!   thread converts a block of up to [`NB_MAX`] rows × [`KC`] columns to f32
//!   into a thread-local buffer laid out as panels of [`NR`] rows `[k][row]`
//!   (zero rows pad the last panel), which stays in L2;
//! - while the microkernel runs, the weight bytes of the next packing step
//!   are prefetched a line at a time ([`Prefetcher`]), so the memory-bound
//!   packing overlaps the FMA-bound microkernel (it matters for small batches,
//!   where packing is a large share of the work);
//! - the microkernel keeps an `M × 16` tile of outputs (`M ≤ 6` activation
//!   rows × two `__m256` of weight rows) in 12 accumulators and per `k` does
//!   two aligned loads, `M` broadcasts and `2·M` FMAs; the activation tile
//!   (≤ 6 × [`KC`] floats) stays in L1 while the row block's panels pass it.
//!
//! Outputs of 16 consecutive weight rows are consecutive in `y`, so a tile is
//! stored with plain vector stores (added to the previous k-blocks' partial
//! sums). The summation order differs from the row-at-a-time dot products
//! (blocks of [`KC`], one FMA chain per output), so results agree with them to
//! rounding, not bit for bit.
//!
//! BF16 weights on a CPU with AVX-512 BF16 ([`Micro::Bf16Pairs`]) take a
//! third microkernel, as llama.cpp's BF16 path does: the activations are
//! rounded to bfloat16 (to nearest even) when packed, two consecutive `k`
//! per 32-bit word, the weight panels are the weights' own bytes regrouped
//! (two `k` of 16 rows per line, no widening), and each `vdpbf16ps` does 32
//! multiply-adds into f32 lanes, twice an FMA's. The rounded activations
//! cost about 2⁻⁹ of each product, the same order as the Q8 activations
//! of the quantized types; [`super::rounds_activations_to_bf16`] tells
//! which products take this path.

use crate::dot::avx2::Half;
use crate::shared::{OutPtr, Pool};
use rayon::prelude::*;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Weight rows per microkernel tile (two `__m256`).
const NR: usize = 16;
/// Most activation rows per microkernel tile (12 accumulators).
const MR: usize = 6;
/// Target depth of a k-block: the 6 × KC activation tile (12 KiB) stays in
/// L1 while the row block's panels (16 × KC f32, 32 KiB each) stream from L2.
/// (Shallower and deeper k-blocks measured no faster: see
/// benches/journal/kernel-dispatch.md.)
const KC: usize = 512;
/// Most weight rows per row block: the packed block (NB_MAX × KC f32,
/// 128 KiB) stays in L2 while the activation tiles stream past it.
const NB_MAX: usize = 64;
/// Most activation rows multiplied per pass (then the weights are packed
/// again): bounds the packed-activation scratch to `X_CHUNK × cols` f32 and
/// keeps the activations each row block streams in L3.
const X_CHUNK: usize = 512;

/// The packed weights of one `k` of a panel: 16 rows, one cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Lanes([f32; NR]);

const ZERO_LANES: Lanes = Lanes([0.0; NR]);

thread_local! {
    /// Each worker thread's packed weight block, reused across calls.
    static PACKED_W: RefCell<Vec<Lanes>> = const { RefCell::new(Vec::new()) };
}

/// Packed activation buffers, reused across calls. [`Micro::Bf16Pairs`]
/// stores a pair of bfloat16 per element, as the bits of an f32.
static PACKED_X: Pool<Vec<f32>> = Pool::new();

/// The microkernel a product runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Micro {
    /// [`tile`]: `M × 16` outputs in `__m256` accumulators (AVX2 + FMA).
    Avx2,
    /// [`tile512`]: `M × 32` outputs in `__m512` accumulators (AVX-512F).
    Avx512,
    /// [`tile_bf16`]: BF16 weights only, activations rounded to bfloat16,
    /// `vdpbf16ps` (AVX-512 BF16); needs an even number of columns.
    Bf16Pairs,
}

impl Micro {
    /// Weight panels per microkernel call (the AVX-512 forms take two).
    fn panels(self) -> usize {
        if self == Micro::Avx2 {
            1
        } else {
            2
        }
    }

    /// `k` values per packed lane (and per packed activation element).
    fn k_per_lane(self) -> usize {
        if self == Micro::Bf16Pairs {
            2
        } else {
            1
        }
    }
}

/// How the activation rows are cut into microkernel tiles: `tiles` tiles of
/// at most 6 rows, as even as possible (4–6 rows from 8 rows on), tile `i`
/// covering rows `start(i)..start(i + 1)`.
#[derive(Clone, Copy)]
struct Tiles {
    n: usize,
    tiles: usize,
}

impl Tiles {
    fn new(n: usize) -> Self {
        Tiles {
            n,
            tiles: n.div_ceil(MR),
        }
    }

    fn start(self, i: usize) -> usize {
        i * self.n / self.tiles
    }
}

/// See [`super::try_matmul`]; the caller has checked AVX2 + FMA + F16C.
///
/// `wide`: run the AVX-512 microkernel ([`tile512`]; the caller has checked
/// AVX-512F too).
pub(crate) fn matmul_half<H: Half>(
    w: &[u8],
    (rows, cols): (usize, usize),
    x: &[f32],
    y: &mut [f32],
    micro: Micro,
) -> bool {
    if rows == 0 || cols == 0 || !x.len().is_multiple_of(cols) {
        return false;
    }
    let n = x.len() / cols;
    // The unsafe code below relies on exactly these sizes and features; the
    // caller has checked them, this keeps the kernel sound on its own.
    if n == 0
        || Some(w.len()) != rows.checked_mul(cols).and_then(|e| e.checked_mul(2))
        || Some(y.len()) != n.checked_mul(rows)
        || !(is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c"))
        || (micro == Micro::Avx512 && !is_x86_feature_detected!("avx512f"))
        || (micro == Micro::Bf16Pairs
            && !(H::IS_BF16 && cols.is_multiple_of(2) && crate::isa::has_avx512_bf16()))
    {
        return false;
    }

    PACKED_X.with(|xp| {
        // Activation rows in chunks of at most X_CHUNK: the packed
        // activations (and the chunk of `x` each row block streams) stay a
        // few MiB.
        let chunks = n.div_ceil(X_CHUNK);
        for c in 0..chunks {
            let (t0, t1) = (c * n / chunks, (c + 1) * n / chunks);
            multiply_chunk::<H>(
                w,
                (rows, cols),
                &x[t0 * cols..t1 * cols],
                &mut y[t0 * rows..t1 * rows],
                xp,
                micro,
            );
        }
    });
    true
}

/// [`matmul_half`] for `n = x.len() / cols ≥ 1` activation rows, shapes and
/// CPU features checked; `xp` is scratch space for the packed activations.
fn multiply_chunk<H: Half>(
    w: &[u8],
    (rows, cols): (usize, usize),
    x: &[f32],
    y: &mut [f32],
    xp: &mut Vec<f32>,
    micro: Micro,
) {
    let tiles = Tiles::new(x.len() / cols);
    let kl = micro.k_per_lane();
    // Tile i's packed rows live at i * MR * cols (room for a full tile).
    xp.resize(tiles.tiles * MR * cols, 0.0);
    xp.par_chunks_mut(MR * cols)
        .enumerate()
        .for_each(|(i, chunk)| {
            let (t0, t1) = (tiles.start(i), tiles.start(i + 1));
            let (x, out) = (
                &x[t0 * cols..t1 * cols],
                &mut chunk[..(t1 - t0) * cols / kl],
            );
            if micro == Micro::Bf16Pairs {
                // SAFETY: `Micro::Bf16Pairs` runs only where the CPU has
                // AVX-512 BF16 (checked by `matmul_half`), so AVX-512 F/BW.
                unsafe { pack_x_bf16_avx512(x, cols, out) };
            } else {
                pack_x(x, cols, out);
            }
        });

    // Depth blocks of (almost) equal size, at most KC, a whole number of
    // lanes (`cols` is even for the bf16 pairs).
    let kblocks = cols.div_ceil(KC);
    let kc = cols.div_ceil(kblocks).next_multiple_of(kl);
    // Row blocks: about 4 per thread for balance, whole panels, at most NB_MAX rows.
    let threads = rayon::current_num_threads().max(1);
    let nb = super::row_block_size(rows, NR, NB_MAX);
    let row_blocks = rows.div_ceil(nb);
    // Few row blocks (small `rows`): also split the activation tiles.
    let groups = (2 * threads)
        .div_ceil(row_blocks)
        .clamp(1, tiles.tiles.div_ceil(2).max(1));

    let out = OutPtr(y.as_mut_ptr());
    let xp_ref = &xp[..];
    (0..row_blocks * groups).into_par_iter().for_each(|task| {
        let (rb, g) = (task / groups, task % groups);
        let r0 = rb * nb;
        let r1 = (r0 + nb).min(rows);
        let (i0, i1) = (g * tiles.tiles / groups, (g + 1) * tiles.tiles / groups);
        PACKED_W.with(|cell| {
            let mut local = Vec::new();
            let mut borrowed = cell.try_borrow_mut();
            let buf = match borrowed.as_mut() {
                Ok(b) => &mut **b,
                Err(_) => &mut local,
            };
            let need = (r1 - r0).div_ceil(NR) * kc / kl;
            if buf.len() < need {
                buf.resize(need, ZERO_LANES);
            }
            let job = Block {
                w,
                rows,
                cols,
                r0,
                r1,
                xp: xp_ref,
                tiles,
                i0,
                i1,
                kc,
                micro,
            };
            // SAFETY: the CPU has AVX2, FMA and F16C and the shapes match
            // (checked by `matmul_half`), `buf` holds `need` lanes, and this
            // task alone writes rows r0..r1 of the activation rows of tiles
            // i0..i1 of `y` (see `OutPtr`).
            unsafe { job.run::<H>(&mut buf[..need], out.get()) };
        });
    });
}

/// Packs `m = x.len() / cols` activation rows as `[k][row]` into `out`.
fn pack_x(x: &[f32], cols: usize, out: &mut [f32]) {
    let m = x.len() / cols;
    for (k, o) in out.chunks_exact_mut(m).enumerate() {
        for (s, v) in o.iter_mut().enumerate() {
            *v = x[s * cols + k];
        }
    }
}

/// Packs `m = x.len() / cols` activation rows (`cols` even) for
/// [`Micro::Bf16Pairs`]: `out[j * m + s]` holds `x[s][2j]` (low half) and
/// `x[s][2j + 1]` (high half) rounded to bfloat16, as the bits of an f32.
///
/// `out` may start at pair `j0`: it then holds pairs `j0..`, as the tail of
/// [`pack_x_bf16_avx512`].
fn pack_x_bf16(x: &[f32], cols: usize, j0: usize, out: &mut [f32]) {
    let m = x.len() / cols;
    let bf = |v: f32| half::bf16::from_f32(v).to_bits() as u32;
    for (jj, o) in out.chunks_exact_mut(m).enumerate() {
        let j = j0 + jj;
        for (s, v) in o.iter_mut().enumerate() {
            let (lo, hi) = (x[s * cols + 2 * j], x[s * cols + 2 * j + 1]);
            *v = f32::from_bits(bf(lo) | bf(hi) << 16);
        }
    }
}

/// [`pack_x_bf16`] with AVX-512, bit for bit: 16 pairs of a row at a time
/// rounded in vector lanes (the same rounding as `half::bf16::from_f32`: to
/// nearest even, a NaN kept quiet), then spread to the `[pair][row]` layout.
/// The scalar form rounded one value at a time, and on small models took
/// as long as the products themselves (measurements:
/// benches/journal/kernel-dispatch.md).
///
/// # Safety
/// AVX-512 F/BW available; `x.len()` a multiple of `cols`, `cols` even and
/// `out.len() == x.len() / 2`, at most [`MR`] rows.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn pack_x_bf16_avx512(x: &[f32], cols: usize, out: &mut [f32]) {
    let m = x.len() / cols;
    let pairs = cols / 2;
    assert!(m <= MR && out.len() == m * pairs && x.len() == m * cols);
    // Rounds each f32 lane to bfloat16, in the lane's low 16 bits.
    #[inline(always)]
    unsafe fn round(v: __m512i) -> __m512i {
        let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(v), _mm512_set1_epi32(1));
        let bias = _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), lsb);
        let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(v, bias));
        let abs = _mm512_and_si512(v, _mm512_set1_epi32(0x7FFF_FFFF));
        let nan = _mm512_cmpgt_epu32_mask(abs, _mm512_set1_epi32(0x7F80_0000));
        let quiet = _mm512_or_si512(_mm512_srli_epi32::<16>(v), _mm512_set1_epi32(0x40));
        _mm512_mask_blend_epi32(nan, rounded, quiet)
    }
    // 16-bit lane i of the result: the low half of dword i of (a, b).
    let evens = _mm512_set_epi16(
        62, 60, 58, 56, 54, 52, 50, 48, 46, 44, 42, 40, 38, 36, 34, 32, 30, 28, 26, 24, 22, 20, 18,
        16, 14, 12, 10, 8, 6, 4, 2, 0,
    );
    let mut tmp = [[0u32; 16]; MR];
    let mut j0 = 0;
    while j0 + 16 <= pairs {
        for (s, t) in tmp.iter_mut().enumerate().take(m) {
            // SAFETY: s < m and 2·j0 + 32 ≤ cols: 32 f32 inside row s of
            // `x`; unaligned loads, a 64-byte store into `tmp[s]`.
            unsafe {
                let p = x.as_ptr().add(s * cols + 2 * j0);
                let a = round(_mm512_loadu_si512(p.cast()));
                let b = round(_mm512_loadu_si512(p.add(16).cast()));
                let v = _mm512_permutex2var_epi16(a, evens, b);
                _mm512_storeu_si512(t.as_mut_ptr().cast(), v);
            }
        }
        let o = &mut out[j0 * m..(j0 + 16) * m];
        for (jj, o) in o.chunks_exact_mut(m).enumerate() {
            for (s, v) in o.iter_mut().enumerate() {
                *v = f32::from_bits(tmp[s][jj]);
            }
        }
        j0 += 16;
    }
    pack_x_bf16(x, cols, j0, &mut out[j0 * m..]);
}

/// Prefetches the weight bytes the next packing step will read, one cache
/// line at a time, while the microkernel computes on the current block: the
/// packing (bound by memory) and the microkernel (bound by FMA) then overlap
/// instead of alternating. A run of `rows_left` row segments of `seg` bytes,
/// `stride` bytes apart; addresses are only computed (wrapping), never read.
struct Prefetcher {
    row: *const u8,
    stride: usize,
    seg: usize,
    off: usize,
    rows_left: usize,
    /// One line every `every` microkernel steps; `count` steps to the next.
    every: u32,
    count: u32,
}

impl Prefetcher {
    const NONE: Prefetcher = Prefetcher {
        row: std::ptr::null(),
        stride: 0,
        seg: 0,
        off: 0,
        rows_left: 0,
        every: 1,
        count: 1,
    };

    /// Rows `r0..r1`, columns `p0..p1` of the `cols`-wide f16 matrix `w`,
    /// spread evenly over `steps` microkernel steps.
    fn new(
        w: &[u8],
        cols: usize,
        r0: usize,
        r1: usize,
        p0: usize,
        p1: usize,
        steps: usize,
    ) -> Self {
        let seg = 2 * (p1 - p0);
        let lines = ((r1 - r0) * seg.div_ceil(64)).max(1);
        let every = (steps / lines).clamp(1, 1 << 16) as u32;
        Prefetcher {
            row: w.as_ptr().wrapping_add(2 * (r0 * cols + p0)),
            stride: 2 * cols,
            seg,
            off: 0,
            rows_left: r1 - r0,
            every,
            count: every,
        }
    }

    /// One microkernel step: prefetches a line every `every` steps.
    #[inline(always)]
    fn tick(&mut self) {
        self.count -= 1;
        if self.count == 0 {
            self.count = self.every;
            self.step();
        }
    }

    /// `n` microkernel steps at once, at most one line: where `every < n`
    /// (fewer steps than lines to fetch) the prefetch then covers less than
    /// the whole next block, and the packing reads the rest from memory.
    #[inline(always)]
    fn tick_n(&mut self, n: u32) {
        if self.count <= n {
            self.count = self.every;
            self.step();
        } else {
            self.count -= n;
        }
    }

    fn done(&self) -> bool {
        self.rows_left == 0
    }

    /// Prefetches the next line, if any.
    #[inline(always)]
    fn step(&mut self) {
        if self.rows_left == 0 {
            return;
        }
        // SAFETY: SSE is part of x86-64; a prefetch never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(self.row.wrapping_add(self.off) as *const i8) };
        self.off += 64;
        if self.off >= self.seg {
            self.off = 0;
            self.row = self.row.wrapping_add(self.stride);
            self.rows_left -= 1;
        }
    }
}

/// One task: weight rows `r0..r1` against activation tiles `i0..i1`.
struct Block<'a> {
    w: &'a [u8],
    rows: usize,
    cols: usize,
    r0: usize,
    r1: usize,
    xp: &'a [f32],
    tiles: Tiles,
    i0: usize,
    i1: usize,
    kc: usize,
    micro: Micro,
}

impl Block<'_> {
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `w` holds `rows × cols` f16, `xp` the
    /// packed activations of `tiles` (tile `i` at `i * MR * cols`), `y` points
    /// to `n × rows` f32 of which this call may write rows `r0..r1` of the
    /// activation rows of tiles `i0..i1`; `buf` holds at least
    /// `ceil((r1 - r0) / NR) * kc / k_per_lane` lanes. For
    /// [`Micro::Bf16Pairs`], `H` is BF16, `cols` and `kc` are even and the
    /// CPU has AVX-512 BF16.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn run<H: Half>(&self, buf: &mut [Lanes], y: *mut f32) {
        let (rows, cols) = (self.rows, self.cols);
        let panels = (self.r1 - self.r0).div_ceil(NR);
        let pairs = self.micro == Micro::Bf16Pairs;
        let kpl = self.micro.k_per_lane();
        let mut p0 = 0;
        while p0 < cols {
            let kc = self.kc.min(cols - p0);
            // Lanes per panel in this k-block.
            let nl = kc / kpl;
            for j in 0..panels {
                let pr0 = self.r0 + j * NR;
                let valid = (self.r1 - pr0).min(NR);
                let out = &mut buf[j * nl..(j + 1) * nl];
                // SAFETY: rows pr0..pr0 + valid and columns p0..p0 + kc are
                // inside `w`; the panel slice holds kc / kpl lanes.
                unsafe {
                    if pairs {
                        pack_w_pairs(self.w, cols, pr0, valid, p0, out)
                    } else {
                        pack_w::<H>(self.w, cols, pr0, valid, p0, out)
                    }
                };
            }
            // What the next packing step reads: the next k-block of these
            // rows, or (a guess: rayon hands a thread neighbouring tasks) the
            // first k-block of the next row block.
            let steps = (self.i1 - self.i0) * panels * nl;
            let mut pf = if p0 + kc < cols {
                let p1 = (p0 + kc + self.kc).min(cols);
                Prefetcher::new(self.w, cols, self.r0, self.r1, p0 + kc, p1, steps)
            } else if self.r1 < rows {
                let r2 = (self.r1 + (self.r1 - self.r0)).min(rows);
                Prefetcher::new(self.w, cols, self.r1, r2, 0, self.kc.min(cols), steps)
            } else {
                Prefetcher::NONE
            };
            for i in self.i0..self.i1 {
                let t0 = self.tiles.start(i);
                let m = self.tiles.start(i + 1) - t0;
                let base = i * MR * cols;
                let xt = &self.xp[base + p0 / kpl * m..base + (p0 + kc) / kpl * m];
                let mut j = 0;
                while j < panels {
                    // The AVX-512 microkernels take two panels at once.
                    let np = if j + 1 < panels {
                        self.micro.panels()
                    } else {
                        1
                    };
                    let pr0 = self.r0 + j * NR;
                    let valid = (self.r1 - pr0).min(np * NR);
                    let panel = &buf[j * nl..(j + np) * nl];
                    // SAFETY: activation rows t0..t0 + m and weight rows
                    // pr0..pr0 + valid are inside `y` (n × rows) and owned by
                    // this task; `xt` holds nl × m values, `panel` np × nl
                    // lanes; the CPU features of `micro` were checked.
                    unsafe {
                        let yt = y.add(t0 * rows + pr0);
                        let acc = p0 > 0;
                        let out = (yt, rows, valid, acc);
                        let micro = self.micro;
                        match m {
                            6 => tile_any::<6>(micro, (panel, np), xt, out, &mut pf),
                            5 => tile_any::<5>(micro, (panel, np), xt, out, &mut pf),
                            4 => tile_any::<4>(micro, (panel, np), xt, out, &mut pf),
                            3 => tile_any::<3>(micro, (panel, np), xt, out, &mut pf),
                            2 => tile_any::<2>(micro, (panel, np), xt, out, &mut pf),
                            _ => tile_any::<1>(micro, (panel, np), xt, out, &mut pf),
                        }
                    }
                    j += np;
                }
            }
            p0 += kc;
        }
    }
}

/// Where the values of a 16-row weight panel come from: lane `j` of panel
/// row `r` (an f32, or for [`Micro::Bf16Pairs`] the bits of two bfloat16).
trait PanelSource {
    /// Lanes `j..j + 8` of row `r`.
    ///
    /// # Safety
    /// AVX2 and F16C available; `r` below the panel's valid rows and
    /// `j + 8` at most its lane count.
    unsafe fn load8(&self, r: usize, j: usize) -> __m256;
    /// Lane `j` of row `r` (same bounds, one lane), for the tails.
    fn one(&self, r: usize, j: usize) -> f32;
}

/// 16-bit float weights widened to f32: rows from `r0`, columns from `p0`.
struct Widened<'a, H> {
    w: &'a [u8],
    cols: usize,
    r0: usize,
    p0: usize,
    half: std::marker::PhantomData<H>,
}

impl<H: Half> PanelSource for Widened<'_, H> {
    #[inline(always)]
    unsafe fn load8(&self, r: usize, j: usize) -> __m256 {
        // SAFETY: row r0 + r, columns p0 + j..p0 + j + 8 lie inside `w`
        // (the caller's bounds and `pack_w`'s assert): 16 bytes.
        unsafe {
            H::widen8(
                self.w
                    .as_ptr()
                    .add(2 * ((self.r0 + r) * self.cols + self.p0 + j)),
            )
        }
    }
    fn one(&self, r: usize, j: usize) -> f32 {
        let o = 2 * ((self.r0 + r) * self.cols + self.p0 + j);
        H::to_f32([self.w[o], self.w[o + 1]])
    }
}

/// bfloat16 weights kept as they are, two columns per lane: lane `j` is the
/// word of columns `p0 + 2j` (low half) and `p0 + 2j + 1` (high half).
struct Pairs<'a> {
    w: &'a [u8],
    cols: usize,
    r0: usize,
    p0: usize,
}

impl PanelSource for Pairs<'_> {
    #[inline(always)]
    unsafe fn load8(&self, r: usize, j: usize) -> __m256 {
        // SAFETY: row r0 + r, columns p0 + 2j..p0 + 2j + 16 lie inside `w`
        // (the caller's bounds and `pack_w_pairs`'s assert): 32 bytes,
        // moved as bit patterns.
        unsafe {
            let o = 2 * ((self.r0 + r) * self.cols + self.p0 + 2 * j);
            _mm256_loadu_ps(self.w.as_ptr().add(o) as *const f32)
        }
    }
    fn one(&self, r: usize, j: usize) -> f32 {
        let o = 2 * ((self.r0 + r) * self.cols + self.p0 + 2 * j);
        let w = &self.w;
        f32::from_bits(u32::from_le_bytes([w[o], w[o + 1], w[o + 2], w[o + 3]]))
    }
}

/// Fills a panel `out[j].0[r]` from `src`'s first `valid ≤ 16` rows; rows
/// past `valid` are zero. Full panels go 8 × 8 through [`transpose8`].
///
/// # Safety
/// AVX2 and F16C available; `src` holds `valid` rows of `out.len()` lanes.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack_panel<S: PanelSource>(src: &S, valid: usize, out: &mut [Lanes]) {
    if valid < NR {
        // The last panel of a matrix whose rows are not a multiple of 16.
        for (j, lanes) in out.iter_mut().enumerate() {
            for (r, v) in lanes.0.iter_mut().enumerate() {
                *v = if r < valid { src.one(r, j) } else { 0.0 };
            }
        }
        return;
    }
    let j8 = out.len() / 8 * 8;
    for h0 in [0, 8] {
        let mut j = 0;
        while j < j8 {
            // SAFETY: rows h0 + i < 16 = valid, lanes j..j + 8 ≤ j8.
            let v: [__m256; 8] = std::array::from_fn(|i| unsafe { src.load8(h0 + i, j) });
            let t = transpose8(v);
            for (q, tq) in t.iter().enumerate() {
                // SAFETY: `Lanes` is 64-byte aligned, so lanes h0..h0 + 8 are
                // a 32-byte aligned run of 8 f32 inside `out[j + q]`.
                unsafe { _mm256_store_ps(out[j + q].0.as_mut_ptr().add(h0), *tq) };
            }
            j += 8;
        }
        for (jj, lanes) in out.iter_mut().enumerate().skip(j8) {
            for i in 0..8 {
                lanes.0[h0 + i] = src.one(h0 + i, jj);
            }
        }
    }
}

/// Converts weight rows `r0..r0 + valid` (`valid ≤ 16`), columns
/// `p0..p0 + out.len()`, into a panel `out[k].0[row]`; rows past `valid` are zero.
///
/// # Safety
/// The CPU has AVX2 and F16C; `w` holds rows of `cols` f16.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack_w<H: Half>(
    w: &[u8],
    cols: usize,
    r0: usize,
    valid: usize,
    p0: usize,
    out: &mut [Lanes],
) {
    assert!(valid <= NR && (r0 + valid) * cols * 2 <= w.len() && p0 + out.len() <= cols);
    let src = Widened::<H> {
        w,
        cols,
        r0,
        p0,
        half: std::marker::PhantomData,
    };
    // SAFETY: the CPU features are the caller's; the assert bounds the rows
    // and columns `src` reads.
    unsafe { pack_panel(&src, valid, out) }
}

/// [`pack_w`] for [`Micro::Bf16Pairs`]: lane `j` of `out` holds, for each
/// of the 16 rows, the 32-bit word of bfloat16 columns `p0 + 2j` (low half)
/// and `p0 + 2j + 1` (high half): the weights' own bytes, regrouped.
///
/// # Safety
/// The CPU has AVX2 and F16C; `w` holds rows of `cols` bf16.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack_w_pairs(
    w: &[u8],
    cols: usize,
    r0: usize,
    valid: usize,
    p0: usize,
    out: &mut [Lanes],
) {
    assert!(valid <= NR && (r0 + valid) * cols * 2 <= w.len() && p0 + 2 * out.len() <= cols);
    // SAFETY: as in `pack_w`.
    unsafe { pack_panel(&Pairs { w, cols, r0, p0 }, valid, out) }
}

/// 8 × 8 transpose: `out[q]` holds element `q` of each input vector.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ]
}

/// The microkernel of `micro` on `panels.1` panels of
/// `panels.0.len() / panels.1` lanes each (two only for the AVX-512 forms);
/// `out` is `(y, ldy, valid, accumulate)`, `valid` counting the rows of
/// every panel.
///
/// # Safety
/// As [`tile`]; the CPU features of `micro` available.
#[inline(always)]
unsafe fn tile_any<const M: usize>(
    micro: Micro,
    (panel, np): (&[Lanes], usize),
    xt: &[f32],
    out: (*mut f32, usize, usize, bool),
    pf: &mut Prefetcher,
) {
    let (y, ldy, valid, accumulate) = out;
    // SAFETY: forwarded contract.
    unsafe {
        match (micro, np) {
            (Micro::Avx512, 2) => tile512::<M, 2>(panel, xt, out, pf),
            (Micro::Avx512, _) => tile512::<M, 1>(panel, xt, out, pf),
            (Micro::Bf16Pairs, 2) => tile_bf16::<M, 2>(panel, xt, out, pf),
            (Micro::Bf16Pairs, _) => tile_bf16::<M, 1>(panel, xt, out, pf),
            (Micro::Avx2, _) => tile::<M>(panel, xt, y, ldy, valid, accumulate, pf),
        }
    }
}

/// [`tile512`] on bfloat16 pairs: lane `j` of a panel holds two `k` of its
/// 16 rows, `xt[j * M + i]` the same two `k` of activation row `i`, and one
/// `vdpbf16ps` adds both products into each row's f32 lane.
///
/// # Safety
/// As [`tile512`] (`xt` holds `M` words per lane); AVX-512 BF16 available.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bf16")]
unsafe fn tile_bf16<const M: usize, const P: usize>(
    panel: &[Lanes],
    xt: &[f32],
    out: (*mut f32, usize, usize, bool),
    pf: &mut Prefetcher,
) {
    let nl = panel.len() / P;
    assert!(xt.len() >= nl * M && out.2 <= P * NR && panel.len() == P * nl);
    let mut acc = [[_mm512_setzero_ps(); P]; M];
    let b = panel.as_ptr() as *const f32;
    let a = xt.as_ptr() as *const i32;
    for j in 0..nl {
        if !pf.done() {
            pf.tick();
        }
        // SAFETY: j < nl: lane j of each of the P panels (64 bytes, 64-byte
        // aligned); j * M + i < nl * M ≤ xt.len(). `__m512bh` is 32
        // bfloat16 in 64 bytes, the same size as `__m512i`: any bits are
        // valid for both.
        unsafe {
            let bk: [__m512bh; P] = std::array::from_fn(|p| {
                std::mem::transmute::<__m512, __m512bh>(_mm512_load_ps(b.add((p * nl + j) * NR)))
            });
            for (i, acc_i) in acc.iter_mut().enumerate() {
                let ai =
                    std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(*a.add(j * M + i)));
                for p in 0..P {
                    acc_i[p] = _mm512_dpbf16_ps(acc_i[p], ai, bk[p]);
                }
            }
        }
    }
    // SAFETY: forwarded contract.
    unsafe { store512(&acc, out) }
}

/// [`tile`] with AVX-512 over `P` adjacent panels (`panel`: `P` runs of
/// `kc` lanes): one `k` of a panel's 16 weight rows is one `__m512`, so a
/// broadcast activation feeds `P` FMAs and the `M × P` accumulators keep
/// enough independent FMA chains in flight. `valid ≤ 16·P` rows.
///
/// # Safety
/// As [`tile`]; AVX-512F available; `panel.len()` a multiple of `P`.
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn tile512<const M: usize, const P: usize>(
    panel: &[Lanes],
    xt: &[f32],
    (y, ldy, valid, accumulate): (*mut f32, usize, usize, bool),
    pf: &mut Prefetcher,
) {
    let kc = panel.len() / P;
    assert!(xt.len() >= kc * M && valid <= P * NR && panel.len() == P * kc);
    let mut acc = [[_mm512_setzero_ps(); P]; M];
    let b = panel.as_ptr() as *const f32;
    let a = xt.as_ptr();
    // SAFETY (of each call): k < kc: lane k of each of the P panels (16 f32,
    // 64-byte aligned); k * M + i < kc * M ≤ xt.len().
    let step = |acc: &mut [[__m512; P]; M], k: usize| unsafe {
        let bk: [__m512; P] = std::array::from_fn(|p| _mm512_load_ps(b.add((p * kc + k) * NR)));
        for (i, acc_i) in acc.iter_mut().enumerate() {
            let ai = _mm512_set1_ps(*a.add(k * M + i));
            for p in 0..P {
                acc_i[p] = _mm512_fmadd_ps(ai, bk[p], acc_i[p]);
            }
        }
    };
    // The prefetcher ticks once per UNROLL steps (its counter update, a
    // store, and branch were in every step), which raised the median speed
    // (measurements: benches/journal/kernel-dispatch.md).
    const UNROLL: usize = 4;
    let mut k = 0;
    while k + UNROLL <= kc {
        if !pf.done() {
            pf.tick_n(UNROLL as u32);
        }
        for u in 0..UNROLL {
            step(&mut acc, k + u);
        }
        k += UNROLL;
    }
    while k < kc {
        if !pf.done() {
            pf.tick();
        }
        step(&mut acc, k);
        k += 1;
    }
    // SAFETY: forwarded contract.
    unsafe { store512(&acc, (y, ldy, valid, accumulate)) }
}

/// Stores (or adds, if `accumulate`) the `M × P` accumulators of an
/// AVX-512 microkernel: `acc[i][p]` to `y[i * ldy + 16p..]`, the first
/// `valid` rows of the `P` panels.
///
/// # Safety
/// AVX-512F available; row `i < M` of `y` has `valid ≤ 16·P` writable f32
/// that no other thread accesses.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn store512<const M: usize, const P: usize>(
    acc: &[[__m512; P]; M],
    (y, ldy, valid, accumulate): (*mut f32, usize, usize, bool),
) {
    for (i, acc_i) in acc.iter().enumerate() {
        for (p, &v) in acc_i.iter().enumerate() {
            let live = valid.saturating_sub(p * NR).min(NR);
            if live == 0 {
                continue;
            }
            // SAFETY: row i < M of `y` has `valid` writable f32 (caller's
            // contract); the mask covers this panel's `live` of them.
            unsafe {
                let yp = y.add(i * ldy + p * NR);
                let mask = ((1u32 << live) - 1) as __mmask16;
                let v = if accumulate {
                    _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, yp))
                } else {
                    v
                };
                _mm512_mask_storeu_ps(yp, mask, v);
            }
        }
    }
}

/// The microkernel: `y[i * ldy + r] (+)= Σ_k xt[k * M + i] · panel[k].0[r]`
/// for `i < M`, `r < valid`; adds to `y` when `accumulate`, else overwrites.
/// Advances `pf` by one line every second `k` until it is done.
///
/// # Safety
/// The CPU has AVX2 and FMA; `xt` holds `panel.len() * M` values; `y` points
/// to `M` rows (stride `ldy`) of at least `valid ≤ 16` writable f32 that no
/// other thread accesses.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<const M: usize>(
    panel: &[Lanes],
    xt: &[f32],
    y: *mut f32,
    ldy: usize,
    valid: usize,
    accumulate: bool,
    pf: &mut Prefetcher,
) {
    // SAFETY: forwarded contract.
    unsafe {
        if pf.done() {
            tile_impl::<M, false>(panel, xt, y, ldy, valid, accumulate, pf)
        } else {
            tile_impl::<M, true>(panel, xt, y, ldy, valid, accumulate, pf)
        }
    }
}

/// [`tile`], with the prefetch steps compiled in (`PF`) or out.
///
/// # Safety
/// As [`tile`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_impl<const M: usize, const PF: bool>(
    panel: &[Lanes],
    xt: &[f32],
    y: *mut f32,
    ldy: usize,
    valid: usize,
    accumulate: bool,
    pf: &mut Prefetcher,
) {
    let kc = panel.len();
    assert!(xt.len() >= kc * M && valid <= NR);
    let mut acc = [[_mm256_setzero_ps(); 2]; M];
    let b = panel.as_ptr() as *const f32;
    let a = xt.as_ptr();
    for k in 0..kc {
        if PF {
            pf.tick();
        }
        // SAFETY: k < kc = panel.len(); each `Lanes` is 16 f32, 64-byte aligned.
        let (b0, b1) = unsafe {
            (
                _mm256_load_ps(b.add(k * NR)),
                _mm256_load_ps(b.add(k * NR + 8)),
            )
        };
        for (i, acc_i) in acc.iter_mut().enumerate() {
            // SAFETY: k * M + i < kc * M ≤ xt.len().
            let ai = _mm256_set1_ps(unsafe { *a.add(k * M + i) });
            acc_i[0] = _mm256_fmadd_ps(ai, b0, acc_i[0]);
            acc_i[1] = _mm256_fmadd_ps(ai, b1, acc_i[1]);
        }
    }
    for (i, acc_i) in acc.iter().enumerate() {
        // SAFETY: row i < M of `y` has `valid` writable f32 (caller's contract).
        let yi = unsafe { y.add(i * ldy) };
        if valid == NR {
            // SAFETY: 16 f32 at yi are writable (valid == 16); unaligned access.
            unsafe {
                let (mut v0, mut v1) = (acc_i[0], acc_i[1]);
                if accumulate {
                    v0 = _mm256_add_ps(v0, _mm256_loadu_ps(yi));
                    v1 = _mm256_add_ps(v1, _mm256_loadu_ps(yi.add(8)));
                }
                _mm256_storeu_ps(yi, v0);
                _mm256_storeu_ps(yi.add(8), v1);
            }
        } else {
            let mut tmp = [0f32; NR];
            // SAFETY: `tmp` holds 16 f32; unaligned stores.
            unsafe {
                _mm256_storeu_ps(tmp.as_mut_ptr(), acc_i[0]);
                _mm256_storeu_ps(tmp.as_mut_ptr().add(8), acc_i[1]);
            }
            for (r, &v) in tmp.iter().enumerate().take(valid) {
                // SAFETY: r < valid: inside row i of `y`.
                unsafe {
                    let p = yi.add(r);
                    *p = if accumulate { *p + v } else { v };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX-512 packing of bfloat16 pairs against the scalar one, bit for
    /// bit: every row count of a tile, widths with and without a tail, and
    /// values that round up, round to even, overflow, and NaN, infinities and
    /// subnormals.
    #[test]
    fn pack_x_bf16_avx512_matches_the_scalar_packing() {
        if !(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")) {
            eprintln!("pack_x_bf16_avx512: no AVX-512 F/BW on this CPU, not run");
            return;
        }
        let specials = [
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7F80_0001),
            f32::from_bits(0xFFC0_1234),
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::from_bits(0x7F7F_8000),
            f32::from_bits(0x3F80_8000),
            f32::from_bits(0x3F81_8000),
            f32::from_bits(0x3F80_8001),
            f32::from_bits(0x0000_8000),
            f32::from_bits(0x8001_7FFF),
            f32::MIN_POSITIVE,
            0.0,
            -0.0,
        ];
        let mut seed = 0x1234_5678_u32;
        for cols in [2, 30, 32, 34, 64, 98, 576] {
            for m in 1..=MR {
                let x: Vec<f32> = (0..m * cols)
                    .map(|i| {
                        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        if i % 5 == 0 {
                            specials[(seed >> 8) as usize % specials.len()]
                        } else {
                            f32::from_bits(seed)
                        }
                    })
                    .collect();
                let mut want = vec![0f32; m * cols / 2];
                let mut got = vec![1f32; m * cols / 2];
                pack_x_bf16(&x, cols, 0, &mut want);
                // SAFETY: AVX-512 F/BW checked above; sizes as required.
                unsafe { pack_x_bf16_avx512(&x, cols, &mut got) };
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(g.to_bits(), w.to_bits(), "cols {cols} m {m} word {i}");
                }
            }
        }
    }
}
