//! Finding `libonnxruntime` of the pinned version: env var, cache, Python package, pip fetch.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::RuntimeError;
use crate::wheel;

/// The ONNX Runtime version Kiln is built and validated against.
pub const ORT_VERSION: &str = "1.31.1";

/// The library's file name on this platform, as the `onnxruntime` wheel ships it.
pub fn library_file_name() -> &'static str {
    if cfg!(target_os = "windows") {
        "onnxruntime.dll"
    } else if cfg!(target_os = "macos") {
        "libonnxruntime.1.31.1.dylib"
    } else {
        "libonnxruntime.so.1.31.1"
    }
}

/// Companion library some wheels carry; copied along when present (execution providers need it).
const PROVIDERS_SHARED: &str = if cfg!(target_os = "windows") {
    "onnxruntime_providers_shared.dll"
} else {
    "libonnxruntime_providers_shared.so"
};

/// Everything the search reads from the process, so it can be tested without touching globals.
#[derive(Debug, Clone, Default)]
pub struct SearchEnv {
    /// `ORT_DYLIB_PATH`.
    pub ort_dylib_path: Option<OsString>,
    /// `KILN_CACHE_DIR`.
    pub kiln_cache_dir: Option<OsString>,
    /// `XDG_CACHE_HOME`.
    pub xdg_cache_home: Option<OsString>,
    /// `HOME`.
    pub home: Option<OsString>,
    /// The Python interpreter to ask for the package and to run pip with; `None` skips both.
    pub python: Option<OsString>,
    /// Look for an installed Python `onnxruntime` package.
    pub probe_python_package: bool,
    /// Fetch the wheel with pip when nothing else is found.
    pub allow_fetch: bool,
}

impl SearchEnv {
    /// The search as the process's environment describes it (`python3`, fetching allowed).
    pub fn from_process() -> SearchEnv {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        SearchEnv {
            ort_dylib_path: var("ORT_DYLIB_PATH"),
            kiln_cache_dir: var("KILN_CACHE_DIR"),
            xdg_cache_home: var("XDG_CACHE_HOME"),
            home: var("HOME"),
            python: Some(OsString::from("python3")),
            probe_python_package: true,
            allow_fetch: true,
        }
    }
}

/// Kiln's cache folder: `$KILN_CACHE_DIR`, else `$XDG_CACHE_HOME/kiln`, else `$HOME/.cache/kiln`.
pub fn cache_dir(env: &SearchEnv) -> Option<PathBuf> {
    if let Some(dir) = &env.kiln_cache_dir {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = &env.xdg_cache_home {
        return Some(Path::new(dir).join("kiln"));
    }
    env.home
        .as_ref()
        .map(|home| Path::new(home).join(".cache").join("kiln"))
}

/// Where the cached library lives inside the cache folder.
fn cached_library(cache: &Path) -> PathBuf {
    cache
        .join(format!("onnxruntime-{ORT_VERSION}"))
        .join(library_file_name())
}

/// Finds the ONNX Runtime library as the process's environment says (see [`locate_with`]).
pub fn locate_library() -> Result<PathBuf, RuntimeError> {
    locate_with(&SearchEnv::from_process())
}

/// Finds the library: `ORT_DYLIB_PATH`, Kiln's cache, the Python package, then a pip fetch.
///
/// A set `ORT_DYLIB_PATH` is final: when it names no file that is an error, not a reason to
/// look elsewhere, so a user's explicit choice is never silently replaced.
pub fn locate_with(env: &SearchEnv) -> Result<PathBuf, RuntimeError> {
    if let Some(path) = &env.ort_dylib_path {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(RuntimeError::DylibPathMissing {
                path,
                version: ORT_VERSION,
            })
        };
    }

    let mut tried = vec!["ORT_DYLIB_PATH: not set".to_string()];
    let cache = cache_dir(env);
    match &cache {
        Some(cache) => {
            let lib = cached_library(cache);
            if lib.is_file() {
                return Ok(lib);
            }
            tried.push(format!("Kiln's cache: no {}", lib.display()));
        }
        None => tried
            .push("Kiln's cache: none of KILN_CACHE_DIR, XDG_CACHE_HOME, HOME is set".to_string()),
    }

    match (&env.python, env.probe_python_package) {
        (Some(python), true) => match python_package_library(python) {
            Ok(lib) => return Ok(lib),
            Err(why) => tried.push(format!("Python package: {why}")),
        },
        _ => tried.push("Python package: not looked for".to_string()),
    }

    match (&env.python, &cache, env.allow_fetch) {
        (Some(python), Some(cache), true) => match fetch_with_pip(python, cache) {
            Ok(lib) => return Ok(lib),
            Err(why) => tried.push(format!("fetching with pip: {why}")),
        },
        (_, None, true) => tried.push("fetching with pip: no cache folder to fetch into".into()),
        (None, _, true) => tried.push("fetching with pip: no Python interpreter".into()),
        (_, _, false) => tried.push("fetching with pip: not allowed".into()),
    }

    Err(RuntimeError::NotFound {
        version: ORT_VERSION,
        tried,
    })
}

/// Asks Python where the `onnxruntime` package is, and returns its library if it is the pinned one.
fn python_package_library(python: &OsString) -> Result<PathBuf, String> {
    // find_spec locates the package without importing it, so its native module is not loaded
    // just to answer where it is; the version is read from the library's file name.
    let script = "import importlib.util, os\n\
                  s = importlib.util.find_spec('onnxruntime')\n\
                  print(os.path.dirname(s.origin) if s and s.origin else '')";
    let out = Command::new(python)
        .args(["-c", script])
        .output()
        .map_err(|e| format!("could not run {}: {e}", python.to_string_lossy()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            python.to_string_lossy(),
            wheel::last_line(&out.stderr)
        ));
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if dir.is_empty() {
        return Err("onnxruntime is not installed".to_string());
    }
    let capi = Path::new(&dir).join("capi");
    let lib = capi.join(library_file_name());
    if lib.is_file() {
        return Ok(lib);
    }
    let found: Vec<String> = fs::read_dir(&capi)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("onnxruntime.") && !n.contains("providers"))
                .collect()
        })
        .unwrap_or_default();
    Err(format!(
        "{dir} has no {} (found: {}); version {ORT_VERSION} is needed",
        library_file_name(),
        if found.is_empty() {
            "nothing".to_string()
        } else {
            found.join(", ")
        }
    ))
}

/// Downloads the pinned wheel with pip into the cache and extracts the library from it.
fn fetch_with_pip(python: &OsString, cache: &Path) -> Result<PathBuf, String> {
    let target_dir = cache.join(format!("onnxruntime-{ORT_VERSION}"));
    eprintln!(
        "kiln: fetching onnxruntime {ORT_VERSION} with pip into {} (once)",
        target_dir.display()
    );
    fs::create_dir_all(&target_dir)
        .map_err(|e| format!("cannot create {}: {e}", target_dir.display()))?;
    // A private download folder per process, so concurrent first runs do not trip over each
    // other; whichever finishes last renames the same bytes into place.
    let download = cache.join(format!(".download-{}", wheel::unique_suffix()));
    let result = download_and_extract(python, &download, &target_dir);
    let _ = fs::remove_dir_all(&download);
    if result.is_err() {
        // Only removes the folder if nothing is in it: no empty shell left after a failure.
        let _ = fs::remove_dir(&target_dir);
    }
    result
}

fn download_and_extract(
    python: &OsString,
    download: &Path,
    target_dir: &Path,
) -> Result<PathBuf, String> {
    let wheel = wheel::pip_download(python, &format!("onnxruntime=={ORT_VERSION}"), download)?;
    let mut archive = wheel::open(&wheel)?;
    let lib_member = format!("onnxruntime/capi/{}", library_file_name());
    let lib = wheel::extract_file(&mut archive, &lib_member, target_dir)?
        .ok_or_else(|| format!("{} has no {lib_member}", wheel.display()))?;
    wheel::extract_file(
        &mut archive,
        &format!("onnxruntime/capi/{PROVIDERS_SHARED}"),
        target_dir,
    )?;
    Ok(lib)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offline() -> SearchEnv {
        SearchEnv {
            python: None,
            probe_python_package: false,
            allow_fetch: false,
            ..SearchEnv::default()
        }
    }

    #[test]
    fn dylib_path_wins_and_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("libonnxruntime.so");
        fs::write(&lib, b"x").unwrap();
        // Even with a cached copy present, the explicit variable is used.
        let cached = cached_library(dir.path());
        fs::create_dir_all(cached.parent().unwrap()).unwrap();
        fs::write(&cached, b"x").unwrap();
        let env = SearchEnv {
            ort_dylib_path: Some(lib.clone().into()),
            kiln_cache_dir: Some(dir.path().into()),
            ..offline()
        };
        assert_eq!(locate_with(&env).unwrap(), lib);

        let env = SearchEnv {
            ort_dylib_path: Some(dir.path().join("nope.so").into()),
            kiln_cache_dir: Some(dir.path().into()),
            ..offline()
        };
        let err = locate_with(&env).unwrap_err();
        assert!(matches!(err, RuntimeError::DylibPathMissing { .. }));
        assert!(err.to_string().contains("ORT_DYLIB_PATH"), "{err}");
    }

    #[test]
    fn cache_dir_order() {
        let env = SearchEnv {
            kiln_cache_dir: Some("/k".into()),
            xdg_cache_home: Some("/x".into()),
            home: Some("/h".into()),
            ..offline()
        };
        assert_eq!(cache_dir(&env), Some(PathBuf::from("/k")));
        let env = SearchEnv {
            kiln_cache_dir: None,
            ..env
        };
        assert_eq!(cache_dir(&env), Some(PathBuf::from("/x/kiln")));
        let env = SearchEnv {
            xdg_cache_home: None,
            ..env
        };
        assert_eq!(cache_dir(&env), Some(PathBuf::from("/h/.cache/kiln")));
        let env = SearchEnv { home: None, ..env };
        assert_eq!(cache_dir(&env), None);
    }

    #[test]
    fn cached_library_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let env = SearchEnv {
            xdg_cache_home: Some(dir.path().into()),
            ..offline()
        };
        let expected = dir
            .path()
            .join("kiln")
            .join("onnxruntime-1.31.1")
            .join(library_file_name());
        assert!(locate_with(&env).is_err());
        fs::create_dir_all(expected.parent().unwrap()).unwrap();
        fs::write(&expected, b"x").unwrap();
        assert_eq!(locate_with(&env).unwrap(), expected);
    }

    #[test]
    fn nothing_found_says_what_was_tried_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let env = SearchEnv {
            kiln_cache_dir: Some(dir.path().into()),
            ..offline()
        };
        let err = locate_with(&env).unwrap_err();
        let RuntimeError::NotFound { tried, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(tried.len(), 4, "{tried:?}");
        let text = err.to_string();
        assert!(text.contains("ORT_DYLIB_PATH"), "{text}");
        assert!(text.contains("pip install onnxruntime==1.31.1"), "{text}");
    }

    #[test]
    fn python_package_is_found_when_installed() {
        // This machine has onnxruntime==1.31.1 installed for Python (see DESIGN.md); where it
        // does not, the search must say so instead of failing here.
        let dir = tempfile::tempdir().unwrap();
        let env = SearchEnv {
            kiln_cache_dir: Some(dir.path().into()),
            python: Some("python3".into()),
            probe_python_package: true,
            allow_fetch: false,
            ..SearchEnv::default()
        };
        match locate_with(&env) {
            Ok(lib) => assert!(lib.ends_with(Path::new("capi").join(library_file_name()))),
            Err(RuntimeError::NotFound { tried, .. }) => {
                assert!(tried.iter().any(|t| t.starts_with("Python package:")))
            }
            Err(e) => panic!("{e}"),
        }
    }
}
