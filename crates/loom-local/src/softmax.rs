//! The causal softmax of prompt attention, in place over the score rows.
//!
//! candle's `softmax_last_dim` after a mask `broadcast_add` reads and writes the whole
//! `(heads, queries, keys)` score matrix three times (the mask, then the max and the
//! exponentials) and calls the scalar `expf` for every score, the masked ones included: at a
//! 4,000-token context that is about a billion `expf` per prompt. Here one pass per row finds the
//! maximum over the visible keys, one computes the exponentials with a polynomial that the
//! compiler vectorizes (`pulp` picks AVX2 at run time when the CPU has it) and sums them, and one
//! scales them; masked keys are set to zero without computing anything.

use rayon::prelude::*;

/// Rows of `len` scores (`rows.len()` a multiple of `len`), row `r` belonging to query
/// `r % queries`, which sees keys `..= first + r % queries`: softmax over those, zero elsewhere.
pub(crate) fn causal_softmax_in_place(scores: &mut [f32], len: usize, queries: usize, first: usize) {
    if len == 0 || queries == 0 {
        return;
    }
    scores.par_chunks_mut(len).enumerate().for_each(|(r, row)| {
        let visible = (first + r % queries + 1).min(row.len());
        let (seen, masked) = row.split_at_mut(visible);
        masked.fill(0.0);
        pulp::Arch::new().dispatch(Row(seen));
    });
}

/// One row's softmax, compiled for each instruction set `pulp` dispatches to.
struct Row<'a>(&'a mut [f32]);

impl pulp::WithSimd for Row<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        softmax_row(self.0);
    }
}

/// Lanes the loops below are written in, so that they vectorize.
const LANES: usize = 16;

#[inline(always)]
fn softmax_row(row: &mut [f32]) {
    let mut maxes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (m, &v) in maxes.iter_mut().zip(c) {
            *m = m.max(v);
        }
    }
    let max = chunks.remainder().iter().chain(&maxes).fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    if !max.is_finite() {
        // Every visible score is -inf (or NaN): nothing to weigh; keep the row finite.
        row.fill(0.0);
        return;
    }
    let mut sums = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (s, v) in sums.iter_mut().zip(c.iter_mut()) {
            *v = exp(*v - max);
            *s += *v;
        }
    }
    let mut sum: f32 = sums.iter().sum();
    for v in chunks.into_remainder() {
        *v = exp(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// `e^x` for `x ≤ 0` (relative error below 5e-7; 0 below -87): `2^n × e^r` with `n` the nearest
/// integer to `x / ln 2` and a degree-6 polynomial for `e^r`, `|r| ≤ ln 2 / 2`. Branch-free, so it
/// vectorizes.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5 × 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let underflow = x < -87.0;
    let x = x.clamp(-87.0, 0.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if underflow { 0.0 } else { scale * p }
}

#[cfg(test)]
mod tests {
    use super::{causal_softmax_in_place, exp};

    #[test]
    fn exp_matches_the_library_one() {
        let mut x = -87.0f32;
        while x <= 0.0 {
            let (got, want) = (exp(x), x.exp());
            assert!((got - want).abs() <= want * 5e-7 + 1e-38, "exp({x}) = {got}, not {want}");
            x += 0.0137;
        }
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-90.0), 0.0);
        assert!(exp(-87.0) > 0.0 && exp(-87.0) < 1e-37);
    }

    #[test]
    fn rows_match_a_masked_softmax() {
        // 2 heads × 3 queries at positions 5, 6, 7 over 8 keys.
        let (len, queries, first) = (8, 3, 5);
        let scores: Vec<f32> = (0..2 * queries * len).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.7).collect();
        let mut got = scores.clone();
        causal_softmax_in_place(&mut got, len, queries, first);
        for (r, (row, src)) in got.chunks(len).zip(scores.chunks(len)).enumerate() {
            let visible = first + r % queries + 1;
            let max = src[..visible].iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let total: f32 = src[..visible].iter().map(|v| (v - max).exp()).sum();
            for (j, &p) in row.iter().enumerate() {
                let want = if j < visible { (src[j] - max).exp() / total } else { 0.0 };
                assert!((p - want).abs() < 1e-6, "row {r} key {j}: {p} against {want}");
            }
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn long_rows_and_infinite_scores() {
        let len = 100;
        let mut row: Vec<f32> = (0..len).map(|i| i as f32 * 0.01).collect();
        row[3] = f32::NEG_INFINITY;
        causal_softmax_in_place(&mut row, len, 1, len - 1);
        assert_eq!(row[3], 0.0);
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        let mut dead = vec![f32::NEG_INFINITY; 4];
        causal_softmax_in_place(&mut dead, 4, 1, 3);
        assert_eq!(dead, vec![0.0; 4]);
    }
}
