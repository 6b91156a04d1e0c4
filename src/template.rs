//! The commented `cpack.toml` that `cpack init` writes, made from the recipe
//! types themselves: each table lists its recipe's settings in order, the
//! comment is the flag's help, the value is the recipe's `Default` (or, for
//! a setting unset by default, an example, marked as one). What init knows
//! about the model is written uncommented.

use clap::{Args, Command};
use cpack_encode::{EncodeRecipe, EncoderSettings, ModelRecipe, RerankRecipe};
use cpack_index::IndexRecipe;
use cpack_miner::MiningRecipe;
use cpack_run::TrainRecipe;
use serde::Serialize;
use std::path::Path;

/// What `cpack init` knows when it writes the file.
pub struct Template<'a> {
    pub data: &'a Path,
    pub model: &'a Path,
    pub query_instruction: &'a str,
    /// What the model declares (pooling, normalisation, lengths, batch size).
    pub declared: &'a EncoderSettings,
}

/// Comments for the settings that have no flag.
const NOTES: [(&str, &str); 7] = [
    ("model.normalize", "L2-normalise embeddings (cosine similarity = inner product)."),
    (
        "model.query_instruction",
        "Put before every query, never before passages. BGE uses \"Represent this sentence \
         for searching relevant passages: \" (en) and \"为这个句子生成表示以用于检索相关文章：\" \
         (zh); all-MiniLM uses none.",
    ),
    ("encode.ort_library", "libonnxruntime.so; default: $CPACK_ORT_LIBRARY, else what scripts/setup.sh fetched."),
    ("encode.ort_threads", "ONNX Runtime threads per worker (workers = threads / ort_threads)."),
    ("encode.ort_spinning", "Whether idle ONNX Runtime threads spin: spinning wastes a busy or small machine's cores."),
    ("index.device", "Where FAISS searches: \"cpu\", or \"gpu\" / \"gpu:N\" in a cpack built with the `cuda` feature. Indexes are saved in CPU form and open on either (flag: --index-device)."),
    ("train.device", "Where the trainer keeps the weights and runs its steps; default: where the encoder computes (flag: --device)."),
];

/// Values shown for settings that are unset by default, as examples.
const EXAMPLES: [(&str, &str); 23] = [
    ("model.path", "\"BAAI/bge-small-en-v1.5\""),
    ("rerank.model", "\"BAAI/bge-reranker-base\""),
    ("rerank.depth", "100"),
    ("rerank.max_len", "512"),
    ("rerank.batch_size", "32"),
    ("rerank.batch_tokens", "0"),
    ("encode.batch_tokens", "65536"),
    ("encode.threads", "0"),
    ("encode.device", "\"cpu\""),
    ("encode.precision", "\"f32\""),
    (
        "encode.ort_library",
        "\"/path/to/libonnxruntime.so.1.32.0\"",
    ),
    ("encode.ort_threads", "1"),
    ("encode.ort_spinning", "false"),
    ("index.device", "\"cpu\""),
    ("negatives", "7"),
    ("max_score", "0.95"),
    ("margin", "0.05"),
    ("relative_margin", "0.05"),
    ("filter", "\"perc-pos\""),
    ("refresh_depth", "50"),
    ("max_queries", "2000"),
    ("replace_easy", "0.3"),
    ("distill", "\"kl\""),
];

impl Template<'_> {
    pub fn render(&self) -> String {
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        let d = self.declared;
        let model_set = [
            ("path", q(&self.model.display().to_string())),
            ("pooling", q(&d.pooling.to_string())),
            ("normalize", d.normalize.to_string()),
            ("query_max_len", d.query_max_len.to_string()),
            ("passage_max_len", d.passage_max_len.to_string()),
            ("query_instruction", q(self.query_instruction)),
        ];
        let encode_set = [
            ("batch_size", d.batch_size.to_string()),
            ("backend", q("candle")),
        ];
        let index_set = [
            ("backend", q("faiss")),
            (
                "factory",
                q(cpack_index::vector::IndexKind::DEFAULT_FACTORY),
            ),
            ("precision", q("f32")),
        ];
        [
            format!(
                "# cpack workspace. Command-line flags override these keys for one run;\n\
                 # state (index, negatives, checkpoints) lives in .cpack/ beside this file.\n\n\
                 # Seed of every random choice (sampling negatives, training order, dropout).\n\
                 seed = {}\n",
                cpack_core::DEFAULT_SEED
            ),
            format!(
                "[data]\n# BEIR-layout dataset: corpus.jsonl (id, title, text), queries.jsonl (id, text),\n\
                 # qrels/<split>.tsv (query-id, corpus-id, score). Relative paths are relative to this file.\n\
                 dir = {}\n",
                q(&self.data.display().to_string())
            ),
            table::<ModelRecipe>("model", "The model and how its vectors are made.", &model_set),
            table::<EncodeRecipe>("encode", "How texts are encoded.", &encode_set),
            table::<IndexRecipe>("index", "The vector index `cpack index build` makes.", &index_set),
            table::<RerankRecipe>(
                "rerank",
                "A reranker (cross-encoder) for `cpack search`, `eval` and `serve` to reorder the \
                 embedder's top hits with, and for `cpack rerank` (uncomment to use one).",
                &[],
            ),
            table::<MiningRecipe>("mine", "`cpack mine` defaults (each key is also a flag; uncomment to change).", &[]),
            table::<TrainRecipe>(
                "train",
                "`cpack train` defaults (each key is also a flag; uncomment to change). The mining keys \
                 of [mine] are here too, for the rounds a run mines.",
                &[],
            ),
        ]
        .join("\n")
    }
}

/// `[name]` for recipe `R`: each setting's help as a comment, then the
/// setting — uncommented with the value in `set`, else commented with its
/// default or an example. Settings with flags come in the flags' order (the
/// recipe's field order), those without after them.
fn table<R: Args + Default + Serialize>(name: &str, intro: &str, set: &[(&str, String)]) -> String {
    let command = R::augment_args(Command::new("recipe"));
    let defaults = serde_json::to_value(R::default()).expect("recipes serialise");
    let defaults = defaults.as_object().expect("a recipe is a table");
    let prefix = format!("{name}.");
    // Every flag is a key, also one whose default the recipe leaves out
    // when it serialises (its value then comes from the flag's default).
    let flagged: Vec<(String, String, Option<String>)> = command
        .get_arguments()
        .filter(|arg| arg.get_long().is_some())
        .filter_map(|arg| {
            let id = arg.get_id().as_str();
            let key = id.strip_prefix(&prefix).unwrap_or(id);
            let help = arg.get_long_help().or(arg.get_help())?.to_string();
            let flag_default = arg.get_default_values().first().map(|v| toml_literal(v));
            Some((key.to_string(), strip_table_note(&help), flag_default))
        })
        .collect();
    let unflagged = defaults
        .keys()
        .filter(|key| flagged.iter().all(|(k, _, _)| k != *key))
        .map(|key| {
            let help = note(&format!("{prefix}{key}")).unwrap_or_default();
            (key.clone(), help.to_string(), None)
        });
    let mut out = format!("[{name}]\n{}", comment(intro));
    for (key, help, flag_default) in flagged.iter().cloned().chain(unflagged) {
        out += &comment(&help);
        let qualified = format!("{prefix}{key}");
        let default = match defaults.get(&key) {
            Some(value) => value_of(value),
            None => flag_default,
        };
        match set.iter().find(|(k, _)| *k == key) {
            Some((_, value)) => out += &format!("{key} = {value}\n"),
            None => match default.or_else(|| example(&qualified, &key)) {
                Some(value) => out += &format!("# {key} = {value}\n"),
                None => out += &format!("# {key} (unset)\n"),
            },
        }
    }
    out
}

/// A setting's default as a TOML value; `None` for one unset by default.
fn value_of(default: &serde_json::Value) -> Option<String> {
    if default.is_null() {
        return None;
    }
    toml::Value::try_from(default).ok().map(|v| v.to_string())
}

/// A flag's default as a TOML value: as written where it reads as one
/// (numbers, booleans), else as a string (an enum's name).
fn toml_literal(raw: &std::ffi::OsStr) -> String {
    let raw = raw.to_string_lossy();
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(_) => raw.into_owned(),
        Err(_) => toml::Value::String(raw.into_owned()).to_string(),
    }
}

fn note(qualified: &str) -> Option<&'static str> {
    NOTES.iter().find(|(k, _)| *k == qualified).map(|(_, n)| *n)
}

fn example(qualified: &str, key: &str) -> Option<String> {
    EXAMPLES
        .iter()
        .find(|(k, _)| *k == qualified || *k == key)
        .map(|(_, v)| format!("{v}  (an example; unset by default)"))
}

/// The help without its trailing `[encode.threads]`-style note, which names
/// the key the comment already stands above.
fn strip_table_note(help: &str) -> String {
    let help = help.trim();
    match help.rfind(" [") {
        Some(at) if help.ends_with(']') && !help[at..].contains("default") => {
            help[..at].to_string()
        }
        _ => help.to_string(),
    }
}

/// `text` as `#` lines of at most 78 characters.
fn comment(text: &str) -> String {
    let mut out = String::new();
    for paragraph in text.split("\n\n").filter(|p| !p.trim().is_empty()) {
        let mut line = String::from("#");
        for word in paragraph.split_whitespace() {
            if line.len() + 1 + word.len() > 78 && line.len() > 1 {
                out += &line;
                out.push('\n');
                line = String::from("#");
            }
            line.push(' ');
            line.push_str(word);
        }
        out += &line;
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TomlFile;

    fn rendered() -> String {
        let declared = EncoderSettings {
            pooling: cpack_model::Pooling::Mean,
            normalize: true,
            query_max_len: 64,
            passage_max_len: 256,
            query_instruction: String::new(),
            batch_size: 32,
            batch_tokens: 0,
        };
        Template {
            data: Path::new("data"),
            model: Path::new("model"),
            query_instruction: "q: ",
            declared: &declared,
        }
        .render()
    }

    #[test]
    fn the_template_reads_back_as_the_defaults_with_what_init_knows() {
        let text = rendered();
        let file = TomlFile::parse(&text).unwrap();
        assert_eq!(file.model.query_instruction.as_deref(), Some("q: "));
        assert_eq!(file.train, TrainRecipe::default());
        assert_eq!(file.mine, MiningRecipe::default());
        assert!(text.contains("\nprecision = \"f32\"\n"), "{text}");
        assert!(text.trim_end().lines().last().unwrap().starts_with('#'));
    }

    #[test]
    fn every_commented_setting_uncomments_to_a_valid_file() {
        let text = rendered();
        let uncommented: String = text
            .lines()
            .map(
                |l| match l.strip_prefix("# ").and_then(|r| r.split_once(" = ")) {
                    Some((key, value))
                        if key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
                    {
                        let value = value.split("  (an example").next().unwrap();
                        format!("{key} = {value}")
                    }
                    _ => l.to_string(),
                },
            )
            .collect::<Vec<_>>()
            .join("\n");
        let file = TomlFile::parse(&uncommented).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
        assert_eq!(file.train.run.epochs, TrainRecipe::default().run.epochs);
        assert_eq!(file.mine.negatives, Some(7));
        // Settings whose default the recipe leaves out of what it writes
        // are in the template too.
        assert_eq!(
            file.train.trainer.distill,
            Some(cpack_train::loss::DistillKind::Kl)
        );
    }
}
