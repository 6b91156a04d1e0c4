//! What a run's own state says survives a kill as its weights do.

use crate::common::*;

#[test]
fn a_resume_after_the_refresh_reports_what_the_refresh_did() {
    let tmp = tempfile::tempdir().unwrap();
    let (ws, _, _) = echo_workspace(tmp.path());
    let extra = ["--stale-vectors", "aligned", "--refresh-depth", "3"];
    let args = [&ECHO_INCREMENTAL_RUN[..], &extra].concat();
    ok(&ws, &args);
    let run = ws.join(".cpack/runs/run-001");
    let whole = json(&std::fs::read_to_string(run.join("report.json")).unwrap());
    let first = whole["epochs"][0].clone();
    assert!(first["passages_encoded"].as_u64().unwrap() > 0, "{first}");
    assert!(first["alignment"].is_object(), "{first}");

    // The state a kill leaves between the refresh after epoch 1 (the run's
    // index already swapped) and the report of that epoch.
    std::fs::remove_dir_all(run.join("epoch-2")).unwrap();
    let mut cut = whole.clone();
    cut["epochs"] = serde_json::json!([]);
    std::fs::write(run.join("report.json"), cut.to_string()).unwrap();

    ok(&ws, &["train", "--resume", "--run", "run-001"]);
    let resumed = json(&std::fs::read_to_string(run.join("report.json")).unwrap());
    let again = &resumed["epochs"][0];
    assert_eq!(
        again["passages_encoded"], first["passages_encoded"],
        "{again}"
    );
    assert_eq!(again["alignment"], first["alignment"], "{again}");
    let table = ok(&ws, &["report"]);
    assert!(!table.contains("none yet"), "{table}");
}
