//! The one place values become bytes in the store: a format-version byte,
//! then bincode (standard config) of the serde value. Changing the encoding
//! means bumping [`FORMAT`] here, not touching callers.

use crate::error::{Error, Result};
use serde::{de::DeserializeOwned, Serialize};

/// Version of the record encoding. 2: round manifests name the model that
/// encoded the queries when it is not the index's (see
/// `store::RoundManifest::query_model_fingerprint`); version-1 manifests are
/// read as rounds whose queries the index's model encoded. 3: round
/// manifests carry the checksum of the vectors searched
/// (`store::RoundManifest::index_embeddings`); older ones have none, so no
/// new mining request takes them for its own. 4: query records and round
/// manifests carry a teacher's scores and settings (`crate::teacher`);
/// older ones have none.
pub const FORMAT: u8 = 4;

/// More than any record holds (a query's few hundred candidates, a round's manifest).
const MAX_RECORD_BYTES: usize = 64 << 20;

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = vec![FORMAT];
    bytes.extend(
        bincode::serde::encode_to_vec(value, bincode::config::standard())
            .expect("plain data encodes"),
    );
    bytes
}

pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    let Some((&version, body)) = bytes.split_first() else {
        return Err(Error::EmptyRecord { what });
    };
    if version > FORMAT {
        return Err(Error::NewerFormat {
            what,
            found: version,
            supported: FORMAT,
        });
    }
    // The limit bounds what a length prefix may make bincode allocate: a
    // damaged record must fail, not claim gigabytes.
    let config = bincode::config::standard().with_limit::<MAX_RECORD_BYTES>();
    bincode::serde::decode_from_slice(body, config)
        .map(|(value, _)| value)
        .map_err(|source| Error::Decode { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_newer_formats() {
        let value = (String::from("q1"), vec![1.5f32, -2.0], Some(3u32));
        let bytes = encode(&value);
        assert_eq!(bytes[0], FORMAT);
        assert_eq!(
            decode::<(String, Vec<f32>, Option<u32>)>("test", &bytes).unwrap(),
            value
        );
        let mut newer = bytes.clone();
        newer[0] = FORMAT + 1;
        assert!(matches!(
            decode::<(String, Vec<f32>, Option<u32>)>("test", &newer),
            Err(Error::NewerFormat { .. })
        ));
        assert!(decode::<u32>("test", &[]).is_err());
        // A length prefix claiming 4 GiB is refused, not allocated.
        let huge = [FORMAT, 0xFC, 0xFF, 0xFF, 0xFF, 0xFF];
        assert!(decode::<Vec<u8>>("test", &huge).is_err());
    }
}
