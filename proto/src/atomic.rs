//! Writing files so that readers see the old file or the complete new one, never a half:
//! a temporary file in the destination folder, fsync, rename into place.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut};
use tempfile::NamedTempFile;

use crate::error::ProtoError;

/// The folder a path lives in (`.` for a bare file name).
pub(crate) fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// A temporary file next to its destination; dropped without `commit`, it is deleted.
pub(crate) struct PendingFile {
    pub(crate) dest: PathBuf,
    tmp: NamedTempFile,
}

impl PendingFile {
    /// Creates the temporary file in `dest`'s folder, so the final rename stays on one
    /// file system and is atomic.
    pub(crate) fn create(dest: &Path) -> Result<Self, ProtoError> {
        let mut builder = tempfile::Builder::new();
        builder.prefix(".kiln-").suffix(".tmp");
        // NamedTempFile defaults to 0600; a saved model should get the usual 0666 & ~umask.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o666));
        }
        let tmp = builder
            .tempfile_in(folder_of(dest))
            .map_err(|source| ProtoError::Io {
                path: dest.to_path_buf(),
                action: "cannot create a temporary file next to",
                source,
            })?;
        Ok(Self {
            dest: dest.to_path_buf(),
            tmp,
        })
    }

    /// The open temporary file.
    pub(crate) fn file(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// Flushes the data to disk; call before `commit` so a crash cannot leave a renamed but
    /// empty file.
    pub(crate) fn sync(&mut self) -> Result<(), ProtoError> {
        self.tmp
            .as_file()
            .sync_all()
            .map_err(|source| ProtoError::Io {
                path: self.dest.clone(),
                action: "cannot flush to disk",
                source,
            })
    }

    /// Renames the temporary file over the destination.
    pub(crate) fn commit(self) -> Result<(), ProtoError> {
        let dest = self.dest;
        self.tmp.persist(&dest).map_err(|e| ProtoError::Io {
            path: dest.clone(),
            action: "cannot rename into place",
            source: e.error,
        })?;
        sync_folder(folder_of(&dest));
        Ok(())
    }
}

/// Makes a rename durable. Best effort: some platforms cannot open folders for syncing.
fn sync_folder(folder: &Path) {
    if let Ok(dir) = File::open(folder) {
        let _ = dir.sync_all();
    }
}

/// A `BufMut` that streams into a file, so prost can encode a model of any size without an
/// in-memory copy of it. Writes large slices (tensor payloads) straight through.
pub(crate) struct StreamBuf<'a> {
    file: &'a mut File,
    buf: Vec<u8>,
    written: u64,
    /// The first write error; `BufMut` cannot return errors, so later writes are dropped and
    /// `finish` reports it.
    error: Option<io::Error>,
}

const STREAM_BUF: usize = 1 << 20;

impl<'a> StreamBuf<'a> {
    pub(crate) fn new(file: &'a mut File) -> Self {
        Self {
            file,
            buf: Vec::with_capacity(STREAM_BUF),
            written: 0,
            error: None,
        }
    }

    fn flush_buf(&mut self) {
        if self.error.is_none() && !self.buf.is_empty() {
            if let Err(e) = self.file.write_all(&self.buf) {
                self.error = Some(e);
            }
        }
        self.buf.clear();
    }

    /// Writes what is buffered; returns the bytes written in total or the first error.
    pub(crate) fn finish(mut self) -> io::Result<u64> {
        self.flush_buf();
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(self.written),
        }
    }
}

// SAFETY: `chunk_mut` hands out the vector's spare capacity, and `advance_mut` only extends
// `len` over bytes the caller has just initialised in that spare capacity.
unsafe impl BufMut for StreamBuf<'_> {
    fn remaining_mut(&self) -> usize {
        // Files have no practical limit; the 2 GiB protobuf limit is checked before encoding.
        isize::MAX as usize
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        let len = self.buf.len() + cnt;
        assert!(len <= self.buf.capacity(), "advance_mut past the chunk");
        // SAFETY: the caller initialised `cnt` bytes of the chunk, which is our spare capacity.
        unsafe { self.buf.set_len(len) };
        self.written += cnt as u64;
        if self.buf.len() == self.buf.capacity() {
            self.flush_buf();
        }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        if self.buf.len() == self.buf.capacity() {
            self.flush_buf();
        }
        UninitSlice::uninit(self.buf.spare_capacity_mut())
    }

    fn put_slice(&mut self, src: &[u8]) {
        if src.len() >= STREAM_BUF / 2 {
            // Big payloads skip the buffer: one write from where they are.
            self.flush_buf();
            if self.error.is_none() {
                if let Err(e) = self.file.write_all(src) {
                    self.error = Some(e);
                }
            }
            self.written += src.len() as u64;
            return;
        }
        if self.buf.capacity() - self.buf.len() < src.len() {
            self.flush_buf();
        }
        self.buf.extend_from_slice(src);
        self.written += src.len() as u64;
    }

    fn put<T: Buf>(&mut self, mut src: T)
    where
        Self: Sized,
    {
        // prost writes bytes fields with `put(Bytes)`; route them through `put_slice`.
        while src.has_remaining() {
            let chunk = src.chunk();
            let n = chunk.len();
            self.put_slice(chunk);
            src.advance(n);
        }
    }
}
