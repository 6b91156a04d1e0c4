//! A training run's report as the table `cpack train` and `cpack report` print.

use cpack_index::align::StaleVectors;
use cpack_run::{EvalPoint, Report};
use cpack_train::incremental::RefreshScope;

pub fn metric(
    point: Option<&EvalPoint>,
    f: fn(&cpack_data::metrics::RetrievalMetrics) -> f64,
) -> String {
    point.map_or("-".into(), |p| format!("{:.4}", f(&p.metrics)))
}

/// Prints the run's settings, its strategy (when it has one) and one row
/// per epoch.
pub fn print(report: &Report) -> std::io::Result<()> {
    print_settings(report)?;
    let strategy = strategy(report);
    if !strategy.is_empty() {
        outln!("{}", strategy.join(" · "))?;
    }
    print_epochs(report)?;
    print_tasks(report)?;
    let wanted = report.spec.train.group_size - 1;
    for (round, supply) in &report.totals.negative_supply {
        if let Some(note) = supply.describe(*round, wanted) {
            outln!("{note}")?;
        }
    }
    for (name, task) in &report.tasks {
        for (round, supply) in &task.negative_supply {
            if let Some(note) = supply.describe(*round, wanted) {
                outln!("task {name}: {note}")?;
            }
        }
    }
    Ok(())
}

/// A run over several tasks: each task's nDCG@10, base and per epoch (the
/// epochs' rows above show their mean), its queries and instruction.
fn print_tasks(report: &Report) -> std::io::Result<()> {
    let tasks = &report.spec.tasks;
    if tasks.is_empty() {
        return Ok(());
    }
    outln!(
        "\nnDCG@10 by task ({} order)",
        match report.spec.run.task_order {
            cpack_train::data::TaskOrder::Proportional => "proportional",
            cpack_train::data::TaskOrder::RoundRobin => "round-robin",
        }
    )?;
    let epochs: Vec<String> = (report.epochs.iter())
        .map(|e| format!("epoch {}", e.epoch))
        .collect();
    outln!(
        "{:<16} {:>7} {:>6} {:>8} {}",
        "task",
        "queries",
        "weight",
        "base",
        epochs.join(" ")
    )?;
    for task in tasks {
        let part = report.tasks.get(&task.name);
        let per_epoch: Vec<String> = (report.epochs.iter())
            .map(|e| {
                let eval = e.tasks.get(&task.name).and_then(|t| t.eval.as_ref());
                format!("{:>7}", metric(eval, |m| m.ndcg_at_10))
            })
            .collect();
        outln!(
            "{:<16} {:>7} {:>6} {:>8} {}   instruction {:?}",
            task.name,
            part.map_or(0, |p| p.train_queries),
            task.weight,
            metric(part.and_then(|p| p.base.as_ref()), |m| m.ndcg_at_10),
            per_epoch.join(" "),
            task.query_instruction
        )?;
    }
    Ok(())
}

fn print_settings(report: &Report) -> std::io::Result<()> {
    let s = &report.spec;
    outln!(
        "run {} · {} epochs · refresh every {} · {} loss τ={} · batch {} × group {} · lr {} · {} training queries{}",
        s.name,
        s.run.epochs,
        if s.run.refresh_every == 0 { "never (static)".to_string() } else { format!("{} epoch(s)", s.run.refresh_every) },
        s.train.loss,
        s.train.temperature,
        s.train.batch_size,
        s.train.group_size,
        s.train.lr,
        report.totals.train_queries,
        s.eval_split.as_ref().map_or(String::new(), |e| format!(" · eval on {e}")),
    )
}

/// What the run does beyond the plain loop, one phrase each.
fn strategy(report: &Report) -> Vec<String> {
    let s = &report.spec;
    let mut strategy = Vec::new();
    if s.train.freeze_passages {
        strategy.push("query side only (--freeze-passages)".to_string());
    }
    if s.run.refresh == RefreshScope::Incremental {
        let encoded: Vec<String> = report
            .epochs
            .iter()
            .filter(|e| e.passages_encoded > 0)
            .map(|e| format!("{} after epoch {}", e.passages_encoded, e.epoch))
            .collect();
        let eval: f64 = report.epochs.iter().map(|e| e.eval_encode_seconds).sum();
        let whole = match s.run.full_refresh_every {
            0 => String::new(),
            m => format!(", whole every {m}"),
        };
        let depth = s
            .run
            .refresh_depth
            .map_or(String::new(), |k| format!(" of each pool's top {k}"));
        let aligned = aligned_note(report);
        strategy.push(format!(
            "incremental refresh{depth}{whole}{aligned}: passages re-encoded {}; evaluation's own encodes {eval:.0} s",
            if encoded.is_empty() { "none yet".to_string() } else { encoded.join(", ") }
        ));
    }
    if let Some(teacher) = &s.teacher {
        let d = teacher.denoise;
        let mut rules = Vec::new();
        if let Some(above) = d.above {
            rules.push(format!("above {above}"));
        }
        if let Some(margin) = d.margin {
            rules.push(format!("above the positive − {margin}"));
        }
        let denoise = match rules.is_empty() {
            true => String::new(),
            false => format!(", denoising {}", rules.join(" or ")),
        };
        let seconds: Vec<String> = (report.epochs.iter())
            .map(|e| format!("{:.0}", e.teacher_seconds))
            .collect();
        strategy.push(format!(
            "teacher {} (pool {}{denoise}): scoring seconds per epoch's round {}",
            teacher.model.display(),
            teacher.pool,
            seconds.join(", ")
        ));
    }
    if let Some(kind) = s.train.distill {
        let t = &s.train;
        strategy.push(format!(
            "distilled ({kind}, weight {}, teacher temperature {}) beside InfoNCE",
            t.distill_weight, t.distill_temperature
        ));
    }
    if let Some(margin) = s.train.replace_easy {
        let retired: usize = report.epochs.iter().map(|e| e.negatives_retired).sum();
        strategy.push(format!(
            "easy negatives retired at margin {margin}: {retired} so far"
        ));
    }
    strategy
}

fn print_epochs(report: &Report) -> std::io::Result<()> {
    outln!(
        "{:<6} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>8}",
        "epoch",
        "round",
        "loss",
        "nDCG@10",
        "MRR@10",
        "R@100",
        "train s",
        "encode s",
        "index s",
        "mine s",
        "eval s",
        "overlap"
    )?;
    if let Some(base) = &report.totals.base {
        outln!(
            "{:<6} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7.0} {:>8}",
            "base",
            "-",
            "-",
            metric(Some(base), |m| m.ndcg_at_10),
            metric(Some(base), |m| m.mrr_at_10),
            metric(Some(base), |m| m.recall_at_100),
            "-",
            "-",
            "-",
            "-",
            base.seconds,
            "-"
        )?;
    }
    for e in &report.epochs {
        outln!(
            "{:<6} {:>5} {:>8.4} {:>8} {:>8} {:>8} {:>8.0} {:>8.0} {:>8.1} {:>7.0} {:>7} {:>8}",
            e.epoch,
            e.round.map_or("-".into(), |r| r.to_string()),
            e.mean_loss,
            metric(e.eval.as_ref(), |m| m.ndcg_at_10),
            metric(e.eval.as_ref(), |m| m.mrr_at_10),
            metric(e.eval.as_ref(), |m| m.recall_at_100),
            e.train_seconds,
            e.encode_seconds,
            e.index_seconds,
            e.mine_seconds,
            e.eval
                .as_ref()
                .map_or("-".into(), |p| format!("{:.0}", p.seconds)),
            e.negatives_overlap
                .map_or("-".into(), |o| format!("{o:.3}")),
        )?;
    }
    Ok(())
}

/// ", stale vectors aligned (…)" for a run that aligns them: each refresh's
/// held-out cosine of old and mapped vectors to the new ones.
fn aligned_note(report: &Report) -> String {
    if report.spec.run.stale_vectors != StaleVectors::Aligned {
        return String::new();
    }
    let fits: Vec<String> = report
        .epochs
        .iter()
        .filter_map(|e| Some((e.epoch, e.alignment?)))
        .filter_map(|(epoch, a)| {
            let (kept, aligned) = (a.cosine_kept?, a.cosine_aligned?);
            Some(format!(
                "cosine {kept:.3} → {aligned:.3} after epoch {epoch}"
            ))
        })
        .collect();
    if fits.is_empty() {
        ", stale vectors aligned".to_string()
    } else {
        format!(", stale vectors aligned ({})", fits.join(", "))
    }
}
