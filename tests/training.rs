//! `cpack train` through the real binary, with a tiny random BERT on
//! cmrc2018: the loop runs end to end and records itself, checkpoints are
//! Hugging Face folders cpack can start from, static runs keep their round,
//! `kill -9` resumes to the same weights, and bad input fails cleanly.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A cmrc2018 workspace with a tiny model (shared by the runs of one test).
fn workspace(tmp: &Path, name: &str) -> PathBuf {
    let data = shared("data/cmrc2018");
    let model = tmp.join("model");
    if !model.exists() {
        tiny_model_for(&data, &model);
    }
    let ws = tmp.join(name);
    init_workspace(&ws, &data, &model, &["--query-instruction", "bge-zh"]);
    ws
}

/// Small, fast settings shared by the tests.
const SMALL: [&str; 12] = [
    "--max-queries",
    "48",
    "--train-batch-size",
    "8",
    "--passage-max-len",
    "48",
    "--query-max-len",
    "24",
    "--topk",
    "30",
    "--lr",
    "1e-3",
];

/// Static negatives in groups of 3, nothing evaluated.
const STATIC_GROUPS_OF_3: [&str; 6] = [
    "--group-size",
    "3",
    "--refresh-every",
    "0",
    "--eval-split",
    "none",
];

/// Two epochs of groups of 3, each evaluated on the test split.
const TWO_EVALUATED_EPOCHS: [&str; 6] =
    ["--epochs", "2", "--group-size", "3", "--eval-split", "test"];

fn train(ws: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["train", "--json"];
    args.extend_from_slice(&SMALL);
    args.extend_from_slice(extra);
    json(&ok(ws, &args))
}

fn safetensors_header(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    serde_json::from_slice(&bytes[8..8 + len]).unwrap()
}

#[test]
fn refresh_loop_trains_reports_and_writes_hugging_face_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(tmp.path(), "ws");
    let report = train(&ws, &[&TWO_EVALUATED_EPOCHS[..], &["--run", "r"]].concat());
    let epochs = report["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 2);
    assert!(report["base"]["metrics"]["ndcg_at_10"].as_f64().is_some());
    let (r1, r2) = (
        epochs[0]["round"].as_u64().unwrap(),
        epochs[1]["round"].as_u64().unwrap(),
    );
    assert_ne!(
        r1, r2,
        "refresh must mine a new round with the new checkpoint"
    );
    assert!(epochs[1]["negatives_overlap"].as_f64().is_some());
    let corpus = std::fs::read_to_string(shared("data/cmrc2018/corpus.jsonl")).unwrap();
    let corpus_rows = corpus.lines().count();
    for e in epochs {
        assert!(e["mean_loss"].as_f64().unwrap().is_finite());
        assert!(e["eval"]["metrics"]["ndcg_at_10"].as_f64().is_some());
        assert!(e["train_seconds"].as_f64().unwrap() > 0.0);
        assert_eq!(
            e["passages_encoded"], corpus_rows,
            "a full refresh encodes the whole corpus"
        );
    }
    let loss = |i: usize| epochs[i]["mean_loss"].as_f64().unwrap();
    assert!(
        loss(1) < loss(0),
        "the loss must fall: {} then {}",
        loss(0),
        loss(1)
    );

    // The checkpoint is a Hugging Face / sentence-transformers folder.
    let ckpt = ws.join(".cpack/runs/r/epoch-2");
    let base = safetensors_header(&tmp.path().join("model/model.safetensors"));
    let trained = safetensors_header(&ckpt.join("model.safetensors"));
    assert_eq!(trained["__metadata__"]["format"], "pt");
    let names = |h: &serde_json::Value| {
        let mut n: Vec<String> = h
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "__metadata__")
            .cloned()
            .collect();
        n.sort();
        n
    };
    assert_eq!(
        names(&trained),
        names(&base),
        "every tensor keeps its original name"
    );
    for f in [
        "config.json",
        "tokenizer.json",
        "modules.json",
        "1_Pooling/config.json",
        "sentence_bert_config.json",
    ] {
        assert!(ckpt.join(f).exists(), "{f} missing from the checkpoint");
    }
    assert_ne!(
        std::fs::read(ckpt.join("model.safetensors")).unwrap(),
        std::fs::read(ws.join(".cpack/runs/r/epoch-1/model.safetensors")).unwrap()
    );

    // cpack starts from it, and `cpack report` reads the run back.
    let next = tmp.path().join("next");
    init_workspace(&next, &shared("data/cmrc2018"), &ckpt, &[]);
    ok(&next, &["index", "build"]);
    let table = ok(&ws, &["report"]);
    assert!(
        table.contains("base") && table.contains("nDCG@10"),
        "{table}"
    );
    let html = tmp.path().join("curves.html");
    ok(&ws, &["report", "--html", html.to_str().unwrap()]);
    assert!(std::fs::read_to_string(html).unwrap().contains("<svg"));

    // The same curves as a picture: a real PNG with both charts drawn.
    let png = tmp.path().join("curves.png");
    ok(&ws, &["report", "--png", png.to_str().unwrap()]);
    let picture = image::open(&png).unwrap().to_rgb8();
    assert_eq!(picture.dimensions(), (1000, 420));
    let half = picture.width() / 2;
    let line = image::Rgb([37, 99, 235]);
    let lines_in = |left: bool| {
        picture
            .enumerate_pixels()
            .filter(|(x, _, p)| (*x < half) == left && **p == line)
            .count()
    };
    assert!(
        lines_in(true) > 50 && lines_in(false) > 50,
        "a chart has no curve"
    );
    let text = picture
        .pixels()
        .filter(|p| p.0.iter().all(|&c| c < 80))
        .count();
    assert!(text > 500, "no labels were drawn ({text} dark pixels)");
}

#[test]
fn static_negatives_keep_the_base_round_and_in_batch_needs_none() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(tmp.path(), "ws");
    let fixed = train(&ws, &[&["--epochs", "2"][..], &STATIC_GROUPS_OF_3].concat());
    let rounds: Vec<u64> = fixed["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["round"].as_u64().unwrap())
        .collect();
    assert_eq!(
        rounds,
        [1, 1],
        "static negatives come from the base model's round"
    );
    assert!(
        fixed["base"].is_null(),
        "--eval-split none evaluates nothing"
    );
    let in_batch = train(&ws, &["--group-size", "1", "--eval-split", "none"]);
    assert!(in_batch["epochs"][0]["round"].is_null());
    let stats = json(&ok(&ws, &["mine", "stats", "--json"]));
    assert_eq!(stats["stats"]["round"], 1, "no run mined another round");

    // Another model never trains on the first model's negatives: it mines its own.
    let texts = dataset_texts(&shared("data/cmrc2018"));
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let other = tmp.path().join("other-model");
    cpack_model::test_model::write_tiny_model(&other, &refs, 99).unwrap();
    let other_run = train(
        &ws,
        &[
            "--model",
            other.to_str().unwrap(),
            "--group-size",
            "3",
            "--eval-split",
            "none",
        ],
    );
    assert_eq!(other_run["epochs"][0]["round"], 2);
}

/// Waits for `path` to exist while `child` runs.
fn wait_for(path: &Path, child: &mut std::process::Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_killed_run_resumes_to_the_same_weights() {
    killed_run_resumes_to_the_same_weights(&[]);
}

#[test]
fn a_killed_bf16_run_resumes_to_the_same_weights() {
    killed_run_resumes_to_the_same_weights(&["--train-precision", "bf16"]);
}

fn killed_run_resumes_to_the_same_weights(precision: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let epochs = ["--epochs", "3", "--group-size", "3", "--eval-split", "none"];
    let args = [&epochs[..], &["--run", "k"], precision].concat();
    let whole = workspace(tmp.path(), "whole");
    train(&whole, &args);

    let killed = workspace(tmp.path(), "killed");
    let mut cmd_args = vec!["train", "--quiet"];
    cmd_args.extend_from_slice(&SMALL);
    cmd_args.extend_from_slice(&args);
    let mut child = cpack(&killed)
        .args(&cmd_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = killed.join(".cpack/runs/k/epoch-1/trainer_state.json");
    assert!(
        wait_for(&first, &mut child),
        "the run ended before its first checkpoint"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !killed.join(".cpack/runs/k/epoch-3").exists(),
        "killed too late to test anything"
    );
    fails(&killed, &[&["train"][..], &SMALL, &args].concat());
    // The resume names no precision: run.json's is the one that counts.
    let resumed = json(&ok(
        &killed,
        &[
            &["train", "--json", "--resume", "--run", "k"][..],
            &SMALL,
            &epochs,
        ]
        .concat(),
    ));
    assert_eq!(resumed["epochs"].as_array().unwrap().len(), 3);
    let weights =
        |ws: &Path| std::fs::read(ws.join(".cpack/runs/k/epoch-3/model.safetensors")).unwrap();
    assert!(
        weights(&whole) == weights(&killed),
        "resumed weights differ from an uninterrupted run"
    );
}

/// `--train-precision bf16` reaches the steps (other weights than f32's from
/// the same seed) and is recorded in run.json, so a resume keeps it (the
/// kill test above runs in bf16 too).
#[test]
fn bf16_products_train_and_are_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(tmp.path(), "ws");
    let run = |name: &str, extra: &[&str]| {
        train(
            &ws,
            &[&["--run", name][..], &STATIC_GROUPS_OF_3, extra].concat(),
        );
        std::fs::read(ws.join(format!(".cpack/runs/{name}/epoch-1/model.safetensors"))).unwrap()
    };
    let spec = |name: &str| -> serde_json::Value {
        let path = ws.join(format!(".cpack/runs/{name}/run.json"));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let f32_weights = run("f32", &[]);
    let bf16_weights = run("bf16", &["--train-precision", "bf16"]);
    assert!(f32_weights != bf16_weights, "bf16 trained as f32");
    assert_eq!(spec("bf16")["train"]["precision"], "bf16");
    assert!(
        spec("f32")["train"].get("precision").is_none(),
        "f32 runs' run.json unchanged"
    );
}

#[test]
fn bad_runs_fail_with_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    // The echo dataset has a test split only.
    let (echo, _, _) = echo_workspace(tmp.path());
    let err = fails(&echo, &["train"]);
    assert!(err.contains("train.tsv"), "{err}");
    let err = fails(&echo, &["train", "--resume"]);
    assert!(err.contains("no run to resume"), "{err}");

    let ws = workspace(tmp.path(), "cmrc");
    let err = fails(&ws, &["train", "--temperature", "0"]);
    assert!(err.contains("--temperature"), "{err}");
    // A learning rate this large blows the weights up after one step.
    let err = fails(
        &ws,
        &[
            &["train"][..],
            &SMALL[..10],
            &[
                "--lr",
                "1e30",
                "--warmup-ratio",
                "0",
                "--max-grad-norm",
                "0",
                "--run",
                "nan",
                "--eval-split",
                "none",
            ],
        ]
        .concat(),
    );
    assert!(
        err.contains("loss became") && err.contains("batch"),
        "{err}"
    );
    assert!(
        !ws.join(".cpack/runs/nan/epoch-1").exists(),
        "no checkpoint from a diverged epoch"
    );
}

#[test]
fn a_checkpoint_that_cannot_be_written_leaves_the_previous_one_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(tmp.path(), "ws");
    let run = [&STATIC_GROUPS_OF_3[..], &["--run", "d"]].concat();
    train(&ws, &[&["--epochs", "1"][..], &run].concat());
    let first = ws.join(".cpack/runs/d/epoch-1/model.safetensors");
    let weights = std::fs::read(&first).unwrap();

    // A file-size cap makes every write past it fail (EFBIG) as a full disk
    // would; SIGXFSZ is ignored so the write returns the error.
    let limit_kb = weights.len() / 1024 / 2;
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {limit_kb}; exec \"$0\" \"$@\""
        ))
        .arg(env!("CARGO_BIN_EXE_cpack"))
        .args([&["train", "--resume", "--epochs", "2"][..], &SMALL, &run].concat())
        .current_dir(&ws)
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot write") && stderr.contains("model.safetensors"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let runs = ws.join(".cpack/runs/d");
    assert!(!runs.join("epoch-2").exists());
    assert!(
        !runs.join(".epoch-2.partial").exists(),
        "the partial checkpoint is cleaned up"
    );
    assert!(
        std::fs::read(&first).unwrap() == weights,
        "epoch-1 must be untouched"
    );

    let resumed = train(&ws, &[&["--resume", "--epochs", "2"][..], &run].concat());
    assert_eq!(resumed["epochs"].as_array().unwrap().len(), 2);
}

/// With `--encoder ort` every checkpoint is exported to ONNX and the refresh
/// re-encodes the corpus through ONNX Runtime; the trained weights give the
/// same vectors through ORT as through candle.
#[test]
fn refresh_through_onnx_runtime_matches_candle_on_the_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(tmp.path(), "ws");
    let report = train(
        &ws,
        &[
            "--epochs",
            "2",
            "--group-size",
            "3",
            "--eval-split",
            "none",
            "--run",
            "r",
            "--encoder",
            "ort",
        ],
    );
    assert_eq!(report["epochs"].as_array().unwrap().len(), 2);
    let run_index = ws.join(".cpack/runs/r/index");
    let generation = std::fs::read_to_string(run_index.join("CURRENT")).unwrap();
    let manifest = json(
        &std::fs::read_to_string(run_index.join(generation.trim()).join("manifest.json")).unwrap(),
    );
    assert_eq!(manifest["plan"]["stamp"]["encoder_backend"], "ort");
    let exports = std::fs::read_dir(ws.join(".cpack/onnx")).unwrap().count();
    assert_eq!(
        exports, 3,
        "the base model and both checkpoints are exported"
    );

    let ckpt = ws.join(".cpack/runs/r/epoch-2");
    let texts = ["第一个问题是什么", "保险", ""];
    let input: String = texts
        .iter()
        .map(|t| format!("{}\n", serde_json::json!({ "text": t })))
        .collect();
    std::fs::write(tmp.path().join("texts.jsonl"), input).unwrap();
    let vectors = |extra: &[&str]| -> Vec<Vec<f64>> {
        let out = tmp.path().join("out.jsonl");
        let mut args = vec![
            "embed",
            "--model",
            ckpt.to_str().unwrap(),
            "--input",
            "texts.jsonl",
            "--output",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        ok(tmp.path(), &args);
        std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_value(json(l)["embedding"].clone()).unwrap())
            .collect()
    };
    let (candle, ort) = (vectors(&[]), vectors(&["--encoder", "ort"]));
    for (a, b) in candle.iter().zip(&ort) {
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f64, f64::max);
        assert!(
            worst < 1e-4,
            "ORT and candle differ by {worst} on the checkpoint"
        );
    }
}

/// A training set whose 40 queries share 6 positives: clash-free packing
/// cannot fill batches of 8, so an epoch takes more than its nominal 5 steps.
fn shared_positive_dataset(dir: &Path) {
    std::fs::create_dir_all(dir.join("qrels")).unwrap();
    let topics = [
        "claims",
        "premiums",
        "annuities",
        "medicare",
        "renters",
        "disability",
    ];
    let corpus: String = topics
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let doc = serde_json::json!({"id": format!("p{i}"), "title": "", "text": format!("all about {t}")});
            format!("{doc}\n")
        })
        .collect();
    let mut queries = String::new();
    let mut qrels = String::from("query-id\tcorpus-id\tscore\n");
    for q in 0..40 {
        let topic = q % topics.len();
        let text = format!("question {q} on {}", topics[topic]);
        queries += &format!(
            "{}\n",
            serde_json::json!({"id": format!("q{q:02}"), "text": text})
        );
        qrels += &format!("q{q:02}\tp{topic}\t1\n");
    }
    std::fs::write(dir.join("corpus.jsonl"), corpus).unwrap();
    std::fs::write(dir.join("queries.jsonl"), queries).unwrap();
    std::fs::write(dir.join("qrels/train.tsv"), qrels).unwrap();
}

#[test]
fn the_schedule_spans_the_real_steps_when_packing_adds_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    shared_positive_dataset(&data);
    let model = tiny_model_for(&data, &tmp.path().join("model"));
    let ws = tmp.path().join("ws");
    init_workspace(&ws, &data, &model, &[]);
    let args = [
        "train",
        "--json",
        "--run",
        "s",
        "--epochs",
        "2",
        "--group-size",
        "1",
        "--train-batch-size",
        "8",
        "--lr",
        "1e-3",
        "--warmup-ratio",
        "0.1",
        "--eval-split",
        "none",
    ];
    let report = json(&ok(&ws, &args));
    let run = ws.join(".cpack/runs/s");
    let steps = std::fs::read_to_string(run.join("steps.jsonl")).unwrap();
    let steps: Vec<serde_json::Value> = steps.lines().map(json).collect();
    let per_epoch = |e: u64| steps.iter().filter(|s| s["epoch"] == e).count();
    assert!(
        per_epoch(1) > 5 && per_epoch(2) > 5,
        "packing added no batch: {} and {}",
        per_epoch(1),
        per_epoch(2)
    );
    for (i, s) in steps.iter().enumerate() {
        assert_eq!(s["step"], i as u64 + 1);
        let queries: Vec<&str> = s["batches"][0]["queries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q.as_str().unwrap())
            .collect();
        let mut topics: Vec<u32> = queries
            .iter()
            .map(|q| q[1..].parse::<u32>().unwrap() % 6)
            .collect();
        topics.sort();
        topics.dedup();
        assert_eq!(
            topics.len(),
            queries.len(),
            "step {}: two queries share a positive",
            i + 1
        );
    }
    let lr: Vec<f64> = steps.iter().map(|s| s["lr"].as_f64().unwrap()).collect();
    assert_eq!(lr[0], 0.0, "warm-up starts at 0, as Hugging Face's");
    assert!(
        lr[1..].iter().all(|&r| r > 0.0),
        "a step trained at rate 0: {lr:?}"
    );
    let peak = lr.iter().cloned().fold(0.0, f64::max);
    assert!((peak - 1e-3).abs() < 1e-4, "peak {peak}");
    let top = lr.iter().position(|&r| r == peak).unwrap();
    assert!(
        lr[top..].windows(2).all(|w| w[1] < w[0]),
        "not decaying: {lr:?}"
    );
    // The decay ends at 0 one step after the last: the last step is one
    // (real) step's share of the way from 0, never clamped at 0 before it.
    let last_share = 5.0 / per_epoch(2) as f64;
    let expected_last = 1e-3 * last_share / (10.0 - 1.0);
    assert!(
        (lr[lr.len() - 1] - expected_last).abs() < 1e-9,
        "{} vs {expected_last}",
        lr[lr.len() - 1]
    );

    let state = json(&std::fs::read_to_string(run.join("epoch-2/trainer_state.json")).unwrap());
    assert_eq!(state["optimizer_steps"], steps.len() as u64);
    assert_eq!(state["schedule_steps"], 10);
    let reported: u64 = report["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["optimizer_steps"].as_u64().unwrap())
        .sum();
    assert_eq!(reported, steps.len() as u64);
}

#[test]
fn a_step_that_cannot_fit_is_refused_before_anything_runs_with_a_mini_batch_that_would() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    init_workspace(&ws, &shared("data/cmrc2018"), &minilm(), &[]);
    let args = [
        "train",
        "--run",
        "big",
        "--train-batch-size",
        "1024",
        "--group-size",
        "8",
        "--passage-max-len",
        "256",
        "--eval-split",
        "none",
    ];
    let err = fails(&ws, &args);
    assert!(
        err.contains("needs about") && err.contains("is available"),
        "{err}"
    );
    let n: usize = err
        .split("--mini-batch ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no --mini-batch suggested: {err}"));
    assert!(n >= 1);
    assert!(
        !ws.join(".cpack/runs/big").exists(),
        "a refused run left a folder"
    );
    assert!(
        !ws.join(".cpack/index").exists(),
        "the corpus was encoded first"
    );
}

#[test]
fn mining_strategies_from_cpack_toml_and_flags_reach_the_runs_rounds() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(tmp.path(), "ws");
    // [train] is the last table of the file `cpack init` writes.
    let toml = ws.join("cpack.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text.push_str("sample = \"simans\"\nsimans_a = 20.0\n");
    std::fs::write(&toml, text).unwrap();
    // The tiny model scores every passage alike, so the margin filter leaves
    // no negative: the run mines its round, then refuses to train on
    // random passages alone.
    let mut args = vec!["train"];
    args.extend_from_slice(&SMALL);
    args.extend_from_slice(&STATIC_GROUPS_OF_3);
    args.extend_from_slice(&["--filter", "margin-pos"]);
    let err = fails(&ws, &args);
    assert!(err.contains("round 1 has no negatives"), "{err}");
    let stats = json(&ok(&ws, &["mine", "stats", "--json"]));
    let params = &stats["manifest"]["params"];
    assert_eq!(params["sampling"]["Simans"]["a"], 20.0, "{params}");
    assert_eq!(params["sampling"]["Simans"]["b"], 0.0, "{params}");
    assert!((params["margin"].as_f64().unwrap() - 0.05).abs() < 1e-6);
    assert!(params["relative_margin"].is_null());
}

#[test]
fn a_teacher_round_trains_a_student_only_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(tmp.path(), "ws");
    // The "teacher" is the workspace's model; it mines round 1.
    ok(&ws, &["index", "build"]);
    ok(&ws, &["mine", "--topk", "30"]);
    let texts = dataset_texts(&shared("data/cmrc2018"));
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let student = tmp.path().join("student");
    cpack_model::test_model::write_tiny_model(&student, &refs, 7).unwrap();
    let student = student.to_str().unwrap();
    let static_run = STATIC_GROUPS_OF_3;
    let own = train(&ws, &[&["--model", student][..], &static_run].concat());
    assert_eq!(
        own["epochs"][0]["round"], 2,
        "by default the student mines its own round"
    );
    let taught = train(
        &ws,
        &[
            &["--model", student, "--negatives-from", "1"][..],
            &static_run,
        ]
        .concat(),
    );
    assert_eq!(taught["epochs"][0]["round"], 1);
    let err = fails(
        &ws,
        &[
            &["train", "--model", student, "--negatives-from", "9"][..],
            &static_run,
        ]
        .concat(),
    );
    assert!(err.contains("no round 9"), "{err}");
}

#[test]
fn clustered_batches_train_and_are_seeded() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(tmp.path(), "ws");
    let args = [
        "--batching",
        "clustered",
        "--group-size",
        "2",
        "--refresh-every",
        "0",
        "--epochs",
        "2",
        "--eval-split",
        "none",
    ];
    let a = train(&ws, &[&args[..], &["--run", "a"]].concat());
    assert_eq!(a["spec"]["train"]["batching"], "clustered");
    assert_eq!(a["epochs"].as_array().unwrap().len(), 2);
    let b = train(&ws, &[&args[..], &["--run", "b"]].concat());
    assert_eq!(a["epochs"][1]["mean_loss"], b["epochs"][1]["mean_loss"]);
    let steps = |run: &str| {
        std::fs::read_to_string(ws.join(".cpack/runs").join(run).join("steps.jsonl")).unwrap()
    };
    assert_eq!(
        steps("a"),
        steps("b"),
        "the clusters and batches are seeded"
    );
}

/// Every file under `dir` with its bytes, by path (the process lock aside:
/// it names the last process that held it).
fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else if !path.ends_with("LOCK") {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

#[test]
fn query_side_training_never_re_encodes_passages_and_re_mines_with_the_new_queries() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(tmp.path(), "ws");
    // At the run's lengths, so that the run finds it up to date.
    ok(
        &ws,
        &[
            "index",
            "build",
            "--passage-max-len",
            "48",
            "--query-max-len",
            "24",
        ],
    );
    let index = ws.join(".cpack/index");
    let before = snapshot(&index);
    let frozen = ["--freeze-passages", "--run", "q"];
    let run = train(&ws, &[&TWO_EVALUATED_EPOCHS[..], &frozen].concat());
    assert_eq!(run["spec"]["train"]["freeze_passages"], true);
    let after = snapshot(&index);
    let changed: Vec<_> = after
        .keys()
        .filter(|p| after.get(*p) != before.get(*p))
        .collect();
    assert!(
        changed.is_empty() && after.len() == before.len(),
        "the base model's index, the frozen passages, is never rewritten: {changed:?}"
    );
    assert!(!ws.join(".cpack/runs/q/index").exists(), "no run index");
    let epochs = run["epochs"].as_array().unwrap();
    for e in epochs {
        assert_eq!(e["encode_seconds"], 0.0, "{e}");
        assert!(e["eval"]["metrics"]["ndcg_at_10"].as_f64().is_some());
    }
    let rounds: Vec<String> = epochs.iter().map(|e| e["round"].to_string()).collect();
    assert_ne!(
        rounds[0], rounds[1],
        "the refresh mines with the new queries"
    );
    let manifest = |round: &str| {
        json(&ok(&ws, &["mine", "stats", "--round", round, "--json"]))["manifest"].clone()
    };
    let (first, refreshed) = (manifest(&rounds[0]), manifest(&rounds[1]));
    assert!(first["query_model_fingerprint"].is_null(), "{first}");
    assert_eq!(
        refreshed["model_fingerprint"], first["model_fingerprint"],
        "the refresh searched the base model's passages"
    );
    let query_model = refreshed["query_model_fingerprint"].as_str().unwrap();
    assert_ne!(query_model, first["model_fingerprint"].as_str().unwrap());
    let text = ok(&ws, &["mine", "stats", "--round", &rounds[1]]);
    assert!(text.contains(&query_model[..12]), "{text}");
    // The checkpoint is a query encoder over the workspace's index.
    let lengths = ["--passage-max-len", "48", "--query-max-len", "24"];
    let checkpoint = ws.join(".cpack/runs/q/epoch-2");
    let query_model = ["--query-model", checkpoint.to_str().unwrap()];
    let eval = json(&ok(
        &ws,
        &[&["eval", "--json"][..], &lengths, &query_model].concat(),
    ));
    assert_eq!(eval["metrics"], epochs[1]["eval"]["metrics"]);
    let found = json(&ok(
        &ws,
        &[
            &["search", "--json", "-k", "3", "question"][..],
            &lengths,
            &query_model,
        ]
        .concat(),
    ));
    assert_eq!(found["results"].as_array().unwrap().len(), 3);
    let shown = ok(&ws, &["report", "--run", "q"]);
    assert!(shown.contains("query side only"), "{shown}");
    // Resuming the finished run mines nothing new; its hint names --query-model.
    let resumed = ok(&ws, &["train", "--run", "q", "--resume"]);
    assert!(resumed.contains("--query-model"), "{resumed}");
    let stats = json(&ok(&ws, &["mine", "stats", "--json"]));
    assert_eq!(stats["manifest"]["round"].to_string(), rounds[1]);
}

#[test]
fn easy_negatives_are_retired_and_later_epochs_draw_the_rest_of_the_pool() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(tmp.path(), "ws");
    let recipe = [&STATIC_GROUPS_OF_3[..], &["--replace-easy", "0"]].concat();
    let run = train(
        &ws,
        &[&recipe[..], &["--epochs", "2", "--run", "easy"]].concat(),
    );
    let retired_in_epoch_1 = run["epochs"][0]["negatives_retired"].as_u64().unwrap();
    assert!(retired_in_epoch_1 > 0, "{run}");
    let shown = ok(&ws, &["report", "--run", "easy"]);
    assert!(
        shown.contains("easy negatives retired at margin 0"),
        "{shown}"
    );
    let stats = json(&ok(&ws, &["mine", "stats", "--json"]));
    assert_eq!(
        stats["manifest"]["params"]["negatives"], 8,
        "a pool of 4 × 2"
    );

    // Epoch 2 draws no negative retired in epoch 1 while its query has two others.
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(ws.join(".cpack/runs/easy/epoch-1/trainer_state.json")).unwrap(),
    )
    .unwrap();
    let retired = state["retired"].as_object().unwrap();
    let total: usize = retired.values().map(|v| v.as_array().unwrap().len()).sum();
    assert_eq!(total as u64, retired_in_epoch_1);
    let pool_file = tmp.path().join("pool.jsonl");
    export_ids(&ws, &pool_file);
    let pools: std::collections::HashMap<String, Vec<String>> = std::fs::read_to_string(&pool_file)
        .unwrap()
        .lines()
        .map(|l| {
            let r = json(l);
            let ids = r["neg"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string());
            (r["query_id"].as_str().unwrap().to_string(), ids.collect())
        })
        .collect();
    let steps = std::fs::read_to_string(ws.join(".cpack/runs/easy/steps.jsonl")).unwrap();
    let mut checked = 0;
    for step in steps.lines().map(json).filter(|s| s["epoch"] == 2) {
        for batch in step["batches"].as_array().unwrap() {
            let passages = batch["passages"].as_array().unwrap();
            for (k, query) in batch["queries"].as_array().unwrap().iter().enumerate() {
                let query = query.as_str().unwrap();
                let gone: Vec<&str> = retired.get(query).map_or(vec![], |v| {
                    v.as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_str().unwrap())
                        .collect()
                });
                let live = pools[query]
                    .iter()
                    .filter(|id| !gone.contains(&id.as_str()))
                    .count();
                if live >= 2 && !gone.is_empty() {
                    for negative in &passages[3 * k + 1..3 * k + 3] {
                        assert!(
                            !gone.contains(&negative.as_str().unwrap()),
                            "{query}: {negative}"
                        );
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(
        checked > 0,
        "no query had retired negatives and others left"
    );

    // The retired negatives are part of the checkpoint: epoch 2 trained
    // again from epoch 1's checkpoint reaches the same weights.
    let epoch_2 = ws.join(".cpack/runs/easy/epoch-2");
    let weights = || std::fs::read(epoch_2.join("model.safetensors")).unwrap();
    let first = weights();
    std::fs::remove_dir_all(&epoch_2).unwrap();
    ok(&ws, &["train", "--run", "easy", "--resume"]);
    assert!(
        weights() == first,
        "epoch 2 resumed from epoch 1 trained differently"
    );
}

/// The embeddings of the live generation of the index in `dir`, row by row,
/// with its manifest.
fn live_rows(dir: &Path) -> (serde_json::Value, Vec<Vec<u8>>) {
    let generation = std::fs::read_to_string(dir.join("CURRENT")).unwrap();
    let generation = dir.join(generation.trim());
    let manifest = json(&std::fs::read_to_string(generation.join("manifest.json")).unwrap());
    let width = manifest["plan"]["stamp"]["dim"].as_u64().unwrap() as usize * 4;
    let bytes = std::fs::read(generation.join("embeddings.f32")).unwrap();
    (manifest, bytes.chunks(width).map(<[u8]>::to_vec).collect())
}

/// The rows of the corpus the refresh of run `run` re-encoded (ascending),
/// and their passage ids.
fn re_encoded(ws: &Path, run: &str) -> (Vec<usize>, std::collections::BTreeSet<String>) {
    let dir = ws.join(".cpack/runs").join(run).join("index");
    let (manifest, _) = live_rows(&dir);
    let rows: Vec<usize> = manifest["plan"]["partial"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_u64().unwrap() as usize)
        .collect();
    let generation = std::fs::read_to_string(dir.join("CURRENT")).unwrap();
    let ids: Vec<String> = serde_json::from_str(
        &std::fs::read_to_string(dir.join(generation.trim()).join("ids.json")).unwrap(),
    )
    .unwrap();
    let pool = rows.iter().map(|&r| ids[r].clone()).collect();
    (rows, pool)
}

/// The pool of run `run` found independently: each training query's top
/// `depth` under the base model (which mined epoch 1's round), and its
/// positives.
fn pool_by_search(ws: &Path, run: &str, depth: usize) -> std::collections::BTreeSet<String> {
    let data = shared("data/cmrc2018");
    let texts: std::collections::HashMap<String, String> =
        std::fs::read_to_string(data.join("queries.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let q = json(l);
                (
                    q["id"].as_str().unwrap().into(),
                    q["text"].as_str().unwrap().into(),
                )
            })
            .collect();
    let qrels = std::fs::read_to_string(data.join("qrels/train.tsv")).unwrap();
    let training: Vec<String> = serde_json::from_str(
        &std::fs::read_to_string(ws.join(".cpack/runs").join(run).join("queries.json")).unwrap(),
    )
    .unwrap();
    let mut expected = std::collections::BTreeSet::new();
    let lengths = ["--passage-max-len", "48", "--query-max-len", "24"];
    let depth = depth.to_string();
    for id in &training {
        let search = [
            &["search", "--json", "-k", &depth, &texts[id]][..],
            &lengths,
        ]
        .concat();
        for hit in json(&ok(ws, &search))["results"].as_array().unwrap() {
            expected.insert(hit["id"].as_str().unwrap().to_string());
        }
        for line in qrels.lines().filter(|l| l.starts_with(&format!("{id}\t"))) {
            expected.insert(line.split('\t').nth(1).unwrap().to_string());
        }
    }
    expected
}

#[test]
fn an_incremental_refresh_re_encodes_exactly_the_training_queries_pool() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(tmp.path(), "ws");
    let incremental = ["--refresh", "incremental", "--run", "inc"];
    let run = train(&ws, &[&TWO_EVALUATED_EPOCHS[..], &incremental].concat());
    let epochs = run["epochs"].as_array().unwrap();
    let (_, after) = live_rows(&ws.join(".cpack/runs/inc/index"));
    let (_, before) = live_rows(&ws.join(".cpack/index"));
    let (rows, pool) = re_encoded(&ws, "inc");
    assert_eq!(epochs[0]["passages_encoded"], rows.len());
    assert!(
        rows.len() < before.len(),
        "{} of {}",
        rows.len(),
        before.len()
    );
    // The workspace mines the top 30.
    assert_eq!(pool, pool_by_search(&ws, "inc", 30));
    for (row, (new, old)) in after.iter().zip(&before).enumerate() {
        if rows.binary_search(&row).is_ok() {
            assert_ne!(
                new, old,
                "row {row} is re-encoded with the epoch-1 checkpoint"
            );
        } else {
            assert_eq!(new, old, "row {row} keeps the base model's vector");
        }
    }
    // Evaluation encoded the whole corpus into an index of its own.
    for e in epochs {
        assert!(e["eval_encode_seconds"].as_f64().unwrap() > 0.0, "{e}");
        assert!(e["eval"]["metrics"]["ndcg_at_10"].as_f64().is_some());
    }
    assert_ne!(
        epochs[0]["round"], epochs[1]["round"],
        "the refresh mined anew"
    );
    // A full refresh every refresh: the whole corpus, nothing stale.
    let whole = [
        "--refresh",
        "incremental",
        "--full-refresh-every",
        "1",
        "--run",
        "whole",
    ];
    let run = train(&ws, &[&TWO_EVALUATED_EPOCHS[..], &whole].concat());
    assert_eq!(run["epochs"][0]["passages_encoded"], before.len());
    let (manifest, _) = live_rows(&ws.join(".cpack/runs/whole/index"));
    assert!(manifest["plan"]["partial"].is_null(), "{manifest}");
    let shown = ok(&ws, &["report", "--run", "inc"]);
    let line = format!("passages re-encoded {} after epoch 1", rows.len());
    assert!(shown.contains(&line), "{shown}");
    let refused = fails(
        &ws,
        &["train", "--refresh", "incremental", "--freeze-passages"],
    );
    assert!(refused.contains("--refresh incremental needs"), "{refused}");
}

#[test]
fn a_refresh_depth_re_encodes_only_the_top_of_each_pool() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(tmp.path(), "ws");
    // A full refresh first, whose epoch-1 checkpoint is the shallow run's
    // too (same seed): its epoch-2 round was mined from other vectors.
    let full = train(
        &ws,
        &[&TWO_EVALUATED_EPOCHS[..], &["--run", "full"]].concat(),
    );
    let shallow = ["--refresh", "incremental", "--refresh-depth", "3"];
    let run = train(
        &ws,
        &[&TWO_EVALUATED_EPOCHS[..], &shallow, &["--run", "top3"]].concat(),
    );
    assert_eq!(run["epochs"][0]["round"], full["epochs"][0]["round"]);
    assert_ne!(
        run["epochs"][1]["round"], full["epochs"][1]["round"],
        "the incremental index's round is its own, not the full refresh's"
    );
    let (rows, pool) = re_encoded(&ws, "top3");
    assert_eq!(run["epochs"][0]["passages_encoded"], rows.len());
    assert_eq!(pool, pool_by_search(&ws, "top3", 3));
    assert!(
        pool.len() < pool_by_search(&ws, "top3", 30).len(),
        "the top 3 of each pool is a smaller set than the top 30"
    );
    assert_ne!(
        run["epochs"][0]["round"], run["epochs"][1]["round"],
        "the refresh still mined anew"
    );
    let shown = ok(&ws, &["report", "--run", "top3"]);
    assert!(shown.contains("of each pool's top 3"), "{shown}");
    let full = fails(&ws, &["train", "--refresh-depth", "3"]);
    assert!(full.contains("needs --refresh incremental"), "{full}");
    let zero = fails(
        &ws,
        &["train", "--refresh", "incremental", "--refresh-depth", "0"],
    );
    assert!(zero.contains("at least 1"), "{zero}");
}

#[test]
fn aligned_stale_vectors_move_only_the_rows_a_refresh_leaves_out() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(tmp.path(), "ws");
    let shallow = ["--refresh", "incremental", "--refresh-depth", "3"];
    let kept = train(
        &ws,
        &[&TWO_EVALUATED_EPOCHS[..], &shallow, &["--run", "kept"]].concat(),
    );
    let aligned = ["--stale-vectors", "aligned", "--run", "aligned"];
    let run = train(
        &ws,
        &[&TWO_EVALUATED_EPOCHS[..], &shallow, &aligned].concat(),
    );
    let (rows, _) = re_encoded(&ws, "aligned");
    assert_eq!(rows, re_encoded(&ws, "kept").0, "same seed, same pool");
    let (_, base) = live_rows(&ws.join(".cpack/index"));
    let (_, kept_rows) = live_rows(&ws.join(".cpack/runs/kept/index"));
    let (manifest, aligned_rows) = live_rows(&ws.join(".cpack/runs/aligned/index"));
    for (row, (got, old)) in aligned_rows.iter().zip(&base).enumerate() {
        if rows.binary_search(&row).is_ok() {
            assert_eq!(
                got, &kept_rows[row],
                "row {row} is re-encoded as without alignment"
            );
        } else {
            assert_ne!(got, old, "row {row} is mapped, not kept");
            let floats = got
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()));
            let norm = floats.map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "row {row} has norm {norm}");
        }
    }
    let fit = &manifest["alignment"];
    let pairs = fit["fitted_rows"].as_u64().unwrap() + fit["held_out_rows"].as_u64().unwrap();
    assert_eq!(pairs as usize, rows.len(), "{fit}");
    assert_eq!(&run["epochs"][0]["alignment"], fit);
    assert_ne!(
        run["epochs"][1]["round"], kept["epochs"][1]["round"],
        "aligned vectors are other vectors: a round of their own"
    );
    let shown = ok(&ws, &["report", "--run", "aligned"]);
    assert!(shown.contains("stale vectors aligned"), "{shown}");
    let refused = fails(&ws, &["train", "--stale-vectors", "aligned"]);
    assert!(refused.contains("needs --refresh incremental"), "{refused}");
}
