//! Matrix products on bf16 operands with f32 accumulation: PyTorch's CPU
//! autocast recipe, where both factors of every product are rounded to bf16
//! (round to nearest even) and the sums are kept in f32.
//!
//! The kernel is chosen once from the CPU's flags ([`Bf16Kernel::detect`]):
//! AMX's `tdpbf16ps` multiplies whole bf16 tiles; AVX-512 BF16's
//! `vdpbf16ps` multiplies bf16 pairs at twice the rate of an f32 FMA; a CPU
//! with neither rounds the operands and runs the f32 kernel, so a bf16 model
//! computes the same numbers everywhere, up to the order of the sums (and
//! subnormals below 2⁻¹²⁶, which the bf16 instructions treat as zero).

use super::{gemm, MatMut, MatRef, ShapeError};

/// Which instructions multiply the bf16 operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// AMX tiles (`tdpbf16ps`): 16 × 32 bf16 by 32 × 16, into a 16 × 16 f32 tile.
    Amx,
    /// AVX-512 BF16 (`vdpbf16ps`): pairs of bf16 products summed into f32 lanes.
    Avx512Bf16,
    /// Operands rounded to bf16 and multiplied by the f32 kernel: no speed-up,
    /// the same numbers.
    RoundedF32,
}

impl Bf16Kernel {
    /// Every kernel, fastest first.
    pub const ALL: [Bf16Kernel; 3] = [
        Bf16Kernel::Amx,
        Bf16Kernel::Avx512Bf16,
        Bf16Kernel::RoundedF32,
    ];

    /// The fastest kernel this CPU runs.
    pub fn detect() -> Self {
        Self::ALL
            .into_iter()
            .find(|kernel| kernel.runs_here())
            .unwrap_or(Bf16Kernel::RoundedF32)
    }

    /// Whether this CPU (and, for AMX, the OS) runs it.
    pub fn runs_here(self) -> bool {
        match self {
            Bf16Kernel::Amx => super::amx_bf16::available(),
            Bf16Kernel::Avx512Bf16 => super::avx512_bf16::available(),
            Bf16Kernel::RoundedF32 => true,
        }
    }

    /// Its name in benchmark facts and `cpack --version`.
    pub fn name(self) -> &'static str {
        match self {
            Bf16Kernel::Amx => "amx-bf16",
            Bf16Kernel::Avx512Bf16 => "avx512-bf16",
            Bf16Kernel::RoundedF32 => "bf16-rounded-f32",
        }
    }

    /// Whether it multiplies faster than the f32 kernel (on a CPU without
    /// bf16 instructions, bf16 only costs the rounding).
    pub fn is_native(self) -> bool {
        self != Bf16Kernel::RoundedF32
    }
}

/// `x` rounded to the nearest bf16 (ties to even), as an f32. Branch-free,
/// so a loop over a slice of it vectorises.
pub fn round_to_bf16(x: f32) -> f32 {
    f32::from_bits((bf16_bits(x) as u32) << 16)
}

/// `x`'s bf16 bits (round to nearest even; a NaN stays a quiet NaN, an
/// overflow becomes infinity).
pub(super) fn bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    let rounded = bits.wrapping_add(0x7FFF + ((bits >> 16) & 1));
    let is_nan = (bits & 0x7FFF_FFFF) > 0x7F80_0000;
    let kept = if is_nan { bits | 0x0040_0000 } else { rounded };
    (kept >> 16) as u16
}

/// `out ← alpha·a·b + beta·out` with `a` and `b` rounded to bf16 and the
/// products summed in f32; as [`gemm`] otherwise (shapes, `beta = 0`,
/// threads).
pub fn gemm_bf16(
    kernel: Bf16Kernel,
    a: MatRef,
    b: MatRef,
    out: &mut MatMut,
    alpha: f32,
    beta: f32,
    threads: usize,
) -> Result<(), ShapeError> {
    // The native kernels are checked here, since a `Bf16Kernel` can be
    // named on any CPU; the rounded f32 kernel computes the same numbers
    // on every one.
    match kernel {
        // SAFETY: the CPU and the OS run the kernel.
        Bf16Kernel::Amx if kernel.runs_here() => unsafe {
            super::amx_bf16::gemm(a, b, out, alpha, beta, threads)
        },
        // SAFETY: the CPU runs the kernel.
        Bf16Kernel::Avx512Bf16 if kernel.runs_here() => unsafe {
            super::avx512_bf16::gemm(a, b, out, alpha, beta, threads)
        },
        Bf16Kernel::Amx | Bf16Kernel::Avx512Bf16 | Bf16Kernel::RoundedF32 => {
            rounded_f32(a, b, out, alpha, beta, threads)
        }
    }
}

/// `m` copied with every element rounded to bf16, in the layout that reads
/// the source in order (row-major unless the view is a transposed one).
fn rounded_copy(m: MatRef) -> (Vec<f32>, bool) {
    let row_major = m.col_stride <= m.row_stride;
    let (outer, inner, outer_stride, inner_stride) = if row_major {
        (m.rows, m.cols, m.row_stride, m.col_stride)
    } else {
        (m.cols, m.rows, m.col_stride, m.row_stride)
    };
    let mut copy = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        let start = o * outer_stride;
        if inner_stride == 1 {
            copy.extend(
                m.data[start..start + inner]
                    .iter()
                    .map(|x| round_to_bf16(*x)),
            );
        } else {
            let at = |i: usize| m.data[start + i * inner_stride];
            copy.extend((0..inner).map(|i| round_to_bf16(at(i))));
        }
    }
    (copy, row_major)
}

fn view(data: &[f32], rows: usize, cols: usize, row_major: bool) -> Result<MatRef<'_>, ShapeError> {
    if row_major {
        MatRef::row_major(data, rows, cols)
    } else {
        Ok(MatRef::row_major(data, cols, rows)?.t())
    }
}

fn rounded_f32(
    a: MatRef,
    b: MatRef,
    out: &mut MatMut,
    alpha: f32,
    beta: f32,
    threads: usize,
) -> Result<(), ShapeError> {
    super::check_shapes(&a, &b, out)?;
    let (a_copy, a_rows) = rounded_copy(a);
    let (b_copy, b_rows) = rounded_copy(b);
    let a = view(&a_copy, a.rows, a.cols, a_rows)?;
    let b = view(&b_copy, b.rows, b.cols, b_rows)?;
    gemm(a, b, out, alpha, beta, threads)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values spread over a few binades, most not bf16-exact.
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0) as f32
            })
            .collect()
    }

    /// `a·b` in f64 from bf16-rounded operands: what every kernel computes,
    /// up to the order and rounding of its f32 sums.
    fn reference(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|p| {
                        round_to_bf16(a[i * k + p]) as f64 * round_to_bf16(b[p * n + j]) as f64
                    })
                    .sum();
            }
        }
        c
    }

    /// The bit trick rounds as the `half` crate does, over every exponent,
    /// NaNs and infinities included.
    #[test]
    fn rounding_agrees_with_the_half_crate() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let specials = [
            0u32,
            0x8000_0000,
            0x7F80_0000,
            0xFF80_0000,
            0x7F7F_FFFF,
            0x7FC0_0001,
            0x7F80_0001,
            0x0000_8000,
            0x3F80_8000,
        ];
        let random = (0..1_000_000).map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u32
        });
        for bits in specials.into_iter().chain(random) {
            let x = f32::from_bits(bits);
            let ours = round_to_bf16(x);
            let theirs = half::bf16::from_f32(x).to_f32();
            assert!(
                ours.to_bits() == theirs.to_bits() || (ours.is_nan() && theirs.is_nan()),
                "{bits:#010x}: {ours:e} against {theirs:e}"
            );
        }
    }

    #[test]
    fn rounding_is_to_nearest_even_and_keeps_specials() {
        // 1 + 2⁻⁸ lies halfway between bf16 1 and 1 + 2⁻⁷: ties go to the even 1.
        assert_eq!(round_to_bf16(1.0 + 2f32.powi(-8)), 1.0);
        assert_eq!(
            round_to_bf16(1.0 + 3.0 * 2f32.powi(-8)),
            1.0 + 2.0 * 2f32.powi(-7)
        );
        assert_eq!(
            round_to_bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-20)),
            1.0 + 2f32.powi(-7)
        );
        assert!(round_to_bf16(f32::NAN).is_nan());
        assert_eq!(round_to_bf16(f32::INFINITY), f32::INFINITY);
        assert_eq!(round_to_bf16(-0.0).to_bits(), (-0.0f32).to_bits());
    }

    /// Every kernel this CPU runs, against the f64 product of the rounded
    /// operands, over transposed views, partial tiles and blocks, several
    /// tiles of the inner dimension, alpha, beta and threads.
    #[test]
    fn kernels_multiply_the_rounded_operands() {
        let kernels = Bf16Kernel::ALL.into_iter().filter(|k| k.runs_here());
        for kernel in kernels {
            eprintln!("bf16 kernel {}", kernel.name());
            for (m, k, n) in [
                (1, 1, 1),
                (3, 0, 5),
                (7, 33, 17),
                (19, 64, 70),
                (40, 129, 33),
                (70, 384, 65),
            ] {
                let a = values(m * k, 1);
                let b = values(k * n, 2);
                let want = reference(&a, &b, m, k, n);
                // The weight side as Hugging Face stores it: `[n, k]`, used transposed.
                let b_t: Vec<f32> = (0..n * k).map(|x| b[(x % k) * n + x / k]).collect();
                for threads in [1, 2] {
                    for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0), (2.0, -0.25)] {
                        let start = values(m * n, 3);
                        let mut out = start.clone();
                        let mut c = MatMut::row_major(&mut out, m, n).unwrap();
                        let a_view = MatRef::row_major(&a, m, k).unwrap();
                        let b_view = MatRef::row_major(&b_t, n, k).unwrap().t();
                        gemm_bf16(kernel, a_view, b_view, &mut c, alpha, beta, threads).unwrap();
                        for (x, got) in out.iter().enumerate() {
                            let exact = alpha as f64 * want[x] + beta as f64 * start[x] as f64;
                            let scale: f64 = (0..k)
                                .map(|p| (a[x / n * k + p] * b[p * n + x % n]).abs() as f64)
                                .sum::<f64>()
                                + start[x].abs() as f64;
                            assert!(
                                (*got as f64 - exact).abs()
                                    <= 1e-6 * scale.max(1.0) * k.max(1) as f64,
                                "{kernel:?} {m}×{k}×{n} α {alpha} β {beta}, {threads} threads, \
                                 element {x}: {got} against {exact}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn bf16_products_stay_near_the_f32_product() {
        let (m, k, n) = (16, 384, 24);
        let (a, b) = (values(m * k, 4), values(k * n, 5));
        let mut f32_out = vec![0f32; m * n];
        let mut bf16_out = vec![0f32; m * n];
        let (a_view, b_view) = (
            MatRef::row_major(&a, m, k).unwrap(),
            MatRef::row_major(&b, k, n).unwrap(),
        );
        gemm(
            a_view,
            b_view,
            &mut MatMut::row_major(&mut f32_out, m, n).unwrap(),
            1.0,
            0.0,
            1,
        )
        .unwrap();
        let mut c = MatMut::row_major(&mut bf16_out, m, n).unwrap();
        gemm_bf16(Bf16Kernel::detect(), a_view, b_view, &mut c, 1.0, 0.0, 1).unwrap();
        let diff = f32_out.iter().zip(&bf16_out).map(|(x, y)| (x - y).abs());
        let worst = diff.fold(0f32, f32::max);
        // Each operand is off by at most 2⁻⁹ relative; the sum of |a·b| over
        // 384 terms of size about 1 bounds the error, and it must show.
        assert!(
            worst > 0.0,
            "bf16 products equal f32 ones: nothing was rounded"
        );
        assert!(
            worst < 2.0 * 384.0 * 2f32.powi(-9),
            "worst difference {worst}"
        );
    }

    #[test]
    fn refuses_shapes_that_do_not_fit() {
        let data = vec![0f32; 12];
        let mut out = vec![0f32; 9];
        let a = MatRef::row_major(&data, 3, 4).unwrap();
        let b = MatRef::row_major(&data, 3, 4).unwrap();
        let mut c = MatMut::row_major(&mut out, 3, 3).unwrap();
        for kernel in Bf16Kernel::ALL {
            let err = gemm_bf16(kernel, a, b, &mut c, 1.0, 0.0, 1).unwrap_err();
            assert!(matches!(err, ShapeError::Mismatch { .. }), "{err}");
        }
    }
}
