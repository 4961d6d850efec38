//! The ONNX backend test data (from the pinned `onnx` wheel) and `models/`, as test cases.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_backends::runtime::{cache_dir, SearchEnv};
use kiln_backends::wheel;

use crate::harness::{Case, CaseData};

/// The `onnx` release whose wheel still ships the `node` cases (later wheels dropped them).
pub const ONNX_VERSION: &str = "1.20.1";

/// The five folders of the backend test data.
pub const BACKEND_FOLDERS: [&str; 5] = [
    "node",
    "simple",
    "pytorch-converted",
    "pytorch-operator",
    "light",
];

/// The folder holding `node/`, `simple/`, … of the ONNX backend test data.
///
/// In order: `$KILN_ONNX_TEST_DATA`; an installed Python `onnx` of the pinned version;
/// Kiln's cache; else the pinned wheel is fetched with pip and the data extracted into the
/// cache (about 60 MB, once).
pub fn onnx_test_data() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| match locate() {
        Ok(dir) => dir,
        Err(e) => panic!("ONNX backend test data not available: {e}"),
    })
    .clone()
}

fn locate() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("KILN_ONNX_TEST_DATA") {
        let dir = PathBuf::from(dir);
        return if dir.join("node").is_dir() {
            Ok(dir)
        } else {
            Err(format!(
                "KILN_ONNX_TEST_DATA={} has no node/ folder",
                dir.display()
            ))
        };
    }
    if let Some(dir) = installed_package_data() {
        return Ok(dir);
    }
    let cache = cache_dir(&SearchEnv::from_process())
        .ok_or("no cache folder (set KILN_CACHE_DIR or HOME)")?;
    let dest = cache.join(format!("onnx-{ONNX_VERSION}-backend-test-data"));
    if dest.join("node").is_dir() {
        return Ok(dest);
    }
    eprintln!(
        "fetching onnx=={ONNX_VERSION} with pip for its backend test data into {} (once)",
        dest.display()
    );
    let download = cache.join(format!(".download-{}", wheel::unique_suffix()));
    let result = wheel::pip_download(
        &OsString::from("python3"),
        &format!("onnx=={ONNX_VERSION}"),
        &download,
    )
    .and_then(|whl| wheel::extract_tree(&whl, "onnx/backend/test/data", &dest));
    let _ = fs::remove_dir_all(&download);
    result.map(|_| dest)
}

/// The data folder of an installed `onnx` package, if it is the pinned version.
fn installed_package_data() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import onnx, os; print(onnx.__version__); print(os.path.dirname(onnx.__file__))",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let mut lines = text.lines();
    let version = lines.next()?.trim();
    let dir = PathBuf::from(lines.next()?.trim()).join("backend/test/data");
    (out.status.success() && version == ONNX_VERSION && dir.join("node").is_dir()).then_some(dir)
}

/// Every case of the given backend folders, sorted by folder then name.
pub fn backend_cases(folders: &[&str]) -> Vec<Case> {
    let root = onnx_test_data();
    let mut cases = Vec::new();
    for &folder in folders {
        let dir = root.join(folder);
        if folder == "light" {
            cases.extend(light_cases(&dir));
        } else {
            cases.extend(folder_cases(folder, &dir));
        }
    }
    cases
}

/// The models of `models/` (each folder with a `model.onnx` and `test_data_set_*`).
pub fn model_cases() -> Vec<Case> {
    folder_cases("models", &crate::repo_root().join("models"))
}

/// `<dir>/<case>/model.onnx` with its `test_data_set_*` folders.
fn folder_cases(folder: &str, dir: &Path) -> Vec<Case> {
    let mut cases: Vec<Case> = sorted_entries(dir)
        .into_iter()
        .filter(|p| p.join("model.onnx").is_file())
        .map(|p| {
            let data = sorted_entries(&p)
                .into_iter()
                .filter(|d| {
                    d.is_dir()
                        && d.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"))
                })
                .map(CaseData::Folder)
                .collect();
            Case {
                folder: folder.to_string(),
                name: file_name(&p),
                model: p.join("model.onnx"),
                data,
            }
        })
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    cases
}

/// `light/light_<name>.onnx` with `light_<name>_output_0.pb`: inputs are generated the way
/// ONNX's backend runner does (see [`CaseData::LightDummy`]).
fn light_cases(dir: &Path) -> Vec<Case> {
    sorted_entries(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .map(|p| {
            let stem = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let output = dir.join(format!("{stem}_output_0.pb"));
            Case {
                folder: "light".to_string(),
                name: stem,
                model: p.clone(),
                data: vec![CaseData::LightDummy { output }],
            }
        })
        .collect()
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
