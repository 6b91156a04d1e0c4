//! The ONNX Runtime encoder backend: runs a graph written by [`crate::onnx`]
//! through `libonnxruntime`, loaded at run time from a path (so a missing
//! library is an ordinary error, and no ONNX Runtime is needed to build cpack).

use crate::encoder::{
    BackendKind, BackendLoader, EncoderBackend, EncoderSettings, WeightPrecision,
};
use crate::error::{Error, Result};
use crate::onnx::{cached_export, ExportOptions, SENTENCE_OUTPUT};
use cpack_model::ModelDir;
use cpack_model::TokenBatch;
use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::Tensor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// How the backend loads and runs ONNX Runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrtOptions {
    /// `libonnxruntime.so` to load; one per process.
    pub library: PathBuf,
    /// Sessions that run batches at the same time (one per encoder worker).
    pub sessions: usize,
    /// Intra-op threads of each session.
    pub threads: usize,
    /// Whether ORT's idle threads spin. Spinning wins on an idle machine and
    /// halves throughput on a busy or small one, so it is off by default.
    pub spinning: bool,
}

/// Where `scripts/setup.sh` unpacks the library, under the cache directory.
pub const LIBRARY_IN_CACHE: &str = "ort/libonnxruntime.so.1.32.0";

/// The ONNX Runtime library to load when none is configured: `$CPACK_ORT_LIBRARY`,
/// else `$CPACK_CACHE/ort/…`, else `.cache/ort/…` in the nearest ancestor of
/// any of `near` (the workspace, the executable) that has one, else the
/// `onnxruntime` Python package installed with the executable (the
/// wheel's dependency).
pub fn find_library(near: &[&Path]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CPACK_ORT_LIBRARY") {
        return Some(PathBuf::from(path));
    }
    let from_cache_env =
        std::env::var_os("CPACK_CACHE").map(|c| Path::new(&c).join(LIBRARY_IN_CACHE));
    from_cache_env
        .into_iter()
        .chain(near.iter().flat_map(|start| {
            start
                .ancestors()
                .map(|dir| dir.join(".cache").join(LIBRARY_IN_CACHE))
        }))
        .find(|candidate| candidate.is_file())
        .or_else(|| near.iter().find_map(|start| in_python_package(start)))
}

/// `libonnxruntime.so.*` of the `onnxruntime` package installed with the
/// `executable`: a wheel's binary lives in `site-packages/cpack.scripts/`
/// (auditwheel's layout, a launcher in `bin/`), or in `<prefix>/bin/`
/// beside `<prefix>/lib/python3.X/site-packages`.
fn in_python_package(executable: &Path) -> Option<PathBuf> {
    let up = executable.parent()?.parent()?;
    let prefix_sites = std::fs::read_dir(up.join("lib"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|python| python.file_name().to_string_lossy().starts_with("python3"))
        .map(|python| python.path().join("site-packages"));
    let mut found: Vec<PathBuf> = std::iter::once(up.to_path_buf())
        .chain(prefix_sites)
        .map(|site| site.join("onnxruntime/capi"))
        .filter_map(|capi| std::fs::read_dir(capi).ok())
        .flat_map(|files| files.flatten().map(|f| f.path()))
        .filter(|file| {
            let name = file.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("libonnxruntime.so.") && file.is_file()
        })
        .collect();
    // Several Pythons in one prefix: the newest ONNX Runtime (by version
    // number, not by name: 1.32 is newer than 1.9).
    found.sort_by_key(|file| (library_version(file), file.clone()));
    found.pop()
}

/// The numbers of `libonnxruntime.so.1.32.0`'s version.
fn library_version(file: &Path) -> Vec<u64> {
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    name.trim_start_matches("libonnxruntime.so.")
        .split('.')
        .map(|part| part.parse().unwrap_or(0))
        .collect()
}

/// The runtime loaded by this process, and from where.
static RUNTIME: OnceLock<(PathBuf, Environment)> = OnceLock::new();
static RUNTIME_INIT: Mutex<()> = Mutex::new(());

fn runtime_error(action: impl Into<String>) -> impl FnOnce(ort::Error) -> Error {
    let action = action.into();
    move |e| Error::OnnxRuntime {
        action,
        source: Box::new(e),
    }
}

/// Loads `library` once per process; asking for another one later is an error.
fn environment(library: &Path) -> Result<&'static Environment> {
    let _guard = RUNTIME_INIT.lock().unwrap_or_else(|e| e.into_inner());
    if RUNTIME.get().is_none() {
        if !library.is_file() {
            return Err(Error::NoOrtLibrary {
                path: library.to_path_buf(),
            });
        }
        let builder = ort::init_from(library).map_err(|e| Error::OnnxRuntime {
            action: format!("load {}", library.display()),
            source: Box::new(e),
        })?;
        let env = builder
            .with_name("cpack")
            .build()
            .map_err(runtime_error("create the ONNX Runtime environment"))?;
        let _ = RUNTIME.set((library.to_path_buf(), env));
    }
    let (loaded, env) = RUNTIME.get().expect("set above");
    if loaded != library {
        return Err(Error::OrtLoadedElsewhere {
            loaded: loaded.clone(),
            wanted: library.to_path_buf(),
        });
    }
    Ok(env)
}

pub struct OrtBackend {
    sessions: Vec<Mutex<Session>>,
    next_session: AtomicUsize,
    dim: usize,
    precision: WeightPrecision,
}

impl OrtBackend {
    /// Opens `graph` (written by [`crate::onnx::export_to`]) in `options.sessions` sessions.
    pub fn load(
        graph: &Path,
        dim: usize,
        precision: WeightPrecision,
        options: &OrtOptions,
    ) -> Result<Self> {
        let env = environment(&options.library)?;
        let open = || -> std::result::Result<Session, ort::Error> {
            Session::builder(env)?
                .with_optimization_level(GraphOptimizationLevel::Level3)?
                .with_intra_threads(options.threads.max(1))?
                .with_intra_op_spinning(options.spinning)?
                .commit_from_file(graph)
        };
        let sessions = (0..options.sessions.max(1))
            .map(|_| {
                open()
                    .map(Mutex::new)
                    .map_err(runtime_error(format!("open {}", graph.display())))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(OrtBackend {
            sessions,
            next_session: AtomicUsize::new(0),
            dim,
            precision,
        })
    }
}

/// Loads [`OrtBackend`]s, exporting each model to ONNX on first use.
pub struct OrtLoader {
    pub options: OrtOptions,
    pub precision: WeightPrecision,
    /// Where exported graphs are kept, named by the weights' fingerprint.
    pub cache_dir: PathBuf,
}

impl BackendLoader for OrtLoader {
    fn load(
        &self,
        model: &ModelDir,
        settings: &EncoderSettings,
    ) -> Result<Box<dyn EncoderBackend>> {
        environment(&self.options.library)?; // fail before spending time on an export
        let export = ExportOptions {
            pooling: settings.pooling,
            normalize: settings.normalize,
            precision: self.precision,
        };
        let graph = cached_export(model, export, &self.cache_dir)?;
        let backend = OrtBackend::load(&graph, model.hidden_size(), self.precision, &self.options)?;
        Ok(Box::new(backend))
    }
}

fn int64_input(shape: [usize; 2], values: impl Iterator<Item = i64>) -> Result<Tensor<i64>> {
    Tensor::from_array((shape, values.collect::<Vec<_>>()))
        .map_err(runtime_error("create an input tensor"))
}

impl EncoderBackend for OrtBackend {
    fn embed(&self, batch: &TokenBatch) -> Result<Vec<f32>> {
        let shape = [batch.batch, batch.seq_len];
        let ids = int64_input(shape, batch.input_ids.iter().map(|&i| i as i64))?;
        let mask = int64_input(shape, batch.attention_mask.iter().map(|&m| m as i64))?;
        let types = int64_input(shape, std::iter::repeat_n(0, batch.input_ids.len()))?;
        // Workers take sessions in turn; with one session per worker none waits.
        let slot = self.next_session.fetch_add(1, Ordering::Relaxed) % self.sessions.len();
        let mut session = self.sessions[slot]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let outputs = session
            .run(ort::inputs![
                "input_ids" => ids,
                "attention_mask" => mask,
                "token_type_ids" => types,
            ])
            .map_err(runtime_error("run the encoder graph"))?;
        let (_, values) = outputs[SENTENCE_OUTPUT]
            .try_extract_tensor::<f32>()
            .map_err(runtime_error("read the sentence embeddings"))?;
        Ok(values.to_vec())
    }

    fn tokens_per_run(&self) -> usize {
        // Short runs keep ORT's activations in cache. A benchmark result:
        // `bench/encode_real.sh` measures it again on the machine at hand.
        256
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Ort
    }

    fn precision(&self) -> WeightPrecision {
        self.precision
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::candle_backend::CandleBackend;
    use crate::onnx::{export_to, ExportOptions};
    use crate::{Encoder, EncoderSettings, TextKind};
    use cpack_model::{ModelDir, Pooling};

    #[test]
    fn the_onnxruntime_package_installed_with_the_executable_is_found() {
        let prefix = tempfile::tempdir().unwrap();
        let exe = prefix.path().join("bin/cpack");
        std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
        assert_eq!(in_python_package(&exe), None);
        let capi = prefix
            .path()
            .join("lib/python3.11/site-packages/onnxruntime/capi");
        std::fs::create_dir_all(&capi).unwrap();
        std::fs::write(capi.join("onnxruntime_pybind11_state.so"), b"").unwrap();
        let library = capi.join("libonnxruntime.so.1.32.0");
        std::fs::write(&library, b"").unwrap();
        assert_eq!(in_python_package(&exe), Some(library.clone()));
        // Another Python of the prefix with an older runtime is passed over.
        let older = prefix
            .path()
            .join("lib/python3.9/site-packages/onnxruntime/capi");
        std::fs::create_dir_all(&older).unwrap();
        std::fs::write(older.join("libonnxruntime.so.1.9.0"), b"").unwrap();
        assert_eq!(in_python_package(&exe), Some(library.clone()));
        // The wheel's own layout: site-packages/cpack.scripts/cpack.
        let site = capi.parent().unwrap().parent().unwrap();
        let in_site = site.join("cpack.scripts/cpack");
        assert_eq!(in_python_package(&in_site), Some(library));
    }

    const TEXTS: [&str; 6] = [
        "hello world",
        "a much longer sentence about insurance policies and premiums",
        "保险 理赔",
        "",
        "short",
        "world hello again and again",
    ];

    fn options() -> OrtOptions {
        OrtOptions {
            library: find_library(&[Path::new(env!("CARGO_MANIFEST_DIR"))])
                .expect("ONNX Runtime library missing: run scripts/setup.sh"),
            sessions: 2,
            threads: 1,
            spinning: false,
        }
    }

    /// Embeds `TEXTS` (padded batches of 4) with `backend`.
    fn embed(
        model: &ModelDir,
        pooling: Pooling,
        normalize: bool,
        backend: Box<dyn EncoderBackend>,
    ) -> Vec<f32> {
        let settings = EncoderSettings {
            pooling,
            normalize,
            batch_size: 4,
            ..EncoderSettings::declared_by(model)
        };
        Encoder::new(model, settings, backend)
            .unwrap()
            .with_workers(2)
            .encode(&TEXTS, TextKind::Passage, &mut |_, _| {})
            .unwrap()
    }

    fn exported(model: &ModelDir, dir: &Path, export: ExportOptions) -> OrtBackend {
        let path = dir.join(format!("{}-{}.onnx", export.pooling, export.precision));
        export_to(model, export, &path).unwrap();
        OrtBackend::load(&path, model.hidden_size(), export.precision, &options()).unwrap()
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (norm(a) * norm(b))
    }

    #[test]
    fn exported_graph_computes_what_candle_computes() {
        let dir = tempfile::tempdir().unwrap();
        cpack_model::test_model::write_tiny_model(dir.path(), &TEXTS, 5).unwrap();
        let model = ModelDir::open(dir.path()).unwrap();
        for (pooling, normalize) in [(Pooling::Mean, true), (Pooling::Cls, false)] {
            let export = ExportOptions {
                pooling,
                normalize,
                precision: WeightPrecision::F32,
            };
            let ort = embed(
                &model,
                pooling,
                normalize,
                Box::new(exported(&model, dir.path(), export)),
            );
            let candle = CandleBackend::load(
                &model,
                pooling,
                normalize,
                cpack_model::ComputeDevice::Cpu,
                crate::WeightPrecision::F32,
            )
            .unwrap();
            let reference = embed(&model, pooling, normalize, Box::new(candle));
            let worst = ort
                .iter()
                .zip(&reference)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-4, "{pooling} pooling: max difference {worst}");
        }
    }

    #[test]
    fn int8_graph_stays_close_to_f32() {
        let dir = tempfile::tempdir().unwrap();
        cpack_model::test_model::write_tiny_model(dir.path(), &TEXTS, 9).unwrap();
        let model = ModelDir::open(dir.path()).unwrap();
        let run = |precision| {
            let export = ExportOptions {
                pooling: Pooling::Mean,
                normalize: true,
                precision,
            };
            let backend = exported(&model, dir.path(), export);
            assert_eq!(backend.precision(), precision);
            embed(&model, Pooling::Mean, true, Box::new(backend))
        };
        let (f32s, int8s) = (run(WeightPrecision::F32), run(WeightPrecision::Int8));
        assert_ne!(f32s, int8s, "int8 weights must change the arithmetic");
        let dim = model.hidden_size();
        for (a, b) in f32s.chunks(dim).zip(int8s.chunks(dim)) {
            let cos = cosine(a, b);
            assert!(cos > 0.99, "int8 embedding drifted: cosine {cos}");
        }
    }

    #[test]
    fn quantized_columns_reconstruct_within_half_a_step() {
        let (rows, cols) = (5, 3);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.013)
            .collect();
        let (q, scale) = crate::onnx::quantize_columns(&w, rows, cols);
        for (i, (&v, &qv)) in w.iter().zip(&q).enumerate() {
            let s = scale[i % cols];
            assert!((v - qv as f32 * s).abs() <= s / 2.0 + 1e-7, "element {i}");
        }
        // Each column's largest magnitude maps to ±127.
        for c in 0..cols {
            let top = (0..rows)
                .map(|r| q[r * cols + c].unsigned_abs())
                .max()
                .unwrap();
            assert_eq!(top, 127);
        }
    }

    #[test]
    fn a_missing_library_is_an_error_not_a_panic() {
        let options = OrtOptions {
            library: PathBuf::from("/nonexistent/libonnxruntime.so"),
            ..options()
        };
        let err = OrtBackend::load(
            Path::new("/nonexistent.onnx"),
            8,
            WeightPrecision::F32,
            &options,
        )
        .err()
        .expect("loading must fail");
        assert!(
            err.to_string().contains("/nonexistent/libonnxruntime.so"),
            "{err}"
        );
    }
}
