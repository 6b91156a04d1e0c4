//! One contract, every implementation: results must match exhaustive search
//! (exactly for flat indexes, by recall for approximate ones) and survive save/open.

use super::exact::top_k;
use super::*;
use crate::embeddings::Precision;

fn unit_vectors(rows: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f32 / (1u64 << 53) as f32 - 0.5
    };
    let mut v: Vec<f32> = (0..rows * dim).map(|_| next()).collect();
    for row in v.chunks_mut(dim) {
        let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().for_each(|x| *x /= n);
    }
    v
}

/// Unit vectors around 8 centres, the shape real embeddings have (and IVF relies on).
fn clustered(rows: usize, dim: usize, seed: u64) -> Vec<f32> {
    let centres = unit_vectors(8, dim, 1);
    let noise = unit_vectors(rows, dim, seed);
    let mut v: Vec<f32> = noise
        .chunks(dim)
        .enumerate()
        .flat_map(|(i, n)| {
            let c = &centres[(i % 8) * dim..(i % 8 + 1) * dim];
            c.iter()
                .zip(n)
                .map(|(c, n)| c + 0.5 * n)
                .collect::<Vec<f32>>()
        })
        .collect();
    for row in v.chunks_mut(dim) {
        let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().for_each(|x| *x /= n);
    }
    v
}

fn matrix(dir: &Path, rows: usize, dim: usize, precision: Precision) -> Arc<EmbeddingMatrix> {
    let path = dir.join(precision.file_name());
    std::fs::write(&path, precision.encode(&clustered(rows, dim, 42))).unwrap();
    Arc::new(EmbeddingMatrix::open(&path, rows, dim, precision).unwrap())
}

fn brute_force(m: &EmbeddingMatrix, queries: &[f32], k: usize) -> Vec<Vec<usize>> {
    let all = m.to_f32();
    queries
        .chunks(m.dim())
        .map(|q| {
            let scores: Vec<f32> = all
                .chunks(m.dim())
                .map(|r| r.iter().zip(q).map(|(a, b)| a * b).sum())
                .collect();
            top_k(&scores, k).into_iter().map(|(i, _)| i).collect()
        })
        .collect()
}

fn kinds() -> Vec<(IndexKind, bool)> {
    let mut kinds = vec![(IndexKind::Exact, true)];
    if cfg!(feature = "faiss") {
        kinds.push((
            IndexKind::Faiss {
                factory: "Flat".into(),
            },
            true,
        ));
        kinds.push((
            IndexKind::Faiss {
                factory: "IVF4,Flat".into(),
            },
            false,
        ));
        kinds.push((
            IndexKind::Faiss {
                factory: "HNSW16".into(),
            },
            false,
        ));
    }
    kinds
}

#[test]
fn every_backend_agrees_with_exhaustive_search_and_survives_reopening() {
    let (rows, dim, k) = (600, 16, 10);
    for precision in [Precision::F32, Precision::F16] {
        for (kind, exact) in kinds() {
            let dir = tempfile::tempdir().unwrap();
            let m = matrix(dir.path(), rows, dim, precision);
            let queries = clustered(25, dim, 7);
            let truth = brute_force(&m, &queries, k);
            let mut index = kind.build(m.clone(), 2).unwrap();
            assert_eq!(index.len(), rows);
            let hits = index.search(&queries, k, 2).unwrap();
            let mut found = 0;
            for (q, want) in truth.iter().enumerate() {
                let got: Vec<usize> = hits.of(q).map(|(r, _)| r).collect();
                let scores: Vec<f32> = hits.of(q).map(|(_, s)| s).collect();
                assert!(
                    scores.windows(2).all(|w| w[0] >= w[1]),
                    "{kind}: scores not descending"
                );
                if exact {
                    assert_eq!(&got, want, "{kind} ({precision:?}) query {q}");
                }
                found += got.iter().filter(|r| want.contains(r)).count();
            }
            let recall = found as f64 / (truth.len() * k) as f64;
            assert!(recall >= 0.8, "{kind}: recall@{k} {recall}");

            index.save(dir.path()).unwrap();
            let mut reopened = kind.open(dir.path(), m, IndexDevice::Cpu).unwrap();
            assert_eq!(
                reopened.search(&queries, k, 2).unwrap(),
                hits,
                "{kind}: reopened index answers differently"
            );
            assert_eq!(
                reopened.search(&queries, k, 1).unwrap(),
                hits,
                "{kind}: one thread answers differently from two"
            );
            // Enough queries that a flat FAISS search is cut into slices per thread.
            let many = clustered(300, dim, 11);
            assert_eq!(
                reopened.search(&many, k, 3).unwrap(),
                reopened.search(&many, k, 1).unwrap(),
                "{kind}: a search split over threads answers differently"
            );
        }
    }
}

#[test]
fn asking_for_more_than_exists_leaves_empty_slots() {
    // Flat indexes only: IVF needs at least as many training points as lists.
    for (kind, _) in kinds().into_iter().filter(|(_, exact)| *exact) {
        let dir = tempfile::tempdir().unwrap();
        let m = matrix(dir.path(), 3, 8, Precision::F32);
        let mut index = kind.build(m, 1).unwrap();
        let hits = index.search(&unit_vectors(1, 8, 3), 5, 1).unwrap();
        assert_eq!(hits.of(0).count(), 3, "{kind}");
        assert_eq!(hits.rows[3..], [-1, -1], "{kind}");
    }
}

#[test]
fn kinds_keep_backend_and_factory_and_bad_factories_are_errors() {
    let exact = IndexKind::new(IndexBackend::Exact, "HNSW32").unwrap();
    assert_eq!(exact, IndexKind::Exact);
    assert_eq!(exact.factory(), IndexKind::DEFAULT_FACTORY);
    if cfg!(feature = "faiss") {
        let hnsw = IndexKind::new(IndexBackend::Faiss, "HNSW32").unwrap();
        assert_eq!(
            (hnsw.backend(), hnsw.factory()),
            (IndexBackend::Faiss, "HNSW32")
        );
    } else {
        assert!(IndexKind::new(IndexBackend::Faiss, "Flat").is_err());
    }
    if cfg!(feature = "faiss") {
        let dir = tempfile::tempdir().unwrap();
        let m = matrix(dir.path(), 10, 8, Precision::F32);
        let err = IndexKind::Faiss {
            factory: "NoSuchThing".into(),
        }
        .build(m, 1)
        .err()
        .unwrap();
        assert!(err.to_string().contains("NoSuchThing"), "{err}");
    }
}

/// FAISS's products (k-means while building IVF, every flat search of more
/// than 20 queries) go through cpack's `sgemm_`, not the system BLAS's.
#[cfg(feature = "faiss")]
#[test]
fn faiss_multiplies_on_cpacks_kernel() {
    use super::faiss_blas::calls;
    let dir = tempfile::tempdir().unwrap();
    let m = matrix(dir.path(), 600, 16, Precision::F32);
    for factory in ["IVF4,Flat", "Flat"] {
        let before = calls();
        let kind = IndexKind::Faiss {
            factory: factory.into(),
        };
        let mut index = kind.build(m.clone(), 2).unwrap();
        index.search(&clustered(64, 16, 5), 5, 1).unwrap();
        assert!(calls() > before, "{factory}: FAISS multiplied elsewhere");
    }
}

#[test]
fn index_devices_parse_and_the_exact_backend_stays_on_the_cpu() {
    for (text, device) in [
        ("cpu", IndexDevice::Cpu),
        ("gpu", IndexDevice::Gpu(0)),
        ("gpu:2", IndexDevice::Gpu(2)),
    ] {
        assert_eq!(text.parse::<IndexDevice>().unwrap(), device);
        assert_eq!(device.to_string().parse::<IndexDevice>().unwrap(), device);
    }
    for bad in ["cuda", "gpu:", "gpu:-1", "tpu"] {
        assert!(bad.parse::<IndexDevice>().is_err(), "{bad}");
    }
    let dir = tempfile::tempdir().unwrap();
    let m = matrix(dir.path(), 8, 4, Precision::F32);
    let err = IndexKind::Exact
        .open(dir.path(), m, IndexDevice::Gpu(0))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("exact backend searches on the CPU"), "{err}");
}
