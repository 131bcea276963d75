//! The in-process vector cache of the SQLite and PostgreSQL memory stores: per owner and
//! embedding model, the owner's valid vectors quantized to `i8` (one scale per vector) in one
//! contiguous matrix, scanned instead of reading every vector of the owner from the database at
//! each query. The scan picks candidates; the store rescores them exactly from their stored `f32`
//! vectors.
//!
//! It stays current without trusting itself: the store's own writes update it after they commit
//! (inserts append, supersession and forgetting remove). Writes by others — another process, or
//! another store on the same database — are seen two ways. A memory owner's entry remembers the
//! owner's write counter (`loom_mem_owner_writes`, kept by triggers on `loom_mem_items`, so every
//! writer bumps it) and is dropped when the counter has moved: commits to other tables and to
//! other owners leave it. A SQLite knowledge scope's entry is emptied by any commit of another
//! connection (SQLite's `PRAGMA data_version`). It holds at most a byte budget (default 256 MiB,
//! the least recently used owners evicted first); an owner whose vectors do not fit is scanned
//! from the database as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

mod sketch;

use sketch::{Sketch, candidate_rows};

/// The rows from which an owner's cached vectors are searched through their sign-bit sketch
/// ([`sketch`]) instead of an exact `i8` scan of every row (see [`VectorCache::index_min_rows`]).
pub(crate) const INDEX_MIN_ROWS: usize = 50_000;

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
    /// A memory owner's write counter for the vectors held (`None`: a knowledge scope, kept by
    /// `PRAGMA data_version`).
    writes: Option<i64>,
    /// The approximate index, built at the first search once the matrix holds `index_min` rows.
    sketch: Option<Sketch>,
}

impl Matrix {
    fn new(dim: usize) -> Self {
        Matrix {
            dim,
            seqs: Vec::new(),
            scales: Vec::new(),
            codes: Vec::new(),
            at: HashMap::new(),
            last_used: 0,
            writes: None,
            sketch: None,
        }
    }

    fn bytes(&self) -> usize {
        let sketch = if self.sketch.is_some() { self.dim.div_ceil(64) * 8 } else { 0 };
        self.seqs.len() * (self.dim + 28 + sketch)
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
        if let Some(sketch) = &mut self.sketch {
            sketch.push(&codes, scale);
        }
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
        if let Some(sketch) = &mut self.sketch {
            sketch.swap_remove(i);
        }
    }

    /// The `k` best seqs for `query` by approximate cosine, best first: from every row below
    /// `index_min` rows, else from the rows the sketch admits (built or rebuilt here when missing
    /// or stale).
    fn top(&mut self, query: &[f32], k: usize, index_min: usize) -> Vec<i64> {
        let (_, q) = quantize(query);
        let rows = self.seqs.len();
        if rows < index_min {
            self.sketch = None;
        } else if self.sketch.as_ref().is_none_or(|s| s.stale(rows)) {
            self.sketch = Some(Sketch::build(self.dim, &self.codes, &self.scales));
        }
        let admitted = self.sketch.as_ref().map(|s| (s.query_bits(query), candidate_rows(rows).max(k)));
        // The scan runs with the widest vector instructions the CPU has (AVX2 on x86-64 when
        // present, chosen at run time): 3.2× fewer cycles than the SSE2 baseline build.
        pulp::Arch::new().dispatch(Scan { matrix: self, query: &q, k, sketch: admitted.as_ref() })
    }
}

/// One scan of a matrix, compiled for each instruction set `pulp` dispatches to.
struct Scan<'a> {
    matrix: &'a Matrix,
    query: &'a [i8],
    k: usize,
    /// The query's sketch bits and how many rows the sketch admits, when searching through it.
    sketch: Option<&'a (Vec<u64>, usize)>,
}

impl pulp::WithSimd for Scan<'_> {
    type Output = Vec<i64>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> Vec<i64> {
        let m = self.matrix;
        let mut best = crate::memory::rows::TopK::new(self.k);
        match (self.sketch, &m.sketch) {
            (Some((bits, want)), Some(sketch)) => {
                for i in sketch.nearest(bits, *want) {
                    let i = i as usize;
                    let row = &m.codes[i * m.dim..(i + 1) * m.dim];
                    best.push(dot_i8(row, self.query) as f32 * m.scales[i], m.seqs[i]);
                }
            }
            _ => {
                for ((row, scale), seq) in m.codes.chunks_exact(m.dim).zip(&m.scales).zip(&m.seqs) {
                    best.push(dot_i8(row, self.query) as f32 * scale, *seq);
                }
            }
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
/// dimensions), in lanes the compiler vectorizes. Always inlined, so that [`Scan`]'s copy for each
/// instruction set gets its own vectorization (measured: a call left here ran the SSE2 body).
#[inline(always)]
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
pub(crate) enum Lookup {
    /// Candidate seqs, best first.
    Hit(Vec<i64>),
    /// Not cached: scan SQLite (and offer the rows with [`VectorCache::fill`]).
    Miss,
}

/// The cache (see the module docs). Used under the store's connection lock.
pub(crate) struct VectorCache {
    budget: usize,
    /// Rows from which an owner is searched through its sketch.
    index_min: usize,
    used: usize,
    tick: u64,
    /// The `PRAGMA data_version` the entries were read at.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))] // SQLite only: knowledge scopes
    data_version: Option<i64>,
    entries: HashMap<Key, Matrix>,
    /// How many times an owner was read from SQLite into the cache.
    fills: u64,
}

impl VectorCache {
    pub(crate) fn new(budget: usize) -> Self {
        VectorCache {
            budget,
            index_min: INDEX_MIN_ROWS,
            used: 0,
            tick: 0,
            data_version: None,
            entries: HashMap::new(),
            fills: 0,
        }
    }

    /// Searches an owner's vectors through the sign-bit sketch once the owner holds `rows`
    /// vectors of a model (default [`INDEX_MIN_ROWS`]; `usize::MAX` never: always the exact `i8`
    /// scan).
    pub(crate) fn set_index_min_rows(&mut self, rows: usize) {
        self.index_min = rows;
    }

    /// A new, empty cache of `budget` bytes that keeps `cache`'s index threshold: what a store's
    /// `vector_cache_bytes` builder installs.
    pub(crate) fn rebudgeted(cache: &Mutex<VectorCache>, budget: usize) -> Arc<Mutex<VectorCache>> {
        let rows = cache.lock().map(|c| c.index_min).unwrap_or(INDEX_MIN_ROWS);
        let mut fresh = VectorCache::new(budget);
        fresh.index_min = rows;
        Arc::new(Mutex::new(fresh))
    }

    /// Drops the knowledge scopes' entries if another connection committed since they were filled
    /// (memory owners' entries are checked against their write counters instead, at lookup).
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))] // SQLite only: knowledge scopes
    pub(crate) fn check_version(&mut self, data_version: i64) {
        if self.data_version != Some(data_version) {
            self.entries.retain(|_, m| m.writes.is_some());
            self.used = self.entries.values().map(Matrix::bytes).sum();
            self.data_version = Some(data_version);
        }
    }

    /// The `k` best candidates of the owner's vectors of `model` for `query`, if cached and, for a
    /// memory owner, cached at the owner's current write counter `writes` (an entry filled at
    /// another is dropped).
    pub(crate) fn lookup(
        &mut self,
        user: &str,
        agent: &str,
        model: &str,
        query: &[f32],
        k: usize,
        writes: Option<i64>,
    ) -> Lookup {
        self.tick += 1;
        let key = (user.to_string(), agent.to_string(), model.to_string(), query.len());
        if self.entries.get(&key).is_some_and(|m| m.writes != writes) {
            if let Some(m) = self.entries.remove(&key) {
                self.used -= m.bytes().min(self.used);
            }
            return Lookup::Miss;
        }
        match self.entries.get_mut(&key) {
            Some(m) => {
                m.last_used = self.tick;
                let before = m.bytes();
                let found = m.top(query, k, self.index_min);
                self.used = (self.used + m.bytes()).saturating_sub(before);
                Lookup::Hit(found)
            }
            None => Lookup::Miss,
        }
    }

    /// Caches the owner's vectors of `model` (all of them, as just read from SQLite after reading
    /// the owner's write counter `writes`, or `None` for a knowledge scope), when they fit the
    /// budget.
    pub(crate) fn fill(
        &mut self,
        user: &str,
        agent: &str,
        model: &str,
        dim: usize,
        rows: Vec<(i64, Vec<f32>)>,
        writes: Option<i64>,
    ) {
        // Too big for the budget (the rows' seqs are distinct, so this is `Matrix::bytes` of the
        // filled matrix): do not quantize it all for nothing, as an owner over the budget would
        // on every query.
        let valid = rows.iter().filter(|(_, v)| v.len() == dim).count();
        let sketch = if valid >= self.index_min { dim.div_ceil(64) * 8 } else { 0 };
        if valid.saturating_mul(dim + 28 + sketch) > self.budget {
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
        self.fills += 1;
        m.last_used = self.tick;
        m.writes = writes;
        self.used += size;
        self.entries.insert((user.to_string(), agent.to_string(), model.to_string(), dim), m);
    }

    /// This connection committed a new valid item with a vector.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))] // SQLite only: knowledge scopes
    pub(crate) fn inserted(&mut self, user: &str, agent: &str, seq: i64, model: &str, vector: &[f32]) {
        let key = (user.to_string(), agent.to_string(), model.to_string(), vector.len());
        if let Some(m) = self.entries.get_mut(&key) {
            let before = m.bytes();
            m.push(seq, vector);
            self.used += m.bytes() - before;
        }
    }

    /// This connection committed: these items of the owner are no longer valid (superseded or
    /// deleted).
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))] // SQLite only: knowledge scopes
    pub(crate) fn removed(&mut self, user: &str, agent: &str, seqs: &[i64]) {
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

impl VectorCache {
    /// This connection committed writes to a memory owner's items, which moved the owner's write
    /// counter from `before` to `after`: `removed` are no longer valid, `inserted` is a new valid
    /// item with a vector. An entry cached at `before` follows; one cached at another counter
    /// (another connection wrote in between) is dropped.
    pub(crate) fn owner_wrote(
        &mut self,
        user: &str,
        agent: &str,
        (before, after): (i64, i64),
        removed: &[i64],
        inserted: Option<(i64, &str, &[f32])>,
    ) {
        let mut dropped = Vec::new();
        for (key, m) in self.entries.iter_mut() {
            if key.0 != user || key.1 != agent {
                continue;
            }
            if m.writes != Some(before) {
                dropped.push(key.clone());
                continue;
            }
            let was = m.bytes();
            for seq in removed {
                m.remove(*seq);
            }
            if let Some((seq, model, vector)) = inserted
                && key.2 == model
                && key.3 == vector.len()
            {
                m.push(seq, vector);
            }
            m.writes = Some(after);
            self.used = (self.used + m.bytes()).saturating_sub(was);
        }
        for key in dropped {
            if let Some(m) = self.entries.remove(&key) {
                self.used -= m.bytes().min(self.used);
            }
        }
    }

    /// How many times an owner was read from SQLite into the cache (for tests).
    #[cfg(test)]
    pub(crate) fn fills(&self) -> u64 {
        self.fills
    }

    /// Whether the owner's vectors of `model` and `dim` are cached (for tests).
    #[cfg(test)]
    pub(crate) fn holds(&self, user: &str, agent: &str, model: &str, dim: usize) -> bool {
        self.entries.contains_key(&(user.to_string(), agent.to_string(), model.to_string(), dim))
    }
}
