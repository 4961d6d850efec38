//! `kiln profile list|show|check|init` end to end: built-ins resolve and re-parse, a user
//! profile extending hexagon resolves, and every wrong profile is one located error, exit 2.

use std::path::Path;

use kiln_backends::profile::{self, Dtype, Family, Granularity};
use kiln_tests::kiln;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Asserts a refusal: exit 2, one `kiln: error:` line starting with `where_` (file:line:col),
/// holding every `expect`, nothing on stdout.
fn refused(args: &[&str], where_: &str, expect: &[&str]) {
    let (code, stdout, stderr) = kiln(args);
    assert_eq!(code, 2, "{args:?}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    let prefix = format!("kiln: error: {where_}");
    assert!(
        stderr.starts_with(&prefix),
        "{args:?}: want {prefix:?}, got {stderr}"
    );
    for e in expect {
        assert!(stderr.contains(e), "{args:?}: expected {e:?} in {stderr}");
    }
    assert!(stdout.is_empty(), "{args:?} printed {stdout}");
}

#[test]
fn list_names_every_builtin_with_its_family() {
    let (code, out, err) = kiln(&["profile", "list"]);
    assert_eq!(code, 0, "{err}");
    let names: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        names,
        [
            "ane",
            "ane-fp16",
            "ane-int4",
            "edgetpu",
            "hexagon",
            "neon",
            "neon-int4"
        ]
    );
    let hexagon = out.lines().find(|l| l.starts_with("hexagon ")).unwrap();
    assert!(
        hexagon.contains(" hexagon ") && hexagon.contains("QNN"),
        "{hexagon}"
    );
    let fp16 = out.lines().find(|l| l.starts_with("ane-fp16")).unwrap();
    assert!(fp16.contains(" ane "), "{fp16}");
}

#[test]
fn show_of_every_builtin_reparses_to_the_same_profile() {
    let dir = tempfile::tempdir().unwrap();
    for name in profile::builtin_names() {
        let (code, out, err) = kiln(&["profile", "show", name]);
        assert_eq!(code, 0, "{name}: {err}");
        // ane-int4 warns on purpose: its growing KV cache needs flexible shapes, which Core ML
        // runs on the Neural Engine only at their default (its file says why).
        let expected = if name == "ane-int4" {
            "kiln: warning: builtin:ane-int4:39:3: shapes.static: Core ML runs range-flexible \
             shapes on the Neural Engine only at their default\n"
        } else {
            ""
        };
        assert_eq!(err, expected, "{name}");
        assert!(!out.contains("extends:"), "{name}: {out}");
        let again = profile::parse(&out, "shown.yaml").unwrap();
        assert_eq!(
            again.profile,
            profile::load(name).unwrap().profile,
            "{name}"
        );
        // The shown file stands alone: `check` accepts it with no parent.
        let file = write(dir.path(), &format!("{name}.yaml"), &out);
        let (code, ok, err) = kiln(&["profile", "check", &file]);
        assert_eq!(code, 0, "{name}: {err}");
        assert!(
            ok.starts_with(&format!("OK: {file}: profile '{name}'")),
            "{ok}"
        );
        assert_eq!(ok.lines().count(), 1, "{ok}");
    }
}

#[test]
fn user_profile_extending_hexagon_with_uint16_activations() {
    let dir = tempfile::tempdir().unwrap();
    let base = write(
        dir.path(),
        "hexagon16.yaml",
        "# 16-bit activations where 8 bits lose too much\nname: hexagon16\nextends: hexagon\n\
         quantization:\n  activations:\n    dtype: uint16\nvalidation:\n  min_sqnr: 30\n",
    );
    let (code, ok, err) = kiln(&["profile", "check", &base]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        ok.trim_end(),
        format!("OK: {base}: profile 'hexagon16' for hexagon ({base} <- builtin:hexagon)")
    );

    // A second file extends the first by relative path: the chain has three links.
    let sub = dir.path().join("boards");
    std::fs::create_dir(&sub).unwrap();
    let leaf = write(
        &sub,
        "board.yaml",
        "extends: ../hexagon16.yaml\ncalibration: {samples: 256}\n",
    );
    let (code, shown, err) = kiln(&["profile", "show", &leaf]);
    assert_eq!(code, 0, "{err}");
    assert!(shown.contains("builtin:hexagon"), "{shown}");
    let p = profile::parse(&shown, "shown.yaml").unwrap().profile;
    let hexagon = profile::load("hexagon").unwrap().profile;
    assert_eq!(p.name, "board");
    assert_eq!(p.family, Family::Hexagon);
    assert_eq!(p.quantization.activations.dtype, Dtype::Uint16);
    assert_eq!(p.validation.min_sqnr, Some(30.0));
    assert_eq!(p.calibration.samples, 256);
    // Everything else is hexagon's.
    assert_eq!(p.quantization.weights, hexagon.quantization.weights);
    assert_eq!(
        p.quantization.weights.per_op["Conv"].granularity,
        Some(Granularity::PerChannel)
    );
    assert_eq!(
        p.quantization.fixed_outputs,
        hexagon.quantization.fixed_outputs
    );
    assert_eq!(p.quantization.min_real_range, Some(1e-4));
    assert_eq!(p.ops, hexagon.ops);
    assert_eq!(p.shapes, hexagon.shapes);
    assert_eq!(
        p.quant_config().activations.dtype,
        kiln_passes::quant::QuantType::Uint16
    );
}

#[test]
fn init_prints_a_commented_file_that_checks() {
    let dir = tempfile::tempdir().unwrap();
    for parent in ["hexagon", "neon", "neon-int4"] {
        let (code, text, err) = kiln(&["profile", "init", "--extends", parent]);
        assert_eq!(code, 0, "{err}");
        assert!(text.starts_with("# A Kiln hardware profile."), "{text}");
        assert!(text.contains(&format!("\nextends: {parent}\n")), "{text}");
        let file = write(dir.path(), &format!("my-{parent}.yaml"), &text);
        let (code, ok, err) = kiln(&["profile", "check", &file]);
        assert_eq!(code, 0, "{err}");
        assert!(ok.contains(&format!("profile 'my-{parent}'")), "{ok}");
        // The header documents the block-wise keys and their values.
        let header: String = text
            .lines()
            .take_while(|l| !l.starts_with("name:"))
            .collect();
        for doc in [
            "quantization.weight_only: true",
            "granularity per-tensor | per-channel | per-block",
            "int4 | int8 (symmetric: true) or uint4 | uint8 (symmetric: false",
            "block_size  32 | 64 | 128",
            "format      qdq",
            "| matmulnbits",
            "method      rtn",
            "lm_head     true | false",
            "embeddings  true | false",
            "min_elements N",
        ] {
            assert!(header.contains(doc), "{parent}: {doc:?} not in\n{header}");
        }
    }
    refused(
        &["profile", "init", "--extends", "hexagn"],
        "no profile named 'hexagn'",
        &["did you mean 'hexagon'?"],
    );
}

#[test]
fn warnings_go_to_stderr_and_keep_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "signed.yaml",
        "extends: neon\nquantization:\n  activations: {dtype: int8}\n",
    );
    let (code, ok, err) = kiln(&["profile", "check", &file]);
    assert_eq!(code, 0, "{err}");
    assert!(ok.trim_end().ends_with(", 1 warning"), "{ok}");
    assert!(
        err.starts_with(&format!(
            "kiln: warning: {file}:3:17: quantization.activations.dtype: int8 activations without i8mm"
        )),
        "{err}"
    );
}

#[test]
fn each_wrong_profile_is_one_located_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: Vec<(String, String, Vec<&str>)> = vec![
        (
            write(
                d,
                "unknown_key.yaml",
                "extends: hexagon\nquantization:\n  activations:\n    dtyp: uint16\n",
            ),
            ":4:5: quantization.activations.dtyp: unknown key; did you mean 'dtype'?".into(),
            vec![],
        ),
        (
            write(
                d,
                "wrong_type.yaml",
                "extends: neon\ncalibration:\n  samples: lots\n",
            ),
            ":3:12: calibration.samples: invalid type".into(),
            vec!["expected u32"],
        ),
        (
            write(
                d,
                "op_typo.yaml",
                "extends: edgetpu\nops:\n  supported:\n    Sigmod: {}\n",
            ),
            ":4:5: ops.supported.Sigmod: unknown operator 'Sigmod'; did you mean 'Sigmoid'?".into(),
            vec![],
        ),
        (
            write(
                d,
                "int4.yaml",
                "extends: edgetpu\nquantization:\n  activations:\n    dtype: int4\n",
            ),
            ":4:5: quantization.activations.dtype: int4 activations on edgetpu".into(),
            vec!["8-bit integers only"],
        ),
        (
            write(
                d,
                "bad_value.yaml",
                "extends: hexagon\nquantization:\n  weights:\n    granularity: per-row\n",
            ),
            ":4:18: quantization.weights.granularity: unknown value 'per-row'".into(),
            vec!["per-tensor, per-channel"],
        ),
        (
            write(
                d,
                "int4_per_channel.yaml",
                "extends: neon\nquantization:\n  weights:\n    dtype: int4\n",
            ),
            ":4:5: quantization.weights.dtype: int4 weights are per-block only".into(),
            vec!["set granularity: per-block"],
        ),
        (
            write(
                d,
                "block48.yaml",
                "extends: neon-int4\nquantization:\n  weights:\n    block_size: 48\n",
            ),
            ":4:5: quantization.weights.block_size: 48: block-wise weights take 32, 64 or 128"
                .into(),
            vec![],
        ),
        (
            write(
                d,
                "ane_nbits.yaml",
                "extends: ane-int4\nquantization:\n  weights:\n    format: matmulnbits\n",
            ),
            ":4:5: quantization.weights.format: matmulnbits on ane".into(),
            vec!["use qdq"],
        ),
        (
            write(d, "extends_unknown.yaml", "name: x\nextends: hexgon\n"),
            ":2:1: extends: unknown profile 'hexgon'".into(),
            vec!["did you mean 'hexagon'?"],
        ),
        (
            write(d, "extends_missing.yaml", "extends: base/nowhere.yaml\n"),
            ":1:1: extends: ".into(),
            vec!["nowhere.yaml: cannot read"],
        ),
        (
            write(d, "syntax.yaml", "extends: neon\nops: {supported: [\n"),
            ":3:1: did not find expected node content".into(),
            vec![],
        ),
        (
            write(d, "no_family.yaml", "name: lonely\n"),
            ":1:1: family: missing".into(),
            vec![],
        ),
        (
            write(
                d,
                "bad_range.yaml",
                "extends: neon\nvalidation:\n  min_cosine: 1.5\n",
            ),
            ":3:3: validation.min_cosine: 1.5 is outside -1..1".into(),
            vec![],
        ),
    ];
    for (file, at, expect) in &cases {
        refused(&["profile", "check", file], &format!("{file}{at}"), expect);
    }

    // A cycle, found where it closes.
    let a = write(d, "a.yaml", "extends: b.yaml\n");
    write(d, "b.yaml", "family: cpu\nextends: a.yaml\n");
    let b = d.join("b.yaml").display().to_string();
    refused(
        &["profile", "check", &a],
        &format!("{b}:2:1: extends: cycle: "),
        &["a.yaml → ", "b.yaml → "],
    );

    // A missing file on the command line.
    let missing = d.join("missing.yaml").display().to_string();
    refused(
        &["profile", "check", &missing],
        &format!("{missing}: cannot read: "),
        &[],
    );
    refused(
        &["profile", "show", "hexagn"],
        "no profile named 'hexagn'",
        &["did you mean 'hexagon'?"],
    );
}
