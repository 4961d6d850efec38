//! Fetching pinned Python wheels from PyPI with pip and extracting files from them.
//!
//! Kiln needs two things that ship only as wheels: ONNX Runtime's shared library (from
//! `onnxruntime`) and, for the conformance tests, the ONNX backend test data (from `onnx`).
//! pip is the one client that reaches the package registry everywhere Kiln runs, so both are
//! fetched with `pip download` (no install, no dependency resolution) and unpacked here.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Downloads the wheel for `requirement` (e.g. `onnx==1.20.1`) into `dir` and returns its path.
pub fn pip_download(python: &OsStr, requirement: &str, dir: &Path) -> Result<PathBuf, String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let out = Command::new(python)
        .args(["-m", "pip", "download", "--disable-pip-version-check"])
        .arg(requirement)
        .args(["--no-deps", "--only-binary=:all:", "-d"])
        .arg(dir)
        .output()
        .map_err(|e| format!("could not run {} -m pip: {e}", python.to_string_lossy()))?;
    if !out.status.success() {
        return Err(format!(
            "pip download {requirement} failed: {}",
            last_line(&out.stderr)
        ));
    }
    fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| format!("pip reported success for {requirement} but left no wheel"))
}

/// Opens a wheel (a zip archive).
pub fn open(wheel: &Path) -> Result<zip::ZipArchive<fs::File>, String> {
    let file =
        fs::File::open(wheel).map_err(|e| format!("cannot open {}: {e}", wheel.display()))?;
    zip::ZipArchive::new(file).map_err(|e| format!("{} is not a wheel: {e}", wheel.display()))
}

/// Extracts one member into `dir` atomically (temporary file, then rename); `None` if absent.
pub fn extract_file(
    archive: &mut zip::ZipArchive<fs::File>,
    member: &str,
    dir: &Path,
) -> Result<Option<PathBuf>, String> {
    let mut entry = match archive.by_name(member) {
        Ok(entry) => entry,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(format!("cannot read {member} from the wheel: {e}")),
    };
    let name = member.rsplit('/').next().unwrap_or(member);
    let dest = dir.join(name);
    let tmp = dir.join(format!(".{name}.{}.tmp", unique_suffix()));
    let mut write = || -> io::Result<()> {
        let mut out = fs::File::create(&tmp)?;
        io::copy(&mut entry, &mut out)?;
        out.sync_all()?;
        fs::rename(&tmp, &dest)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("cannot write {}: {e}", dest.display())
    })?;
    Ok(Some(dest))
}

/// Extracts every member under `prefix` (a folder inside the wheel) to `dest`, which appears
/// whole or not at all: files go to a sibling temporary folder that is renamed at the end.
/// Returns the number of files written.
pub fn extract_tree(wheel: &Path, prefix: &str, dest: &Path) -> Result<usize, String> {
    let mut archive = open(wheel)?;
    let parent = dest
        .parent()
        .ok_or_else(|| format!("{} has no parent folder", dest.display()))?;
    fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let tmp = parent.join(format!(".extract-{}.tmp", unique_suffix()));
    let result = (|| -> Result<usize, String> {
        let mut count = 0;
        for i in 0..archive.len() {
            let mut entry = archive
                .by_index(i)
                .map_err(|e| format!("{}: member {i}: {e}", wheel.display()))?;
            let Some(rel) = entry.enclosed_name() else {
                continue; // a member that would escape the folder is never written
            };
            let Ok(rel) = rel.strip_prefix(prefix) else {
                continue;
            };
            if entry.is_dir() || rel.as_os_str().is_empty() {
                continue;
            }
            let out_path = tmp.join(rel);
            if let Some(dir) = out_path.parent() {
                fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            let mut out = fs::File::create(&out_path)
                .map_err(|e| format!("cannot write {}: {e}", out_path.display()))?;
            io::copy(&mut entry, &mut out)
                .map_err(|e| format!("cannot write {}: {e}", out_path.display()))?;
            count += 1;
        }
        if count == 0 {
            return Err(format!("{} has nothing under {prefix}", wheel.display()));
        }
        // Another process may have finished first; its copy is the same bytes.
        if dest.exists() {
            return Ok(count);
        }
        fs::rename(&tmp, dest).map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
        Ok(count)
    })();
    let _ = fs::remove_dir_all(&tmp);
    result
}

/// A suffix unique to this process and moment, for temporary names beside a destination.
pub fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos}", std::process::id())
}

/// The last non-empty line of a tool's stderr: where pip puts the reason it failed.
pub(crate) fn last_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(no message)")
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn wheel_with(files: &[(&str, &[u8])]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pkg-1.0-py3-none-any.whl");
        let mut zip = zip::ZipWriter::new(fs::File::create(&path).unwrap());
        for (name, data) in files {
            zip.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap();
        (dir, path)
    }

    #[test]
    fn extract_tree_takes_only_the_prefix_and_is_all_or_nothing() {
        let (dir, wheel) = wheel_with(&[
            ("pkg/data/a/x.pb", b"x"),
            ("pkg/data/b.txt", b"b"),
            ("pkg/other.py", b"no"),
        ]);
        let dest = dir.path().join("cache/data");
        assert_eq!(extract_tree(&wheel, "pkg/data", &dest).unwrap(), 2);
        assert_eq!(fs::read(dest.join("a/x.pb")).unwrap(), b"x");
        assert!(!dest.join("other.py").exists());
        let err = extract_tree(&wheel, "pkg/missing", &dir.path().join("cache/none")).unwrap_err();
        assert!(err.contains("nothing under pkg/missing"), "{err}");
        assert!(!dir.path().join("cache/none").exists());
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("cache"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn extract_file_is_none_when_absent() {
        let (dir, wheel) = wheel_with(&[("pkg/lib.so", b"elf")]);
        let mut archive = open(&wheel).unwrap();
        let got = extract_file(&mut archive, "pkg/lib.so", dir.path()).unwrap();
        assert_eq!(fs::read(got.unwrap()).unwrap(), b"elf");
        assert!(extract_file(&mut archive, "pkg/none.so", dir.path())
            .unwrap()
            .is_none());
    }
}
