//! Append-only JSONL files with fsync on every append and torn-tail repair on load.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::IoContext;
use crate::Result;

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
    let before = file.metadata().at(path)?.len();
    let written = file.write_all(&buf).and_then(|()| file.sync_data());
    if let Err(e) = written {
        // A write cut short (a full disk) must not stay: the next append would be glued to
        // its torn line, and the whole file refused at the next start (QA). Best effort: the
        // torn tail is cut at the next load too, while no other line follows it.
        let _ = file.set_len(before).and_then(|()| file.sync_data());
        return Err(e).at(path);
    }
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
    replace_durably(path, &buf)
}

/// Put `bytes` in place of the file at `path`: written to a temporary file beside it, fsynced,
/// renamed over it, directory fsynced. A crash leaves either the old or the new file.
fn replace_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".rewrite");
    let tmp = path.with_file_name(format!(".{}", tmp_name.to_string_lossy()));
    {
        let mut file = File::create(&tmp).at(&tmp)?;
        file.write_all(bytes).at(&tmp)?;
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
/// never acknowledged, so it is cut off (with a warning). Any other line that cannot be read
/// (bit rot, a bad restore, a hand edit) is set aside: copied to `<file>.damaged` and left out
/// of the journal, with a warning naming both. One bad line stopped the whole store from
/// opening, every tenant with it (QA).
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    load_as(path, true)
}

/// Where [`load`] sets aside the lines of `path` it cannot read.
pub fn damaged_lines_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".damaged");
    path.with_file_name(name)
}

/// [`load`]; with `cut_torn_tail` false (a reader beside a running writer, whose last line may
/// be half written right now) an incomplete last line is skipped, a line that cannot be read
/// is skipped with a warning, and the file is left alone.
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
    // Lines that could not be read: (line number, its bytes, why).
    let mut damaged: Vec<(u64, Vec<u8>, String)> = Vec::new();
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
            Err(e) => damaged.push((line_no, line.clone(), e.to_string())),
        }
        good_len += n as u64;
    }
    if !damaged.is_empty() {
        set_aside_damaged(path, &damaged, cut_torn_tail)?;
    }
    Ok(out)
}

/// Warn about the lines of `path` that could not be read and, for the writer (`rewrite`),
/// append them to [`damaged_lines_path`] and rewrite the journal without them.
fn set_aside_damaged(path: &Path, damaged: &[(u64, Vec<u8>, String)], rewrite: bool) -> Result<()> {
    let aside = damaged_lines_path(path);
    for (line, _, why) in damaged {
        tracing::warn!(path = %path.display(), line, why = %why, set_aside_in = %aside.display(),
            "unreadable journal line left out; its record is lost unless it is mended by hand from the set-aside copy");
    }
    if !rewrite {
        return Ok(());
    }
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&aside)
        .at(&aside)?;
    for (_, bytes, _) in damaged {
        out.write_all(bytes).at(&aside)?;
    }
    out.sync_all().at(&aside)?;
    // The journal without them, line for line as it was otherwise.
    let bad: std::collections::HashSet<u64> = damaged.iter().map(|(n, _, _)| *n).collect();
    let text = std::fs::read(path).at(path)?;
    let kept: Vec<u8> = text
        .split_inclusive(|b| *b == b'\n')
        .enumerate()
        .filter(|(i, _)| !bad.contains(&(*i as u64 + 1)))
        .flat_map(|(_, l)| l.iter().copied())
        .collect();
    replace_durably(path, &kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_tail_is_cut_and_a_bad_middle_line_is_set_aside() {
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
        // A bad line in the middle is set aside, not the end of the store (QA).
        std::fs::write(&p, "1\nnot json\n3\n").unwrap();
        assert_eq!(load_as::<u32>(&p, false).unwrap(), vec![1, 3]);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "1\nnot json\n3\n",
            "a reader changes nothing"
        );
        assert_eq!(load::<u32>(&p).unwrap(), vec![1, 3]);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "1\n3\n");
        let aside = damaged_lines_path(&p);
        assert_eq!(std::fs::read_to_string(&aside).unwrap(), "not json\n");
        std::fs::remove_file(&aside).unwrap();
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
