//! Small files written atomically (temp file, fsync, rename, fsync directory) and Kafka's
//! text checkpoint format: `0\n<count>\n<topic> <partition> <offset>\n...`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use super::StorageError;

/// Replaces `path` with `contents` so a crash leaves either the old or the new file, never a mix.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_atomic_mode(path, contents, 0o666)
}

/// As [`write_atomic`], readable by the owner only (0600): for files holding credentials
/// (SCRAM salts and keys serve offline password guessing).
pub fn write_atomic_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_atomic_mode(path, contents, 0o600)
}

fn write_atomic_mode(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // A leftover temp file keeps the mode it was made with; this one may not be wider.
        if mode != 0o666 {
            f.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        f.write_all(contents)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// A small file's bytes, or None when it does not exist yet.
pub fn read_if_exists(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Makes a rename or create in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Per-partition offsets, keyed by (topic, partition).
pub type OffsetMap = BTreeMap<(String, i32), i64>;

pub fn write_offsets(path: &Path, offsets: &OffsetMap) -> io::Result<()> {
    let mut s = format!("0\n{}\n", offsets.len());
    for ((topic, partition), offset) in offsets {
        s.push_str(&format!("{topic} {partition} {offset}\n"));
    }
    write_atomic(path, s.as_bytes())
}

/// Reads an offset checkpoint; a missing file is an empty map, a malformed one is an error.
pub fn read_offsets(path: &Path) -> Result<OffsetMap, StorageError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(OffsetMap::new()),
        Err(e) => return Err(e.into()),
    };
    let corrupt = |reason: &str| StorageError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let mut lines = text.lines();
    if lines.next() != Some("0") {
        return Err(corrupt("unknown checkpoint version"));
    }
    let count: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| corrupt("bad entry count"))?;
    let mut map = OffsetMap::new();
    for line in lines.by_ref().take(count) {
        let mut parts = line.rsplitn(3, ' ');
        let offset = parts.next().and_then(|p| p.parse::<i64>().ok());
        let partition = parts.next().and_then(|p| p.parse::<i32>().ok());
        let topic = parts.next();
        match (topic, partition, offset) {
            (Some(t), Some(p), Some(o)) => {
                map.insert((t.to_string(), p), o);
            }
            _ => return Err(corrupt(&format!("bad line {line:?}"))),
        }
    }
    if map.len() != count {
        return Err(corrupt("fewer entries than declared"));
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_the_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.json");
        // A leftover temp file made readable by others does not widen the new file.
        std::fs::write(path.with_extension("tmp"), b"old").unwrap();
        std::fs::set_permissions(
            path.with_extension("tmp"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        write_atomic_private(&path, b"{}").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read(&path).unwrap(), b"{}");
    }

    #[test]
    fn offsets_round_trip_and_corruption_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recovery-point-offset-checkpoint");
        assert!(read_offsets(&path).unwrap().is_empty());
        let mut m = OffsetMap::new();
        m.insert(("a.b-c".into(), 0), 42);
        m.insert(("x".into(), 7), 0);
        write_offsets(&path, &m).unwrap();
        assert_eq!(read_offsets(&path).unwrap(), m);
        fs::write(&path, "0\n3\nx 1 2\n").unwrap();
        assert!(matches!(
            read_offsets(&path),
            Err(StorageError::Corrupt { .. })
        ));
    }
}
