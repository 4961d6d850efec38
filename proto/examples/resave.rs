//! Loads a model and saves it again, reporting time and peak RSS: a manual probe of the
//! load/save path (`bench/external_io.py` measures the real thing through the CLI).
//!
//! ```text
//! cargo run --release -p kiln-proto --example resave -- IN.onnx OUT.onnx [--embed] [--load-only]
//! ```

use std::path::Path;
use std::time::Instant;

use kiln_proto::{load_model, save_loaded, ExternalData, SaveOptions};

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, ..] = args.as_slice() else {
        return Err("usage: resave IN.onnx OUT.onnx [--embed] [--load-only]".into());
    };
    let t0 = Instant::now();
    let loaded = load_model(Path::new(input))?;
    let t1 = Instant::now();
    println!(
        "load: {:.3} s, peak RSS {} KiB, external files {:?}",
        (t1 - t0).as_secs_f64(),
        peak_rss_kib().unwrap_or(0),
        loaded.external_files
    );
    if args.iter().any(|a| a == "--load-only") {
        return Ok(());
    }
    let external = if args.iter().any(|a| a == "--embed") {
        ExternalData::Embed
    } else {
        ExternalData::external()
    };
    let summary = save_loaded(
        &loaded,
        &loaded.model,
        Path::new(output),
        &SaveOptions { external },
    )?;
    println!(
        "save: {:.3} s, peak RSS {} KiB, {summary:?}",
        t1.elapsed().as_secs_f64(),
        peak_rss_kib().unwrap_or(0)
    );
    Ok(())
}
