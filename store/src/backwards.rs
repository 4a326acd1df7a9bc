//! Reading append-only JSONL files newest first, a page at a time (the dead-letter journals
//! here, the API's audit log in `query-api`).
//!
//! [`ReverseLines`] reads a file backwards from a byte offset in 64 KiB chunks, so the newest
//! entries cost the same in a large file as in a small one. A page ends at the line its last
//! entry starts at: [`page_cursor`] encodes that offset with the file's inode, and
//! [`cursor_offset`] takes it back. Appending never moves an offset; a rewrite (retention) puts
//! a new file in place, and a cursor of the old one is [`CursorError::Stale`] rather than a
//! position in the wrong file.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// The lines of a file's first `end` bytes, last first, each with the offset it starts at.
pub struct ReverseLines<'f> {
    file: &'f File,
    /// Bytes `[0, pos)` are not read yet.
    pos: u64,
    /// Bytes `[pos, pos + pending.len())`, read and not yet returned.
    pending: Vec<u8>,
}

impl<'f> ReverseLines<'f> {
    /// Bytes read from the file at a time.
    const CHUNK: u64 = 64 * 1024;

    pub fn new(file: &'f File, end: u64) -> ReverseLines<'f> {
        ReverseLines {
            file,
            pos: end,
            pending: Vec::new(),
        }
    }

    /// The line before the last one returned (without its newline), and where it starts;
    /// empty lines are passed over.
    pub fn next_line(&mut self) -> std::io::Result<Option<(u64, Vec<u8>)>> {
        loop {
            if let Some(i) = self.pending.iter().rposition(|b| *b == b'\n') {
                let line = self.pending.split_off(i + 1);
                self.pending.truncate(i);
                if line.is_empty() {
                    continue;
                }
                return Ok(Some((self.pos + i as u64 + 1, line)));
            }
            if self.pos == 0 {
                if self.pending.is_empty() {
                    return Ok(None);
                }
                return Ok(Some((0, std::mem::take(&mut self.pending))));
            }
            let n = Self::CHUNK.min(self.pos);
            self.pos -= n;
            let mut chunk = vec![0u8; n as usize];
            self.file.read_exact_at(&mut chunk, self.pos)?;
            chunk.extend_from_slice(&self.pending);
            self.pending = chunk;
        }
    }
}

/// Why a cursor cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("bad cursor: pass the `next_cursor` of the previous page unchanged")]
    Bad,
    #[error("the file was rewritten by retention since this cursor was handed out: start from the newest entries again")]
    Stale,
}

/// The cursor of a page whose last entry starts at `offset` of the file `inode`.
pub fn page_cursor(inode: u64, offset: u64) -> String {
    format!("{inode:x}.{offset}")
}

/// The offset a [`page_cursor`] names, checked to be a line start within the first `len`
/// bytes of `file`, whose inode is `inode`.
pub fn cursor_offset(file: &File, cursor: &str, inode: u64, len: u64) -> Result<u64, CursorError> {
    let (ino, offset) = cursor.split_once('.').ok_or(CursorError::Bad)?;
    let ino = u64::from_str_radix(ino, 16).map_err(|_| CursorError::Bad)?;
    let offset: u64 = offset.parse().map_err(|_| CursorError::Bad)?;
    if ino != inode {
        return Err(CursorError::Stale);
    }
    if offset == 0 || offset > len {
        return Err(CursorError::Bad);
    }
    let mut before = [0u8; 1];
    file.read_exact_at(&mut before, offset - 1)
        .map_err(|_| CursorError::Bad)?;
    if before[0] == b'\n' {
        Ok(offset)
    } else {
        Err(CursorError::Bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the lines and chunk boundaries, the lines come back last first, each at
        /// its offset, empty ones passed over.
        #[test]
        fn lines_come_back_last_first_at_their_offsets(
            lines in proptest::collection::vec("[a-z]{0,3000}", 0..80),
            trailing_newline in any::<bool>(),
        ) {
            let mut text = lines.join("\n");
            if trailing_newline && !text.is_empty() {
                text.push('\n');
            }
            let mut f = tempfile::tempfile().unwrap();
            std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
            let mut expected = Vec::new();
            let mut offset = 0u64;
            for l in text.split('\n') {
                if !l.is_empty() {
                    expected.push((offset, l.as_bytes().to_vec()));
                }
                offset += l.len() as u64 + 1;
            }
            expected.reverse();
            let mut got = Vec::new();
            let mut r = ReverseLines::new(&f, text.len() as u64);
            while let Some(x) = r.next_line().unwrap() {
                got.push(x);
            }
            prop_assert_eq!(got, expected);
        }
    }
}
