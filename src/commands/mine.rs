//! `cpack mine`, `cpack mine export`, `cpack mine stats`.

use crate::cli::{
    MineAction, MineArgs, MineExportArgs, MineImportArgs, MineRunArgs, MineStatsArgs,
};
use crate::config::Config;
use crate::runtime::{open_encoder, open_teacher, Context};
use anyhow::{bail, Result};
use cpack_core::Progress as _;
use cpack_data::dataset::{all_qrels, Dataset};
use cpack_miner::export;
use cpack_miner::stats;
use cpack_miner::store::RoundManifest;
use cpack_miner::teacher::{Teacher, TeacherRound};
use cpack_miner::{MineOptions, MineOutcome, MiningInput, MiningRecipe, NegativeStore};

pub fn run(ctx: &Context, args: MineArgs) -> Result<()> {
    match args.action {
        None => mine(ctx, args.run),
        Some(MineAction::Export(export)) => export_round(ctx, export),
        Some(MineAction::Stats(stats)) => round_stats(ctx, stats),
        Some(MineAction::Import(import)) => import_round(ctx, import),
    }
}

/// The configuration of the one task a round command works on.
fn task_config(ctx: &Context, task: Option<String>, command: &str) -> Result<Config> {
    let overrides = crate::cli::Overrides {
        task,
        ..Default::default()
    };
    Ok(ctx.config(&overrides)?.single_task(command)?.config)
}

fn import_round(ctx: &Context, args: MineImportArgs) -> Result<()> {
    let config = task_config(ctx, args.task.clone(), "mine import")?;
    let store = open_store(&config)?;
    let dataset = Dataset::load(config.data()?.clone())?;
    let split = args.split.unwrap_or_else(|| config.mine.split.clone());
    // The split must exist: a round nothing can train on helps no one.
    let judged = dataset.qrels(&split)?;
    let imported = cpack_miner::import::import_flag_embedding(
        &store,
        &args.input,
        &dataset.corpus,
        &dataset.queries,
        &split,
    )?;
    let manifest = &imported.manifest;
    let records = store.records(manifest.round)?;
    let unjudged = records
        .iter()
        .filter(|(id, _)| !judged.by_query.contains_key(id))
        .count();
    for (count, what) in [
        (imported.positives_dropped, "negatives that are their query's own positive were dropped"),
        (imported.repeats_dropped, "repeated negatives were dropped (each kept once)"),
        (imported.short_queries, "queries have fewer negatives than the widest line (none, for some): `cpack mine stats` counts them as short"),
        (unjudged, "queries have no judgement in the split: training leaves them out"),
    ] {
        if count > 0 {
            ctx.progress.note(&format!("{count} {what}"));
        }
    }
    outln!(
        "imported {} queries from {} as round {} (split {split})",
        manifest.total_queries,
        args.input.display(),
        manifest.round
    )?;
    Ok(())
}

fn open_store(config: &Config) -> Result<NegativeStore> {
    Ok(NegativeStore::open(&config.negatives_dir())?)
}

/// Mines (or collects the garbage of) each task the command works on: the
/// lone dataset, every `[[task]]` (each in its own corpus and store), or
/// the one `--task` names.
fn mine(ctx: &Context, args: MineRunArgs) -> Result<()> {
    let config = ctx.config(&args.overrides)?;
    let mut outcomes = serde_json::Map::new();
    for task in config.task_configs()? {
        if !task.name.is_empty() {
            ctx.progress.note(&format!("task {}", task.name));
        }
        let store = open_store(&task.config)?;
        if args.gc {
            collect_garbage(&task.config, &store, args.keep)?;
            continue;
        }
        let (json, line) = mine_one(ctx, &task.config, &store, &args)?;
        match (args.json, task.name.as_str()) {
            (true, "") => outln!("{json}")?,
            (true, name) => drop(outcomes.insert(name.to_string(), json)),
            (false, "") => outln!("{line}")?,
            (false, name) => outln!("task {name}: {line}")?,
        }
    }
    if args.json && !outcomes.is_empty() {
        outln!("{}", serde_json::json!({ "tasks": outcomes }))?;
    }
    Ok(())
}

/// One task's round: what `--json` prints, and the line printed otherwise.
fn mine_one(
    ctx: &Context,
    config: &Config,
    store: &NegativeStore,
    args: &MineRunArgs,
) -> Result<(serde_json::Value, String)> {
    let recipe = config.mining_recipe(&args.recipe, &ctx.given)?;
    let seed = args.seed.unwrap_or(config.seed);
    let params = recipe.params(MiningRecipe::DEFAULT_NEGATIVES, seed)?;
    let teacher_spec = recipe.teacher_spec()?;
    let dataset = Dataset::load(config.data()?.clone())?;
    let split_qrels = dataset.qrels(&params.split)?;
    let qrels = all_qrels(&dataset)?;
    let encoder = open_encoder(config)?;
    let teacher_model = open_teacher(config, teacher_spec.as_ref())?;
    let teacher = (teacher_spec.as_ref().zip(teacher_model.as_ref()))
        .map(|(spec, model)| Teacher::new(model, spec));
    let mut index = config
        .index_dir()
        .open(&config.embedding_stamp(&encoder)?, &dataset.corpus)?;
    let input = MiningInput {
        corpus: &dataset.corpus,
        queries: &dataset.queries,
        split_qrels: &split_qrels,
        all_qrels: &qrels,
        encoder: &encoder,
        index: &mut index,
        query_model_fingerprint: None,
        teacher,
        only: None,
    };
    let options = MineOptions {
        force: args.force,
        chunk_queries: args.chunk_queries,
        overlap_encoding: !args.no_overlap,
    };
    let outcome = cpack_miner::mine(store, input, params, options, &ctx.progress)?;
    ctx.progress.finish();
    match outcome {
        MineOutcome::UpToDate(m) => Ok(up_to_date(m.round)),
        MineOutcome::Mined {
            manifest,
            resumed,
            queries_without_positives,
            notes,
        } => {
            for note in &notes {
                ctx.progress.note(note);
            }
            let records = store.records(manifest.round)?;
            let stats = stats::round_stats(manifest.round, &records, None);
            if let (Some(t), Some(round)) = (&stats.teacher, &manifest.teacher) {
                if t.denoised > 0 && stats.short_queries > 0 {
                    ctx.progress.note(&format!(
                        "{} queries came out short of negatives with denoising: a larger --teacher-pool (now {}) leaves more to draw from",
                        stats.short_queries, round.params.pool
                    ));
                }
            }
            let mined = Mined {
                stats,
                manifest: &manifest,
                resumed,
                queries_without_positives,
            };
            Ok(mined.describe())
        }
    }
}

/// `--gc`: removes all rounds but the newest `keep` and those a training
/// run resumes from.
fn collect_garbage(config: &Config, store: &NegativeStore, keep: usize) -> Result<()> {
    let task = config.tasks.first().map_or("", |t| t.name.as_str());
    let mut in_use = config.state.runs().rounds_in_use(task)?;
    // A reranker run resumes on its round too.
    in_use.extend(config.state.rerankers().rounds_in_use(task)?);
    in_use.sort_unstable();
    in_use.dedup();
    let removed = store.gc(keep, &in_use)?;
    outln!(
        "removed {} round(s) {removed:?}; kept the newest {keep}{}",
        removed.len(),
        if in_use.is_empty() {
            String::new()
        } else {
            format!(" and the rounds training runs resume from {in_use:?}")
        }
    )?;
    Ok(())
}

fn up_to_date(round: u32) -> (serde_json::Value, String) {
    (
        serde_json::json!({"status": "up-to-date", "round": round}),
        format!("round {round} already holds these negatives (use --force to mine again)"),
    )
}

/// A round just mined, as `cpack mine` reports it.
struct Mined<'a> {
    manifest: &'a RoundManifest,
    stats: stats::RoundStats,
    resumed: bool,
    queries_without_positives: usize,
}

impl Mined<'_> {
    /// What `--json` prints, and the line printed otherwise.
    fn describe(&self) -> (serde_json::Value, String) {
        let (manifest, s) = (self.manifest, &self.stats);
        let json = serde_json::json!({
            "status": "mined",
            "round": manifest.round,
            "resumed": self.resumed,
            "queries": s.queries,
            "queries_without_positives": self.queries_without_positives,
            "negatives_min": s.negatives_min,
            "negatives_mean": s.negatives_mean,
            "short_queries": s.short_queries,
            "seconds": manifest.seconds,
            "timings": manifest.timings,
            "teacher": manifest.teacher,
        });
        let teacher = match &manifest.teacher {
            Some(t) => format!(
                "; the teacher scored {} pairs in {:.1}s{}",
                t.pairs,
                t.seconds,
                s.teacher.as_ref().map_or(String::new(), |t| format!(
                    " and denoising dropped {}",
                    t.denoised
                ))
            ),
            None => String::new(),
        };
        let line = format!(
            "mined round {}{}: {} queries, {:.2} negatives each on average (min {}), {} short, {} without positives skipped; {:.1}s ({:.0} queries/s){teacher}",
            manifest.round,
            if self.resumed { " (resumed)" } else { "" },
            s.queries,
            s.negatives_mean,
            s.negatives_min,
            s.short_queries,
            self.queries_without_positives,
            manifest.seconds,
            s.queries as f64 / manifest.seconds.max(1e-9),
        );
        (json, line)
    }
}

/// The requested round, or the newest complete one.
fn pick_round(store: &NegativeStore, round: Option<u32>) -> Result<RoundManifest> {
    let rounds = store.rounds()?;
    let found = match round {
        Some(n) => rounds.into_iter().find(|m| m.round == n),
        None => rounds.into_iter().rev().find(|m| m.complete),
    };
    match (found, round) {
        (Some(m), _) if m.complete => Ok(m),
        (Some(m), _) => bail!(
            "round {} is unfinished; run `cpack mine` again to complete it",
            m.round
        ),
        (None, Some(n)) => bail!("there is no round {n}; `cpack mine stats` lists what there is"),
        (None, None) => bail!("no complete mining round yet; run `cpack mine` first"),
    }
}

fn export_round(ctx: &Context, args: MineExportArgs) -> Result<()> {
    let format = args.format;
    let config = task_config(ctx, args.task.clone(), "mine export")?;
    let store = open_store(&config)?;
    let manifest = pick_round(&store, args.round)?;
    let dataset = Dataset::load(config.data()?.clone())?;
    let records = store.records(manifest.round)?;
    let body = export::export(
        &records,
        &manifest,
        &dataset.corpus,
        &dataset.queries,
        format,
    )?;
    let target = cpack_core::write_output(&args.output, body.as_bytes())?;
    if let Some(path) = target.path() {
        ctx.progress.note(&format!(
            "wrote round {} to {}",
            manifest.round,
            path.display()
        ));
    }
    Ok(())
}

fn round_stats(ctx: &Context, args: MineStatsArgs) -> Result<()> {
    let config = task_config(ctx, args.task.clone(), "mine stats")?;
    let store = open_store(&config)?;
    let manifest = pick_round(&store, args.round)?;
    let records = store.records(manifest.round)?;
    let previous = store
        .rounds()?
        .into_iter()
        .rev()
        .find(|m| m.round < manifest.round && m.complete)
        .map(|m| store.records(m.round))
        .transpose()?;
    let s = stats::round_stats(manifest.round, &records, previous.as_deref());
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"manifest": manifest, "stats": s}))?
        )?;
        return Ok(());
    }
    print_stats(&manifest, &s)?;
    if let Some(o) = s.overlap_with_previous {
        outln!(
            "overlap           {:.3} mean Jaccard with the previous round's negatives",
            o
        )?;
    }
    Ok(())
}

fn print_stats(manifest: &RoundManifest, s: &stats::RoundStats) -> std::io::Result<()> {
    let p = &manifest.params;
    let t = &manifest.timings;
    outln!(
        "round {} · split {} · index {}",
        manifest.round,
        p.split,
        manifest.index_generation
    )?;
    if let Some(query_model) = &manifest.query_model_fingerprint {
        outln!(
            "queries           encoded by another model than the index's (query-side training): {}",
            short_fingerprint(query_model)
        )?;
    }
    outln!(
        "time              {:.1}s: encode queries {:.1}s · search {:.2}s · select + store {:.2}s \
         (stages overlap unless mined with --no-overlap)",
        manifest.seconds,
        t.encode_seconds,
        t.search_seconds,
        t.select_store_seconds
    )?;
    let skip_kind = if p.skip_after_filter {
        "after filters"
    } else {
        "raw ranks"
    };
    outln!(
        "settings          topk {} · skip {} {skip_kind} · {} negatives ({}) · seed {}",
        p.topk,
        p.skip,
        p.negatives,
        p.sampling,
        p.seed
    )?;
    outln!(
        "queries           {} ({} with negatives)",
        s.queries,
        s.queries_with_negatives
    )?;
    outln!(
        "negatives/query   min {} · mean {:.2} · {} queries short",
        s.negatives_min,
        s.negatives_mean,
        s.short_queries
    )?;
    let f = &s.filtered;
    outln!(
        "removed           skipped {} · positives {} · query text {} · copies of a positive {} · max-score {} · margin {} · relative margin {}",
        f.skipped, f.positives, f.query_text, f.duplicate_of_positive, f.max_score, f.margin, f.relative_margin
    )?;
    let r = s.positive_ranks;
    outln!(
        "positive ranks    1: {} · 2-10: {} · 11-100: {} · 101+: {} · not retrieved: {}",
        r[0],
        r[1],
        r[2],
        r[3],
        r[4]
    )?;
    outln!(
        "mean scores       positives {:.4} · negatives {:.4}",
        s.positive_score_mean,
        s.negative_score_mean
    )?;
    if let (Some(round), Some(t)) = (&manifest.teacher, &s.teacher) {
        print_teacher(round, t)?;
    }
    outln!("score histogram   share of positives (P) and negatives (N) per 0.1-wide bin")?;
    let share = |h: &[usize]| {
        let total = h.iter().sum::<usize>().max(1) as f64;
        h.iter().map(|&c| c as f64 / total).collect::<Vec<_>>()
    };
    let (pos, neg) = (
        share(&s.positive_score_histogram),
        share(&s.negative_score_histogram),
    );
    let bar = |x: f64| "#".repeat((x * 50.0).round() as usize);
    for (i, (p, n)) in pos
        .iter()
        .zip(&neg)
        .enumerate()
        .filter(|(_, (p, n))| **p + **n > 0.0)
    {
        let low = -1.0 + i as f64 * 0.1;
        outln!(
            "  {low:+.1}..{:+.1}  P {:5.1}% {:<25} N {:5.1}% {}",
            low + 0.1,
            p * 100.0,
            bar(*p),
            n * 100.0,
            bar(*n)
        )?;
    }
    Ok(())
}

/// What the round's teacher scored and dropped.
fn print_teacher(round: &TeacherRound, t: &stats::TeacherStats) -> std::io::Result<()> {
    let p = &round.params;
    let mut rules = Vec::new();
    if let Some(above) = p.denoise.above {
        rules.push(format!("above {above}"));
    }
    if let Some(margin) = p.denoise.margin {
        rules.push(format!("above the positive − {margin}"));
    }
    let rules = match rules.is_empty() {
        true => "no denoising".to_string(),
        false => format!("denoise {}", rules.join(" or ")),
    };
    outln!(
        "teacher           {} · pool {} · {rules} · {:.1}s for {} pairs",
        short_fingerprint(&p.model_fingerprint),
        p.pool,
        round.seconds,
        round.pairs
    )?;
    let spread = |s: &stats::Spread| {
        format!(
            "median {:.2} (quartiles {:.2} … {:.2}, range {:.2} … {:.2})",
            s.median, s.p25, s.p75, s.min, s.max
        )
    };
    outln!("teacher scores    positives {}", spread(&t.positive_scores))?;
    outln!("                  negatives {}", spread(&t.negative_scores))?;
    outln!(
        "                  {} stored negatives score above their query's positive (likely false negatives)",
        t.negatives_above_positive
    )?;
    let r = t.denoised_ranks;
    outln!(
        "denoised          {} dropped (raw ranks 1-10: {} · 11-20: {} · 21-50: {} · 51-100: {} · 101+: {}); {:.1} candidates scored per query",
        t.denoised, r[0], r[1], r[2], r[3], r[4], t.pool_mean
    )
}

/// The first 12 characters of a fingerprint, enough to tell models apart.
fn short_fingerprint(fingerprint: &str) -> &str {
    fingerprint.get(..12).unwrap_or(fingerprint)
}
