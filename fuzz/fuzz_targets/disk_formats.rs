//! The on-disk formats cpack reads back: the index manifest, the mining
//! store's records (codec: format byte + bincode), the trainer state and
//! the step log. The first byte picks the reader, the rest is its input.
#![no_main]
use cpack_miner::store::{QueryRecord, RoundManifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else { return };
    match which % 5 {
        0 => {
            let _ = serde_json::from_slice::<cpack_index::store::Manifest>(body);
        }
        1 => {
            let _ = cpack_miner::codec::decode::<QueryRecord>("query", body);
        }
        2 => {
            let _ = cpack_miner::codec::decode::<RoundManifest>("round manifest", body);
        }
        3 => {
            let _ = serde_json::from_slice::<cpack_train::checkpoint::TrainerState>(body);
        }
        _ => {
            let _ = cpack_train::steps::parse(std::path::Path::new("steps.jsonl"), body);
        }
    }
});
