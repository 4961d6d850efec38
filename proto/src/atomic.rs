//! Writing files so that readers see the old file or the complete new one, never a half:
//! a temporary file in the destination folder, fsync, rename into place.
//!
//! Temporary files are named `.kiln-<pid>-<random>.tmp` and locked while being written. A
//! process killed mid-write leaves its temporary file behind; the next save into that folder
//! removes it (see `remove_stale`), never touching one that a live writer still holds.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut};
use tempfile::NamedTempFile;

use crate::digest::Hashing;
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
        remove_stale(folder_of(dest));
        let prefix = format!("{TMP_PREFIX}{}-", std::process::id());
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(TMP_SUFFIX);
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
        // The lock tells `remove_stale` in other processes that this file is being written;
        // the kernel drops it when the process dies, however it dies. Best effort: a file
        // system without locks just keeps its stale files.
        let _ = tmp.as_file().try_lock();
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

/// Start and end of the temporary files' names.
const TMP_PREFIX: &str = ".kiln-";
const TMP_SUFFIX: &str = ".tmp";

/// The pid in a temporary file name `.kiln-<pid>-<random>.tmp`; `None` for other names.
fn tmp_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(TMP_PREFIX)?.strip_suffix(TMP_SUFFIX)?;
    let (pid, random) = rest.split_once('-')?;
    if random.is_empty() {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` may still be running. Where `/proc` is missing this cannot be
/// known from the pid, so the answer is "no" and the lock decides alone.
fn may_be_alive(pid: u32) -> bool {
    pid == std::process::id()
        || (Path::new("/proc/self").exists() && Path::new(&format!("/proc/{pid}")).exists())
}

/// Removes temporary files that killed Kiln processes left in `folder`.
///
/// A file goes only when its owner's pid is not running (pids are read from `/proc`, so a
/// reused pid keeps a stale file rather than losing a live one) and its write lock can be
/// taken (which also protects writers in another pid namespace sharing the folder). Errors
/// are ignored: cleaning up is a courtesy, never a reason to fail a save.
pub(crate) fn remove_stale(folder: &Path) {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(tmp_owner) else {
            continue;
        };
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            remove_if_abandoned(&entry.path(), pid);
        }
    }
}

/// Removes the temporary file `path` written by process `pid` if that process is gone: its
/// pid is not running and the file's write lock can be taken (see `remove_stale`). For other
/// writers' naming schemes; returns whether the file was removed.
pub fn remove_if_abandoned(path: &Path, pid: u32) -> bool {
    if may_be_alive(pid) {
        return false;
    }
    let Ok(file) = File::open(path) else {
        return false;
    };
    file.try_lock().is_ok() && std::fs::remove_file(path).is_ok()
}

/// Writes `bytes` to `path` atomically (temporary file beside it, fsync, rename), with
/// permissions `0666 & ~umask`; for reports and other small outputs.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ProtoError> {
    let mut pending = PendingFile::create(path)?;
    pending
        .file()
        .write_all(bytes)
        .map_err(|source| ProtoError::Io {
            path: path.to_path_buf(),
            action: "cannot write",
            source,
        })?;
    pending.sync()?;
    pending.commit()
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
    file: Hashing<&'a mut File>,
    buf: Vec<u8>,
    written: u64,
    /// The first write error; `BufMut` cannot return errors, so later writes are dropped and
    /// `finish` reports it.
    error: Option<io::Error>,
}

const STREAM_BUF: usize = 1 << 20;

impl<'a> StreamBuf<'a> {
    /// A stream that also computes the SHA-256 of what it writes, when `hash` is set.
    pub(crate) fn with_digest(file: &'a mut File, hash: bool) -> Self {
        Self {
            file: Hashing::new(file, hash),
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

    /// Writes what is buffered; returns the bytes written in total, with their SHA-256 (hex)
    /// when the stream computes one, or the first error.
    pub(crate) fn finish_with_digest(mut self) -> io::Result<(u64, Option<String>)> {
        self.flush_buf();
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok((self.written, self.file.finish())),
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
            // A weight embedded from a mapped model file: written, its pages can go.
            crate::pages::release_pages(src);
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

/// Flushes a file being written to disk from a helper thread, while the writer goes on.
///
/// Left alone, the kernel starts writing a fresh 1 GiB file back only at the final fsync, so
/// the save takes copy time + disk time. Nudged every few dozen MiB, writeback overlaps the
/// copying and the final fsync only waits for the tail.
pub(crate) struct BackgroundSync {
    tx: Option<std::sync::mpsc::SyncSender<()>>,
    handle: Option<std::thread::JoinHandle<io::Result<()>>>,
    unsynced: u64,
}

/// Bytes written between nudges.
const SYNC_EVERY: u64 = 32 << 20;

impl BackgroundSync {
    /// Starts the helper on its own handle of the file.
    pub(crate) fn start(file: File) -> Self {
        // Capacity 1: nudges arriving while a sync runs coalesce into one more.
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let handle = std::thread::Builder::new()
            .name("kiln-fsync".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    file.sync_data()?;
                }
                Ok(())
            })
            .ok();
        Self {
            tx: handle.as_ref().map(|_| tx),
            handle,
            unsynced: 0,
        }
    }

    /// Records `n` more bytes written; asks for a sync once enough have piled up.
    pub(crate) fn wrote(&mut self, n: u64) {
        self.unsynced += n;
        if self.unsynced >= SYNC_EVERY {
            if let Some(tx) = &self.tx {
                // Full means a sync is already queued, which will cover these bytes too.
                let _ = tx.try_send(());
            }
            self.unsynced = 0;
        }
    }

    /// Stops the helper; returns the first error its syncs hit (the final fsync may not
    /// report an error an earlier one already consumed).
    pub(crate) fn finish(mut self) -> io::Result<()> {
        drop(self.tx.take());
        match self.handle.take().map(|h| h.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("background fsync thread panicked")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::{GraphProto, ModelProto, TensorProto};
    use prost::Message;

    #[test]
    fn stream_encoding_equals_in_memory_encoding() {
        // Payloads below, at and above the pass-through size, plus many small fields.
        let tensors = [
            10usize,
            STREAM_BUF / 2 - 1,
            STREAM_BUF / 2,
            3 * STREAM_BUF + 7,
        ]
        .iter()
        .enumerate()
        .map(|(i, &n)| TensorProto {
            name: format!("t{i}"),
            raw_data: bytes::Bytes::from(vec![i as u8 + 1; n]),
            ..Default::default()
        })
        .collect();
        let model = ModelProto {
            ir_version: 10,
            graph: Some(GraphProto {
                initializer: tensors,
                ..Default::default()
            }),
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let mut pending = PendingFile::create(&dir.path().join("m.onnx")).unwrap();
        let mut stream = StreamBuf::with_digest(pending.file(), true);
        model.encode(&mut stream).unwrap();
        let (written, digest) = stream.finish_with_digest().unwrap();
        pending.sync().unwrap();
        pending.commit().unwrap();
        let on_disk = std::fs::read(dir.path().join("m.onnx")).unwrap();
        assert_eq!(written, on_disk.len() as u64);
        assert!(on_disk == model.encode_to_vec());
        use sha2::Digest;
        let want = crate::digest::hex(&sha2::Sha256::digest(&on_disk));
        assert_eq!(digest, Some(want), "the digest is of the bytes on disk");
    }

    #[test]
    fn dropped_pending_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut pending = PendingFile::create(&dir.path().join("m.onnx")).unwrap();
        pending.file().write_all(b"half").unwrap();
        drop(pending);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// A pid no process has: a child that has exited and been reaped.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn temp_names_carry_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let mut pending = PendingFile::create(&dir.path().join("m.onnx")).unwrap();
        pending.file().write_all(b"x").unwrap();
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 1);
        assert_eq!(tmp_owner(&names[0]), Some(std::process::id()), "{names:?}");
        assert_eq!(tmp_owner(".kiln-12-.tmp"), None);
        assert_eq!(tmp_owner(".kiln-x-ab.tmp"), None);
        assert_eq!(tmp_owner("model.onnx"), None);
    }

    #[test]
    fn stale_temp_of_a_dead_process_is_removed_on_the_next_save() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(format!(".kiln-{}-abc123.tmp", dead_pid()));
        std::fs::write(&stale, b"half a model").unwrap();
        let other = dir.path().join(".kiln-notapid.tmp");
        std::fs::write(&other, b"not ours").unwrap();
        write_file(&dir.path().join("m.onnx"), b"model").unwrap();
        assert!(!stale.exists(), "stale temp file left behind");
        assert!(
            other.exists(),
            "a file of another naming pattern was removed"
        );
        assert_eq!(std::fs::read(dir.path().join("m.onnx")).unwrap(), b"model");
    }

    #[test]
    fn temps_of_live_or_locked_writers_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        // pid 1 is always running; our own pid is running too.
        let live = dir.path().join(".kiln-1-abc123.tmp");
        let own = dir
            .path()
            .join(format!(".kiln-{}-abc123.tmp", std::process::id()));
        // A dead pid whose file is locked: a writer in another pid namespace.
        let locked = dir.path().join(format!(".kiln-{}-abc123.tmp", dead_pid()));
        for p in [&live, &own, &locked] {
            std::fs::write(p, b"in progress").unwrap();
        }
        let holder = File::open(&locked).unwrap();
        holder.try_lock().unwrap();
        remove_stale(dir.path());
        assert!(live.exists() && own.exists() && locked.exists());
        drop(holder);
        remove_stale(dir.path());
        assert!(!locked.exists(), "unlocked temp of a dead pid was kept");
        assert!(live.exists() && own.exists());
    }

    #[test]
    fn background_sync_runs_and_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = File::create(dir.path().join("f")).unwrap();
        let mut syncer = BackgroundSync::start(file.try_clone().unwrap());
        for _ in 0..3 {
            file.write_all(b"data").unwrap();
            syncer.wrote(SYNC_EVERY);
        }
        syncer.finish().unwrap();
    }
}
