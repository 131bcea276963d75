//! The transformer: a llama-architecture forward pass over candle's quantized matmuls, with a
//! preallocated, growable KV cache (so a token costs no cache copy and a shared conversation
//! prefix is reused across calls), grouped-query attention without repeating the KV heads, and
//! re-quantization of formats candle has no fast CPU kernel for (Q4_1) at load, cached on disk.

use std::fs::File;
use std::io::{BufReader, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor, gguf_file};
use candle_core::{DType, Device, Module, Tensor};

use crate::pull;
use crate::qgemm::{self, Kernel, PackedQ8};
use crate::softmax;
use loom_core::error::Error;

/// A candle error as the crate's error.
pub(crate) fn cerr(context: &str) -> impl Fn(candle_core::Error) -> Error + '_ {
    move |e| Error::ModelFile(format!("{context}: {}", candle_message(&e)))
}

/// A candle error as one message for a person: without the backtrace candle attaches when
/// `RUST_BACKTRACE` is set, and with its context on the same line.
pub(crate) fn candle_message(err: &candle_core::Error) -> String {
    use candle_core::Error as E;
    match err {
        E::WithBacktrace { inner, .. } => candle_message(inner),
        E::Context { inner, context } => format!("{context}: {}", candle_message(inner)),
        E::WithPath { inner, path } => format!("{}: {}", path.display(), candle_message(inner)),
        E::WrappedContext { wrapped, context } => format!("{context}: {wrapped}"),
        other => other.to_string(),
    }
}

/// The target format for tensors candle has no SIMD kernel for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Requant {
    /// 4.5 bits per weight, AVX2 kernel.
    Q4_0,
    /// 8.5 bits per weight, AVX2/AVX-512 kernels.
    Q8_0,
}

impl Requant {
    /// From `LOOM_LOCAL_QUANT` (`q4_0` / `q8_0`), else the default.
    pub(crate) fn from_env() -> Requant {
        match std::env::var("LOOM_LOCAL_QUANT").map(|s| s.to_ascii_lowercase()) {
            Ok(s) if s == "q8_0" => Requant::Q8_0,
            Ok(s) if s == "q4_0" => Requant::Q4_0,
            _ => Requant::DEFAULT,
        }
    }

    /// The default (the faster of the two on the benchmark machine; see docs/benchmarks.md).
    pub(crate) const DEFAULT: Requant = Requant::Q8_0;

    fn dtype(self) -> GgmlDType {
        match self {
            Requant::Q4_0 => GgmlDType::Q4_0,
            Requant::Q8_0 => GgmlDType::Q8_0,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Requant::Q4_0 => "q4_0",
            Requant::Q8_0 => "q8_0",
        }
    }
}

/// Quantized formats with a fast CPU kernel in candle; others are re-quantized at load.
fn has_fast_kernel(dtype: GgmlDType) -> bool {
    matches!(
        dtype,
        GgmlDType::F32
            | GgmlDType::F16
            | GgmlDType::Q4_0
            | GgmlDType::Q8_0
            | GgmlDType::Q2K
            | GgmlDType::Q3K
            | GgmlDType::Q4K
            | GgmlDType::Q5K
            | GgmlDType::Q6K
            | GgmlDType::Q8K
    )
}

/// A GGUF's metadata and the reader it came from.
pub(crate) struct GgufFile {
    pub(crate) content: gguf_file::Content,
    reader: BufReader<File>,
    pub(crate) path: PathBuf,
}

impl GgufFile {
    pub(crate) fn open(path: &Path) -> Result<GgufFile, Error> {
        let file = File::open(path)
            .map_err(|e| Error::ModelFile(format!("cannot open the model file {}: {e}", path.display())))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let content = gguf_file::Content::read(&mut reader).map_err(|e| {
            Error::ModelFile(format!("{} is not a readable GGUF file: {}", path.display(), candle_message(&e)))
        })?;
        Ok(GgufFile { content, reader, path: path.to_path_buf() })
    }

    fn tensor(&mut self, name: &str) -> Result<QTensor, Error> {
        self.content
            .tensor(&mut self.reader, name, &Device::Cpu)
            .map_err(|e| Error::ModelFile(format!("{}: tensor {name}: {}", self.path.display(), candle_message(&e))))
    }

    fn needs_requant(&self) -> bool {
        self.content.tensor_infos.values().any(|t| !has_fast_kernel(t.ggml_dtype))
    }

    pub(crate) fn md_u32(&self, key: &str) -> Result<u32, Error> {
        self.content
            .metadata
            .get(key)
            .and_then(|v| v.to_u32().ok())
            .ok_or_else(|| Error::ModelFile(format!("{}: missing GGUF metadata {key}", self.path.display())))
    }

    fn md_f32(&self, key: &str) -> Option<f32> {
        self.content.metadata.get(key).and_then(|v| v.to_f32().ok())
    }
}

/// Opens the GGUF to run: the file itself when all its tensors have fast kernels, else a
/// re-quantized copy next to it (made now if missing; written through a temp file and renamed).
/// Falls back to the model cache directory when the file's own directory is read-only.
pub(crate) fn open_runnable(path: &Path, requant: Requant) -> Result<GgufFile, Error> {
    let mut original = GgufFile::open(path)?;
    if !original.needs_requant() {
        return Ok(original);
    }
    let name = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "model".into());
    let derived_name = format!("{name}.{}.gguf", requant.suffix());
    let mut candidates = vec![path.with_file_name(&derived_name)];
    if let Ok(dir) = pull::model_dir() {
        candidates.push(dir.join(&derived_name));
    }
    for candidate in &candidates {
        if candidate.is_file()
            && let Ok(f) = GgufFile::open(candidate)
        {
            return Ok(f);
        }
    }
    let mut last_err = None;
    for candidate in &candidates {
        match requantize(&mut original, candidate, requant) {
            Ok(()) => return GgufFile::open(candidate),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| Error::ModelFile("no place to write the re-quantized model".into())))
}

/// Writes a copy of `src` with every slow-kernel tensor re-quantized.
fn requantize(src: &mut GgufFile, dest: &Path, requant: Requant) -> Result<(), Error> {
    let mut names: Vec<(String, u64)> =
        src.content.tensor_infos.iter().map(|(n, info)| (n.clone(), info.offset)).collect();
    names.sort_by_key(|(_, offset)| *offset);
    let mut tensors = Vec::with_capacity(names.len());
    for (name, _) in &names {
        let t = src.tensor(name)?;
        let t = if has_fast_kernel(t.dtype()) {
            t
        } else {
            let block = requant.dtype().block_size();
            let f = t.dequantize(&Device::Cpu).map_err(cerr("dequantizing"))?;
            if f.dims().last().is_some_and(|d| d % block == 0) {
                QTensor::quantize(&f, requant.dtype()).map_err(cerr("re-quantizing"))?
            } else {
                QTensor::quantize(&f, GgmlDType::F32).map_err(cerr("re-quantizing"))?
            }
        };
        tensors.push(t);
    }
    let mut metadata: Vec<(&str, &gguf_file::Value)> =
        src.content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    metadata.sort_by(|a, b| a.0.cmp(b.0));
    let refs: Vec<(&str, &QTensor)> = names.iter().map(|(n, _)| n.as_str()).zip(tensors.iter()).collect();
    pull::write_atomically(dest, |file| {
        let mut w = BufWriter::new(file);
        gguf_file::write(&mut w, &metadata, &refs).map_err(cerr("writing the re-quantized model"))?;
        w.flush().map_err(|e| Error::Io { context: format!("writing {}", dest.display()), source: e })?;
        w.rewind().map_err(|e| Error::Io { context: format!("writing {}", dest.display()), source: e })?;
        Ok(())
    })
}

/// The shape of the network.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    pub(crate) n_layer: usize,
    pub(crate) n_head: usize,
    pub(crate) n_kv_head: usize,
    pub(crate) head_dim: usize,
    pub(crate) n_embd: usize,
    pub(crate) context_length: usize,
    pub(crate) eps: f32,
}

struct Layer {
    /// Queries, keys and values: one matmul (rows stacked) when the three share a format.
    qkv: Projection,
    wo: Linear,
    /// Gate and up projections, stacked the same way.
    gate_up: Projection,
    down: Linear,
    attn_norm: Tensor,
    ffn_norm: Tensor,
}

/// The weights of a llama-architecture model.
pub(crate) struct Weights {
    pub(crate) config: Config,
    embed: Arc<QTensor>,
    output: QMatMul,
    norm: Tensor,
    layers: Vec<Layer>,
    cos: Tensor,
    sin: Tensor,
}

/// The most positions this engine keeps (bounds the RoPE tables and the KV cache).
const MAX_CONTEXT: usize = 8192;

impl Weights {
    pub(crate) fn load(file: &mut GgufFile) -> Result<Weights, Error> {
        Weights::load_with(file, packing_enabled())
    }

    /// Loads with Q8_0 linear layers repacked for [`qgemm`] (`pack`) or on candle's matmul.
    pub(crate) fn load_with(file: &mut GgufFile, pack: bool) -> Result<Weights, Error> {
        let arch = file.content.metadata.get("general.architecture").and_then(|v| v.to_string().ok()).cloned();
        if arch.as_deref() != Some("llama") {
            return Err(Error::ModelFile(format!(
                "{}: architecture {:?} is not supported (only llama)",
                file.path.display(),
                arch.unwrap_or_default()
            )));
        }
        let n_head = file.md_u32("llama.attention.head_count")? as usize;
        let n_kv_head = file.md_u32("llama.attention.head_count_kv").unwrap_or(n_head as u32) as usize;
        let n_embd = file.md_u32("llama.embedding_length")? as usize;
        let n_layer = file.md_u32("llama.block_count")? as usize;
        let context_length = (file.md_u32("llama.context_length").unwrap_or(2048) as usize).min(MAX_CONTEXT);
        let eps = file.md_f32("llama.attention.layer_norm_rms_epsilon").unwrap_or(1e-5);
        let rope_base = file.md_f32("llama.rope.freq_base").unwrap_or(10_000.0);
        if n_head == 0 || n_kv_head == 0 || !n_head.is_multiple_of(n_kv_head) || !n_embd.is_multiple_of(n_head) {
            return Err(Error::ModelFile(format!("{}: inconsistent head counts", file.path.display())));
        }
        let head_dim = n_embd / n_head;
        let rope_dim = file.md_u32("llama.rope.dimension_count").map(|d| d as usize).unwrap_or(head_dim);
        if rope_dim != head_dim {
            return Err(Error::ModelFile(format!("{}: partial RoPE is not supported", file.path.display())));
        }
        let config = Config { n_layer, n_head, n_kv_head, head_dim, n_embd, context_length, eps };

        let dense = |t: QTensor| t.dequantize(&Device::Cpu).map_err(cerr("dequantizing a norm"));
        let embed = Arc::new(file.tensor("token_embd.weight")?);
        let output = match file.content.tensor_infos.contains_key("output.weight") {
            true => QMatMul::from_qtensor(file.tensor("output.weight")?),
            false => QMatMul::from_arc(embed.clone()),
        }
        .map_err(cerr("output layer"))?;
        let norm = dense(file.tensor("output_norm.weight")?)?;
        let mut layers = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let mut t = |n: &str| file.tensor(&format!("blk.{i}.{n}.weight"));
            let qkv = Projection::new(vec![t("attn_q")?, t("attn_k")?, t("attn_v")?], pack)?;
            let gate_up = Projection::new(vec![t("ffn_gate")?, t("ffn_up")?], pack)?;
            let wo = Linear::new(t("attn_output")?, pack)?;
            let down = Linear::new(t("ffn_down")?, pack)?;
            let attn_norm = dense(t("attn_norm")?)?;
            let ffn_norm = dense(t("ffn_norm")?)?;
            layers.push(Layer { qkv, wo, gate_up, down, attn_norm, ffn_norm });
        }
        let (cos, sin) = rope_tables(head_dim, rope_base, context_length).map_err(cerr("RoPE tables"))?;
        Ok(Weights { config, embed, output, norm, layers, cos, sin })
    }

    /// Runs `tokens` at positions `cache.len()..` and returns the logits of the last one.
    pub(crate) fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>, Error> {
        self.forward_inner(tokens, cache).map_err(cerr("inference failed"))
    }

    fn forward_inner(&self, tokens: &[u32], cache: &mut KvCache) -> candle_core::Result<Vec<f32>> {
        let c = self.config;
        let seq = tokens.len();
        let pos = cache.len;
        if seq == 0 {
            candle_core::bail!("no tokens to run");
        }
        if pos + seq > c.context_length {
            candle_core::bail!("the context ({} tokens) is longer than the model's {}", pos + seq, c.context_length);
        }
        cache.reserve(self, pos + seq)?;
        let dev = Device::Cpu;
        let ids = Tensor::new(tokens, &dev)?;
        let mut x = self.embed.embedding(&ids)?.unsqueeze(0)?; // (1, seq, d)
        let n_rep = c.n_head / c.n_kv_head;
        let kv_len = pos + seq;
        let cos = self.cos.narrow(0, pos, seq)?;
        let sin = self.sin.narrow(0, pos, seq)?;
        let scale = 1.0 / (c.head_dim as f64).sqrt();
        for (i, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, c.eps)?;
            let qkv = layer.qkv.forward(&h)?;
            let [q, k, v] = qkv.as_slice() else { candle_core::bail!("the QKV projection gave {} parts", qkv.len()) };
            let q = q.contiguous()?.reshape((1, seq, c.n_head, c.head_dim))?.transpose(1, 2)?.contiguous()?;
            let k = k.contiguous()?.reshape((1, seq, c.n_kv_head, c.head_dim))?.transpose(1, 2)?.contiguous()?;
            let v = v.contiguous()?.reshape((1, seq, c.n_kv_head, c.head_dim))?.transpose(1, 2)?.contiguous()?;
            let q = candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?;
            let (kc, vc) = cache.layer(i)?;
            kc.slice_set(&k.squeeze(0)?, 1, pos)?;
            vc.slice_set(&v.squeeze(0)?, 1, pos)?;
            let keys = kc.narrow(1, 0, kv_len)?; // (kv_heads, kv_len, hd)
            let values = vc.narrow(1, 0, kv_len)?;
            // Grouped-query attention: the n_rep query heads of a KV head are stacked as rows.
            let qg = (q.reshape((c.n_kv_head, n_rep * seq, c.head_dim))? * scale)?;
            let att = qg.matmul(&keys.t()?)?; // (kv_heads, n_rep*seq, kv_len)
            let att = if seq > 1 {
                // Query i (row r with r % seq == i) sees keys ..= pos + i.
                let dims = att.dims3()?;
                let mut scores = att.flatten_all()?.to_vec1::<f32>()?;
                softmax::causal_softmax_in_place(&mut scores, kv_len, seq, pos);
                Tensor::from_vec(scores, dims, &dev)?
            } else {
                candle_nn::ops::softmax_last_dim(&att)?
            };
            let y = att.matmul(&values)?; // (kv_heads, n_rep*seq, hd)
            let y = y.reshape((1, c.n_head, seq, c.head_dim))?.transpose(1, 2)?.reshape((1, seq, c.n_embd))?;
            x = (layer.wo.forward(&y)? + &x)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, c.eps)?;
            let gu = layer.gate_up.forward(&h)?;
            let [g, u] = gu.as_slice() else { candle_core::bail!("the gate/up projection gave {} parts", gu.len()) };
            let g = candle_nn::ops::silu(g)?;
            x = (layer.down.forward(&(g * u)?)? + &x)?;
        }
        cache.len = kv_len;
        let last = x.narrow(1, seq - 1, 1)?.reshape((1, c.n_embd))?;
        let last = candle_nn::ops::rms_norm(&last, &self.norm, c.eps)?;
        let logits = self.output.forward(&last)?.squeeze(0)?;
        logits.to_dtype(DType::F32)?.to_vec1::<f32>()
    }
}

/// Several projections of the same input. When their weights share a quantized format they are
/// stacked into one matrix, so the input is quantized once and the threads meet once per call
/// instead of once per projection (on a 2-core machine the meeting costs as much as a small matmul).
enum Projection {
    Fused { matmul: Linear, widths: Vec<usize> },
    Separate(Vec<Linear>),
}

impl Projection {
    fn new(parts: Vec<QTensor>, pack: bool) -> Result<Projection, Error> {
        let dtype = parts.first().map(QTensor::dtype);
        let k = parts.first().and_then(|p| p.shape().dims().get(1).copied());
        let same = parts.iter().all(|p| Some(p.dtype()) == dtype && p.shape().dims().get(1).copied() == k);
        let quantized = dtype.is_some_and(|d| !matches!(d, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16));
        if let (true, true, Some(dtype), Some(k)) = (same, quantized, dtype, k) {
            let mut widths = Vec::with_capacity(parts.len());
            let mut bytes = Vec::new();
            for p in &parts {
                widths.push(p.shape().dims().first().copied().unwrap_or(0));
                bytes.extend_from_slice(&p.data().map_err(cerr("reading a projection"))?);
            }
            drop(parts);
            let rows: usize = widths.iter().sum();
            if dtype == GgmlDType::Q8_0 && pack && k.is_multiple_of(qgemm::QK) {
                let packed = PackedQ8::from_bytes(&bytes, rows, k)?;
                return Ok(Projection::Fused { matmul: Linear::Packed(packed), widths });
            }
            let storage = candle_core::quantized::QStorage::Cpu(dtype.from_data(std::borrow::Cow::Owned(bytes)));
            let stacked = QTensor::new(storage, (rows, k)).map_err(cerr("stacking projections"))?;
            let matmul = Linear::new(stacked, pack)?;
            return Ok(Projection::Fused { matmul, widths });
        }
        let matmuls = parts.into_iter().map(|p| Linear::new(p, pack)).collect::<Result<Vec<_>, Error>>()?;
        Ok(Projection::Separate(matmuls))
    }

    /// One output per projection, in order (views into one tensor when fused).
    fn forward(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        match self {
            Projection::Fused { matmul, widths } => {
                let all = matmul.forward(x)?;
                let last = all.rank() - 1;
                let mut start = 0;
                let mut out = Vec::with_capacity(widths.len());
                for w in widths {
                    out.push(all.narrow(last, start, *w)?);
                    start += w;
                }
                Ok(out)
            }
            Projection::Separate(ms) => ms.iter().map(|m| m.forward(x)).collect(),
        }
    }
}

/// Whether Q8_0 weights are repacked for [`qgemm`] (`LOOM_LOCAL_QGEMM=candle` keeps candle's
/// matmul, for comparison).
fn packing_enabled() -> bool {
    !std::env::var("LOOM_LOCAL_QGEMM").is_ok_and(|v| v == "candle")
}

/// A linear layer's weights: repacked Q8_0 for [`qgemm`], or candle's quantized matmul for other
/// formats.
enum Linear {
    Packed(PackedQ8),
    Candle(QMatMul),
}

impl Linear {
    fn new(t: QTensor, pack: bool) -> Result<Linear, Error> {
        if pack && let Some(packed) = PackedQ8::from_qtensor(&t)? {
            return Ok(Linear::Packed(packed));
        }
        Ok(Linear::Candle(QMatMul::from_qtensor(t).map_err(cerr("layer"))?))
    }

    /// `x · Wᵀ` over the last dimension of `x`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Linear::Candle(m) => m.forward(x),
            Linear::Packed(p) => {
                let mut dims = x.dims().to_vec();
                let k = dims.last().copied().unwrap_or(0);
                let m = x.elem_count().checked_div(k).unwrap_or(0);
                let data = x.flatten_all()?.to_vec1::<f32>()?;
                let out = p.matmul(&data, m, Kernel::best()).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                if let Some(last) = dims.last_mut() {
                    *last = p.n();
                }
                Tensor::from_vec(out, dims, x.device())
            }
        }
    }
}

fn rope_tables(head_dim: usize, base: f32, len: usize) -> candle_core::Result<(Tensor, Tensor)> {
    let theta: Vec<f32> = (0..head_dim).step_by(2).map(|i| 1f32 / base.powf(i as f32 / head_dim as f32)).collect();
    let theta = Tensor::new(theta.as_slice(), &Device::Cpu)?;
    let positions = Tensor::arange(0, len as u32, &Device::Cpu)?.to_dtype(DType::F32)?.reshape((len, 1))?;
    let angles = positions.matmul(&theta.reshape((1, head_dim / 2))?)?;
    Ok((angles.cos()?, angles.sin()?))
}

/// Keys and values of every layer for the positions run so far, and the tokens they belong to.
/// Grows in steps (so a short chat does not hold a full-context cache).
pub(crate) struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    capacity: usize,
    len: usize,
    /// The tokens at positions `0..len`.
    pub(crate) tokens: Vec<u32>,
}

const CACHE_STEP: usize = 512;

impl KvCache {
    pub(crate) fn new() -> KvCache {
        KvCache { layers: Vec::new(), capacity: 0, len: 0, tokens: Vec::new() }
    }

    /// Forgets positions from `len` on (keeps the prefix).
    pub(crate) fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
        self.tokens.truncate(self.len);
    }

    fn reserve(&mut self, w: &Weights, needed: usize) -> candle_core::Result<()> {
        if needed <= self.capacity && self.layers.len() == w.config.n_layer {
            return Ok(());
        }
        let c = w.config;
        let capacity = needed.div_ceil(CACHE_STEP).max(1) * CACHE_STEP;
        let capacity = capacity.min(c.context_length).max(needed);
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let k = Tensor::zeros((c.n_kv_head, capacity, c.head_dim), DType::F32, &Device::Cpu)?;
            let v = Tensor::zeros((c.n_kv_head, capacity, c.head_dim), DType::F32, &Device::Cpu)?;
            if let Some((ok, ov)) = self.layers.get(i)
                && self.len > 0
            {
                k.slice_set(&ok.narrow(1, 0, self.len)?.contiguous()?, 1, 0)?;
                v.slice_set(&ov.narrow(1, 0, self.len)?.contiguous()?, 1, 0)?;
            }
            layers.push((k, v));
        }
        self.layers = layers;
        self.capacity = capacity;
        Ok(())
    }

    fn layer(&self, i: usize) -> candle_core::Result<&(Tensor, Tensor)> {
        self.layers.get(i).ok_or_else(|| candle_core::Error::Msg(format!("no KV cache for layer {i}")))
    }
}

/// Sorts logits into a token: greedy at temperature 0, else softmax sampling with top-p.
pub(crate) struct Sampler {
    temperature: f32,
    top_p: f32,
    state: u64,
}

impl Sampler {
    pub(crate) fn new(temperature: Option<f32>, top_p: Option<f32>, seed: Option<u64>) -> Sampler {
        let seed = seed.unwrap_or(0x5eed_1234_abcd_ef01) | 1;
        Sampler { temperature: temperature.unwrap_or(0.0).max(0.0), top_p: top_p.unwrap_or(1.0), state: seed }
    }

    fn next_f32(&mut self) -> f32 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let r = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (r >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Picks a token among those `allowed` (all when `None`). `None` when nothing is allowed.
    pub(crate) fn sample(&mut self, logits: &[f32], allowed: Option<&dyn Fn(u32) -> bool>) -> Option<u32> {
        let ok = |i: usize| allowed.is_none_or(|f| f(i as u32)) && logits.get(i).is_some_and(|l| l.is_finite());
        if self.temperature <= 1e-5 {
            let mut best: Option<(usize, f32)> = None;
            for (i, &l) in logits.iter().enumerate() {
                if ok(i) && best.is_none_or(|(_, b)| l > b) {
                    best = Some((i, l));
                }
            }
            return best.map(|(i, _)| i as u32);
        }
        let mut cands: Vec<(usize, f32)> =
            logits.iter().enumerate().filter(|(i, _)| ok(*i)).map(|(i, &l)| (i, l / self.temperature)).collect();
        if cands.is_empty() {
            return None;
        }
        cands.sort_by(|a, b| b.1.total_cmp(&a.1));
        let max = cands.first().map(|c| c.1).unwrap_or(0.0);
        let mut probs: Vec<f32> = cands.iter().map(|c| (c.1 - max).exp()).collect();
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        let mut keep = probs.len();
        let mut acc = 0.0;
        for (n, p) in probs.iter().enumerate() {
            acc += p;
            if acc >= self.top_p {
                keep = n + 1;
                break;
            }
        }
        let mass: f32 = probs.iter().take(keep).sum();
        let mut r = self.next_f32() * mass;
        for (c, p) in cands.iter().zip(&probs).take(keep) {
            if r < *p {
                return Some(c.0 as u32);
            }
            r -= p;
        }
        cands.first().map(|c| c.0 as u32)
    }
}

/// The index of the largest logit (greedy decoding in the benchmark).
pub(crate) fn argmax(logits: &[f32]) -> Option<u32> {
    logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as u32)
}

#[cfg(test)]
mod tests {
    use super::{KvCache, Requant, Weights, argmax, candle_message, open_runnable};

    /// The packed Q8_0 products against candle's on the real model: a ~300-token prompt in
    /// chunks (the prompt path, causal softmax included), then greedy decoding. Skipped without the
    /// model in the cache.
    #[test]
    fn packed_matmuls_keep_the_logits_and_the_greedy_tokens() {
        let Some(path) = crate::pull::default_model_path().ok().filter(|p| p.is_file()) else {
            eprintln!("skipped: the local model is not in the cache");
            return;
        };
        let mut file = open_runnable(&path, Requant::Q8_0).unwrap();
        let tokenizer = crate::tokenizer::GgufTokenizer::from_gguf(&file.content).unwrap();
        let text = "<|im_start|>user\nThe council met on Tuesday to discuss three new bus lines, a tram \
                    extension along the river and a bicycle scheme. "
            .repeat(12)
            + "Summarize the plan in one sentence.<|im_end|>\n<|im_start|>assistant\n";
        let tokens = tokenizer.encode(&text).unwrap();
        assert!(tokens.len() > 256, "{} tokens", tokens.len());
        let packed = Weights::load_with(&mut file, true).unwrap();
        let plain = Weights::load_with(&mut file, false).unwrap();
        let run = |w: &Weights| {
            let mut cache = KvCache::new();
            let mut logits = Vec::new();
            for chunk in tokens.chunks(128) {
                logits = w.forward(chunk, &mut cache).unwrap();
            }
            let first = logits.clone();
            let mut out = Vec::new();
            for _ in 0..24 {
                let next = argmax(&logits).unwrap();
                out.push(next);
                logits = w.forward(&[next], &mut cache).unwrap();
            }
            (first, out)
        };
        let (pl, pt) = run(&packed);
        let (cl, ct) = run(&plain);
        let scale = cl.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = pl.iter().zip(&cl).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        eprintln!("logits differ by at most {diff} (largest {scale})");
        eprintln!("packed: {:?}\ncandle: {:?}", tokenizer.decode(&pt), tokenizer.decode(&ct));
        assert_eq!(pt, ct, "greedy tokens: {:?} against {:?}", tokenizer.decode(&pt), tokenizer.decode(&ct));
        assert!(diff <= 0.05 * scale, "logits differ by {diff} (largest {scale})");
    }

    #[test]
    fn candle_messages_leave_the_backtrace_out() {
        let inner = candle_core::Error::Msg("unknown dtype for tensor 42".into());
        let err = candle_core::Error::WithBacktrace {
            inner: Box::new(inner),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        assert!(err.to_string().lines().count() > 1, "candle's own message carries the backtrace");
        assert_eq!(candle_message(&err), "unknown dtype for tensor 42");
        let with_context = candle_core::Error::Context { inner: Box::new(err), context: Box::new("reading") };
        assert_eq!(candle_message(&with_context), "reading: unknown dtype for tensor 42");
    }
}
