//! Per-event work of a batch spread over the cores: the steps that must finish before the
//! batch's index and Parquet writes can start (event ids, batch texts) would otherwise run on
//! the writing thread alone while the other cores idle.

use crate::{Result, StoreError};

/// Fewer items than this per chunk are not worth a thread.
pub(crate) const MIN_ITEMS_PER_CHUNK: usize = 2048;

/// Run `work` over consecutive chunks of `items`, each chunk with its own element of `slots`:
/// at most `threads` chunks and none under [`MIN_ITEMS_PER_CHUNK`] items, but always one (empty
/// when `items` is). `slots` is resized to the number of chunks; the ones kept from an earlier
/// call keep their buffers. The first chunk runs on this thread, the others on scoped threads.
/// Returns the index of each chunk's first item.
pub(crate) fn over_chunks<T: Sync, S: Default + Send>(
    items: &[T],
    threads: usize,
    slots: &mut Vec<S>,
    work: impl Fn(&mut S, &[T]) -> Result<()> + Sync,
) -> Result<Vec<usize>> {
    let n = items.len();
    let wanted = (n / MIN_ITEMS_PER_CHUNK).clamp(1, threads.max(1));
    let per_chunk = n.div_ceil(wanted).max(1);
    let count = n.div_ceil(per_chunk).max(1);
    slots.resize_with(count, S::default);
    let chunk = |c: usize| &items[(c * per_chunk).min(n)..((c + 1) * per_chunk).min(n)];
    let work = &work;
    let Some((first, others)) = slots.split_first_mut() else {
        return Ok(Vec::new());
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = others
            .iter_mut()
            .enumerate()
            .map(|(c, slot)| {
                let items = chunk(c + 1);
                scope.spawn(move || work(slot, items))
            })
            .collect();
        let mut result = work(first, chunk(0));
        for h in handles {
            let r = h.join().unwrap_or_else(|_| {
                Err(StoreError::InvalidBatch(
                    "batch worker thread panicked".into(),
                ))
            });
            result = result.and(r);
        }
        result
    })?;
    Ok((0..count).map(|c| c * per_chunk).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_items_in_order_within_the_thread_and_size_bounds() {
        for (n, threads, chunks) in [
            (0, 4, 1),
            (10, 4, 1),
            (2 * MIN_ITEMS_PER_CHUNK - 1, 4, 1),
            (2 * MIN_ITEMS_PER_CHUNK, 4, 2),
            (10 * MIN_ITEMS_PER_CHUNK + 3, 3, 3),
        ] {
            let items: Vec<usize> = (0..n).collect();
            let mut slots: Vec<Vec<usize>> = vec![vec![7]; 5];
            let starts = over_chunks(&items, threads, &mut slots, |slot, chunk| {
                slot.clear();
                slot.extend_from_slice(chunk);
                Ok(())
            })
            .unwrap();
            assert_eq!(slots.len(), chunks, "n={n} threads={threads}");
            assert_eq!(starts.len(), chunks);
            assert_eq!(slots.concat(), items);
            for (slot, start) in slots.iter().zip(&starts) {
                assert_eq!(slot.first().copied().unwrap_or(0), *start);
            }
        }
    }

    #[test]
    fn a_failing_chunk_fails_the_whole() {
        let items: Vec<usize> = (0..3 * MIN_ITEMS_PER_CHUNK).collect();
        let mut slots: Vec<()> = Vec::new();
        let r = over_chunks(&items, 3, &mut slots, |_, chunk| {
            if chunk.contains(&(2 * MIN_ITEMS_PER_CHUNK)) {
                Err(StoreError::InvalidBatch("third chunk".into()))
            } else {
                Ok(())
            }
        });
        assert!(matches!(r, Err(StoreError::InvalidBatch(m)) if m == "third chunk"));
    }
}
