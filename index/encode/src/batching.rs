//! Length-sorted batching and the worker threads that run the batches:
//! shared by the embedder ([`crate::Encoder`]) and the cross-encoder
//! ([`crate::CrossEncoder`]), which differ only in what a batch computes.

use crate::error::Result;
use cpack_model::TokenBatch;
use std::ops::Range;

/// Inputs sorted longest first, cut into batches.
pub(crate) struct Batches {
    order: Vec<usize>,
    bounds: Vec<Range<usize>>,
}

impl Batches {
    /// Batches of at most `rows` inputs and, when `tokens` is not 0, at most
    /// `tokens` padded tokens, over inputs of these token `lengths`. Longest
    /// first: the biggest batch shows up at once if memory is short.
    pub fn by_length(lengths: &[usize], rows: usize, tokens: usize) -> Self {
        let mut order: Vec<usize> = (0..lengths.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
        let sorted: Vec<usize> = order.iter().map(|&i| lengths[i]).collect();
        Batches {
            bounds: batch_bounds(&sorted, rows, tokens),
            order,
        }
    }

    /// Each batch's input indices.
    pub fn rows(&self) -> Vec<&[usize]> {
        self.bounds
            .iter()
            .map(|range| &self.order[range.clone()])
            .collect()
    }
}

/// Cuts texts sorted longest first (`lengths`) into batches of at most
/// `rows` texts and, when `tokens` is not 0, at most `tokens` padded tokens
/// (the first text's length times the rows; a text longer than the budget
/// goes alone).
fn batch_bounds(lengths: &[usize], rows: usize, tokens: usize) -> Vec<Range<usize>> {
    let rows = rows.max(1);
    let mut bounds = Vec::new();
    let mut start = 0;
    while start < lengths.len() {
        let fit = if tokens == 0 {
            rows
        } else {
            (tokens / lengths[start].max(1)).clamp(1, rows)
        };
        let end = (start + fit).min(lengths.len());
        bounds.push(start..end);
        start = end;
    }
    bounds
}

/// Runs `batch` in row slices of at most `tokens_per_run` padded tokens (at
/// least one row each), `width` outputs per row, concatenated in order.
pub(crate) fn in_runs(
    tokens_per_run: usize,
    width: usize,
    batch: &TokenBatch,
    run: &dyn Fn(&TokenBatch) -> Result<Vec<f32>>,
) -> Result<Vec<f32>> {
    let rows_per_run = (tokens_per_run / batch.seq_len.max(1)).clamp(1, batch.batch.max(1));
    if rows_per_run >= batch.batch {
        return run(batch);
    }
    let mut out = Vec::with_capacity(batch.batch * width);
    for start in (0..batch.batch).step_by(rows_per_run) {
        out.extend(run(
            &batch.rows(start..(start + rows_per_run).min(batch.batch))
        )?);
    }
    Ok(out)
}

/// Computes one batch from its input indices: its outputs, row-major, and
/// its real-token count.
pub(crate) type BatchWork<'a> = dyn Fn(&[usize]) -> Result<(Vec<f32>, usize)> + Sync + 'a;

/// Receives each computed batch: its input indices, its outputs, its real-token count.
pub(crate) type BatchSink<'a> = dyn FnMut(&[usize], &[f32], usize) + 'a;

/// Computes every batch and hands it to `sink` in the calling thread,
/// sequentially or from `workers` threads at once.
///
/// On a few cores, batches side by side beat splitting every matrix product
/// across threads: no thread waits at a barrier between the many small ops
/// of a layer. Each batch is still computed as a whole by one thread (each
/// worker runs its kernels in a one-thread rayon pool of its own), so
/// results are bit-identical to the sequential path.
pub(crate) fn run_batches(
    workers: usize,
    batches: &[&[usize]],
    work: &BatchWork,
    sink: &mut BatchSink,
) -> Result<()> {
    let workers = workers.min(batches.len());
    if workers <= 1 {
        for rows in batches {
            let (outputs, real_tokens) = work(rows)?;
            sink(rows, &outputs, real_tokens);
        }
        return Ok(());
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..workers {
            let (tx, next) = (tx.clone(), &next);
            scope.spawn(move || {
                // A private one-thread pool: candle's rayon-parallel kernels run inline here.
                let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build();
                let run = || loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(rows) = batches.get(i) else { break };
                    let computed = work(rows);
                    let failed = computed.is_err();
                    if tx.send((i, computed)).is_err() || failed {
                        break;
                    }
                };
                match pool {
                    Ok(pool) => pool.install(run),
                    Err(_) => run(),
                }
            });
        }
        drop(tx);
        for (i, computed) in rx {
            let (outputs, real_tokens) = computed?;
            sink(batches[i], &outputs, real_tokens);
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_budgets_cut_batches_by_padded_tokens() {
        let lengths = [100, 90, 60, 50, 20, 20, 20, 10, 10, 5];
        let sizes = |rows, tokens| -> Vec<usize> {
            batch_bounds(&lengths, rows, tokens)
                .iter()
                .map(|r| r.len())
                .collect()
        };
        assert_eq!(sizes(4, 0), [4, 4, 2], "rows only");
        // 200 tokens: 2 × 100, 3 × 60, 10 × 20 capped at 4 rows, then the rest.
        assert_eq!(sizes(4, 200), [2, 3, 4, 1]);
        // A text over the budget still goes, alone.
        assert_eq!(sizes(8, 50)[0], 1);
        for (rows, tokens) in [(3, 0), (4, 200), (8, 50), (1, 7)] {
            let bounds = batch_bounds(&lengths, rows, tokens);
            assert_eq!(bounds.iter().map(|r| r.len()).sum::<usize>(), lengths.len());
            for r in &bounds {
                assert!(r.len() <= rows);
                assert!(tokens == 0 || r.len() == 1 || r.len() * lengths[r.start] <= tokens);
            }
        }
    }

    #[test]
    fn batches_hold_every_input_once_longest_first() {
        let lengths = [3, 9, 1, 9, 4];
        let batches = Batches::by_length(&lengths, 2, 0);
        let rows = batches.rows();
        assert_eq!(rows, [&[1, 3][..], &[4, 0], &[2]]);
    }
}
