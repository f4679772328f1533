//! Producer ids for InitProducerId, unique for the life of the data directory: ids are handed
//! out from blocks whose upper end is persisted before any id in the block is used, so a crash
//! can skip ids but never reuse one.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::storage::checkpoint::write_atomic;

const BLOCK: i64 = 1000;

pub struct ProducerIdAllocator {
    path: PathBuf,
    /// (next id, end of the persisted block)
    state: Mutex<(i64, i64)>,
}

impl ProducerIdAllocator {
    pub fn open(path: PathBuf) -> io::Result<Self> {
        let start = match fs::read_to_string(&path) {
            Ok(s) => s.trim().parse::<i64>().map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(Self {
            path,
            state: Mutex::new((start, start)),
        })
    }

    pub fn next(&self) -> io::Result<i64> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.0 >= st.1 {
            let end = st.0 + BLOCK;
            write_atomic(&self.path, end.to_string().as_bytes())?;
            st.1 = end;
        }
        let id = st.0;
        st.0 += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_never_reused_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("producer-id-block");
        let a = ProducerIdAllocator::open(path.clone()).unwrap();
        assert_eq!(a.next().unwrap(), 0);
        assert_eq!(a.next().unwrap(), 1);
        drop(a);
        let b = ProducerIdAllocator::open(path).unwrap();
        assert_eq!(b.next().unwrap(), BLOCK);
    }
}
