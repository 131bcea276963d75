//! The approximate index of a large owner's cached vectors: one bit per dimension (the sign of the
//! component minus the owner's mean vector), compared with the query's bits by Hamming distance.
//!
//! A search computes the Hamming distance of every row (48 bytes per 384-d vector, against the
//! 384 bytes of the `i8` codes: an eighth of the memory traffic), keeps the rows whose distance is
//! at most the smallest threshold that admits [`candidate_rows`] of them, and scores only those with
//! the `i8` codes; the store then rescores its usual candidates exactly. Sign bits of centered
//! vectors preserve angles on any distribution (the Hamming distance of two random-hyperplane
//! sketches estimates their angle), so unlike a clustering index (IVF) it needs no training and
//! keeps its recall on vectors without cluster structure, the bench's uniform random ones included.
//!
//! It follows every write of the matrix: a pushed row gets its bits, a removed row is swapped out
//! as in the matrix. The mean is the owner's at build time; the sketch is rebuilt (mean included)
//! whenever the matrix has doubled since, so its cost stays amortized.

/// The rows the sketch admits for scoring by the `i8` codes, for a matrix of `rows` rows: a
/// twentieth of a matrix up to 10⁵ rows, growing as √rows past it (the true neighbours of a query
/// stand further out from the rest as the matrix grows), and never fewer than 2,000. Measured on
/// uniform random 384-d unit vectors (the hard case: no cluster structure), recall@10 against the
/// exact scan: 0.98 at 2·10⁴ rows, 0.96 at 5·10⁴, 0.976 at 10⁵ (5,000 admitted), 0.975 at 10⁶
/// (15,811 admitted); see docs/benchmarks.md.
pub(super) fn candidate_rows(rows: usize) -> usize {
    let grown = if rows <= 100_000 { rows / 20 } else { (5_000.0 * (rows as f64 / 100_000.0).sqrt()) as usize };
    grown.max(2_000).min(rows)
}

/// Sign bits of the rows of a matrix (see the module docs).
pub(super) struct Sketch {
    /// The mean vector subtracted before taking signs.
    mean: Vec<f32>,
    /// `u64` words per row.
    words: usize,
    /// `words` per row, in the matrix's row order.
    bits: Vec<u64>,
    /// Rows when built: rebuilt at twice as many.
    built_for: usize,
}

impl Sketch {
    /// The sketch of `codes` (`dim` per row) with their `scales`.
    pub(super) fn build(dim: usize, codes: &[i8], scales: &[f32]) -> Self {
        let rows = scales.len();
        let mut mean = vec![0f64; dim];
        for (row, scale) in codes.chunks_exact(dim).zip(scales) {
            for (m, c) in mean.iter_mut().zip(row) {
                *m += f64::from(*c) * f64::from(*scale);
            }
        }
        let mean: Vec<f32> = mean.into_iter().map(|m| (m / rows.max(1) as f64) as f32).collect();
        let words = dim.div_ceil(64);
        let mut sketch = Sketch { mean, words, bits: Vec::with_capacity(rows * words), built_for: rows };
        for (row, scale) in codes.chunks_exact(dim).zip(scales) {
            sketch.push(row, *scale);
        }
        sketch
    }

    /// Whether the matrix has grown enough since the build to rebuild (a new mean).
    pub(super) fn stale(&self, rows: usize) -> bool {
        rows >= self.built_for.saturating_mul(2)
    }

    /// Appends the bits of one row (its codes and scale).
    pub(super) fn push(&mut self, row: &[i8], scale: f32) {
        let at = self.bits.len();
        self.bits.resize(at + self.words, 0);
        let out = &mut self.bits[at..];
        for (i, (c, m)) in row.iter().zip(&self.mean).enumerate() {
            if f32::from(*c) * scale > *m {
                out[i / 64] |= 1 << (i % 64);
            }
        }
    }

    /// Moves the last row's bits to row `i` and drops the last (as the matrix's swap removal).
    pub(super) fn swap_remove(&mut self, i: usize) {
        let rows = self.bits.len() / self.words;
        if i >= rows {
            return;
        }
        let last = rows - 1;
        if i != last {
            let (head, tail) = self.bits.split_at_mut(last * self.words);
            head[i * self.words..(i + 1) * self.words].copy_from_slice(&tail[..self.words]);
        }
        self.bits.truncate(last * self.words);
    }

    /// The bits of a query.
    pub(super) fn query_bits(&self, query: &[f32]) -> Vec<u64> {
        let mut out = vec![0u64; self.words];
        for (i, (x, m)) in query.iter().zip(&self.mean).enumerate() {
            if x > m {
                out[i / 64] |= 1 << (i % 64);
            }
        }
        out
    }

    /// The rows nearest to `query` (its [`Sketch::query_bits`]) by Hamming distance: every row
    /// whose distance is at most the smallest threshold that admits `want` rows (so ties at the
    /// threshold are all in), in row order. Always inlined into the caller's SIMD dispatch, so
    /// that `count_ones` compiles to `popcnt` where the CPU has it.
    #[inline(always)]
    pub(super) fn nearest(&self, query: &[u64], want: usize) -> Vec<u32> {
        let rows = self.bits.len() / self.words;
        let mut distances = Vec::with_capacity(rows);
        let mut histogram = vec![0usize; self.words * 64 + 1];
        for row in self.bits.chunks_exact(self.words) {
            let d: u32 = row.iter().zip(query).map(|(a, b)| (a ^ b).count_ones()).sum();
            distances.push(d as u16);
            histogram[d as usize] += 1;
        }
        let mut admitted = 0;
        let mut threshold = histogram.len();
        for (d, n) in histogram.iter().enumerate() {
            admitted += n;
            if admitted >= want {
                threshold = d;
                break;
            }
        }
        let mut out = Vec::with_capacity(admitted.min(rows));
        for (i, d) in distances.iter().enumerate() {
            if usize::from(*d) <= threshold {
                out.push(i as u32);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_candidate_count_grows_with_the_matrix_and_never_exceeds_it() {
        assert_eq!(candidate_rows(500), 500);
        assert_eq!(candidate_rows(20_000), 2_000);
        assert_eq!(candidate_rows(100_000), 5_000);
        assert_eq!(candidate_rows(1_000_000), 15_811);
    }

    /// A uniform random unit vector (xorshift64*).
    fn random_unit(state: &mut u64, dim: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..dim)
            .map(|_| {
                *state ^= *state >> 12;
                *state ^= *state << 25;
                *state ^= *state >> 27;
                (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    /// Recall@10 of the search through the sketch (candidates rescored exactly, as the stores do)
    /// against the exact top 10, on uniform random 384-d vectors — no cluster structure, the hard
    /// case — with 24,000 rows, of which the sketch admits 2,000 per query. Then rows removed after
    /// the build are never found, and rows pushed after it are.
    #[test]
    fn the_sketch_search_recalls_nine_in_ten_of_the_exact_top_ten_on_random_vectors() {
        use crate::memory::vector_cache::{Lookup, VectorCache};
        let (dim, n, queries) = (384, 24_000, 20);
        let mut state = 42u64;
        let rows: Vec<(i64, Vec<f32>)> = (0..n).map(|i| (i as i64, random_unit(&mut state, dim))).collect();
        let mut cache = VectorCache::new(1 << 30);
        cache.set_index_min_rows(10_000);
        cache.fill("u", "", "m", dim, rows.clone(), Some(1));
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let exact_top = |rows: &[(i64, Vec<f32>)], q: &[f32], k: usize| {
            let mut s: Vec<(f32, i64)> = rows.iter().map(|(seq, v)| (dot(v, q), *seq)).collect();
            s.sort_by(|a, b| b.0.total_cmp(&a.0));
            s.into_iter().take(k).map(|(_, seq)| seq).collect::<Vec<_>>()
        };
        let mut found = 0;
        for _ in 0..queries {
            let q = random_unit(&mut state, dim);
            let truth = exact_top(&rows, &q, 10);
            let Lookup::Hit(candidates) = cache.lookup("u", "", "m", &q, 28, Some(1)) else { panic!("not cached") };
            assert_eq!(candidates.len(), 28);
            let picked: Vec<(i64, Vec<f32>)> = candidates.iter().map(|seq| rows[*seq as usize].clone()).collect();
            let top = exact_top(&picked, &q, 10);
            found += top.iter().filter(|seq| truth.contains(seq)).count();
        }
        let recall = found as f64 / (queries * 10) as f64;
        assert!(recall >= 0.9, "recall@10 {recall}");

        // Writes after the build: the best match removed is gone, a pushed row is found.
        let q = random_unit(&mut state, dim);
        let best = exact_top(&rows, &q, 1)[0];
        cache.owner_wrote("u", "", (1, 2), &[best], Some((1_000_000, "m", &q)));
        let Lookup::Hit(after) = cache.lookup("u", "", "m", &q, 28, Some(2)) else { panic!("dropped") };
        assert_eq!(after[0], 1_000_000);
        assert!(!after.contains(&best));
    }

    #[test]
    fn removal_and_push_keep_rows_in_matrix_order() {
        let dim = 70;
        let rows: Vec<Vec<i8>> =
            (0..4).map(|r| (0..dim).map(|i| if (i + r) % 3 == 0 { 50 } else { -50 }).collect()).collect();
        let codes: Vec<i8> = rows.concat();
        let mut s = Sketch::build(dim, &codes, &[1.0; 4]);
        let bits_of = |s: &Sketch, i: usize| s.bits[i * s.words..(i + 1) * s.words].to_vec();
        let last = bits_of(&s, 3);
        s.swap_remove(1);
        assert_eq!(bits_of(&s, 1), last);
        assert_eq!(s.bits.len(), 3 * s.words);
        // A query equal to a row finds that row first (distance 0).
        let q: Vec<f32> = rows[2].iter().map(|c| f32::from(*c)).collect();
        assert_eq!(s.nearest(&s.query_bits(&q), 1), vec![2]);
        s.swap_remove(7);
        assert_eq!(s.bits.len(), 3 * s.words);
    }
}
