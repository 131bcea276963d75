//! The SQLite memory store's in-process vector cache: per owner and embedding model, the owner's
//! valid vectors quantized to `i8` (one scale per vector) in one contiguous matrix, scanned
//! instead of decoding every BLOB of the owner from SQLite at each query. The scan picks
//! candidates; the store rescores them exactly from their stored `f32` vectors.
//!
//! It stays current without trusting itself: this connection's own writes update it after they
//! commit (inserts append, supersession and forgetting remove), and any commit by another
//! connection — another process, or another store on the same file — changes SQLite's
//! `PRAGMA data_version`, which empties it. It holds at most a byte budget (default 256 MiB, the
//! least recently used owners evicted first); an owner whose vectors do not fit is scanned from
//! SQLite as before.

use std::collections::HashMap;

/// `(user, agent, model, dimensions)`.
type Key = (String, String, String, usize);

/// One owner's vectors of one model.
struct Matrix {
    dim: usize,
    seqs: Vec<i64>,
    /// Per vector: the largest absolute component / 127.
    scales: Vec<f32>,
    /// `dim` codes per vector, in `seqs` order.
    codes: Vec<i8>,
    /// Where each seq is.
    at: HashMap<i64, usize>,
    last_used: u64,
}

impl Matrix {
    fn new(dim: usize) -> Self {
        Matrix { dim, seqs: Vec::new(), scales: Vec::new(), codes: Vec::new(), at: HashMap::new(), last_used: 0 }
    }

    fn bytes(&self) -> usize {
        self.seqs.len() * (self.dim + 28)
    }

    fn push(&mut self, seq: i64, vector: &[f32]) {
        if vector.len() != self.dim || self.at.contains_key(&seq) {
            return;
        }
        let (scale, codes) = quantize(vector);
        self.at.insert(seq, self.seqs.len());
        self.seqs.push(seq);
        self.scales.push(scale);
        self.codes.extend_from_slice(&codes);
    }

    fn remove(&mut self, seq: i64) {
        let Some(i) = self.at.remove(&seq) else { return };
        let last = self.seqs.len() - 1;
        if i != last {
            self.seqs.swap(i, last);
            self.scales.swap(i, last);
            let (head, tail) = self.codes.split_at_mut(last * self.dim);
            head[i * self.dim..(i + 1) * self.dim].copy_from_slice(&tail[..self.dim]);
            self.at.insert(self.seqs[i], i);
        }
        self.seqs.pop();
        self.scales.pop();
        self.codes.truncate(last * self.dim);
    }

    /// The `k` best seqs for `query` by approximate cosine, best first.
    fn top(&self, query: &[f32], k: usize) -> Vec<i64> {
        let (_, q) = quantize(query);
        let mut best = super::TopK::new(k);
        for (i, row) in self.codes.chunks_exact(self.dim).enumerate() {
            best.push(dot_i8(row, &q) as f32 * self.scales[i], self.seqs[i]);
        }
        best.into_sorted().into_iter().map(|(_, seq)| seq).collect()
    }
}

/// A vector as a scale and `i8` codes.
fn quantize(v: &[f32]) -> (f32, Vec<i8>) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        return (0.0, vec![0; v.len()]);
    }
    let scale = max / 127.0;
    (scale, v.iter().map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8).collect())
}

/// The dot product of two code rows (same length), in `i32` (no overflow below 133,000
/// dimensions), in lanes the compiler vectorizes.
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let mut lanes = [0i32; 16];
    let mut ca = a.chunks_exact(16);
    let mut cb = b.chunks_exact(16);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for j in 0..16 {
            lanes[j] += i32::from(x[j]) * i32::from(y[j]);
        }
    }
    let tail: i32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| i32::from(*x) * i32::from(*y)).sum();
    lanes.iter().sum::<i32>() + tail
}

/// What a query found in the cache.
pub(super) enum Lookup {
    /// Candidate seqs, best first.
    Hit(Vec<i64>),
    /// Not cached: scan SQLite (and offer the rows with [`VectorCache::fill`]).
    Miss,
}

/// The cache (see the module docs). Used under the store's connection lock.
pub(super) struct VectorCache {
    budget: usize,
    used: usize,
    tick: u64,
    /// The `PRAGMA data_version` the entries were read at.
    data_version: Option<i64>,
    entries: HashMap<Key, Matrix>,
}

impl VectorCache {
    pub(super) fn new(budget: usize) -> Self {
        VectorCache { budget, used: 0, tick: 0, data_version: None, entries: HashMap::new() }
    }

    /// Empties the cache if another connection committed since it was filled.
    pub(super) fn check_version(&mut self, data_version: i64) {
        if self.data_version != Some(data_version) {
            self.entries.clear();
            self.used = 0;
            self.data_version = Some(data_version);
        }
    }

    /// The `k` best candidates of the owner's vectors of `model` for `query`, if cached.
    pub(super) fn lookup(&mut self, user: &str, agent: &str, model: &str, query: &[f32], k: usize) -> Lookup {
        self.tick += 1;
        let key = (user.to_string(), agent.to_string(), model.to_string(), query.len());
        match self.entries.get_mut(&key) {
            Some(m) => {
                m.last_used = self.tick;
                Lookup::Hit(m.top(query, k))
            }
            None => Lookup::Miss,
        }
    }

    /// Caches the owner's vectors of `model` (all of them, as just read from SQLite), when they
    /// fit the budget.
    pub(super) fn fill(&mut self, user: &str, agent: &str, model: &str, dim: usize, rows: Vec<(i64, Vec<f32>)>) {
        // Too big for the budget (the rows' seqs are distinct, so this is `Matrix::bytes` of the
        // filled matrix): do not quantize it all for nothing, as an owner over the budget would
        // on every query.
        let valid = rows.iter().filter(|(_, v)| v.len() == dim).count();
        if valid.saturating_mul(dim + 28) > self.budget {
            return;
        }
        let mut m = Matrix::new(dim);
        m.seqs.reserve(rows.len());
        m.codes.reserve(rows.len() * dim);
        for (seq, v) in &rows {
            m.push(*seq, v);
        }
        let size = m.bytes();
        if size > self.budget {
            return;
        }
        while self.used + size > self.budget {
            let Some(oldest) = self.entries.iter().min_by_key(|(_, m)| m.last_used).map(|(k, _)| k.clone()) else {
                break;
            };
            if let Some(m) = self.entries.remove(&oldest) {
                self.used -= m.bytes().min(self.used);
            }
        }
        self.tick += 1;
        m.last_used = self.tick;
        self.used += size;
        self.entries.insert((user.to_string(), agent.to_string(), model.to_string(), dim), m);
    }

    /// This connection committed a new valid item with a vector.
    pub(super) fn inserted(&mut self, user: &str, agent: &str, seq: i64, model: &str, vector: &[f32]) {
        let key = (user.to_string(), agent.to_string(), model.to_string(), vector.len());
        if let Some(m) = self.entries.get_mut(&key) {
            let before = m.bytes();
            m.push(seq, vector);
            self.used += m.bytes() - before;
        }
    }

    /// This connection committed: these items of the owner are no longer valid (superseded or
    /// deleted).
    pub(super) fn removed(&mut self, user: &str, agent: &str, seqs: &[i64]) {
        for ((u, a, _, _), m) in self.entries.iter_mut() {
            if u == user && a == agent {
                let before = m.bytes();
                for seq in seqs {
                    m.remove(*seq);
                }
                self.used -= (before - m.bytes()).min(self.used);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64, dim: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v: Vec<f32> = (0..dim)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    #[test]
    fn the_quantized_scan_ranks_like_the_exact_one_and_follows_removals() {
        let dim = 48;
        let rows: Vec<(i64, Vec<f32>)> = (0..500).map(|i| (i, unit(i as u64 + 1, dim))).collect();
        let mut cache = VectorCache::new(1 << 20);
        cache.check_version(1);
        cache.fill("u", "", "m", dim, rows.clone());
        let query = unit(9999, dim);
        let exact = {
            let mut s: Vec<(f32, i64)> =
                rows.iter().map(|(seq, v)| (v.iter().zip(&query).map(|(a, b)| a * b).sum(), *seq)).collect();
            s.sort_by(|a, b| b.0.total_cmp(&a.0));
            s
        };
        let Lookup::Hit(found) = cache.lookup("u", "", "m", &query, 20) else { panic!("not cached") };
        assert!(found.contains(&exact[0].1), "the best is among the candidates");
        let top5: Vec<i64> = exact.iter().take(5).map(|(_, s)| *s).collect();
        assert!(top5.iter().filter(|s| found.contains(s)).count() >= 4);
        cache.removed("u", "", &[exact[0].1]);
        let Lookup::Hit(found) = cache.lookup("u", "", "m", &query, 20) else { panic!() };
        assert!(!found.contains(&exact[0].1));
        cache.inserted("u", "", 10_000, "m", &query);
        let Lookup::Hit(found) = cache.lookup("u", "", "m", &query, 1) else { panic!() };
        assert_eq!(found, vec![10_000]);
        // Another owner, model or dimension is a miss; a new data version empties the cache.
        assert!(matches!(cache.lookup("v", "", "m", &query, 1), Lookup::Miss));
        assert!(matches!(cache.lookup("u", "", "other", &query, 1), Lookup::Miss));
        cache.check_version(2);
        assert!(matches!(cache.lookup("u", "", "m", &query, 1), Lookup::Miss));
    }

    #[test]
    fn the_budget_evicts_the_least_recently_used_and_refuses_what_cannot_fit() {
        let dim = 16;
        let rows = |n: i64| (0..n).map(|i| (i, unit(i as u64 + 3, dim))).collect::<Vec<_>>();
        let mut cache = VectorCache::new(100 * (dim + 28));
        cache.check_version(1);
        cache.fill("a", "", "m", dim, rows(60));
        cache.fill("b", "", "m", dim, rows(30));
        let q = unit(1, dim);
        assert!(matches!(cache.lookup("a", "", "m", &q, 1), Lookup::Hit(_)));
        cache.fill("c", "", "m", dim, rows(30));
        assert!(matches!(cache.lookup("b", "", "m", &q, 1), Lookup::Miss), "b was least recently used");
        assert!(matches!(cache.lookup("a", "", "m", &q, 1), Lookup::Hit(_)));
        cache.fill("d", "", "m", dim, rows(500));
        assert!(matches!(cache.lookup("d", "", "m", &q, 1), Lookup::Miss), "too big to cache");
    }
}
