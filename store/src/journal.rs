//! Append-only JSONL files with fsync on every append and torn-tail repair on load.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::IoContext;
use crate::{Result, StoreError};

/// Append records as JSON lines and fsync before returning.
pub fn append<T: Serialize>(path: &Path, records: &[T]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        crate::layout::create_dir_durable(parent)?;
    }
    let mut buf = Vec::new();
    for r in records {
        serde_json::to_writer(&mut buf, r)?;
        buf.push(b'\n');
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .at(path)?;
    file.write_all(&buf).at(path)?;
    file.sync_data().at(path)?;
    Ok(())
}

/// Replace the file's records with `records`, atomically: written to a temporary file, fsynced,
/// renamed over the journal, directory fsynced. A crash leaves either the old or the new file.
pub fn rewrite<T: Serialize>(path: &Path, records: &[T]) -> Result<()> {
    let mut buf = Vec::new();
    for r in records {
        serde_json::to_writer(&mut buf, r)?;
        buf.push(b'\n');
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".rewrite");
    let tmp = path.with_file_name(format!(".{}", tmp_name.to_string_lossy()));
    {
        let mut file = File::create(&tmp).at(&tmp)?;
        file.write_all(&buf).at(&tmp)?;
        file.sync_all().at(&tmp)?;
    }
    std::fs::rename(&tmp, path).at(path)?;
    if let Some(parent) = path.parent() {
        crate::layout::sync_dir(parent)?;
    }
    Ok(())
}

/// Cut off a last line without its newline (a write torn by a crash: never acknowledged), as
/// [`load`] does, reading only the file's end.
pub fn cut_torn_tail(path: &Path) -> Result<()> {
    let file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).at(path),
    };
    let len = file.metadata().at(path)?.len();
    let mut last = [0u8; 1];
    if len == 0 || {
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut last, len - 1).at(path)?;
        last[0] == b'\n'
    } {
        return Ok(());
    }
    // The torn line is the last one: the file is kept up to where it starts.
    let keep = crate::backwards::ReverseLines::new(&file, len)
        .next_line()
        .at(path)?
        .map_or(0, |(start, _)| start);
    tracing::warn!(path = %path.display(), bytes = len - keep, "cutting torn journal tail");
    file.set_len(keep).at(path)?;
    file.sync_all().at(path)?;
    Ok(())
}

/// Load every record. A last line without its newline is a write torn by a crash: it was
/// never acknowledged, so it is cut off (with a warning). Any other bad line is corruption.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    load_as(path, true)
}

/// [`load`]; with `cut_torn_tail` false (a reader beside a running writer, whose last line may
/// be half written right now) an incomplete last line is skipped and the file left alone.
pub fn load_as<T: DeserializeOwned>(path: &Path, cut_torn_tail: bool) -> Result<Vec<T>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).at(path),
    };
    let mut reader = BufReader::new(file);
    let mut out = Vec::new();
    let mut good_len: u64 = 0;
    let mut line = Vec::new();
    let mut line_no = 0u64;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).at(path)?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let complete = line.last() == Some(&b'\n');
        if !complete && !cut_torn_tail {
            break;
        }
        if !complete {
            tracing::warn!(path = %path.display(), line = line_no, "cutting torn journal tail");
            let f = OpenOptions::new().write(true).open(path).at(path)?;
            f.set_len(good_len).at(path)?;
            f.sync_all().at(path)?;
            break;
        }
        match serde_json::from_slice(&line) {
            Ok(r) => out.push(r),
            Err(e) => {
                return Err(StoreError::Corrupt {
                    path: path.to_path_buf(),
                    reason: format!("line {line_no}: {e}"),
                });
            }
        }
        good_len += n as u64;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_tail_is_cut_and_bad_middle_line_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.jsonl");
        append(&p, &[1u32, 2, 3]).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"{\"torn")
            .unwrap();
        assert_eq!(load::<u32>(&p).unwrap(), vec![1, 2, 3]);
        // Cut by reading the end only, the same.
        for torn in [&b"{\"torn"[..], b"5"] {
            std::fs::OpenOptions::new()
                .append(true)
                .open(&p)
                .unwrap()
                .write_all(torn)
                .unwrap();
            cut_torn_tail(&p).unwrap();
            assert_eq!(std::fs::read_to_string(&p).unwrap(), "1\n2\n3\n");
        }
        cut_torn_tail(&p).unwrap();
        cut_torn_tail(&dir.path().join("missing")).unwrap();
        assert_eq!(load::<u32>(&p).unwrap(), vec![1, 2, 3]);
        // The cut makes the next append start on a clean line.
        append(&p, &[4u32]).unwrap();
        assert_eq!(load::<u32>(&p).unwrap(), vec![1, 2, 3, 4]);
        std::fs::write(&p, "1\nnot json\n3\n").unwrap();
        let err = load::<u32>(&p).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(load::<u32>(&dir.path().join("missing")).unwrap().is_empty());
        rewrite(&p, &[7u32, 8]).unwrap();
        assert_eq!(load::<u32>(&p).unwrap(), vec![7, 8]);
        append(&p, &[9u32]).unwrap();
        assert_eq!(load::<u32>(&p).unwrap(), vec![7, 8, 9]);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }
}
