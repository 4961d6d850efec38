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
/// synthetic generator's parameters. A folder holding `test_data_set_*` folders (a model's
/// folder, say) is read only through those, so only they are digested; files are streamed
/// through the hash, never held whole.
pub fn data_digest(data: &CalibrationData) -> std::io::Result<(String, String)> {
    match data {
        CalibrationData::Synthetic { count, seed } => {
            let text = format!("synthetic count={count} seed={seed}");
            Ok((text.clone(), sha256(text.as_bytes())))
        }
        CalibrationData::Path(p) => {
            let mut files = Vec::new();
            walk(p, p, &mut files)?;
            if files
                .iter()
                .any(|(rel, _)| rel.starts_with("test_data_set_"))
            {
                files.retain(|(rel, _)| rel.starts_with("test_data_set_"));
            }
            files.sort();
            let mut h = Sha256::new();
            for (rel, path) in &files {
                h.update(rel.as_bytes());
                h.update([0]);
                hash_file(&mut h, path)?;
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

/// Feeds the file at `path` to `h` in chunks.
fn hash_file(h: &mut Sha256, path: &Path) -> std::io::Result<()> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
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
    fn calibration_digest_covers_the_samples_read() {
        // A model folder: the model and its weights are not calibration data.
        let dir = tempfile::tempdir().unwrap();
        let set = dir.path().join("test_data_set_0");
        std::fs::create_dir(&set).unwrap();
        std::fs::write(set.join("input_0.pb"), b"sample").unwrap();
        std::fs::write(dir.path().join("model.onnx"), b"model v1").unwrap();
        let data = CalibrationData::Path(dir.path().to_path_buf());
        let (text, first) = data_digest(&data).unwrap();
        assert!(text.ends_with("(1 files)"), "{text}");
        std::fs::write(dir.path().join("model.onnx"), b"model v2").unwrap();
        assert_eq!(data_digest(&data).unwrap().1, first);
        std::fs::write(set.join("input_0.pb"), b"other sample").unwrap();
        assert_ne!(data_digest(&data).unwrap().1, first);
        // A plain folder of files: every file counts.
        let (text, _) = data_digest(&CalibrationData::Path(set)).unwrap();
        assert!(text.ends_with("(1 files)"), "{text}");
    }

    #[test]
    fn sha256_of_abc() {
        assert_eq!(
            sha256(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
