//! Workspaces of several `[[task]]`s: each task's corpus indexed and mined
//! on its own, evaluated per task and on the mean, trained together with
//! batches of one task each, and a killed run resumed to the same weights.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// A small BEIR dataset of `n` passages built from `words` (each task its
/// own vocabulary), with ids that coincide across tasks (`d0`, `q0`…):
/// queries are their passage's first words; train and test splits.
fn task_dataset(dir: &Path, words: &[&str], n: usize) -> Vec<String> {
    std::fs::create_dir_all(dir.join("qrels")).unwrap();
    let (mut corpus, mut queries) = (String::new(), String::new());
    let mut train = String::from("query-id\tcorpus-id\tscore\n");
    let mut test = train.clone();
    let mut texts = Vec::new();
    for i in 0..n {
        let text: Vec<&str> = (0..6)
            .map(|k| words[(i * 7 + k * (i % 5 + 1)) % words.len()])
            .collect();
        let passage = text.join(" ");
        let query = text[..3].join(" ");
        corpus += &format!(
            "{}\n",
            serde_json::json!({"id": format!("d{i}"), "text": passage})
        );
        queries += &format!(
            "{}\n",
            serde_json::json!({"id": format!("q{i}"), "text": query})
        );
        let split = if i % 4 == 3 { &mut test } else { &mut train };
        *split += &format!("q{i}\td{i}\t1\n");
        texts.push(passage);
        texts.push(query);
    }
    std::fs::write(dir.join("corpus.jsonl"), corpus).unwrap();
    std::fs::write(dir.join("queries.jsonl"), queries).unwrap();
    std::fs::write(dir.join("qrels/train.tsv"), train).unwrap();
    std::fs::write(dir.join("qrels/test.tsv"), test).unwrap();
    texts
}

const ALPHA: [&str; 13] = [
    "policy",
    "premium",
    "claim",
    "insurer",
    "deductible",
    "coverage",
    "rider",
    "annuity",
    "beneficiary",
    "term",
    "whole",
    "life",
    "health",
];
const BETA: [&str; 11] = [
    "river", "mountain", "forest", "valley", "desert", "ocean", "island", "glacier", "canyon",
    "plain", "delta",
];

/// Two tasks, `a` and `b`, each with its own instruction, over one tiny
/// model: (workspace, task a's data, task b's data, the model).
fn two_tasks(tmp: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let (a, b) = (tmp.join("task-a"), tmp.join("task-b"));
    let model = tmp.join("model");
    if !model.exists() {
        let mut texts = task_dataset(&a, &ALPHA, 24);
        texts.extend(task_dataset(&b, &BETA, 20));
        texts.push("about insurance: about places:".into());
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        tiny_model(&model, &refs);
    }
    let ws = tmp.join(name);
    std::fs::create_dir_all(&ws).unwrap();
    let toml = format!(
        "seed = 5\n\n[model]\npath = {model:?}\n\n\
         [[task]]\nname = \"a\"\ndata = {a:?}\nquery_instruction = \"about insurance: \"\n\n\
         [[task]]\nname = \"b\"\ndata = {b:?}\nquery_instruction = \"about places: \"\nweight = 2.0\n"
    );
    std::fs::write(ws.join("cpack.toml"), toml).unwrap();
    (ws, a, b, model)
}

/// The training queries of run `run`'s batches by task (its ids' `a/` or
/// `b/`), asserting that every batch's queries and passages are of one task.
fn queries_per_task(ws: &Path, run: &str) -> Vec<(String, usize)> {
    let steps = std::fs::read_to_string(ws.join(format!(".cpack/runs/{run}/steps.jsonl"))).unwrap();
    let mut per_task = std::collections::BTreeMap::new();
    for line in steps.lines() {
        for batch in json(line)["batches"].as_array().unwrap() {
            let ids = |key: &str| -> Vec<String> {
                let list = batch[key].as_array().unwrap().iter();
                list.map(|v| v.as_str().unwrap().to_string()).collect()
            };
            let (queries, passages) = (ids("queries"), ids("passages"));
            let task = queries[0][..2].to_string();
            assert!(task == "a/" || task == "b/", "{queries:?}");
            let mut all = queries.iter().chain(&passages);
            assert!(all.all(|id| id.starts_with(&task)), "{batch}");
            *per_task.entry(task).or_insert(0) += queries.len();
        }
    }
    per_task.into_iter().collect()
}

/// Small, fast training settings.
const SMALL: [&str; 12] = [
    "--group-size",
    "3",
    "--train-batch-size",
    "4",
    "--topk",
    "8",
    "--skip",
    "0",
    "--lr",
    "1e-3",
    "--passage-max-len",
    "16",
];

fn corpus_texts(data: &Path) -> Vec<String> {
    std::fs::read_to_string(data.join("corpus.jsonl"))
        .unwrap()
        .lines()
        .map(|l| json(l)["text"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn each_task_is_indexed_mined_and_evaluated_in_its_own_corpus() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, a, b, model) = two_tasks(tmp.path(), "ws");
    let built = json(&ok(&ws, &["index", "build", "--json"]));
    assert_eq!(built["tasks"]["a"]["rows"], 24, "{built}");
    assert_eq!(built["tasks"]["b"]["rows"], 20, "{built}");
    assert!(ws.join(".cpack/tasks/a/index").is_dir() && ws.join(".cpack/tasks/b/index").is_dir());

    let mined = json(&ok(&ws, &["mine", "--topk", "10", "--skip", "0", "--json"]));
    assert_eq!(mined["tasks"]["a"]["queries"], 18, "{mined}");
    assert_eq!(mined["tasks"]["b"]["queries"], 15, "{mined}");
    // Every negative of a task's round is a passage of that task's corpus.
    for (task, own, other) in [("a", &a, &b), ("b", &b, &a)] {
        let exported = ok(&ws, &["mine", "export", "--task", task, "--output", "-"]);
        let (own, other) = (corpus_texts(own), corpus_texts(other));
        let mut negatives = 0;
        for line in exported.lines() {
            for neg in json(line)["neg"].as_array().unwrap() {
                let neg = neg.as_str().unwrap().to_string();
                assert!(
                    own.contains(&neg) && !other.contains(&neg),
                    "task {task}: {neg}"
                );
                negatives += 1;
            }
        }
        assert!(negatives > 0, "task {task}'s round has no negatives");
    }
    let err = fails(&ws, &["mine", "stats"]);
    assert!(err.contains("--task") && err.contains("a, b"), "{err}");

    let eval = json(&ok(&ws, &["eval", "--split", "test", "--json"]));
    let ndcg = |t: &str| eval["tasks"][t]["metrics"]["ndcg_at_10"].as_f64().unwrap();
    let mean = eval["mean"]["ndcg_at_10"].as_f64().unwrap();
    assert!(
        (mean - (ndcg("a") + ndcg("b")) / 2.0).abs() < 1e-9,
        "{eval}"
    );

    // Task a's queries carry its instruction: a search there scores as a
    // workspace of a's data alone with that instruction does, not without.
    let lone = tmp.path().join("lone");
    init_workspace(
        &lone,
        &a,
        &model,
        &["--query-instruction", "about insurance: "],
    );
    ok(&lone, &["index", "build"]);
    let bare = tmp.path().join("bare");
    init_workspace(&bare, &a, &model, &[]);
    ok(&bare, &["index", "build"]);
    let query = ["search", "premium claim insurer", "--json", "-k", "3"];
    let scores = |ws: &Path, extra: &[&str]| -> Vec<f64> {
        let out = json(&ok(ws, &[&query[..], extra].concat()));
        let hits = out["results"].as_array().unwrap().iter();
        hits.map(|h| h["score"].as_f64().unwrap()).collect()
    };
    let in_task = scores(&ws, &["--task", "a"]);
    assert_eq!(in_task, scores(&lone, &[]));
    assert_ne!(in_task, scores(&bare, &[]));
    let err = fails(&ws, &query);
    assert!(err.contains("--task"), "{err}");
}

#[test]
fn a_run_over_tasks_draws_each_batch_from_one_task_and_reports_each() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, _, _) = two_tasks(tmp.path(), "ws");
    let run = [
        "train",
        "--json",
        "--epochs",
        "2",
        "--run",
        "m",
        "--eval-split",
        "test",
    ];
    let args = [&run[..], &SMALL].concat();
    let report = json(&ok(&ws, &args));
    for epoch in report["epochs"].as_array().unwrap() {
        for task in ["a", "b"] {
            assert!(
                epoch["tasks"][task]["eval"]["metrics"]["ndcg_at_10"].is_f64(),
                "{epoch}"
            );
            assert!(epoch["tasks"][task]["round"].is_u64(), "{epoch}");
        }
    }
    assert_eq!(report["tasks"]["a"]["train_queries"], 18);
    assert_eq!(report["tasks"]["b"]["train_queries"], 15);
    // The refresh before epoch 2 mined each task again, in its own store.
    assert!(ws.join(".cpack/runs/m/tasks/a/index").is_dir());

    let per_task = queries_per_task(&ws, "m");
    // Task b weighs 2: each of its queries twice an epoch, over two epochs.
    assert_eq!(
        per_task,
        [("a/".to_string(), 18 * 2), ("b/".to_string(), 15 * 2 * 2)]
    );
}

#[test]
fn a_killed_run_over_tasks_resumes_to_the_same_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        &["--epochs", "3", "--run", "k", "--eval-split", "none"][..],
        &SMALL,
    ]
    .concat();
    let (whole, _, _, _) = two_tasks(tmp.path(), "whole");
    ok(&whole, &[&["train", "--quiet"][..], &args].concat());

    let (killed, _, _, _) = two_tasks(tmp.path(), "killed");
    let mut child = cpack(&killed)
        .args([&["train", "--quiet"][..], &args].concat())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = killed.join(".cpack/runs/k/epoch-1/trainer_state.json");
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    while !first.exists() && std::time::Instant::now() < deadline {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first checkpoint"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !killed.join(".cpack/runs/k/epoch-3").exists(),
        "killed too late to test anything"
    );
    ok(
        &killed,
        &[&["train", "--quiet", "--resume"][..], &args].concat(),
    );
    let weights =
        |ws: &Path| std::fs::read(ws.join(".cpack/runs/k/epoch-3/model.safetensors")).unwrap();
    assert!(
        weights(&whole) == weights(&killed),
        "resumed weights differ from an uninterrupted run"
    );
    let state = json(
        &std::fs::read_to_string(killed.join(".cpack/runs/k/epoch-3/trainer_state.json")).unwrap(),
    );
    assert!(
        state["task_rounds"]["a"].is_u64() && state["task_rounds"]["b"].is_u64(),
        "{state}"
    );
}

#[test]
fn bad_task_lists_fail_with_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, a, _, _) = two_tasks(tmp.path(), "ws");
    let toml = std::fs::read_to_string(ws.join("cpack.toml")).unwrap();

    let err = fails(&ws, &["eval", "--task", "c"]);
    assert!(
        err.contains("no such task") && err.contains("a, b"),
        "{err}"
    );
    let err = fails(&ws, &[&["train", "--freeze-passages"][..], &SMALL].concat());
    assert!(err.contains("several tasks"), "{err}");
    assert!(
        !ws.join(".cpack/runs").exists(),
        "a refused run left a folder behind"
    );

    let with_data = format!("{toml}\n[data]\ndir = {a:?}\n");
    std::fs::write(ws.join("cpack.toml"), with_data).unwrap();
    let err = fails(&ws, &["index", "build"]);
    assert!(err.contains("[data]") && err.contains("[[task]]"), "{err}");

    let twice = toml.replace("name = \"b\"", "name = \"a\"");
    std::fs::write(ws.join("cpack.toml"), twice).unwrap();
    let err = fails(&ws, &["index", "build"]);
    assert!(err.contains("two tasks are named \"a\""), "{err}");

    let bad = toml.replace("weight = 2.0", "weight = 0.0");
    std::fs::write(ws.join("cpack.toml"), bad).unwrap();
    let err = fails(&ws, &["index", "build"]);
    assert!(err.contains("weight"), "{err}");

    let both = toml.replace("weight = 2.0", "pairs = \"p.jsonl\"");
    std::fs::write(ws.join("cpack.toml"), both).unwrap();
    let err = fails(&ws, &["index", "build"]);
    assert!(
        err.contains("one of data") && err.contains("pairs"),
        "{err}"
    );

    let huge = toml.replace("weight = 2.0", "weight = 1e12");
    std::fs::write(ws.join("cpack.toml"), huge).unwrap();
    let err = fails(&ws, &["index", "build"]);
    assert!(err.contains("at most 100"), "{err}");
    let err = fails(&ws, &["index", "info", "--task", "../../etc"]);
    assert!(err.contains("not allowed"), "{err}");

    let unknown = toml.replace("weight = 2.0", "wieght = 2.0");
    std::fs::write(ws.join("cpack.toml"), unknown).unwrap();
    let err = fails(&ws, &["index", "build"]);
    assert!(err.contains("wieght"), "{err}");
}

#[test]
fn a_pairs_task_trains_beside_a_corpus_task_without_instruction() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, _, _) = two_tasks(tmp.path(), "ws");
    let mut pairs = String::new();
    // Eleven distinct query sides (3 and 11 are coprime).
    for i in 0..11 {
        let side = |k: usize| BETA[(i * 3 + k) % BETA.len()];
        let (query, pos) = (
            format!("{} {}", side(0), side(1)),
            format!("{} {} {}", side(1), side(2), side(5)),
        );
        pairs += &format!("{}\n", serde_json::json!({"query": query, "pos": [pos]}));
    }
    std::fs::write(ws.join("para.jsonl"), pairs).unwrap();
    let toml = std::fs::read_to_string(ws.join("cpack.toml")).unwrap();
    let b = toml.find("[[task]]\nname = \"b\"").unwrap();
    let toml = format!(
        "{}[[task]]\nname = \"para\"\npairs = \"para.jsonl\"\n",
        &toml[..b]
    );
    std::fs::write(ws.join("cpack.toml"), toml).unwrap();

    let run = ["train", "--json", "--run", "p", "--eval-split", "test"];
    let report = json(&ok(&ws, &[&run[..], &SMALL].concat()));
    assert_eq!(
        report["tasks"]["para"]["train_queries"], 11,
        "{}",
        report["tasks"]
    );
    let para = report["spec"]["tasks"].as_array().unwrap()[1].clone();
    assert_eq!(
        (para["query_instruction"].as_str(), para["split"].as_str()),
        (Some(""), Some("train"))
    );
    let epoch = &report["epochs"][0];
    assert!(epoch["tasks"]["para"]["eval"].is_null() && epoch["tasks"]["para"]["round"].is_u64());
    let mean = epoch["eval"]["metrics"]["ndcg_at_10"].as_f64().unwrap();
    let a = epoch["tasks"]["a"]["eval"]["metrics"]["ndcg_at_10"]
        .as_f64()
        .unwrap();
    assert_eq!(mean, a, "the mean is over the tasks that are evaluated");
    let text = ok(&ws, &["report"]);
    assert!(
        text.contains("nDCG@10 by task") && text.contains("para"),
        "{text}"
    );

    let eval = ["eval", "--split", "test", "--passage-max-len", "16"];
    let out = cpack(&ws).args(eval).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("task para: a pairs task"), "{stderr}");
    let err = fails(
        &ws,
        &["index", "build", "--task", "para", "--model", "nowhere"],
    );
    assert!(err.contains("nowhere"), "{err}");
}

/// With in-batch negatives only and no evaluation, nothing but the trainer
/// reads the queries: a task's instruction changes the weights a run ends
/// on only if each query reaches the model with its task's instruction.
#[test]
fn each_query_trains_with_its_own_tasks_instruction() {
    let tmp = tempfile::tempdir().unwrap();
    let run = [
        "train",
        "--quiet",
        "--group-size",
        "1",
        "--eval-split",
        "none",
        "--run",
        "r",
    ];
    let weights = |name: &str, instruction_b: &str| {
        let (ws, _, _, _) = two_tasks(tmp.path(), name);
        let toml = std::fs::read_to_string(ws.join("cpack.toml")).unwrap();
        let toml = toml.replace("\"about places: \"", &format!("{instruction_b:?}"));
        std::fs::write(ws.join("cpack.toml"), toml).unwrap();
        ok(&ws, &[&run[..], &SMALL[2..]].concat());
        std::fs::read(ws.join(".cpack/runs/r/epoch-1/model.safetensors")).unwrap()
    };
    let places = weights("places", "about places: ");
    assert_eq!(
        places,
        weights("places-again", "about places: "),
        "a run repeats itself"
    );
    assert_ne!(
        places,
        weights("insurance", "about insurance: "),
        "task b's instruction is not seen"
    );
}

#[test]
fn serve_answers_each_task_from_its_own_index_with_its_instruction() {
    use crate::serve::{assert_same_hits, hits_of, Server};
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, _, _) = two_tasks(tmp.path(), "ws");
    ok(&ws, &["-q", "index", "build"]);
    let server = Server::start(&ws, &[]);
    for (task, query) in [("a", "premium claim insurer"), ("b", "river forest valley")] {
        let request = serde_json::json!({"query": query, "k": 5, "task": task});
        let served = hits_of(&server.post("/search", &request)["hits"]);
        let cli = json(&ok(
            &ws,
            &["-q", "search", "--json", "-k", "5", "--task", task, query],
        ));
        assert_same_hits(&served, &hits_of(&cli["results"]));
    }
    let info = server.get("/info");
    assert_eq!(
        info["tasks"]["b"]["query_instruction"], "about places: ",
        "{info}"
    );
    assert_eq!(info["tasks"]["a"]["passages"], 24, "{info}");
    let (status, error) = server.refused("/search", r#"{"query": "river"}"#);
    assert_eq!(status, 422);
    assert!(
        error.contains("\"task\"") && error.contains("a, b"),
        "{error}"
    );
    let (status, error) = server.refused("/embed", r#"{"inputs": "river", "task": "c"}"#);
    assert!(status == 422 && error.contains("no task \"c\""), "{error}");
}

/// The strategies of a one-dataset run keep working over tasks: clustered
/// batches (clusters of the queries as the trainer sees them), retired
/// easy negatives and GradCache's mini-batches, batches still of one task.
#[test]
fn clustered_batches_retired_negatives_and_mini_batches_work_over_tasks() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, _, _) = two_tasks(tmp.path(), "ws");
    let strategies = [
        "--batching",
        "clustered",
        "--replace-easy",
        "0.0",
        "--mini-batch",
        "2",
        "--epochs",
        "2",
        "--eval-split",
        "none",
        "--run",
        "s",
    ];
    let report = json(&ok(
        &ws,
        &[&["train", "--json"][..], &SMALL, &strategies].concat(),
    ));
    assert_eq!(report["epochs"].as_array().unwrap().len(), 2);
    let retired: u64 = (report["epochs"].as_array().unwrap().iter())
        .map(|e| e["negatives_retired"].as_u64().unwrap())
        .sum();
    assert!(retired > 0, "no negative was retired: {report}");
    let per_task = queries_per_task(&ws, "s");
    assert_eq!(per_task.len(), 2, "{per_task:?}");
}
