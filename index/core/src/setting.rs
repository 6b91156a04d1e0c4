//! A setting whose value cannot be used.

/// A recipe setting with an unusable value. `key` is its name in the
/// recipe, which is the `cpack.toml` key and the id of the flag that sets
/// it: libraries name values, and the binary says which flag or key to
/// change. The explanation may name other settings ([`Part::Setting`]), so
/// the binary can name their flags too.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidSetting {
    pub key: &'static str,
    /// The value as given, written as the user would write it.
    pub value: String,
    /// The rest of the sentence: what is wrong, and what would do.
    pub explanation: Vec<Part>,
}

/// A piece of an [`InvalidSetting`]'s explanation.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    /// Another setting, by recipe key, with the value meant.
    Setting {
        key: &'static str,
        value: String,
    },
}

impl InvalidSetting {
    pub fn new(key: &'static str, value: impl ToString, problem: impl Into<String>) -> Self {
        InvalidSetting {
            key,
            value: value.to_string(),
            explanation: vec![Part::Text(problem.into())],
        }
    }

    /// The explanation goes on with `text`.
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.explanation.push(Part::Text(text.into()));
        self
    }

    /// The explanation goes on naming setting `key` = `value`.
    pub fn setting(mut self, key: &'static str, value: impl ToString) -> Self {
        self.explanation.push(Part::Setting {
            key,
            value: value.to_string(),
        });
        self
    }

    /// The same refusal, saying that `key` = `value` is what it needs.
    pub fn needs(self, key: &'static str, value: impl ToString) -> Self {
        self.text("; it needs ").setting(key, value)
    }

    /// The sentence, with every setting written by `name(key, value)`.
    pub fn render(&self, name: impl Fn(&'static str, &str) -> String) -> String {
        let mut out = format!("{} ", name(self.key, &self.value));
        for part in &self.explanation {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Setting { key, value } => out.push_str(&name(key, value)),
            }
        }
        out
    }
}

impl std::fmt::Display for InvalidSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render(|key, value| format!("{key} = {value}")))
    }
}

impl std::error::Error for InvalidSetting {}

/// `Ok(())` when `holds`, else the [`InvalidSetting`] of `key` = `value`.
pub fn require(
    holds: bool,
    key: &'static str,
    value: impl ToString,
    problem: &str,
) -> Result<(), InvalidSetting> {
    if holds {
        Ok(())
    } else {
        Err(InvalidSetting::new(key, value, problem))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_inside_the_explanation_are_named_by_the_caller() {
        let refusal = InvalidSetting::new("skip", 10, "leaves nothing of ")
            .setting("topk", 10)
            .text(": skip must be smaller than topk");
        assert_eq!(
            refusal.to_string(),
            "skip = 10 leaves nothing of topk = 10: skip must be smaller than topk"
        );
        let as_flags = refusal.render(|key, value| format!("--{key} {value}"));
        assert_eq!(
            as_flags,
            "--skip 10 leaves nothing of --topk 10: skip must be smaller than topk"
        );
        let needs = InvalidSetting::new("refresh_depth", 3, "sets how deep")
            .needs("refresh", "incremental");
        assert!(needs
            .to_string()
            .ends_with("; it needs refresh = incremental"));
    }
}
