//! What every benchmark report says about the machine it ran on: the CPU,
//! the matrix kernel cpack's products use, and what the system BLAS (still
//! linked, for FAISS's LAPACK routines) would pick, so a figure can be read
//! against the kernel that produced it.

use anyhow::Context;
use std::ffi::{c_char, c_void, CStr};

/// The CPU's model name from /proc/cpuinfo (empty if unknown).
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default()
}

extern "C" {
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
}

/// The core type OpenBLAS chose for this process (`OPENBLAS_CORETYPE` or
/// its CPU table), or `None` when the loaded BLAS is not OpenBLAS.
fn openblas_core() -> Option<String> {
    // SAFETY: dlsym with RTLD_DEFAULT (null) looks the name up in every
    // loaded object; a non-null result is OpenBLAS's `char *(void)` getter.
    unsafe {
        let getter = dlsym(std::ptr::null_mut(), c"openblas_get_corename".as_ptr());
        if getter.is_null() {
            return None;
        }
        let getter: extern "C" fn() -> *const c_char = std::mem::transmute(getter);
        let name = getter();
        (!name.is_null()).then(|| CStr::from_ptr(name).to_string_lossy().into_owned())
    }
}

/// Which of the CPU's flags decide the kernels (bf16 and wide vector
/// instructions), from /proc/cpuinfo.
fn cpu_flags() -> Vec<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags"))
        .unwrap_or("");
    let mut wanted: Vec<String> = flags
        .split_whitespace()
        .filter(|f| f.starts_with("avx512") || f.starts_with("amx") || *f == "avx2" || *f == "fma")
        .map(str::to_string)
        .collect();
    wanted.sort();
    wanted
}

/// The facts as JSON, for every report's `machine` field.
pub fn machine() -> serde_json::Value {
    serde_json::json!({
        "cpu": cpu_model(),
        "matmul_kernel": cpack_model::matmul::kernel(),
        "bf16_kernel": cpack_model::matmul::Bf16Kernel::detect().name(),
        "cpu_flags": cpu_flags(),
        "system_blas_core": openblas_core(),
        "openblas_coretype_env": std::env::var("OPENBLAS_CORETYPE").ok(),
    })
}

/// One line for stderr: `machine: … · matmul kernel … · system BLAS …`.
pub fn print() {
    let facts = machine();
    eprintln!(
        "machine: {} · cpack matmul kernel: gemm {}, bf16 products: {} · system BLAS (LAPACK only): {}{}",
        facts["cpu"].as_str().unwrap_or("?"),
        facts["matmul_kernel"].as_str().unwrap_or("?"),
        facts["bf16_kernel"].as_str().unwrap_or("?"),
        facts["system_blas_core"]
            .as_str()
            .map_or("not OpenBLAS".to_string(), |c| format!("OpenBLAS core {c}")),
        facts["openblas_coretype_env"]
            .as_str()
            .map_or(String::new(), |c| format!(" (OPENBLAS_CORETYPE={c})")),
    );
}

/// The process's peak resident set so far (`VmHWM`), in MiB.
pub fn peak_rss_mib() -> anyhow::Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/self/status")?;
    Ok(kib / 1024.0)
}
