//! Preallocated per-layer KV cache. Without a sliding window it holds `ctx_size`
//! positions at slots `0..ctx_size`; with a window it is a rolling buffer of
//! `window + MAX_UBATCH` slots where position `p` lives in slot `p % capacity`, so
//! memory stays bounded however long generation runs. New keys/values are written
//! in place (`slice_set`); the cache is never re-concatenated.

use candle_core::{DType, Device, Tensor};

use crate::error::ModelError;

/// One layer's keys and values, `[n_head_kv, capacity, head_dim]` each (f32).
#[derive(Debug, Clone)]
pub struct KvCache {
    k: Tensor,
    v: Tensor,
    capacity: usize,
    rolling: bool,
}

impl KvCache {
    pub fn new(
        n_head_kv: usize,
        capacity: usize,
        head_dim: usize,
        rolling: bool,
        device: &Device,
    ) -> Result<KvCache, ModelError> {
        let shape = (n_head_kv, capacity, head_dim);
        Ok(KvCache {
            k: Tensor::zeros(shape, DType::F32, device)?,
            v: Tensor::zeros(shape, DType::F32, device)?,
            capacity,
            rolling,
        })
    }

    /// Bytes held by this layer's cache.
    pub fn bytes(&self) -> usize {
        2 * self.k.elem_count() * self.k.dtype().size_in_bytes()
    }

    /// Writes `k`, `v` (`[n_head_kv, n, head_dim]`, contiguous) for positions
    /// `pos..pos + n`. The caller guarantees `n <= capacity` (and, without rolling,
    /// `pos + n <= capacity`).
    pub fn write(&mut self, k: &Tensor, v: &Tensor, pos: usize) -> Result<(), ModelError> {
        let n = k.dim(1)?;
        let start = if self.rolling {
            pos % self.capacity
        } else {
            pos
        };
        let first = n.min(self.capacity - start);
        for (cache, src) in [(&self.k, k), (&self.v, v)] {
            if first == n {
                cache.slice_set(src, 1, start)?;
            } else {
                cache.slice_set(&src.narrow(1, 0, first)?.contiguous()?, 1, start)?;
                cache.slice_set(&src.narrow(1, first, n - first)?.contiguous()?, 1, 0)?;
            }
        }
        Ok(())
    }

    /// Keys and values of the slots attention reads once positions `0..end` are
    /// written: slots `0..min(end, capacity)` (slot order, see [`slot_positions`]).
    pub fn view(&self, end: usize) -> Result<(Tensor, Tensor), ModelError> {
        let len = end.min(self.capacity);
        if len == self.capacity {
            Ok((self.k.clone(), self.v.clone()))
        } else {
            Ok((self.k.narrow(1, 0, len)?, self.v.narrow(1, 0, len)?))
        }
    }
}

/// The position held by each of the `min(end, capacity)` slots that
/// [`KvCache::view`] returns after positions `0..end` were written.
pub fn slot_positions(end: usize, capacity: usize, rolling: bool) -> Vec<usize> {
    let len = end.min(capacity);
    if !rolling || end <= capacity {
        return (0..len).collect();
    }
    let last = end - 1;
    (0..len)
        .map(|s| last - (last % capacity + capacity - s) % capacity)
        .collect()
}

/// Additive attention mask `[n, slots]` (0 or -inf) for queries at positions
/// `start..start + n`: a key is visible when it is not in the future and, with a
/// window `w`, less than `w` positions back. `None` when nothing is masked.
pub fn attention_mask(
    start: usize,
    n: usize,
    slots: &[usize],
    window: Option<usize>,
    device: &Device,
) -> Result<Option<Tensor>, ModelError> {
    let mut mask = Vec::with_capacity(n * slots.len());
    let mut any = false;
    for q in start..start + n {
        for &p in slots {
            let visible = p <= q && window.is_none_or(|w| q - p < w);
            any |= !visible;
            mask.push(if visible { 0.0 } else { f32::NEG_INFINITY });
        }
    }
    if !any {
        return Ok(None);
    }
    Ok(Some(Tensor::from_vec(mask, (n, slots.len()), device)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolling_slots_hold_latest_positions() {
        // capacity 4, positions 0..10 written: slot s holds the last p < 10 with p % 4 == s.
        assert_eq!(slot_positions(10, 4, true), vec![8, 9, 6, 7]);
        assert_eq!(slot_positions(3, 4, true), vec![0, 1, 2]);
        assert_eq!(slot_positions(3, 8, false), vec![0, 1, 2]);
    }

    #[test]
    fn mask_is_causal_and_windowed() {
        let m = attention_mask(2, 2, &[0, 1, 2, 3], Some(2), &Device::Cpu)
            .unwrap()
            .unwrap();
        let m = m.to_vec2::<f32>().unwrap();
        let inf = f32::NEG_INFINITY;
        assert_eq!(m, vec![vec![inf, 0.0, 0.0, inf], vec![inf, inf, 0.0, 0.0]]);
        assert!(attention_mask(3, 1, &[0, 1, 2, 3], None, &Device::Cpu)
            .unwrap()
            .is_none());
    }

    #[test]
    fn write_wraps_around() {
        let dev = Device::Cpu;
        let mut c = KvCache::new(1, 4, 1, true, &dev).unwrap();
        let k = Tensor::new(&[[[1f32], [2.], [3.]]], &dev).unwrap();
        c.write(&k, &k, 0).unwrap();
        let k2 = Tensor::new(&[[[4f32], [5.], [6.]]], &dev).unwrap();
        c.write(&k2, &k2, 3).unwrap();
        let (kk, _) = c.view(6).unwrap();
        // positions 3,4,5 went to slots 3,0,1; slot 2 still holds position 2.
        assert_eq!(
            kk.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![5., 6., 3., 4.]
        );
        assert_eq!(slot_positions(6, 4, true), vec![4, 5, 2, 3]);
    }
}
