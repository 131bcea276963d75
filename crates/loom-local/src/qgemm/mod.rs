//! Q8_0 × Q8_0 matrix products for the local model's linear layers, batched over activation rows.
//!
//! candle 0.11's CPU path for a Q8_0 matmul takes one dot product per (activation row, 4 weight
//! rows), with the f16 scales converted inside every block of every pair. For a prompt that is a
//! dot product of 18 blocks per pair, and most of the time goes into shuffling bytes for it. Here
//! the weights are repacked once at load into groups of [`GROUP`] rows, interleaved so that one
//! 256-bit register holds 4 quants of each of the 8 rows: one `vpdpbusd` (AVX-512 VNNI or AVX-VNNI)
//! multiplies 4 activation quants (broadcast) with 4 quants of 8 rows and adds the 8 sums in
//! place, so a tile of [`MR`] activation rows × 16 weight rows needs no horizontal sums, and each
//! loaded weight register serves 4 activation rows. Without VNNI an AVX2 kernel does the same with
//! `vpmaddubsw`; a scalar kernel is the reference and the fallback.
//!
//! The arithmetic is candle's: activations are quantized per block of 32 with a scale rounded to
//! f16, the block's integer dot product is exact, and `d_w × d_a × dot` is accumulated in f32 (only
//! the order of the f32 sums differs). `tests` compare every kernel the CPU has against the scalar
//! one, and the scalar one against an f32 product of the dequantized operands.

mod x86;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use candle_core::quantized::{GgmlDType, QTensor};
use half::f16;
use loom_core::error::Error;

/// Values per Q8_0 block.
pub(crate) const QK: usize = 32;
/// Weight rows interleaved in one group (one 256-bit register holds 4 quants of each).
pub(crate) const GROUP: usize = 8;
/// Weight rows per work item: two groups, so one activation broadcast feeds two VNNI products.
pub(crate) const ITEM_ROWS: usize = 2 * GROUP;
/// Activation rows per register tile.
pub(crate) const MR: usize = 4;
/// Bytes of the Q8_0 block in GGUF: an f16 scale and 32 quants.
const BLOCK_BYTES: usize = 2 + QK;

/// A Q8_0 weight matrix (`n` rows of `k`) repacked for [`PackedQ8::matmul`].
///
/// Per work item (16 rows, the last one zero-padded) and per block of 32 columns: 512 quant bytes
/// (two groups; in a group, byte `b` of quad `j` of row `r` is at `(j * 8 + r) * 4 + b`), 16 f32
/// scales and 16 offset corrections (`128 × Σ quants` of the row's block: the VNNI kernels take
/// activations as unsigned bytes `q + 128`).
pub(crate) struct PackedQ8 {
    n: usize,
    k: usize,
    blocks: usize,
    items: usize,
    quants: Vec<i8>,
    scales: Vec<f32>,
    offsets: Vec<i32>,
}

/// One work item's share of a [`PackedQ8`].
pub(crate) struct ItemRef<'a> {
    pub(crate) quants: &'a [i8],
    pub(crate) scales: &'a [f32],
    pub(crate) offsets: &'a [i32],
}

/// Activation rows quantized to Q8_0: quants stored as `q + 128` (unsigned), one scale per block.
pub(crate) struct QuantActs {
    pub(crate) m: usize,
    pub(crate) k: usize,
    pub(crate) quants: Vec<u8>,
    pub(crate) scales: Vec<f32>,
}

/// The instruction set a product runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// Plain Rust, any CPU.
    Scalar,
    /// `vpmaddubsw` on AVX2 + FMA.
    Avx2,
    /// `vpdpbusd` through AVX-VNNI (VEX).
    AvxVnni,
    /// `vpdpbusd` through AVX-512 VNNI on 256-bit registers.
    Avx512Vnni,
}

impl Kernel {
    /// The fastest kernel this CPU runs (`LOOM_LOCAL_QGEMM=scalar|avx2` picks a slower one).
    pub(crate) fn best() -> Kernel {
        static BEST: OnceLock<Kernel> = OnceLock::new();
        *BEST.get_or_init(|| {
            let detected = x86::detect();
            match std::env::var("LOOM_LOCAL_QGEMM").as_deref() {
                Ok("scalar") => Kernel::Scalar,
                Ok("avx2") if detected != Kernel::Scalar => Kernel::Avx2,
                _ => detected,
            }
        })
    }

    /// The kernels this CPU can run, slowest first.
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Kernel> {
        let best = x86::detect();
        let mut out = vec![Kernel::Scalar];
        if best != Kernel::Scalar {
            out.push(Kernel::Avx2);
        }
        if matches!(best, Kernel::AvxVnni | Kernel::Avx512Vnni) && x86::has_avxvnni() {
            out.push(Kernel::AvxVnni);
        }
        if best == Kernel::Avx512Vnni {
            out.push(Kernel::Avx512Vnni);
        }
        out
    }
}

impl PackedQ8 {
    /// Repacks a Q8_0 tensor of shape `(n, k)`. `None` when it is not Q8_0 or not 2-D with `k` a
    /// multiple of 32 (the caller keeps candle's matmul then).
    pub(crate) fn from_qtensor(t: &QTensor) -> Result<Option<PackedQ8>, Error> {
        let &[n, k] = t.shape().dims() else { return Ok(None) };
        if t.dtype() != GgmlDType::Q8_0 || n == 0 || k == 0 || !k.is_multiple_of(QK) {
            return Ok(None);
        }
        let data = t.data().map_err(crate::engine::cerr("reading Q8_0 weights"))?;
        PackedQ8::from_bytes(&data, n, k).map(Some)
    }

    /// Repacks GGUF Q8_0 blocks (row-major, `n` rows of `k / 32` blocks of 34 bytes).
    pub(crate) fn from_bytes(data: &[u8], n: usize, k: usize) -> Result<PackedQ8, Error> {
        let blocks = k / QK;
        if !k.is_multiple_of(QK) || data.len() != n * blocks * BLOCK_BYTES {
            return Err(Error::ModelFile(format!(
                "Q8_0 weights of {} bytes do not hold {n} rows of {k} values",
                data.len()
            )));
        }
        let items = n.div_ceil(ITEM_ROWS);
        let mut quants = vec![0i8; items * blocks * ITEM_ROWS * QK];
        let mut scales = vec![0f32; items * blocks * ITEM_ROWS];
        let mut offsets = vec![0i32; items * blocks * ITEM_ROWS];
        for (row, row_bytes) in data.chunks_exact(blocks * BLOCK_BYTES).enumerate() {
            let (item, in_item) = (row / ITEM_ROWS, row % ITEM_ROWS);
            let (group, r) = (in_item / GROUP, in_item % GROUP);
            for (b, block) in row_bytes.chunks_exact(BLOCK_BYTES).enumerate() {
                let (d, qs) = block.split_at(2);
                let at = (item * blocks + b) * ITEM_ROWS + in_item;
                if let (Some(s), Some(o)) = (scales.get_mut(at), offsets.get_mut(at)) {
                    *s = f16::from_le_bytes([d[0], d[1]]).to_f32();
                    *o = 128 * qs.iter().map(|&q| i32::from(q as i8)).sum::<i32>();
                }
                let base = (item * blocks + b) * ITEM_ROWS * QK + group * GROUP * QK;
                for (j, quad) in qs.chunks_exact(4).enumerate() {
                    let at = base + (j * GROUP + r) * 4;
                    if let Some(dst) = quants.get_mut(at..at + 4) {
                        for (x, &q) in dst.iter_mut().zip(quad) {
                            *x = q as i8;
                        }
                    }
                }
            }
        }
        Ok(PackedQ8 { n, k, blocks, items, quants, scales, offsets })
    }

    /// Output features (weight rows).
    pub(crate) fn n(&self) -> usize {
        self.n
    }

    fn item(&self, i: usize) -> Option<ItemRef<'_>> {
        let q = self.blocks * ITEM_ROWS * QK;
        let s = self.blocks * ITEM_ROWS;
        Some(ItemRef {
            quants: self.quants.get(i * q..(i + 1) * q)?,
            scales: self.scales.get(i * s..(i + 1) * s)?,
            offsets: self.offsets.get(i * s..(i + 1) * s)?,
        })
    }

    /// `x · Wᵀ` for `x` of `m` rows of `k` (row-major): `m` rows of `n`, split over candle's
    /// thread pool by groups of 16 output columns.
    pub(crate) fn matmul(&self, x: &[f32], m: usize, kernel: Kernel) -> Result<Vec<f32>, Error> {
        if x.len() != m * self.k {
            return Err(Error::ModelFile(format!(
                "a product of {} values with {m} rows of {} columns",
                x.len(),
                self.k
            )));
        }
        let acts = QuantActs::new(x, m, self.k);
        let out: Vec<AtomicU32> = (0..m * self.n).map(|_| AtomicU32::new(0)).collect();
        let failed = std::sync::atomic::AtomicBool::new(false);
        candle_core::utils::barrier_pool().execute_chunked(self.items, |range| {
            for i in range {
                if self.run_item(i, &acts, &out, kernel).is_none() {
                    failed.store(true, Ordering::Relaxed);
                }
            }
        });
        if failed.load(Ordering::Relaxed) {
            return Err(Error::ModelFile("a packed Q8_0 product was given inconsistent sizes".into()));
        }
        Ok(out.into_iter().map(|v| f32::from_bits(v.into_inner())).collect())
    }

    /// Runs work item `i` over every activation row, writing its columns of `out`.
    fn run_item(&self, i: usize, acts: &QuantActs, out: &[AtomicU32], kernel: Kernel) -> Option<()> {
        let item = self.item(i)?;
        let col0 = i * ITEM_ROWS;
        let cols = ITEM_ROWS.min(self.n - col0);
        let mut r0 = 0;
        while r0 < acts.m {
            let mr = MR.min(acts.m - r0);
            let mut tile = [[0f32; ITEM_ROWS]; MR];
            match kernel {
                Kernel::Scalar => tile_scalar(&item, acts, r0, mr, self.blocks, &mut tile)?,
                _ => x86::tile(kernel, &item, acts, r0, mr, self.blocks, &mut tile)?,
            }
            for (r, row) in tile.iter().enumerate().take(mr) {
                let base = (r0 + r) * self.n + col0;
                for (dst, v) in out.get(base..base + cols)?.iter().zip(row) {
                    dst.store(v.to_bits(), Ordering::Relaxed);
                }
            }
            r0 += mr;
        }
        Some(())
    }
}

impl QuantActs {
    /// Quantizes `m` rows of `k` as candle's `BlockQ8_0::from_float` does (scale `max|x| / 127`,
    /// rounded to f16 for the product; quants rounded half away from zero).
    pub(crate) fn new(x: &[f32], m: usize, k: usize) -> QuantActs {
        let blocks = k / QK;
        let mut quants = vec![128u8; m * k];
        let mut scales = vec![0f32; m * blocks];
        for ((xs, qs), s) in x.chunks_exact(QK).zip(quants.chunks_exact_mut(QK)).zip(scales.iter_mut()) {
            let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            *s = f16::from_f32(d).to_f32();
            for (q, &v) in qs.iter_mut().zip(xs) {
                *q = ((v * id).round() as i32 + 128).clamp(0, 255) as u8;
            }
        }
        QuantActs { m, k, quants, scales }
    }

    /// Row `r`'s quants and scales.
    pub(crate) fn row(&self, r: usize) -> Option<(&[u8], &[f32])> {
        let blocks = self.k / QK;
        Some((self.quants.get(r * self.k..(r + 1) * self.k)?, self.scales.get(r * blocks..(r + 1) * blocks)?))
    }
}

/// The reference kernel: rows `r0..r0 + mr` against one work item.
fn tile_scalar(
    item: &ItemRef<'_>,
    acts: &QuantActs,
    r0: usize,
    mr: usize,
    blocks: usize,
    tile: &mut [[f32; ITEM_ROWS]; MR],
) -> Option<()> {
    for (r, out) in tile.iter_mut().enumerate().take(mr) {
        let (aq, ascale) = acts.row(r0 + r)?;
        for b in 0..blocks {
            let a = aq.get(b * QK..(b + 1) * QK)?;
            let da = *ascale.get(b)?;
            let wq = item.quants.get(b * ITEM_ROWS * QK..(b + 1) * ITEM_ROWS * QK)?;
            for (c, o) in out.iter_mut().enumerate() {
                let (group, rr) = (c / GROUP, c % GROUP);
                let mut dot = 0i32;
                for (j, aquad) in a.chunks_exact(4).enumerate() {
                    let at = group * GROUP * QK + (j * GROUP + rr) * 4;
                    for (x, w) in aquad.iter().zip(wq.get(at..at + 4)?) {
                        dot += (i32::from(*x) - 128) * i32::from(*w);
                    }
                }
                let dw = *item.scales.get(b * ITEM_ROWS + c)?;
                *o += dot as f32 * (dw * da);
            }
        }
    }
    Some(())
}

#[cfg(test)]
mod tests;
