//! Branch-free f32 approximations that the compiler vectorises, for the
//! inference kernels; accuracy is checked against f64 references in the tests.

/// erf(x) for f32, max absolute error about 1e-7 (checked against libm in tests).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    // max/min rather than clamp: they map onto vector min/max instructions.
    #[allow(clippy::manual_clamp)]
    let x = x.max(-4.0).min(4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_6e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

/// e^x for f32, within 2 ulp of the true value for x in [−87, 88] and 0
/// below, written so the compiler vectorises it (libm's `expf` is one call
/// per element). Cody–Waite range reduction x = n·ln 2 + r, then a degree-6
/// polynomial for e^r, then 2ⁿ built in the exponent bits.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // 1.5·2²³: adding it rounds to an integer, kept in the low mantissa bits.
    const SHIFTER: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Comparisons rather than min/max, so a NaN stays NaN.
    let clamped = if x > 88.0 { 88.0 } else { x };
    let clamped = if clamped < -87.0 { -87.0 } else { clamped };
    let shifted = clamped * std::f32::consts::LOG2_E + SHIFTER;
    let n = shifted - SHIFTER;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    let exponent = (shifted.to_bits() as i32 - SHIFTER.to_bits() as i32 + 127) << 23;
    let y = er * f32::from_bits(exponent as u32);
    if x < -87.0 {
        0.0
    } else {
        y
    }
}

/// Lanes of the partial maxima and sums below: one AVX-512 register.
const LANES: usize = 16;

/// The largest element (−∞ for an empty row), in lanes the compiler vectorises.
#[inline(always)]
pub fn max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (l, &v) in lanes.iter_mut().zip(chunk) {
            *l = if v > *l { v } else { *l };
        }
    }
    tail.iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

/// Softmax of one row in place: `x ← e^(x − max) / Σ e^(x − max)`.
#[inline(always)]
pub fn softmax_in_place(row: &mut [f32]) {
    let top = max(row);
    let mut sums = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (s, v) in sums.iter_mut().zip(chunk.iter_mut()) {
            *v = exp(*v - top);
            *s += *v;
        }
    }
    let mut sum: f32 = sums.iter().sum();
    for v in chunks.into_remainder() {
        *v = exp(*v - top);
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_f64_and_zero_far_below() {
        let mut worst = 0f64;
        for i in -870_000..=880_000 {
            let x = i as f32 * 1e-4;
            let reference = (x as f64).exp();
            worst = worst.max(((exp(x) as f64 - reference) / reference).abs());
        }
        assert!(worst < 2.5e-7, "max relative error {worst}");
        assert_eq!(exp(-1e9), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn softmax_matches_the_definition_at_every_length() {
        for len in [1usize, 5, 16, 33, 257] {
            let row: Vec<f32> = (0..len).map(|i| ((i * 13) % 7) as f32 - 3.0).collect();
            let mut ours = row.clone();
            softmax_in_place(&mut ours);
            let top = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let total: f64 = row.iter().map(|&v| (v as f64 - top).exp()).sum();
            for (o, &v) in ours.iter().zip(&row) {
                let want = (v as f64 - top).exp() / total;
                assert!((*o as f64 - want).abs() < 1e-6, "len {len}: {o} vs {want}");
            }
        }
        assert_eq!(max(&[]), f32::NEG_INFINITY);
    }

    #[test]
    fn erf_matches_libm_closely() {
        let mut worst = 0f64;
        for i in -60_000..=60_000 {
            let x = i as f32 * 1e-4;
            let reference = libm_erf(x as f64);
            worst = worst.max((erf(x) as f64 - reference).abs());
        }
        assert!(worst < 5e-7, "max error {worst}");
    }

    /// erf in f64 by its Taylor series (|x| < 3) or continued fraction of erfc.
    fn libm_erf(x: f64) -> f64 {
        if x.abs() < 3.0 {
            let (mut term, mut sum, x2) = (x, x, x * x);
            for n in 1..200 {
                term *= -x2 / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc(x) = exp(-x²)/(x√π) · 1/(1 + 1/(2x²)/(1 + 2/(2x²)/(1 + …))) via Lentz-free backward recursion.
            let a = x.abs();
            let mut f = 0.0;
            for n in (1..60).rev() {
                f = (n as f64 / 2.0) / (a + f);
            }
            let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f);
            (1.0 - erfc) * x.signum()
        }
    }
}
