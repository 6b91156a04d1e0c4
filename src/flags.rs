//! What the command line said beyond the parsed values: which flags were
//! given (they, and only they, override `cpack.toml`), and which flag sets
//! each recipe key (errors from the libraries name keys; the user is told
//! the flag).

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};
use cpack_core::InvalidSetting;
use std::collections::BTreeSet;

/// The ids of the arguments given on the command line (not defaulted).
#[derive(Debug, Clone, Default)]
pub struct Given(BTreeSet<String>);

impl Given {
    /// The arguments given to the subcommand `matches` ends in.
    pub fn of(matches: &ArgMatches) -> Self {
        let leaf = leaf_matches(matches);
        let given = leaf
            .ids()
            .filter(|id| leaf.value_source(id.as_str()) == Some(ValueSource::CommandLine))
            .map(|id| id.to_string());
        Given(given.collect())
    }

    #[cfg(test)]
    pub fn from_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> Self {
        Given(ids.into_iter().map(str::to_string).collect())
    }

    pub fn contains(&self, id: &str) -> bool {
        self.0.contains(id)
    }
}

fn leaf_matches(matches: &ArgMatches) -> &ArgMatches {
    match matches.subcommand() {
        Some((_, sub)) => leaf_matches(sub),
        None => matches,
    }
}

/// The subcommand `matches` ends in, within `command`.
pub fn leaf_command<'a>(command: &'a Command, matches: &ArgMatches) -> &'a Command {
    match matches.subcommand() {
        Some((name, sub)) => command
            .find_subcommand(name)
            .map_or(command, |c| leaf_command(c, sub)),
        None => command,
    }
}

/// Names recipe keys as the flags of one command.
pub struct FlagNames<'a> {
    command: &'a Command,
}

impl<'a> FlagNames<'a> {
    pub fn of(command: &'a Command) -> Self {
        FlagNames { command }
    }

    /// `--flag value` for the flag whose id is `key`; `key = value` when the
    /// command has no such flag (the setting is only in `cpack.toml`).
    pub fn name(&self, key: &str, value: &str) -> String {
        let flag = self
            .command
            .get_arguments()
            .find(|arg| arg.get_id() == key)
            .and_then(|arg| arg.get_long());
        match flag {
            Some(long) if value == "true" => format!("--{long}"),
            Some(long) => format!("--{long} {value}"),
            None => format!("{key} = {value}"),
        }
    }

    /// The flag alone.
    fn flag(&self, key: &str) -> String {
        self.name(key, "").trim_end().to_string()
    }

    /// A refusal with each setting it names written as its flag.
    pub fn setting(&self, refusal: &InvalidSetting) -> String {
        refusal.render(|key, value| self.name(key, value))
    }

    /// One error of a chain as the user should read it: settings as flags.
    pub fn describe(&self, error: &(dyn std::error::Error + 'static)) -> String {
        if let Some(refusal) = setting_in(error) {
            return self.setting(refusal);
        }
        match error.downcast_ref::<cpack_run::Error>() {
            Some(cpack_run::Error::StepTooLarge {
                batch,
                group,
                passage_len,
                needed,
                available,
                fix,
            }) => {
                let fix = match fix.as_ref() {
                    cpack_run::StepFix::MiniBatch {
                        mini_batch,
                        per_step,
                    } => format!(
                        "pass {} (gradient caching: the same gradients, about {per_step} per step)",
                        self.name("mini_batch", &mini_batch.to_string())
                    ),
                    cpack_run::StepFix::Smaller => format!(
                        "lower {}, {} or {}",
                        self.flag("batch_size"),
                        self.flag("group_size"),
                        self.flag("model.passage_max_len")
                    ),
                };
                format!(
                    "a training step of batch {batch} × group {group} at {passage_len} passage \
                     tokens needs about {needed}, and {available} is available; {fix}"
                )
            }
            _ => error.to_string(),
        }
    }
}

/// The setting `error` refuses, whichever crate's error carries it.
fn setting_in<'e>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e InvalidSetting> {
    error
        .downcast_ref::<InvalidSetting>()
        .or_else(|| error.downcast_ref::<cpack_run::Error>()?.setting())
        .or_else(|| error.downcast_ref::<cpack_train::Error>()?.setting())
        .or_else(|| error.downcast_ref::<cpack_miner::Error>()?.setting())
        .or_else(|| error.downcast_ref::<cpack_index::Error>()?.setting())
        .or_else(|| error.downcast_ref::<cpack_encode::Error>()?.setting())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::CommandFactory;

    /// Every key of a recipe merged by `Given` must be the id of its flag,
    /// or a flag given would not replace the file's value.
    #[test]
    fn every_train_and_mine_recipe_key_is_its_flags_id() {
        let cli = Cli::command();
        for (command, keys) in [
            (
                "train",
                serde_json::to_value(cpack_run::TrainRecipe::default()),
            ),
            (
                "mine",
                serde_json::to_value(cpack_miner::MiningRecipe::default()),
            ),
        ] {
            let command = cli.find_subcommand(command).unwrap();
            let ids: BTreeSet<&str> = command
                .get_arguments()
                .map(|a| a.get_id().as_str())
                .collect();
            for key in keys.unwrap().as_object().unwrap().keys() {
                // `[train] device` has no flag of its own: `--device` sets the encoder's.
                if key != "device" {
                    assert!(
                        ids.contains(key.as_str()),
                        "{command:?} has no flag with id {key}"
                    );
                }
            }
        }
    }

    #[test]
    fn refusals_name_the_flags_that_set_them() {
        let cli = Cli::command();
        let train = FlagNames::of(cli.find_subcommand("train").unwrap());
        let refusal = InvalidSetting::new("refresh_depth", 3, "sets how deep")
            .needs("refresh", "incremental");
        assert_eq!(
            train.setting(&refusal),
            "--refresh-depth 3 sets how deep; it needs --refresh incremental"
        );
        assert_eq!(train.name("batch_size", "8"), "--train-batch-size 8");
        assert_eq!(
            train.name("encode.precision", "int8"),
            "--encoder-precision int8"
        );
        assert_eq!(
            train.name("encode.ort_threads", "2"),
            "encode.ort_threads = 2"
        );
    }
}
