//! Shape subgraphs of the exported transformers under `kiln optimize`.
//!
//! With dynamic dims, symbolic folding must turn the attention reshapes' computed targets
//! into constants (`[0, 0, heads, -1]`); with static input shapes (`--input-shape`), no
//! `Shape` / `Size` may remain and every Reshape target must be a constant. Either way the
//! optimized models must compute what the originals do in ONNX Runtime (rtol 1e-4, atol 1e-5).

use std::path::{Path, PathBuf};

use kiln_backends::compare::Tolerance;
use kiln_passes::ir::{Dim, Graph, Model, NodeKind};
use kiln_passes::optimize::{optimize, OptimizeOptions};
use kiln_proto::SaveOptions;
use kiln_tests::{check_cases, model_cases, Case, TransformError};

const TOL: Tolerance = Tolerance {
    rtol: 1e-4,
    atol: 1e-5,
};

/// The transformer exports and their inputs (the test data is batch 2, sequence 16).
const MODELS: [(&str, &[&str]); 3] = [
    (
        "bert_tiny_op14",
        &["input_ids", "attention_mask", "token_type_ids"],
    ),
    (
        "bert_tiny_op17",
        &["input_ids", "attention_mask", "token_type_ids"],
    ),
    ("gpt2_tiny", &["input_ids", "attention_mask"]),
];

/// Reshapes that still read their own input's `Shape` under dynamic dims, and why: GPT-2's
/// Conv1D flattens the merged heads with `x.view(-1, x.size(-1))`; `x.size(-1)` is heads ×
/// head size, and the heads axis of the attention probabilities cannot be tied to the
/// query's (the causal mask it is added to is built from run-time sizes). Each must still
/// read its Shape, so the list cannot go stale.
const STILL_DYNAMIC: [&str; 2] = [
    "gpt2_tiny: /model/h.0/attn/c_proj/Reshape",
    "gpt2_tiny: /model/h.1/attn/c_proj/Reshape",
];

/// Reshapes splitting or merging attention heads (a rank-4 input or a 4-element target)
/// whose target is still computed.
fn computed_head_reshapes(g: &Graph) -> Vec<String> {
    g.nodes()
        .filter(|(_, n)| n.op_type() == "Reshape")
        .filter(|(i, _)| {
            let (Some(data), Some(target)) = (g.input(*i, 0), g.input(*i, 1)) else {
                return false;
            };
            let rank = g.value_info(data).shape().map(|d| d.len());
            let len = g
                .value_info(target)
                .shape()
                .and_then(|d| d.first().cloned());
            g.constant(target).is_none()
                && (rank == Some(4) || (len == Some(Dim::Known(4)) && rank != Some(1)))
        })
        .map(|(_, n)| n.name.clone())
        .collect()
}

fn case(name: &str) -> Case {
    let cases = model_cases();
    let found = cases.into_iter().find(|c| c.name == name);
    found.unwrap_or_else(|| panic!("models/{name} is missing from model_cases()"))
}

fn static_options(inputs: &[&str]) -> OptimizeOptions {
    OptimizeOptions {
        input_shapes: inputs
            .iter()
            .map(|n| (n.to_string(), vec![2, 16]))
            .collect(),
        ..Default::default()
    }
}

fn load(path: &Path) -> (kiln_proto::LoadedModel, Model) {
    let loaded = kiln_proto::load_model(path).expect("model loads");
    let model = Model::from_proto(&loaded.model).expect("graph builds");
    (loaded, model)
}

fn count(g: &Graph, op: &str) -> usize {
    g.stats().op_histogram.get(op).copied().unwrap_or(0)
}

/// Reshapes whose target is computed (not a constant).
fn computed_targets(g: &Graph) -> Vec<String> {
    g.nodes()
        .filter(|(_, n)| n.op_type() == "Reshape")
        .filter(|(i, _)| g.input(*i, 1).is_some_and(|t| g.constant(t).is_none()))
        .map(|(_, n)| n.name.clone())
        .collect()
}

/// True when `value`'s computation reaches a `Shape` of `data` (within a few steps).
fn reads_shape_of(
    g: &Graph,
    value: kiln_passes::ir::ValueRef,
    data: kiln_passes::ir::ValueRef,
    depth: usize,
) -> bool {
    let Some(node) = g.node(value.node) else {
        return false;
    };
    if !matches!(node.kind, NodeKind::Op { .. }) || depth > 8 {
        return false;
    }
    if node.op_type() == "Shape" {
        return g.input(value.node, 0) == Some(data);
    }
    g.inputs(value.node)
        .into_iter()
        .flatten()
        .any(|v| reads_shape_of(g, v, data, depth + 1))
}

/// Optimizes each case with `opts` and checks it in ONNX Runtime; panics on a failure.
fn check_in_ort(cases: &[Case], opts: &OptimizeOptions) {
    let transform = |case: &Case, dir: &Path| -> Result<PathBuf, TransformError> {
        let (loaded, mut model) = load(&case.model);
        optimize(&mut model, opts).map_err(|e| e.to_string())?;
        let out = dir.join("model.onnx");
        kiln_proto::save_loaded(&loaded, &model.to_proto(), &out, &SaveOptions::default())
            .map_err(|e| e.to_string())?;
        Ok(out)
    };
    let report = check_cases(cases, TOL, &transform);
    println!(
        "{}",
        report.render("optimized transformers in ONNX Runtime")
    );
    assert_eq!(report.passed(), cases.len(), "{:?}", report.failures);
}

#[test]
fn attention_reshapes_become_constants_under_dynamic_dims() {
    let mut cases = Vec::new();
    for (name, _) in MODELS {
        let c = case(name);
        let (_, mut model) = load(&c.model);
        let shapes_before = count(&model.graph, "Shape");
        let report = optimize(&mut model, &OptimizeOptions::default()).expect("optimize runs");
        model.graph.verify().expect("verifies");
        let g = &model.graph;
        let made_static: usize = report
            .records
            .iter()
            .filter_map(|r| {
                r.changes
                    .iter()
                    .find(|(k, _)| *k == "shape input made static")
            })
            .map(|(_, n)| n)
            .sum();
        let computed = computed_targets(g);
        println!(
            "{name}: Shape {shapes_before} → {}, shape inputs made static {made_static}, \
             Reshape targets still computed {} of {}: {computed:?}",
            count(g, "Shape"),
            computed.len(),
            count(g, "Reshape"),
        );
        assert!(
            made_static >= 6,
            "{name}: the attention reshapes stay computed"
        );
        assert!(count(g, "Shape") < shapes_before, "{name}");
        assert_eq!(computed_head_reshapes(g), Vec::<String>::new(), "{name}");
        for (idx, node) in g.nodes().filter(|(_, n)| n.op_type() == "Reshape") {
            let (Some(data), Some(target)) = (g.input(idx, 0), g.input(idx, 1)) else {
                continue;
            };
            let id = format!("{name}: {}", node.name);
            assert_eq!(
                reads_shape_of(g, target, data, 0),
                STILL_DYNAMIC.contains(&id.as_str()),
                "{id}: reads its own input's Shape (or is listed in STILL_DYNAMIC and does not)"
            );
        }
        cases.push(c);
    }
    check_in_ort(&cases, &OptimizeOptions::default());
}

#[test]
fn static_input_shapes_fold_every_shape_subgraph() {
    for (name, inputs) in MODELS {
        let c = case(name);
        let (_, mut model) = load(&c.model);
        let nodes_before = model.graph.stats().nodes;
        optimize(&mut model, &static_options(inputs)).expect("optimize runs");
        model.graph.verify().expect("verifies");
        let g = &model.graph;
        println!(
            "{name} with static inputs: nodes {nodes_before} → {}, Shape {}, Reshape {}",
            g.stats().nodes,
            count(g, "Shape"),
            count(g, "Reshape")
        );
        assert_eq!(count(g, "Shape") + count(g, "Size"), 0, "{name}");
        assert_eq!(computed_targets(g), Vec::<String>::new(), "{name}");
        check_in_ort(&[c], &static_options(inputs));
    }
}

#[test]
fn an_unknown_input_name_is_an_error_naming_the_inputs() {
    let (_, mut model) = load(&case("bert_tiny_op14").model);
    let err = optimize(&mut model, &static_options(&["ids"]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("'ids'") && err.contains("input_ids: int64[batch,sequence]"),
        "{err}"
    );
}
