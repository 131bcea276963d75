//! The x86-64 kernels of [`super`], chosen at run time by CPU feature detection.
//!
//! This is the crate's only `unsafe`: SIMD intrinsics from `#[target_feature]` functions (called
//! only after `is_x86_feature_detected!` said the CPU has the features) and unaligned loads from
//! slices whose lengths [`tile`] checks before any kernel runs.
#![allow(unsafe_code)]

use super::{ITEM_ROWS, ItemRef, Kernel, MR, QK, QuantActs};

/// The fastest kernel the CPU supports.
pub(crate) fn detect() -> Kernel {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        if avx2 && is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
            return Kernel::Avx512Vnni;
        }
        if avx2 && has_avxvnni() {
            return Kernel::AvxVnni;
        }
        if avx2 {
            return Kernel::Avx2;
        }
    }
    Kernel::Scalar
}

/// Whether the CPU has AVX-VNNI (the VEX form of `vpdpbusd`).
pub(crate) fn has_avxvnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avxvnni") && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Rows `r0..r0 + mr` (`mr` ≤ [`MR`]) of `acts` against one work item, with a SIMD kernel. `None`
/// when a size does not match (nothing is read then) or the kernel is not an x86 one.
pub(crate) fn tile(
    kernel: Kernel,
    item: &ItemRef<'_>,
    acts: &QuantActs,
    r0: usize,
    mr: usize,
    blocks: usize,
    out: &mut [[f32; ITEM_ROWS]; MR],
) -> Option<()> {
    let k = blocks * QK;
    let sizes_ok = item.quants.len() == blocks * ITEM_ROWS * QK
        && item.scales.len() == blocks * ITEM_ROWS
        && item.offsets.len() == blocks * ITEM_ROWS
        && acts.k == k
        && (1..=MR).contains(&mr)
        && r0 + mr <= acts.m
        && acts.quants.len() == acts.m * k
        && acts.scales.len() == acts.m * blocks;
    if !sizes_ok {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let rows = Rows { item, acts, r0, blocks };
        // SAFETY: the kernel's features were detected at run time (`detect`, or the test's
        // `Kernel::available`), and the sizes were checked above; the kernels read only
        // `blocks` blocks of the item and of rows `r0..r0 + mr`.
        unsafe {
            match (kernel, mr) {
                (Kernel::Avx512Vnni, 1) => avx512vnni::tile::<1>(&rows, out),
                (Kernel::Avx512Vnni, 2) => avx512vnni::tile::<2>(&rows, out),
                (Kernel::Avx512Vnni, 3) => avx512vnni::tile::<3>(&rows, out),
                (Kernel::Avx512Vnni, _) => avx512vnni::tile::<4>(&rows, out),
                (Kernel::AvxVnni, 1) => avxvnni::tile::<1>(&rows, out),
                (Kernel::AvxVnni, 2) => avxvnni::tile::<2>(&rows, out),
                (Kernel::AvxVnni, 3) => avxvnni::tile::<3>(&rows, out),
                (Kernel::AvxVnni, _) => avxvnni::tile::<4>(&rows, out),
                (Kernel::Avx2, 1) => avx2::tile::<1>(&rows, out),
                (Kernel::Avx2, 2) => avx2::tile::<2>(&rows, out),
                (Kernel::Avx2, 3) => avx2::tile::<3>(&rows, out),
                (Kernel::Avx2, _) => avx2::tile::<4>(&rows, out),
                (Kernel::Scalar, _) => return None,
            }
        }
        Some(())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (kernel, out);
        None
    }
}

/// What a kernel reads: one work item and the activation rows from `r0`.
#[cfg(target_arch = "x86_64")]
struct Rows<'a> {
    item: &'a ItemRef<'a>,
    acts: &'a QuantActs,
    r0: usize,
    blocks: usize,
}

/// A VNNI kernel: `$dp(acc, unsigned, signed)` adds the 4-byte dot products of each 32-bit lane.
#[cfg(target_arch = "x86_64")]
macro_rules! vnni_kernel {
    ($name:ident, $features:literal, $dp:path) => {
        mod $name {
            use std::arch::x86_64::*;

            use super::{ITEM_ROWS, MR, QK, Rows};

            /// # Safety
            /// The CPU has the enabled features; `tile` checked the sizes.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn tile<const R: usize>(rows: &Rows<'_>, out: &mut [[f32; ITEM_ROWS]; MR]) {
                let k = rows.blocks * QK;
                let wq = rows.item.quants.as_ptr();
                let ws = rows.item.scales.as_ptr();
                let wo = rows.item.offsets.as_ptr();
                let aq = unsafe { rows.acts.quants.as_ptr().add(rows.r0 * k) };
                let asc = unsafe { rows.acts.scales.as_ptr().add(rows.r0 * rows.blocks) };
                let mut fsum = [[_mm256_setzero_ps(); 2]; R];
                for b in 0..rows.blocks {
                    let mut isum = [[_mm256_setzero_si256(); 2]; R];
                    let wb = unsafe { wq.add(b * ITEM_ROWS * QK) };
                    for j in 0..QK / 4 {
                        let w0 = unsafe { _mm256_loadu_si256(wb.add(j * 32) as *const __m256i) };
                        let w1 = unsafe { _mm256_loadu_si256(wb.add(256 + j * 32) as *const __m256i) };
                        for r in 0..R {
                            let quad = unsafe { (aq.add(r * k + b * QK + j * 4) as *const i32).read_unaligned() };
                            let a = _mm256_set1_epi32(quad);
                            isum[r][0] = $dp(isum[r][0], a, w0);
                            isum[r][1] = $dp(isum[r][1], a, w1);
                        }
                    }
                    let s0 = unsafe { _mm256_loadu_ps(ws.add(b * ITEM_ROWS)) };
                    let s1 = unsafe { _mm256_loadu_ps(ws.add(b * ITEM_ROWS + 8)) };
                    let o0 = unsafe { _mm256_loadu_si256(wo.add(b * ITEM_ROWS) as *const __m256i) };
                    let o1 = unsafe { _mm256_loadu_si256(wo.add(b * ITEM_ROWS + 8) as *const __m256i) };
                    for r in 0..R {
                        let da = _mm256_set1_ps(unsafe { *asc.add(r * rows.blocks + b) });
                        let d0 = _mm256_mul_ps(s0, da);
                        let d1 = _mm256_mul_ps(s1, da);
                        let q0 = _mm256_cvtepi32_ps(_mm256_sub_epi32(isum[r][0], o0));
                        let q1 = _mm256_cvtepi32_ps(_mm256_sub_epi32(isum[r][1], o1));
                        fsum[r][0] = _mm256_fmadd_ps(q0, d0, fsum[r][0]);
                        fsum[r][1] = _mm256_fmadd_ps(q1, d1, fsum[r][1]);
                    }
                }
                for r in 0..R {
                    let dst = out[r].as_mut_ptr();
                    unsafe {
                        _mm256_storeu_ps(dst, fsum[r][0]);
                        _mm256_storeu_ps(dst.add(8), fsum[r][1]);
                    }
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
vnni_kernel!(avx512vnni, "avx2,fma,avx512f,avx512vl,avx512vnni", _mm256_dpbusd_epi32);
#[cfg(target_arch = "x86_64")]
vnni_kernel!(avxvnni, "avx2,fma,avxvnni", _mm256_dpbusd_avx_epi32);

/// AVX2 without VNNI: `vpmaddubsw` needs an unsigned operand whose products cannot saturate, so
/// the signs move onto the activations (`|w| · sign(a, w) = w · a`, both at most 127).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{ITEM_ROWS, MR, QK, Rows};

    /// # Safety
    /// The CPU has AVX2 and FMA; `tile` checked the sizes.
    // Index loops over the register arrays: fully unrolled, so the arrays stay in registers.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile<const R: usize>(rows: &Rows<'_>, out: &mut [[f32; ITEM_ROWS]; MR]) {
        let k = rows.blocks * QK;
        let wq = rows.item.quants.as_ptr();
        let ws = rows.item.scales.as_ptr();
        let aq = unsafe { rows.acts.quants.as_ptr().add(rows.r0 * k) };
        let asc = unsafe { rows.acts.scales.as_ptr().add(rows.r0 * rows.blocks) };
        let ones = _mm256_set1_epi16(1);
        let flip = _mm256_set1_epi8(-128);
        let mut fsum = [[_mm256_setzero_ps(); 2]; R];
        for b in 0..rows.blocks {
            let mut isum = [[_mm256_setzero_si256(); 2]; R];
            let wb = unsafe { wq.add(b * ITEM_ROWS * QK) };
            for j in 0..QK / 4 {
                for g in 0..2 {
                    let w = unsafe { _mm256_loadu_si256(wb.add(g * 256 + j * 32) as *const __m256i) };
                    let aw = _mm256_abs_epi8(w);
                    for r in 0..R {
                        let quad = unsafe { (aq.add(r * k + b * QK + j * 4) as *const i32).read_unaligned() };
                        let a = _mm256_xor_si256(_mm256_set1_epi32(quad), flip);
                        let p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(a, w));
                        isum[r][g] = _mm256_add_epi32(isum[r][g], _mm256_madd_epi16(p, ones));
                    }
                }
            }
            let s0 = unsafe { _mm256_loadu_ps(ws.add(b * ITEM_ROWS)) };
            let s1 = unsafe { _mm256_loadu_ps(ws.add(b * ITEM_ROWS + 8)) };
            for r in 0..R {
                let da = _mm256_set1_ps(unsafe { *asc.add(r * rows.blocks + b) });
                let q0 = _mm256_cvtepi32_ps(isum[r][0]);
                let q1 = _mm256_cvtepi32_ps(isum[r][1]);
                fsum[r][0] = _mm256_fmadd_ps(q0, _mm256_mul_ps(s0, da), fsum[r][0]);
                fsum[r][1] = _mm256_fmadd_ps(q1, _mm256_mul_ps(s1, da), fsum[r][1]);
            }
        }
        for r in 0..R {
            let dst = out[r].as_mut_ptr();
            unsafe {
                _mm256_storeu_ps(dst, fsum[r][0]);
                _mm256_storeu_ps(dst.add(8), fsum[r][1]);
            }
        }
    }
}
