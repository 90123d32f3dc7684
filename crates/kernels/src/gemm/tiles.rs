//! The tile driver of the register-tiled kernels that keep running sums
//! between k-blocks (`kquant`, `kquant_avx512`, `legacy_avx512`, `group16`),
//! after llamafile's tinyBLAS: each kernel is a [`Micro`] (its microkernel
//! over `TR` weight units × `TH` activation units, where a unit's blocks
//! start, where a finished tile goes), and this module keeps a row block's
//! sums between k-blocks ([`k_blocks`], [`Sums`]) and runs one tile over a
//! k-block ([`run_tile`]). The kernels keep what differs: their block
//! formats, how they prepare a k-block's weights, the tile sizes and the
//! walk over a row block's edge tiles.

use std::ops::Range;

/// A microkernel with the operands of one k-block of one row block.
///
/// Units: a weight unit is a weight row (or a group of 16 rows, `group16`),
/// an activation unit a panel of activation rows (or one row, `group16`).
pub(super) trait Micro {
    /// One register of sums.
    type Acc: Copy;
    /// Where one weight unit's blocks of this k-block start.
    type WPtr: Copy;
    /// Where one activation unit's blocks of this k-block start.
    type APtr: Copy;

    /// A register of zeros.
    ///
    /// # Safety
    /// The kernel's instruction set is available.
    unsafe fn zero() -> Self::Acc;

    /// Weight unit `r` (of this row block) at the k-block's first block.
    ///
    /// # Safety
    /// `r` lies in the row block the operands were made for.
    unsafe fn weights(&self, r: usize) -> Self::WPtr;

    /// Activation unit `h` at the k-block's first block.
    ///
    /// # Safety
    /// `h` is one of the call's activation units.
    unsafe fn acts(&self, h: usize) -> Self::APtr;

    /// `acc[r][h] += w[r] · a[h]` over the k-block's blocks.
    ///
    /// # Safety
    /// The kernel's instruction set is available; the pointers come from
    /// [`Micro::weights`] and [`Micro::acts`].
    unsafe fn tile<const TR: usize, const TH: usize>(
        &self,
        w: [Self::WPtr; TR],
        a: [Self::APtr; TH],
        acc: &mut [[Self::Acc; TH]; TR],
    );

    /// Stores the finished sums of the tile at `at` (weight unit,
    /// activation unit) into the product.
    ///
    /// # Safety
    /// The kernel's instruction set is available; the tile's output rows
    /// belong to this worker.
    unsafe fn store<const TR: usize, const TH: usize>(
        &self,
        at: (usize, usize),
        acc: &[[Self::Acc; TH]; TR],
    );
}

/// The operands of the kernels that expand each k-block of their row
/// block's weights into a buffer and read activation panels (`kquant`,
/// `kquant_avx512`, `legacy_avx512`): where their [`Micro::weights`] and
/// [`Micro::acts`] point.
#[derive(Clone, Copy)]
pub(super) struct KBlockOps<'a, W, A> {
    /// Weights of rows `rb0..`, `nk` blocks per row.
    pub(super) wbuf: &'a [W],
    pub(super) rb0: usize,
    /// Activation panels, `kb` blocks each.
    pub(super) panels: &'a [A],
    pub(super) kb: usize,
    /// The k-block: blocks `s0..s0 + nk`.
    pub(super) s0: usize,
    pub(super) nk: usize,
}

impl<W, A> KBlockOps<'_, W, A> {
    /// Row `r`'s expanded blocks.
    ///
    /// # Safety
    /// `r` is a row of the row block.
    #[inline(always)]
    pub(super) unsafe fn weights(&self, r: usize) -> *const W {
        self.wbuf.as_ptr().add((r - self.rb0) * self.nk)
    }

    /// Panel `p`'s blocks from the k-block's first on.
    ///
    /// # Safety
    /// `p` is one of the call's panels.
    #[inline(always)]
    pub(super) unsafe fn acts(&self, p: usize) -> *const A {
        self.panels.as_ptr().add(p * self.kb + self.s0)
    }
}

/// One row block's running sums between k-blocks (`width` per weight unit,
/// `(r - base) * width + h`) and where the current k-block lies.
pub(super) struct Sums<'a, V> {
    acc: &'a mut [V],
    width: usize,
    base: usize,
    first: bool,
    last: bool,
}

/// Runs the `TR × TH` tile at weight unit `r0`, activation unit `h0` over
/// the k-block of `sums`: continues its running sums (zero at the first
/// k-block), keeps them for the next k-block, and after the last one hands
/// them to [`Micro::store`].
///
/// # Safety
/// As [`Micro::tile`] and [`Micro::store`]; `r0..r0 + TR` lie in the row
/// block of `sums` and `h0..h0 + TH` in its `width`.
#[inline(always)]
pub(super) unsafe fn run_tile<M: Micro, const TR: usize, const TH: usize>(
    m: &M,
    sums: &mut Sums<'_, M::Acc>,
    r0: usize,
    h0: usize,
) {
    let (base, width) = (sums.base, sums.width);
    let slot = |r: usize, h: usize| (r0 + r - base) * width + h0 + h;
    let mut acc = [[M::zero(); TH]; TR];
    if !sums.first {
        for r in 0..TR {
            for h in 0..TH {
                acc[r][h] = sums.acc[slot(r, h)];
            }
        }
    }
    let w: [M::WPtr; TR] = std::array::from_fn(|r| m.weights(r0 + r));
    let a: [M::APtr; TH] = std::array::from_fn(|h| m.acts(h0 + h));
    m.tile::<TR, TH>(w, a, &mut acc);
    if !sums.last {
        for r in 0..TR {
            for h in 0..TH {
                sums.acc[slot(r, h)] = acc[r][h];
            }
        }
        return;
    }
    m.store::<TR, TH>((r0, h0), &acc);
}

/// Walks the k-blocks of one row block (weight units `units`, `width`
/// activation units): grows the worker's running-sum buffer `acc` to cover
/// the block, then calls `each` on every k-block of `kc` blocks (of `kb`),
/// in order, with the sums that carry over between them.
pub(super) fn k_blocks<V: Copy>(
    acc: &mut Vec<V>,
    zero: V,
    units: Range<usize>,
    width: usize,
    (kb, kc): (usize, usize),
    mut each: impl FnMut(Range<usize>, &mut Sums<'_, V>),
) {
    let need = units.len() * width;
    if acc.len() < need {
        acc.resize(need, zero);
    }
    for s0 in (0..kb).step_by(kc.max(1)) {
        let s1 = (s0 + kc).min(kb);
        let mut sums = Sums {
            acc: &mut acc[..need],
            width,
            base: units.start,
            first: s0 == 0,
            last: s1 == kb,
        };
        each(s0..s1, &mut sums);
    }
}
