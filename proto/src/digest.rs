//! SHA-256 of files computed as they are written, so a manifest never reads its outputs back.

use std::io::{self, Write};

use sha2::{Digest, Sha256};

/// Hex form of a SHA-256 digest.
pub(crate) fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A writer that hashes every byte the inner writer accepts, when hashing is on.
pub(crate) struct Hashing<W> {
    inner: W,
    hasher: Option<Sha256>,
}

impl<W: Write> Hashing<W> {
    /// Wraps `inner`; `hash` turns hashing on.
    pub(crate) fn new(inner: W, hash: bool) -> Self {
        Self {
            inner,
            hasher: hash.then(Sha256::new),
        }
    }

    /// Whether bytes are hashed: then they must all come through `write`.
    pub(crate) fn is_hashing(&self) -> bool {
        self.hasher.is_some()
    }

    /// The inner writer, for writes that bypass hashing (only when it is off).
    pub(crate) fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The hex digest of everything written (`None` when hashing is off).
    pub(crate) fn finish(self) -> Option<String> {
        self.hasher.map(|h| hex(&h.finalize()))
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_what_was_written_in_any_pieces() {
        let mut w = Hashing::new(Vec::new(), true);
        w.write_all(b"a").unwrap();
        w.write_all(b"bc").unwrap();
        let digest = w.finish().unwrap();
        assert_eq!(
            digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut off = Hashing::new(Vec::new(), false);
        off.write_all(b"abc").unwrap();
        assert_eq!(off.finish(), None);
    }
}
