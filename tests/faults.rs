//! Bad input and interrupted work: one clear error, a non-zero exit, nothing half-written.

use crate::common::*;
use std::path::Path;

#[test]
fn malformed_corpus_names_file_and_line_and_publishes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, data, _) = echo_workspace(tmp.path());
    let corpus = data.join("corpus.jsonl");
    let mut text = std::fs::read_to_string(&corpus).unwrap();
    text = text
        .replacen("\"text\"", "\"txet\"", 1)
        .lines()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&corpus, text).unwrap();
    let err = fails(&ws, &["index", "build"]);
    assert!(
        err.contains("corpus.jsonl:8: the record has no \"text\" field"),
        "{err}"
    );
    assert!(!ws.join(".cpack/index/CURRENT").exists());
}

#[test]
fn duplicate_ids_and_unknown_qrels_ids_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, data, _) = echo_workspace(tmp.path());
    ok(&ws, &["index", "build"]);
    std::fs::write(
        data.join("qrels/test.tsv"),
        "query-id\tcorpus-id\tscore\nq1\tp1\t1\nq2\tnope\t1\n",
    )
    .unwrap();
    let err = fails(&ws, &["eval"]);
    assert!(
        err.contains("test.tsv:3: unknown corpus id \"nope\""),
        "{err}"
    );

    let corpus = data.join("corpus.jsonl");
    let mut text = std::fs::read_to_string(&corpus).unwrap();
    text.push_str("{\"id\": \"p3\", \"text\": \"again\"}\n");
    std::fs::write(&corpus, text).unwrap();
    let err = fails(&ws, &["index", "build"]);
    assert!(err.contains("corpus.jsonl:9: duplicate id \"p3\""), "{err}");
}

#[test]
fn broken_model_folders_are_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, _) = echo_workspace(tmp.path());
    let model = tmp.path().join("model");

    let config = std::fs::read_to_string(model.join("config.json")).unwrap();
    std::fs::write(
        model.join("config.json"),
        config
            .replace("\"bert\"", "\"gpt2\"")
            .replace("BertModel", "GPT2Model"),
    )
    .unwrap();
    let err = fails(&ws, &["index", "build"]);
    assert!(err.contains("unsupported architecture"), "{err}");
    std::fs::write(model.join("config.json"), config).unwrap();

    std::fs::rename(model.join("model.safetensors"), model.join("weights.bak")).unwrap();
    let err = fails(&ws, &["index", "build"]);
    assert!(err.contains("model.safetensors is missing"), "{err}");
    std::fs::write(
        model.join("model.safetensors"),
        b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ",
    )
    .unwrap();
    let err = fails(&ws, &["index", "build"]);
    assert!(err.contains("embeddings.word_embeddings.weight"), "{err}");
    assert!(!ws.join(".cpack/index/CURRENT").exists());
}

#[test]
fn workspace_misuse_gets_guidance() {
    let tmp = tempfile::tempdir().unwrap();
    let err = fails(tmp.path(), &["index", "build"]);
    assert!(
        err.contains("no cpack.toml") && err.contains("cpack init"),
        "{err}"
    );

    let (ws, data, _) = echo_workspace(tmp.path());
    let err = fails(
        &ws,
        &[
            "init",
            "--data",
            data.to_str().unwrap(),
            "--model",
            "nowhere",
        ],
    );
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    let err = fails(&ws, &["search", "anything"]);
    assert!(
        err.contains("no index") && err.contains("cpack index build"),
        "{err}"
    );
    let err = fails(&ws, &["eval", "--split", "nosuch"]);
    assert!(
        err.contains("nosuch.tsv") && err.contains("no qrels"),
        "{err}"
    );
}

#[test]
fn a_misspelt_choice_in_cpack_toml_names_the_file_line_and_choices() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, _) = echo_workspace(tmp.path());
    let toml = std::fs::read_to_string(ws.join("cpack.toml")).unwrap();
    let mut lines: Vec<&str> = toml.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("precision = \"f32\""))
        .expect("cpack init writes index.precision");
    lines[at] = "precision = \"f61\"";
    let line = at + 1;
    std::fs::write(ws.join("cpack.toml"), lines.join("\n")).unwrap();
    let err = fails(&ws, &["index", "build"]);
    assert!(
        err.contains("cpack.toml")
            && err.contains(&format!("line {line}"))
            && err.contains("f61")
            && err.contains("f16"),
        "{err}"
    );
    assert!(!ws.join(".cpack/index/CURRENT").exists());
}

#[test]
fn an_index_built_with_another_instruction_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, _) = echo_workspace(tmp.path());
    ok(&ws, &["index", "build"]);
    let toml = std::fs::read_to_string(ws.join("cpack.toml")).unwrap();
    std::fs::write(
        ws.join("cpack.toml"),
        toml.replace(
            "query_instruction = \"\"",
            "query_instruction = \"Represent this: \"",
        ),
    )
    .unwrap();
    let err = fails(&ws, &["search", "term life"]);
    assert!(
        err.contains("query instruction") && err.contains("Represent this: "),
        "{err}"
    );
    let err = fails(&ws, &["eval", "--passage-max-len", "32"]);
    assert!(err.contains("query instruction"), "{err}");
}

#[test]
fn killed_build_resumes_to_the_same_index() {
    let tmp = tempfile::tempdir().unwrap();
    let data = shared("data/cmrc2018");
    let model = tiny_model_for(&data, &tmp.path().join("model"));
    let workspaces: Vec<_> = ["killed", "clean"]
        .iter()
        .map(|name| {
            let ws = tmp.path().join(name);
            init_workspace(&ws, &data, &model, &[]);
            ws
        })
        .collect();
    let (killed, clean) = (&workspaces[0], &workspaces[1]);

    // One row per chunk: every row is a resumable checkpoint, and the build is slow enough to kill.
    let mut child = cpack(killed)
        .args(["index", "build", "--chunk-rows", "1"])
        .spawn()
        .unwrap();
    let state = killed.join(".cpack/index/build/state.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let rows = std::fs::read_to_string(&state)
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| v["rows_done"].as_u64())
            .unwrap_or(0);
        if rows >= 20 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the build ended before it could be killed"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the build made no progress"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !killed.join(".cpack/index/CURRENT").exists(),
        "a killed build must not publish"
    );
    fails(killed, &["search", "x"]);

    let out = cpack(killed)
        .args(["index", "build", "--chunk-rows", "1", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resumed = json(&String::from_utf8_lossy(&out.stdout));
    assert!(
        resumed["resumed_from_row"].as_u64().unwrap() >= 20,
        "{resumed}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming an interrupted build"));

    ok(clean, &["index", "build", "--chunk-rows", "1"]);
    let embeddings =
        |ws: &Path| std::fs::read(ws.join(".cpack/index/gen-000001/embeddings.f32")).unwrap();
    assert_eq!(
        embeddings(killed),
        embeddings(clean),
        "resumed and clean builds differ"
    );
    assert_eq!(
        json(&ok(killed, &["eval", "--json"]))["metrics"],
        json(&ok(clean, &["eval", "--json"]))["metrics"]
    );
}
