//! What a deployment can prove it ships: SHA-256 of every file written, the resolved profile,
//! the calibration data's digest, the Kiln version.

use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::calibrate::CalibrationData;

/// One file written.
#[derive(Debug, Clone, Serialize)]
pub struct FileEntry {
    /// Its name in the output folder.
    pub file: String,
    /// Bytes.
    pub bytes: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// The manifest.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    /// Kiln's version.
    pub kiln_version: String,
    /// Model files written, external data files included (the reports carry this manifest, so
    /// they are not in it); digests are computed while the files are written.
    pub files: Vec<FileEntry>,
    /// SHA-256 of the resolved profile's YAML.
    pub profile_sha256: String,
    /// The resolved profile, every key written out.
    pub profile: String,
    /// Where calibration data came from, and its SHA-256.
    pub calibration: String,
    /// SHA-256 of the calibration data (files in sorted order, each name and bytes).
    pub calibration_sha256: String,
}

/// The entries of a saved model: its file and its data file, with the digests computed while
/// they were written (nothing is read back).
pub fn entries(saved: &kiln_proto::SaveSummary) -> Vec<FileEntry> {
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut out = vec![FileEntry {
        file: name(&saved.model_path),
        bytes: saved.model_bytes,
        sha256: saved.model_sha256.clone().unwrap_or_default(),
    }];
    if let Some(data) = &saved.data_path {
        out.push(FileEntry {
            file: name(data),
            bytes: saved.data_bytes,
            sha256: saved.data_sha256.clone().unwrap_or_default(),
        });
    }
    out
}

/// Hex SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Digest of calibration data: a path's files (sorted, relative name and bytes), or the
/// synthetic generator's parameters.
pub fn data_digest(data: &CalibrationData) -> std::io::Result<(String, String)> {
    match data {
        CalibrationData::Synthetic { count, seed } => {
            let text = format!("synthetic count={count} seed={seed}");
            Ok((text.clone(), sha256(text.as_bytes())))
        }
        CalibrationData::Path(p) => {
            let mut files = Vec::new();
            walk(p, p, &mut files)?;
            files.sort();
            let mut h = Sha256::new();
            for (rel, path) in &files {
                h.update(rel.as_bytes());
                h.update([0]);
                h.update(std::fs::read(path)?);
            }
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok((
                format!("{name} ({} files)", files.len()),
                hex(&h.finalize()),
            ))
        }
    }
}

fn walk(root: &Path, p: &Path, out: &mut Vec<(String, std::path::PathBuf)>) -> std::io::Result<()> {
    if p.is_dir() {
        for e in std::fs::read_dir(p)? {
            walk(root, &e?.path(), out)?;
        }
    } else {
        let rel = p
            .strip_prefix(root)
            .unwrap_or(p)
            .to_string_lossy()
            .replace('\\', "/");
        out.push((rel, p.to_path_buf()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_abc() {
        assert_eq!(
            sha256(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
