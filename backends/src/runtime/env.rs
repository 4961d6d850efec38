//! The process-wide ONNX Runtime environment, built once from the located library.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;

use super::{locate_library, RuntimeError, ORT_VERSION};

struct Ready {
    env: Environment,
    path: PathBuf,
}

static READY: OnceLock<Ready> = OnceLock::new();
// Serialises first initialisation; a failure is not cached, so a later call (after the user
// fixed ORT_DYLIB_PATH in-process, or a flaky fetch) can try again.
static INIT: Mutex<()> = Mutex::new(());

/// The ONNX Runtime environment, loading the library ([`locate_library`]) on first use.
///
/// ONNX Runtime allows one environment per process, and `ort` keeps the first library it
/// loaded: code that uses `ort` directly must go through this function first.
pub fn environment() -> Result<&'static Environment, RuntimeError> {
    if let Some(ready) = READY.get() {
        return Ok(&ready.env);
    }
    let _guard = INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(ready) = READY.get() {
        return Ok(&ready.env);
    }
    let path = locate_library()?;
    let load_err = |message: String| RuntimeError::Load {
        path: path.clone(),
        message,
        version: ORT_VERSION,
    };
    let builder = ort::init_from(&path).map_err(|e| load_err(e.to_string()))?;
    let env = builder
        .with_name("kiln")
        // Kiln runs models to check them; nothing about that should leave the machine.
        .with_telemetry(false)
        .build()
        .map_err(|e| load_err(e.to_string()))?;
    // ORT also prints every error it returns, in colour, to stderr; Kiln reports the returned
    // error itself, once, where the user can read it, so only fatal messages stay on.
    env.set_log_level(ort::logging::LogLevel::Fatal);
    let ready = READY.get_or_init(|| Ready { env, path });
    Ok(&ready.env)
}

/// The library file the environment was loaded from, once [`environment`] has succeeded.
pub fn library_path() -> Option<&'static Path> {
    READY.get().map(|r| r.path.as_path())
}
