//! Hardening of Kiln's outputs, end to end:
//! - atomic saves: `kiln convert` killed mid-write of a large model leaves the previous output
//!   byte for byte, and the next run removes the killed run's temporary file;
//! - determinism: the same inputs give byte-identical models, reports and saved outputs, run
//!   after run and with 1 thread or ONNX Runtime's default;
//! - Kiln writes only where it is told: nothing in the working folder, HOME, the caches, TMPDIR
//!   or the model's folder changes except the `-o`/`--report`/`--save-outputs`/`--html`/
//!   `--junit` paths.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hasher};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::Bytes;
use kiln_proto::onnx::{
    tensor_proto, tensor_shape_proto, type_proto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use kiln_proto::{ExternalData, SaveOptions};
use kiln_tests::{kiln_bin, repo_root};

/// Runs kiln with `env` set and `cwd` as working folder; asserts exit code `want`; returns
/// stdout.
fn kiln_in(cwd: &Path, env: &[(&str, &Path)], args: &[&str], want: i32) -> String {
    let mut cmd = Command::new(kiln_bin());
    cmd.args(args).current_dir(cwd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(want),
        "kiln {args:?}: {stderr}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs kiln in the repository root; asserts success; returns stdout.
fn kiln(args: &[&str]) -> String {
    kiln_in(&repo_root(), &[], args, 0)
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn model_path(name: &str) -> PathBuf {
    repo_root().join("models").join(name).join("model.onnx")
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Temporary files Kiln's atomic writers name in `dir` (`.kiln-*.tmp`, `*.kiln-tmp`).
fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| (n.starts_with(".kiln-") && n.ends_with(".tmp")) || n.ends_with(".kiln-tmp"))
        .collect()
}

fn float_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: tensor_proto::DataType::Float as i32,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| tensor_shape_proto::Dimension {
                            value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
                            denotation: String::new(),
                        })
                        .collect(),
                }),
            })),
            denotation: String::new(),
        }),
        ..Default::default()
    }
}

/// `y = x + w` with a float weight `w` of `n` elements of pseudo-random (incompressible,
/// non-sparse) bytes seeded by `seed`.
fn add_model(n: usize, seed: u64) -> ModelProto {
    let mut state = seed | 1;
    let mut raw = Vec::with_capacity(n * 4);
    for _ in 0..n / 2 {
        // xorshift64; the exponent bits are masked so every value is a finite float.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        raw.extend_from_slice(&(state & 0x3fff_ffff_3fff_ffff).to_le_bytes());
    }
    raw.resize(n * 4, 0);
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(GraphProto {
            name: "g".into(),
            node: vec![NodeProto {
                op_type: "Add".into(),
                name: "add".into(),
                input: vec!["x".into(), "w".into()],
                output: vec!["y".into()],
                ..Default::default()
            }],
            initializer: vec![TensorProto {
                name: "w".into(),
                dims: vec![n as i64],
                data_type: tensor_proto::DataType::Float as i32,
                raw_data: Bytes::from(raw),
                ..Default::default()
            }],
            input: vec![float_info("x", &[n as i64])],
            output: vec![float_info("y", &[n as i64])],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Weight elements of the large model: 96 Mi floats, 384 MiB.
const BIG: usize = 96 << 20;

#[test]
fn killed_convert_leaves_the_old_output_and_the_next_run_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.onnx");
    kiln_proto::save_model(&add_model(1024, 7), &small, &SaveOptions::default()).unwrap();
    let big = dir.path().join("big.onnx");
    // Stored with external data so that `convert` (embedding) has 384 MiB to write.
    let external = SaveOptions {
        external: ExternalData::external(),
    };
    kiln_proto::save_model(&add_model(BIG, 11), &big, &external).unwrap();

    let out_dir = dir.path().join("out");
    let out = out_dir.join("model.onnx");
    kiln(&["convert", &s(&small), "-o", &s(&out)]);
    let old = read(&out);

    let mut child = Command::new(kiln_bin())
        .args(["convert", &s(&big), "-o", &s(&out)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill once the temporary file has at least 32 MiB in it: mid-write.
    let start = Instant::now();
    let grown = loop {
        let size = temp_files(&out_dir)
            .iter()
            .filter_map(|n| std::fs::metadata(out_dir.join(n)).ok())
            .map(|m| m.len())
            .max();
        if size.is_some_and(|s| s >= 32 << 20) {
            break size;
        }
        if child.try_wait().unwrap().is_some() || start.elapsed() > Duration::from_secs(120) {
            break None;
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(grown.is_some(), "never saw a growing temporary file");
    assert_eq!(
        status.signal(),
        Some(9),
        "kiln finished before the kill ({status}); the test did not interrupt a write"
    );

    assert!(
        read(&out) == old,
        "the killed run changed the previous output"
    );
    let left = temp_files(&out_dir);
    assert_eq!(left.len(), 1, "the killed run's temp file: {left:?}");

    // The next run (of a small model) removes the dead process's temporary file.
    kiln(&["convert", &s(&small), "-o", &s(&out)]);
    assert!(read(&out) == old);
    assert_eq!(temp_files(&out_dir), Vec::<String>::new());
    let names: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

/// Runs `args` (with `{out}` replaced by a fresh folder) twice, emptying the folder in
/// between (the same path both times: reports name their outputs); returns each run's files.
fn twice(args: &[&str]) -> [BTreeMap<String, Vec<u8>>; 2] {
    let dir = tempfile::tempdir().unwrap();
    let out = s(dir.path());
    let args: Vec<String> = args.iter().map(|a| a.replace("{out}", &out)).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    [0, 1].map(|_| {
        kiln(&args);
        let found = files(dir.path());
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                std::fs::remove_dir_all(&p).unwrap();
            } else {
                std::fs::remove_file(&p).unwrap();
            }
        }
        found
    })
}

/// Every file under `root`, by relative path, with its bytes.
fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut found = BTreeMap::new();
    for (rel, _) in tree(root) {
        let p = root.join(&rel);
        if p.is_file() {
            found.insert(rel, read(&p));
        }
    }
    found
}

fn assert_same(what: &str, [a, b]: &[BTreeMap<String, Vec<u8>>; 2]) {
    assert!(!a.is_empty(), "{what}: nothing written");
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{what}"
    );
    for (name, bytes) in a {
        assert!(bytes == &b[name], "{what}: {name} differs between runs");
    }
}

#[test]
fn optimize_is_byte_identical_run_after_run() {
    for model in ["bert_tiny_op14", "mobilenetv2_tiny"] {
        let m = s(&model_path(model));
        // Three pairs: hash-order leaks would show up as an occasional difference.
        for _ in 0..3 {
            let runs = twice(&[
                "optimize",
                &m,
                "-o",
                "{out}/m.onnx",
                "--report",
                "{out}/r.json",
            ]);
            assert_same(model, &runs);
            assert_eq!(runs[0].len(), 2);
        }
    }
}

#[test]
fn convert_with_external_data_is_byte_identical() {
    let m = s(&model_path("bert_tiny_op14"));
    let runs = twice(&["convert", &m, "-o", "{out}/m.onnx", "--external-data"]);
    assert_same("convert --external-data", &runs);
    assert_eq!(runs[0].len(), 2, "model and data file");
}

#[test]
fn run_outputs_do_not_depend_on_threads() {
    for model in ["bert_tiny_op14", "mobilenetv2_tiny"] {
        let m = s(&model_path(model));
        let data = s(&repo_root()
            .join("models")
            .join(model)
            .join("test_data_set_0"));
        let base = [
            "run",
            &m,
            "--inputs",
            &data,
            "--save-outputs",
            "{out}/o.npz",
        ];
        let one = twice(&[&base[..], &["--threads", "1"]].concat());
        assert_same(model, &one);
        let default = twice(&base);
        assert_same(model, &default);
        let four = twice(&[&base[..], &["--threads", "4"]].concat());
        assert_same(
            &format!("{model}: --threads 1 vs default vs 4"),
            &[one[0].clone(), default[0].clone()],
        );
        assert_same(
            &format!("{model}: --threads 1 vs 4"),
            &[one[0].clone(), four[0].clone()],
        );
    }
}

#[test]
fn validate_json_is_identical_run_after_run() {
    let reference = s(&model_path("bert_tiny_op14"));
    let dir = tempfile::tempdir().unwrap();
    let candidate = dir.path().join("opt.onnx");
    kiln(&["optimize", &reference, "-o", &s(&candidate)]);
    let data = s(&repo_root().join("models/bert_tiny_op14/test_data_set_0"));
    let args = [
        "validate",
        &s(&candidate),
        "--reference",
        &reference,
        "--inputs",
        &data,
        "--json",
        "--save-outputs",
        "{out}/saved",
        "--junit",
        "{out}/j.xml",
    ];
    assert_same("validate", &twice(&args));
    // The JSON on stdout, with outputs written to one folder both times.
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("{out}", &s(dir.path())))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (x, y) = (kiln(&args), kiln(&args));
    assert!(x.contains("\"outputs\""), "not the JSON report: {x}");
    assert_eq!(x, y, "validate --json differs between runs");
}

/// One entry of a file tree: a folder, or a file's length, modification time and content hash.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir,
    File { len: u64, mtime_ns: u128, hash: u64 },
}

/// Every entry under `root` (not following symlinks), by relative path.
fn tree(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path);
                out.insert(rel, Entry::Dir);
            } else {
                let mut h = DefaultHasher::new();
                h.write(&std::fs::read(&path).unwrap_or_default());
                let mtime_ns = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                out.insert(
                    rel,
                    Entry::File {
                        len: meta.len(),
                        mtime_ns,
                        hash: h.finish(),
                    },
                );
            }
        }
    }
    out
}

#[test]
fn kiln_writes_only_where_it_is_told() {
    let lib = kiln_backends::runtime::locate_library().expect("ONNX Runtime library");
    let root = tempfile::tempdir().unwrap();
    let [cwd, home, tmp, models, out] = ["cwd", "home", "tmp", "models", "out"].map(|n| {
        let p = root.path().join(n);
        std::fs::create_dir(&p).unwrap();
        p
    });
    // A copy of tiny_cnn with its test data, so its folder can be watched.
    let src = repo_root().join("models/tiny_cnn");
    std::fs::create_dir(models.join("test_data_set_0")).unwrap();
    for (rel, _) in tree(&src).into_iter().filter(|(_, e)| *e != Entry::Dir) {
        std::fs::copy(src.join(&rel), models.join(&rel)).unwrap();
    }
    let model = models.join("model.onnx");
    let data = models.join("test_data_set_0");
    let env: [(&str, &Path); 6] = [
        ("HOME", &home),
        ("XDG_CACHE_HOME", &home.join(".cache")),
        ("KILN_CACHE_DIR", &home.join("kiln-cache")),
        ("TMPDIR", &tmp),
        ("ORT_DYLIB_PATH", &lib),
        ("PATH", Path::new("/usr/bin:/bin")),
    ];
    let watched = [&cwd, &home, &tmp, &models, &out];
    let before: Vec<_> = watched.iter().map(|d| tree(d)).collect();

    let o = |name: &str| s(&out.join(name));
    let (m, d) = (s(&model), s(&data));
    let opt = o("opt.onnx");
    let runs: Vec<(Vec<String>, i32)> = vec![
        (vec!["inspect".into(), m.clone()], 0),
        (vec!["inspect".into(), m.clone(), "--json".into()], 0),
        (
            vec![
                "run".into(),
                m.clone(),
                "--inputs".into(),
                d.clone(),
                "--save-outputs".into(),
                o("run.npz"),
            ],
            0,
        ),
        (
            vec!["convert".into(), m.clone(), "-o".into(), o("conv.onnx")],
            0,
        ),
        (
            vec![
                "convert".into(),
                m.clone(),
                "-o".into(),
                o("ext.onnx"),
                "--external-data".into(),
                "--size-threshold".into(),
                "16".into(),
            ],
            0,
        ),
        (
            vec![
                "optimize".into(),
                m.clone(),
                "-o".into(),
                opt.clone(),
                "--report".into(),
                o("opt.json"),
            ],
            0,
        ),
        (
            [
                "validate",
                &opt,
                "--reference",
                &m,
                "--inputs",
                &d,
                "--json",
                "--html",
                &o("v.html"),
                "--junit",
                &o("v.xml"),
                "--save-outputs",
                &o("saved"),
            ]
            .map(String::from)
            .to_vec(),
            0,
        ),
        (
            [
                "diff",
                &o("saved/reference"),
                &o("saved/candidate"),
                "--html",
                &o("d.html"),
                "--junit",
                &o("d.xml"),
            ]
            .map(String::from)
            .to_vec(),
            0,
        ),
        // A refused input (bad output folder) must not write either.
        (
            vec![
                "optimize".into(),
                s(&cwd.join("missing.onnx")),
                "-o".into(),
                o("never.onnx"),
            ],
            2,
        ),
    ];
    for (args, code) in &runs {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        kiln_in(&cwd, &env, &args, code.to_owned());
    }

    let after: Vec<_> = watched.iter().map(|d| tree(d)).collect();
    for (i, dir) in watched[..4].iter().enumerate() {
        assert_eq!(before[i], after[i], "kiln wrote in {}", dir.display());
    }
    let written: Vec<&str> = after[4]
        .keys()
        .filter(|k| !k.contains('/'))
        .map(String::as_str)
        .collect();
    assert_eq!(
        written,
        [
            "conv.onnx",
            "d.html",
            "d.xml",
            "ext.onnx",
            "ext.onnx.data",
            "opt.json",
            "opt.onnx",
            "run.npz",
            "saved",
            "v.html",
            "v.xml",
        ],
        "outputs other than those asked for"
    );
    let saved: Vec<&str> = after[4]
        .keys()
        .filter_map(|k| k.strip_prefix("saved/"))
        .filter(|k| !k.contains('/'))
        .collect();
    // No `inputs`: those are saved only when synthetic.
    assert_eq!(saved, ["candidate", "reference"]);
}
