# Sourced by the training benches (train_seeds.sh, strategies.sh), from the
# repository root with ROOT set: installs what the runs need, picks the cpack
# binary (CPACK_BIN, or builds the workspace), makes the quickstart's training
# workspace if missing and enters it (CPACK_QUICKSTART_TRAIN_DIR and
# CPACK_QUICKSTART_TRAIN_DATA make another, over another dataset). Sets
# CPACK and TWS.
bash scripts/setup.sh >/dev/null
if [ -z "${CPACK_BIN:-}" ]; then
  cargo build --release -q --workspace --bins
fi
CPACK="${CPACK_BIN:-$ROOT/target/release/cpack}"
TWS="${CPACK_QUICKSTART_TRAIN_DIR:-$ROOT/.cache/train-insuranceqa}"
bash scripts/train_workspace.sh "$TWS" ${CPACK_QUICKSTART_TRAIN_DATA:+"$CPACK_QUICKSTART_TRAIN_DATA"} >/dev/null
cd "$TWS"
