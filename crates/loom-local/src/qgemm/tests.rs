#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

use super::{Kernel, PackedQ8};

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn q8(w: &[f32], n: usize, k: usize) -> QTensor {
    let t = Tensor::from_vec(w.to_vec(), (n, k), &Device::Cpu).unwrap();
    QTensor::quantize(&t, GgmlDType::Q8_0).unwrap()
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max) / scale
}

#[test]
fn every_kernel_matches_the_scalar_one() {
    // n not a multiple of 16 (a padded last item), m not a multiple of 4 (short tiles).
    let (n, k) = (40, 96);
    let w = random(n * k, 7);
    let packed = PackedQ8::from_qtensor(&q8(&w, n, k)).unwrap().unwrap();
    for m in [1, 2, 3, 4, 5, 9] {
        let x = random(m * k, 11 + m as u64);
        let reference = packed.matmul(&x, m, Kernel::Scalar).unwrap();
        assert_eq!(reference.len(), m * n);
        for kernel in Kernel::available() {
            let got = packed.matmul(&x, m, kernel).unwrap();
            let diff = max_rel_diff(&got, &reference);
            assert!(diff < 1e-5, "{kernel:?}, m = {m}: {diff}");
        }
    }
}

#[test]
fn the_product_matches_candles_q8_0_matmul_and_the_f32_one() {
    let (n, k, m) = (48, 576, 7);
    let w = random(n * k, 3);
    let x = random(m * k, 5);
    let qt = q8(&w, n, k);
    let packed = PackedQ8::from_qtensor(&qt).unwrap().unwrap();
    let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu).unwrap();
    let candle: Vec<f32> =
        QMatMul::from_qtensor(qt).unwrap().forward(&xt).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let wt = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
    let exact: Vec<f32> = xt.matmul(&wt.t().unwrap()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    for kernel in Kernel::available() {
        let got = packed.matmul(&x, m, kernel).unwrap();
        // The same quantized arithmetic as candle: only the f32 summation order differs.
        let vs_candle = max_rel_diff(&got, &candle);
        assert!(vs_candle < 1e-5, "{kernel:?} against candle: {vs_candle}");
        // Against the unquantized product: the quantization error of both operands.
        let vs_exact = max_rel_diff(&got, &exact);
        assert!(vs_exact < 0.02, "{kernel:?} against f32: {vs_exact}");
    }
}

#[test]
fn extreme_values_do_not_saturate() {
    // All quants at ±127: the AVX2 kernel's 16-bit pair sums are at their largest.
    let (n, k, m) = (16, 64, 4);
    let w: Vec<f32> = (0..n * k).map(|i| if i % 3 == 0 { -1.0 } else { 1.0 }).collect();
    let x: Vec<f32> = (0..m * k).map(|i| if i % 5 == 0 { 1.0 } else { -1.0 }).collect();
    let packed = PackedQ8::from_qtensor(&q8(&w, n, k)).unwrap().unwrap();
    let reference = packed.matmul(&x, m, Kernel::Scalar).unwrap();
    let exact: Vec<f32> = (0..m)
        .flat_map(|r| {
            let (x, w) = (&x, &w);
            (0..n).map(move |c| (0..k).map(|i| x[r * k + i] * w[c * k + i]).sum::<f32>())
        })
        .collect();
    assert!(max_rel_diff(&reference, &exact) < 1e-2);
    for kernel in Kernel::available() {
        let diff = max_rel_diff(&packed.matmul(&x, m, kernel).unwrap(), &reference);
        assert!(diff < 1e-6, "{kernel:?}: {diff}");
    }
}

#[test]
fn bad_sizes_are_errors() {
    assert!(PackedQ8::from_bytes(&[0u8; 33], 1, 32).is_err());
    assert!(PackedQ8::from_bytes(&[0u8; 34], 1, 31).is_err());
    let (n, k) = (16, 32);
    let packed = PackedQ8::from_qtensor(&q8(&random(n * k, 1), n, k)).unwrap().unwrap();
    assert!(packed.matmul(&[0.0; 33], 1, Kernel::best()).is_err());
    // Not Q8_0, or k not a multiple of 32: candle's matmul stays.
    let t = Tensor::from_vec(random(16 * 32, 2), (16, 32), &Device::Cpu).unwrap();
    assert!(PackedQ8::from_qtensor(&QTensor::quantize(&t, GgmlDType::Q4_0).unwrap()).unwrap().is_none());
}
