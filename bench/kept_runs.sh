# Sourced by the training benches (teacher.sh, train_seeds.sh) inside the
# training workspace ($TWS, $CPACK and $ROOT set): a table of training runs
# takes longer than one working session on a 2-core machine, and a
# session's .cache does not outlive it, so each finished run's report is
# kept in bench/results/runs/<workspace>/<run>.json (commit it) with
# `cpack --version`, the binary's file name (bench binaries are named by
# commit) and, where a teacher scored it, the teacher's checksum. Run
# names say the recipe (refresh-s1, refresh-bf16-s2, refresh-distill-s3, ...),
# so the benches share one store: a bench skips a run whose kept report is
# current and tabulates kept reports.
#
#   kept_dir                    sets KEPT, and makes it
#   kept_current RUN [SHA]      whether RUN's kept report is there (and of teacher SHA)
#   keep RUN [SHA]              keeps RUN's finished report; fails if it is unfinished

kept_dir() {
  KEPT="$ROOT/bench/results/runs/$(basename "$TWS")"
  mkdir -p "$KEPT"
}

kept_current() {
  [ -f "$KEPT/$1.json" ] && python3 - "$KEPT/$1.json" "${2:-}" <<'PY'
import json, sys
kept = json.load(open(sys.argv[1]))
sys.exit(0 if not sys.argv[2] or kept.get("teacher_sha256") == sys.argv[2] else 1)
PY
}

keep() {
  python3 - ".cpack/runs/$1/report.json" "$KEPT/$1.json" "${2:-}" "$("$CPACK" --version)" "$(basename "$CPACK")" <<'PY'
import json, os, sys
report, out, sha, version, binary = sys.argv[1:]
if not os.path.exists(report):
    sys.exit(1)
r = json.load(open(report))
if len(r["epochs"]) < r["spec"]["epochs"]:
    sys.exit(1)
kept = {"cpack": version.splitlines(), "binary": binary, "report": r}
if sha:
    kept["teacher_sha256"] = sha
json.dump(kept, open(out + ".part", "w"), indent=1)
os.replace(out + ".part", out)
PY
}
