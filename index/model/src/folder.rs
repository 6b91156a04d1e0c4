//! Hugging Face model folders: config, weights, tokenizer and the
//! sentence-transformers module files that choose pooling and normalisation.

use crate::config::BertConfig;
use crate::error::{Error, Result};
use crate::head::{ClassifierLayout, ClassifierNames, Pooling};
use cpack_core::fsutil;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A validated model folder, not yet loaded into memory.
#[derive(Debug, Clone)]
pub struct ModelDir {
    pub dir: PathBuf,
    pub config: BertConfig,
    pub weights: PathBuf,
    pub tokenizer: PathBuf,
    /// Tensor-name prefix of the encoder's weights (`"bert"`, `"roberta"` or empty).
    pub weight_prefix: String,
    /// The sequence-classification head the weights hold, if any: a
    /// cross-encoder (reranker) rather than an embedder.
    pub classifier: Option<ClassifierLayout>,
    /// Pooling and normalisation as the sentence-transformers files declare them.
    pub declared_pooling: Option<Pooling>,
    pub declared_normalize: bool,
    /// `max_seq_length` from `sentence_bert_config.json`, if present.
    pub declared_max_len: Option<usize>,
    /// [`ModelDir::fingerprint`], hashed once per opened folder: every
    /// stamp, round and manifest asks for it.
    fingerprint: OnceLock<String>,
}

#[derive(Deserialize)]
struct StModule {
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct StPooling {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
}

#[derive(Deserialize)]
struct StConfig {
    max_seq_length: Option<usize>,
}

impl ModelDir {
    /// Checks that `dir` holds a runnable BERT-family model and reads its metadata.
    pub fn open(dir: &Path) -> Result<Self> {
        let model_err = |problem: String| Error::Model {
            path: dir.to_path_buf(),
            problem,
        };
        if !dir.is_dir() {
            return Err(model_err("not a directory".into()));
        }
        let config_path = dir.join("config.json");
        if !config_path.exists() {
            return Err(model_err("config.json is missing".into()));
        }
        let config: BertConfig = fsutil::read_json(&config_path)?;
        if let Some(reason) = config.unsupported_reason() {
            return Err(model_err(reason));
        }
        let weights = dir.join("model.safetensors");
        if !weights.exists() {
            return Err(model_err(
                "model.safetensors is missing (cpack reads safetensors weights; convert pytorch_model.bin first)".into(),
            ));
        }
        let tokenizer = dir.join("tokenizer.json");
        if !tokenizer.exists() {
            return Err(model_err("tokenizer.json is missing".into()));
        }
        let header = read_safetensors_header(&weights)?;
        let weight_prefix = detect_prefix(&weights, &header)?;
        check_layers(&weights, &header, &weight_prefix, config.num_hidden_layers)?;
        let classifier = detect_classifier(&weights, &header, &weight_prefix)?;
        check_finite(&weights)?;
        let (declared_pooling, declared_normalize) = read_modules(dir)?;
        let st_config = dir.join("sentence_bert_config.json");
        let declared_max_len = if st_config.exists() {
            fsutil::read_json::<StConfig>(&st_config)?.max_seq_length
        } else {
            None
        };
        Ok(ModelDir {
            dir: dir.to_path_buf(),
            config,
            weights,
            tokenizer,
            weight_prefix,
            classifier,
            declared_pooling,
            declared_normalize,
            declared_max_len,
            fingerprint: OnceLock::new(),
        })
    }

    /// Hash of config, weights and tokenizer: two folders with the same
    /// fingerprint produce the same embeddings.
    pub fn fingerprint(&self) -> Result<String> {
        if let Some(known) = self.fingerprint.get() {
            return Ok(known.clone());
        }
        let hashed = self.hash_files()?;
        Ok(self.fingerprint.get_or_init(|| hashed).clone())
    }

    fn hash_files(&self) -> Result<String> {
        let mut hasher = Sha256::new();
        for path in [
            &self.dir.join("config.json"),
            &self.weights,
            &self.tokenizer,
        ] {
            let file = std::fs::File::open(path).map_err(Error::io("open", path))?;
            // SAFETY: read-only map of a file we do not modify; a concurrent
            // writer could only make the hash stale, which the next open catches.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(Error::io("map", path))?;
            hasher.update((map.len() as u64).to_le_bytes());
            hasher.update(&map[..]);
        }
        Ok(hex::encode(&hasher.finalize()[..16]))
    }

    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }
}

fn detect_prefix(
    weights: &Path,
    header: &serde_json::Map<String, serde_json::Value>,
) -> Result<String> {
    let found = ["", "bert", "roberta"].into_iter().find(|prefix| {
        let name = "embeddings.word_embeddings.weight";
        header.contains_key(&if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        })
    });
    found.map(str::to_string).ok_or_else(|| Error::Model {
        path: weights.to_path_buf(),
        problem:
            "no tensor named embeddings.word_embeddings.weight (bare, or under bert. or roberta.); \
                  is this a BERT or XLM-RoBERTa checkpoint?"
                .into(),
    })
}

/// The classification head the weights hold: `classifier.out_proj` (RoBERTa)
/// or `classifier` over the encoder's pooler (BERT); the labels are the
/// rows of its last layer.
fn detect_classifier(
    weights: &Path,
    header: &serde_json::Map<String, serde_json::Value>,
    prefix: &str,
) -> Result<Option<ClassifierLayout>> {
    let rows = |name: &str| -> Option<u64> { header.get(name)?.get("shape")?.get(0)?.as_u64() };
    let pooler = if prefix.is_empty() {
        "pooler.dense.weight".to_string()
    } else {
        format!("{prefix}.pooler.dense.weight")
    };
    let (names, labels) = if let Some(labels) = rows("classifier.out_proj.weight") {
        (ClassifierNames::RobertaHead, labels)
    } else if let Some(labels) = rows("classifier.weight") {
        if !header.contains_key(&pooler) {
            return Err(Error::Model {
                path: weights.to_path_buf(),
                problem: format!(
                    "holds a classifier but no {pooler}, which BertForSequenceClassification runs before it"
                ),
            });
        }
        (ClassifierNames::BertPooler, labels)
    } else {
        return Ok(None);
    };
    Ok(Some(ClassifierLayout {
        names,
        labels: labels as usize,
    }))
}

/// Refuses weights whose encoder layers are not the ones config.json asks
/// for: a config that says fewer layers than the weights hold would load
/// part of the model and embed differently without a word.
fn check_layers(
    weights: &Path,
    header: &serde_json::Map<String, serde_json::Value>,
    prefix: &str,
    layers: usize,
) -> Result<()> {
    let stem = if prefix.is_empty() {
        "encoder.layer.".to_string()
    } else {
        format!("{prefix}.encoder.layer.")
    };
    let mut held: Vec<usize> = header
        .keys()
        .filter_map(|k| k.strip_prefix(&stem)?.split('.').next()?.parse().ok())
        .collect();
    held.sort_unstable();
    held.dedup();
    if held != (0..layers).collect::<Vec<_>>() {
        return Err(Error::Model {
            path: weights.to_path_buf(),
            problem: format!(
                "holds encoder layers {} but config.json says num_hidden_layers = {layers}; \
                 the weights and the config are from different models",
                match (held.first(), held.last()) {
                    (Some(a), Some(b)) => format!("{a}..={b} ({} in all)", held.len()),
                    _ => "none".into(),
                }
            ),
        });
    }
    Ok(())
}

/// Refuses weights holding NaN or infinity: they would embed every text as
/// NaN (or train from garbage) instead of failing.
fn check_finite(weights: &Path) -> Result<()> {
    let bad = |problem: String| Error::Model {
        path: weights.to_path_buf(),
        problem,
    };
    let file = std::fs::File::open(weights).map_err(Error::io("open", weights))?;
    // SAFETY: read-only map of a file cpack does not modify while reading it.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(Error::io("map", weights))?;
    let tensors = safetensors::SafeTensors::deserialize(&map)
        .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    for (name, view) in tensors.tensors() {
        let data = view.data();
        let finite = match view.dtype() {
            safetensors::Dtype::F32 => data
                .chunks_exact(4)
                .all(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite()),
            safetensors::Dtype::F16 => data
                .chunks_exact(2)
                .all(|b| half::f16::from_le_bytes([b[0], b[1]]).is_finite()),
            safetensors::Dtype::BF16 => data
                .chunks_exact(2)
                .all(|b| half::bf16::from_le_bytes([b[0], b[1]]).is_finite()),
            _ => true,
        };
        if !finite {
            return Err(bad(format!(
                "tensor {name} holds NaN or infinite values; the checkpoint is damaged"
            )));
        }
    }
    Ok(())
}

/// The JSON header of a safetensors file (tensor name → dtype/shape/offsets),
/// read without touching the tensor data.
fn read_safetensors_header(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>> {
    use std::io::Read;
    let bad = |problem: &str| Error::bad_file(path, format!("not a safetensors file: {problem}"));
    let mut file = std::fs::File::open(path).map_err(Error::io("open", path))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|_| bad("shorter than its header"))?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        return Err(bad("header length is implausible"));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header)
        .map_err(|_| bad("truncated header"))?;
    serde_json::from_slice(&header).map_err(|_| bad("header is not JSON"))
}

/// Pooling and normalisation from `modules.json` and `1_Pooling/config.json`.
fn read_modules(dir: &Path) -> Result<(Option<Pooling>, bool)> {
    let modules_path = dir.join("modules.json");
    if !modules_path.exists() {
        return Ok((None, false));
    }
    let modules: Vec<StModule> = fsutil::read_json(&modules_path)?;
    let mut pooling = None;
    let mut normalize = false;
    for module in modules {
        if module.kind.ends_with("Pooling") {
            let cfg_path = dir.join(&module.path).join("config.json");
            let cfg: StPooling = fsutil::read_json(&cfg_path)?;
            pooling = match (cfg.pooling_mode_cls_token, cfg.pooling_mode_mean_tokens) {
                (true, false) => Some(Pooling::Cls),
                (false, true) => Some(Pooling::Mean),
                _ => {
                    return Err(Error::bad_file(
                        &cfg_path,
                        "cpack supports exactly one of pooling_mode_cls_token / pooling_mode_mean_tokens"
                            .into(),
                    ))
                }
            };
        } else if module.kind.ends_with("Normalize") {
            normalize = true;
        }
    }
    Ok((pooling, normalize))
}
