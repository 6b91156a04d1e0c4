//! Bad names, damaged files and odd disks: each case gets one clear error
//! (or the right result) from the real binary and leaves nothing broken.

use crate::common::*;
use std::path::Path;

/// Every file under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
        }
    }
    out.sort();
    out
}

#[test]
fn run_names_cannot_leave_the_runs_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, _) = echo_workspace(tmp.path());
    std::fs::write(
        ws.join("../data/qrels/train.tsv"),
        "query-id\tcorpus-id\tscore\nq0\tp0\t1\nq1\tp1\t1\n",
    )
    .unwrap();
    let before = tree(tmp.path());
    for bad in [
        "../../../escape",
        "/an/absolute/path",
        "",
        "..",
        ".",
        "a/b",
        ".hidden",
        "sp ace",
    ] {
        let err = fails(
            &ws,
            &[
                "train",
                "--run",
                bad,
                "--group-size",
                "1",
                "--eval-split",
                "none",
            ],
        );
        assert!(err.contains("run name"), "{bad:?}: {err}");
        let err = fails(&ws, &["report", "--run", bad]);
        assert!(err.contains("run name"), "{bad:?}: {err}");
    }
    assert_eq!(tree(tmp.path()), before, "a refused run wrote something");
    let err = fails(&ws, &["report", "--run", "nosuch"]);
    assert!(
        err.contains("there is no training run") && err.contains("nosuch"),
        "{err}"
    );
}

#[test]
fn an_export_onto_a_directory_fails_and_leaves_no_temp_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, _) = echo_workspace(tmp.path());
    let target = tmp.path().join("some-dir");
    std::fs::create_dir(&target).unwrap();
    let before = tree(tmp.path());
    let model = tmp.path().join("model");
    let err = fails(
        &ws,
        &[
            "export",
            "--onnx",
            model.to_str().unwrap(),
            target.to_str().unwrap(),
        ],
    );
    assert!(err.contains("some-dir"), "{err}");
    assert_eq!(
        tree(tmp.path()),
        before,
        "the failed export left files behind"
    );
}

#[test]
fn empty_rounds_and_non_finite_filters_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, data, _) = echo_workspace(tmp.path());
    ok(&ws, &["index", "build"]);
    for flag in ["--max-score", "--margin", "--relative-margin"] {
        for value in ["NaN", "inf"] {
            let err = fails(&ws, &["mine", "--split", "test", flag, value]);
            assert!(err.contains(flag) && err.contains("finite"), "{err}");
        }
    }
    std::fs::write(data.join("qrels/train.tsv"), "query-id\tcorpus-id\tscore\n").unwrap();
    let err = fails(&ws, &["mine", "--split", "train"]);
    assert!(err.contains("no judged queries"), "{err}");
    let empty = tmp.path().join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    let err = fails(&ws, &["mine", "import", empty.to_str().unwrap()]);
    assert!(err.contains("nothing to import"), "{err}");
    let err = fails(&ws, &["mine", "import", "/nonexistent.jsonl"]);
    assert!(err.contains("cannot read /nonexistent.jsonl"), "{err}");
    let stats = fails(&ws, &["mine", "stats"]);
    assert!(
        !stats.contains("round 1"),
        "an empty round was recorded: {stats}"
    );
}

/// A cmrc2018 workspace with a tiny model and small training settings.
fn training_workspace(tmp: &Path) -> (std::path::PathBuf, Vec<&'static str>) {
    let data = shared("data/cmrc2018");
    let model = tiny_model_for(&data, &tmp.join("model"));
    let ws = tmp.join("ws");
    init_workspace(&ws, &data, &model, &[]);
    let small = vec![
        "--max-queries",
        "24",
        "--train-batch-size",
        "8",
        "--passage-max-len",
        "32",
        "--query-max-len",
        "16",
        "--topk",
        "20",
        "--group-size",
        "3",
        "--eval-split",
        "none",
        "--refresh-every",
        "0",
    ];
    (ws, small)
}

#[test]
fn rounds_a_run_resumes_from_survive_gc_and_numbers_are_never_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, small) = training_workspace(tmp.path());
    ok(
        &ws,
        &[&["train", "--run", "g", "--epochs", "1"][..], &small].concat(),
    );
    let round_of = |ws: &Path| {
        let state = json(
            &std::fs::read_to_string(ws.join(".cpack/runs/g/epoch-1/trainer_state.json")).unwrap(),
        );
        state["round"].as_u64().unwrap()
    };
    let r = round_of(&ws);
    let out = ok(&ws, &["mine", "--gc", "--keep", "0"]);
    assert!(out.contains(&format!("resume from [{r}]")), "{out}");
    let report = json(&ok(
        &ws,
        &[
            &["train", "--json", "--run", "g", "--resume", "--epochs", "2"][..],
            &small,
        ]
        .concat(),
    ));
    let epochs = report["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 2);
    assert!(
        epochs[1]["optimizer_steps"].as_u64().unwrap() > 0,
        "epoch 2 trained on nothing"
    );
    assert_eq!(epochs[1]["round"], r);
    assert_eq!(report["train_queries"], 24);

    // A round mined after others were removed gets a new number.
    ok(&ws, &["mine", "--gc", "--keep", "0"]);
    std::fs::remove_dir_all(ws.join(".cpack/runs")).unwrap();
    ok(&ws, &["mine", "--gc", "--keep", "0"]);
    ok(
        &ws,
        &[
            "mine",
            "--topk",
            "20",
            "--passage-max-len",
            "32",
            "--query-max-len",
            "16",
        ],
    );
    let stats = json(&ok(&ws, &["mine", "stats", "--json"]));
    assert!(
        stats["stats"]["round"].as_u64().unwrap() > r,
        "round number reused: {stats}"
    );
}

#[test]
fn an_edited_trainer_state_is_refused_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, small) = training_workspace(tmp.path());
    ok(
        &ws,
        &[&["train", "--run", "e", "--epochs", "2"][..], &small].concat(),
    );
    std::fs::remove_dir_all(ws.join(".cpack/runs/e/epoch-2")).unwrap();
    let path = ws.join(".cpack/runs/e/epoch-1/trainer_state.json");
    let edited = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"epoch\": 1", "\"epoch\": 5");
    assert!(edited.contains("\"epoch\": 5"), "{edited}");
    std::fs::write(&path, edited).unwrap();
    let err = fails(
        &ws,
        &[&["train", "--run", "e", "--resume"][..], &small].concat(),
    );
    assert!(
        err.contains("trainer_state.json") && err.contains("epoch 5"),
        "{err}"
    );
}

/// The live generation's folder.
fn generation(ws: &Path) -> std::path::PathBuf {
    let index = ws.join(".cpack/index");
    index.join(
        std::fs::read_to_string(index.join("CURRENT"))
            .unwrap()
            .trim(),
    )
}

/// Something done to a file.
type Harm = Box<dyn Fn(&Path)>;

fn flip_bytes(path: &Path, from: usize, every: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    for b in bytes.iter_mut().skip(from).step_by(every) {
        *b ^= 0x55;
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn damaged_index_files_are_refused_and_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let data = shared("data/cmrc2018");
    let model = tiny_model_for(&data, &tmp.path().join("model"));
    let ws = tmp.path().join("ws");
    init_workspace(&ws, &data, &model, &[]);
    ok(&ws, &["index", "build"]);
    let good = json(&ok(&ws, &["eval", "--split", "test", "--json"]));
    let damage: [(&str, Harm); 4] = [
        ("embeddings.f32", Box::new(|p: &Path| flip_bytes(p, 0, 7))),
        ("vectors.faiss", Box::new(|p: &Path| flip_bytes(p, 200, 5))),
        (
            "ids.json",
            Box::new(|p: &Path| {
                let mut ids: Vec<String> =
                    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
                ids.swap(0, 1);
                std::fs::write(p, serde_json::to_string(&ids).unwrap()).unwrap();
            }),
        ),
        (
            "embeddings.f32",
            Box::new(|p: &Path| {
                let len = std::fs::metadata(p).unwrap().len();
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(p)
                    .unwrap()
                    .set_len(len - 100)
                    .unwrap();
            }),
        ),
    ];
    for (file, harm) in damage {
        harm(&generation(&ws).join(file));
        for cmd in [
            &["eval", "--split", "test"][..],
            &["search", "问题"][..],
            &["mine"][..],
        ] {
            let err = fails(&ws, cmd);
            assert!(
                err.contains(file) && err.contains("damaged") && err.contains("cpack index build"),
                "{cmd:?} after damaging {file}: {err}"
            );
        }
        let out = ok(&ws, &["index", "build"]);
        assert!(
            !out.contains("up to date"),
            "a damaged index counted as built: {out}"
        );
        let again = json(&ok(&ws, &["eval", "--split", "test", "--json"]));
        assert_eq!(
            again["metrics"], good["metrics"],
            "the rebuilt index answers differently"
        );
    }
}

#[test]
fn an_index_of_another_corpus_version_is_refused_by_every_reader() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, data, _) = echo_workspace(tmp.path());
    ok(&ws, &["index", "build"]);
    let corpus = data.join("corpus.jsonl");
    let text = std::fs::read_to_string(&corpus).unwrap();
    std::fs::write(&corpus, text.replacen("term life", "whole life", 1)).unwrap();
    for cmd in [
        &["eval", "--split", "test"][..],
        &["search", "life insurance"][..],
        &["mine", "--split", "test"][..],
    ] {
        let err = fails(&ws, cmd);
        assert!(
            err.contains("another version of the corpus"),
            "{cmd:?}: {err}"
        );
    }
    let added = format!(
        "{text}{}\n",
        serde_json::json!({"id": "extra", "title": "", "text": "a new passage"})
    );
    std::fs::write(&corpus, added).unwrap();
    let err = fails(&ws, &["eval", "--split", "test"]);
    assert!(err.contains("another version of the corpus"), "{err}");
}

/// Overwrites the data of tensor `name` in a safetensors file with 0xFF bytes (NaN).
fn poison_tensor(path: &Path, name: &str) {
    let mut bytes = std::fs::read(path).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    let offsets = &header[name]["data_offsets"];
    let (start, end) = (
        offsets[0].as_u64().unwrap() as usize,
        offsets[1].as_u64().unwrap() as usize,
    );
    bytes[8 + len + start..8 + len + end].fill(0xFF);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn weights_with_nan_or_a_config_that_does_not_fit_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, _) = echo_workspace(tmp.path());
    ok(&ws, &["index", "build"]);
    let live = std::fs::read_to_string(ws.join(".cpack/index/CURRENT")).unwrap();
    let model = tmp.path().join("model");
    let copy = |name: &str| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for e in std::fs::read_dir(&model).unwrap().flatten() {
            if e.path().is_file() {
                std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
            }
        }
        dir
    };
    let poisoned = copy("poisoned");
    poison_tensor(
        &poisoned.join("model.safetensors"),
        "bert.encoder.layer.0.output.dense.weight",
    );
    let layers = copy("fewer-layers");
    let config = std::fs::read_to_string(layers.join("config.json")).unwrap();
    let cfg: serde_json::Value = serde_json::from_str(&config).unwrap();
    let n = cfg["num_hidden_layers"].as_u64().unwrap();
    assert!(n >= 2, "the tiny model needs two layers for this test");
    std::fs::write(
        layers.join("config.json"),
        config.replace(
            &format!("\"num_hidden_layers\": {n}"),
            "\"num_hidden_layers\": 1",
        ),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("texts.jsonl"),
        "{\"text\": \"car insurance\"}\n",
    )
    .unwrap();
    let out = tmp.path().join("out.jsonl");
    for (dir, expect) in [(&poisoned, "NaN"), (&layers, "num_hidden_layers = 1")] {
        let m = dir.to_str().unwrap();
        let err = fails(
            &ws,
            &[
                "embed",
                "--model",
                m,
                "--input",
                "../texts.jsonl",
                "--output",
                out.to_str().unwrap(),
            ],
        );
        assert!(err.contains(expect), "{err}");
        let err = fails(
            &ws,
            &[
                "export",
                "--onnx",
                m,
                tmp.path().join("x.onnx").to_str().unwrap(),
            ],
        );
        assert!(err.contains(expect), "{err}");
        let err = fails(&ws, &["index", "build", "--model", m]);
        assert!(err.contains(expect), "{err}");
    }
    assert!(!out.exists() && !tmp.path().join("x.onnx").exists());
    assert_eq!(
        std::fs::read_to_string(ws.join(".cpack/index/CURRENT")).unwrap(),
        live,
        "the good index was replaced"
    );
}

#[test]
fn byte_order_marks_bad_utf8_and_odd_ids_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, data, _) = echo_workspace(tmp.path());
    let qrels = data.join("qrels/test.tsv");
    let body = std::fs::read(&qrels).unwrap();
    // A BOM (editors on Windows add one) is skipped: the header is still a header.
    std::fs::write(&qrels, [&b"\xEF\xBB\xBF"[..], &body].concat()).unwrap();
    ok(&ws, &["index", "build"]);
    let eval = json(&ok(&ws, &["eval", "--split", "test", "--json"]));
    assert!(eval["metrics"]["ndcg_at_10"].as_f64().unwrap() > 0.0);
    // Invalid UTF-8 on line 3 of the qrels.
    let mut broken = body.clone();
    let third = broken
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .nth(1)
        .unwrap()
        .0
        + 1;
    broken.insert(third, 0xFF);
    std::fs::write(&qrels, &broken).unwrap();
    let err = fails(&ws, &["eval", "--split", "test"]);
    assert!(err.contains("test.tsv:3: not valid UTF-8"), "{err}");
    std::fs::write(&qrels, &body).unwrap();
    let queries = data.join("queries.jsonl");
    let original = std::fs::read_to_string(&queries).unwrap();
    for (id, kind) in [
        ("null", "null"),
        ("[1, 2]", "a list"),
        ("true", "a boolean"),
    ] {
        std::fs::write(
            &queries,
            format!("{original}{{\"id\": {id}, \"text\": \"x\"}}\n"),
        )
        .unwrap();
        let err = fails(&ws, &["eval", "--split", "test"]);
        assert!(
            err.contains("queries.jsonl:9: id must be a string or a number, not ")
                && err.contains(kind),
            "{err}"
        );
        assert!(!err.contains("untagged"), "{err}");
    }
}

#[test]
fn a_bad_factory_fails_before_encoding_and_a_dangling_state_link_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, _) = echo_workspace(tmp.path());
    let err = fails(&ws, &["index", "build", "--factory", "NoSuchThing"]);
    assert!(
        err.contains("FAISS cannot build index.factory = \"NoSuchThing\""),
        "{err}"
    );
    assert!(
        !err.contains("encoding passages"),
        "the corpus was encoded first: {err}"
    );
    assert!(
        !err.contains("Error in"),
        "FAISS's raw C++ text leaked: {err}"
    );

    std::os::unix::fs::symlink(tmp.path().join("gone"), ws.join(".cpack")).unwrap();
    for cmd in [
        &["index", "build"][..],
        &["report"][..],
        &["index", "info"][..],
    ] {
        let err = fails(&ws, cmd);
        assert!(
            err.contains(".cpack is a symbolic link") && err.contains("does not exist"),
            "{cmd:?}: {err}"
        );
    }
}

#[test]
fn a_damaged_checkpoint_is_refused_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, small) = training_workspace(tmp.path());
    ok(
        &ws,
        &[&["train", "--run", "d", "--epochs", "1"][..], &small].concat(),
    );
    for file in ["optimizer.safetensors", "model.safetensors"] {
        let path = ws.join(".cpack/runs/d/epoch-1").join(file);
        let good = std::fs::read(&path).unwrap();
        flip_bytes(&path, good.len() - 64, 16);
        let err = fails(
            &ws,
            &[
                &["train", "--run", "d", "--resume", "--epochs", "2"][..],
                &small,
            ]
            .concat(),
        );
        assert!(err.contains(file) && err.contains("damaged"), "{err}");
        std::fs::write(&path, good).unwrap();
    }
    assert!(!ws.join(".cpack/runs/d/epoch-2").exists());
    ok(
        &ws,
        &[
            &["train", "--run", "d", "--resume", "--epochs", "2"][..],
            &small,
        ]
        .concat(),
    );
}

/// Runs cpack under a file-size limit (KiB): writes past it fail with EFBIG,
/// as a full disk fails them with ENOSPC.
fn cpack_with_file_limit(ws: &Path, kib: u64, args: &[&str]) -> std::process::Output {
    std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("trap '' XFSZ; ulimit -f {kib}; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_cpack"))
        .args(args)
        .current_dir(ws)
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .unwrap()
}

#[test]
fn the_negatives_store_survives_a_full_disk_at_any_point() {
    let tmp = tempfile::tempdir().unwrap();
    let data = shared("data/cmrc2018");
    let model = tiny_model_for(&data, &tmp.path().join("model"));
    let ws = tmp.path().join("ws");
    init_workspace(&ws, &data, &model, &[]);
    ok(&ws, &["index", "build"]);
    ok(&ws, &["mine", "--topk", "30"]);
    let reference = tmp.path().join("reference.jsonl");
    export_ids(&ws, &reference);
    let store = ws.join(".cpack/negatives");
    let db_kib = std::fs::metadata(store.join("db")).unwrap().len() / 1024;
    let mut failures = 0;
    for kib in [4, 64, db_kib, db_kib + 64, db_kib + 512, db_kib + 2048] {
        let out = cpack_with_file_limit(&ws, kib, &["mine", "--topk", "30", "--force"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "limit {kib} KiB: {stderr}");
        if !out.status.success() {
            failures += 1;
            assert_eq!(out.status.code(), Some(1), "{stderr}");
        }
        // Whatever happened, the store still opens and answers.
        let stats = ok(&ws, &["mine", "stats"]);
        assert!(stats.contains("round"), "{stats}");
        let out = tmp.path().join("out.jsonl");
        ok(
            &ws,
            &[
                "mine",
                "export",
                "--format",
                "ids",
                "--output",
                out.to_str().unwrap(),
            ],
        );
    }
    assert!(failures > 0, "no limit made a write fail");
    // A snapshot left half-written by a full disk does not break the store.
    std::fs::write(store.join("snap.00000000FFFFFFFF.generating"), [1u8; 100]).unwrap();
    ok(&ws, &["mine", "stats"]);
    std::fs::write(store.join("snap.00000000FFFFFFFF"), [1u8; 100]).unwrap();
    ok(&ws, &["mine", "stats"]);
    // And a full mine afterwards gives the same negatives as before.
    ok(&ws, &["mine", "--topk", "30", "--force"]);
    let again = tmp.path().join("again.jsonl");
    ok(
        &ws,
        &[
            "mine",
            "export",
            "--format",
            "ids",
            "--output",
            again.to_str().unwrap(),
        ],
    );
    assert!(std::fs::read(&again).unwrap() == std::fs::read(&reference).unwrap());
}
