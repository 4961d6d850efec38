//! Tests of the pass itself: refusals, imports, subgraphs, no-op steps.

use super::adapters::testing::*;
use super::*;
use crate::ir::{AttrValue, Attribute, Graph, Node, ValueRef};

#[test]
fn downgrade_and_out_of_range_opsets_are_refused() {
    let mut m = model(13);
    let e = upgrade_err(&mut m, 11);
    assert!(e.contains("opset 13") && e.contains("not supported"), "{e}");
    assert!(upgrade_err(&mut model(6), 13).contains("below opset 7"));
    assert!(upgrade_err(&mut model(13), 22).contains("at most 21"));
    assert_eq!(
        UpgradeOpset { target: 13 }.run(&mut m).unwrap(),
        Changes::none()
    );
}

#[test]
fn import_and_ir_version_are_raised_and_other_domains_kept() {
    let mut m = model(9);
    m.ir_version = 4;
    m.opset_import.push(kiln_proto::onnx::OperatorSetIdProto {
        domain: "com.microsoft".into(),
        version: 1,
    });
    let x = input(&mut m, "x", &[2]);
    // A custom-domain node named like a default op is not touched.
    let ms = m.graph.add_node(
        Node::op("Squeeze", "ms", &["ms_out"])
            .with_domain("com.microsoft")
            .with_attr("axes", ints(&[0])),
    );
    m.graph.connect(x, ms, 0);
    output(&mut m.graph, out(ms, 0));
    let changes = upgrade(&mut m, 17);
    assert_eq!(changes.get("opset raised"), 1);
    assert_eq!(m.ir_version, 8);
    assert_eq!(m.opset("com.microsoft"), Some(1));
    assert!(m.graph[ms].attr("axes").is_some());
}

#[test]
fn subgraphs_are_converted_with_model_wide_fresh_names() {
    let mut m = model(11);
    let x = input(&mut m, "x", &[1, 2]);
    let cond = input(&mut m, "cond", &[]);
    // The main graph already has a value named like the constant the body will get.
    init(&mut m, "sq_axes", crate::tensor::Tensor::scalar(0i64));
    let mut body = Graph::new("then");
    let outer = ValueRef::new(body.add_node(Node::outer("x")), 0);
    let sq = op(
        &mut body,
        "Squeeze",
        "sq",
        &[Some(outer)],
        1,
        vec![("axes", ints(&[0]))],
    );
    output(&mut body, out(sq, 0));
    let mut els = Graph::new("else");
    let outer2 = ValueRef::new(els.add_node(Node::outer("x")), 0);
    let sq2 = op(
        &mut els,
        "Squeeze",
        "sq2",
        &[Some(outer2)],
        1,
        vec![("axes", ints(&[0]))],
    );
    output(&mut els, out(sq2, 0));
    let mut iff = Node::op("If", "if", &["y"]);
    iff.attributes.push(Attribute::new(
        "then_branch",
        AttrValue::Graph(Box::new(body)),
    ));
    iff.attributes.push(Attribute::new(
        "else_branch",
        AttrValue::Graph(Box::new(els)),
    ));
    let iff = m.graph.add_node(iff);
    m.graph.connect(cond, iff, 0);
    m.graph.capture(x, iff);
    output(&mut m.graph, out(iff, 0));
    upgrade(&mut m, 13);
    let then = m.graph[iff].subgraphs().next().unwrap();
    assert_eq!(const_ints(then, sq, 1), vec![0]);
    assert_eq!(then.value_name(then.input(sq, 1).unwrap()), "sq_axes_1");
    assert!(then[sq].attr("axes").is_none());
}

#[test]
fn upgrade_target_for_fusions() {
    let m = model(13);
    assert_eq!(
        upgrade_target_for(&m, &[("LayerNormalization", 17)]),
        Some(17)
    );
    assert_eq!(
        upgrade_target_for(&m, &[("LayerNormalization", 17), ("Gelu", 20)]),
        Some(20)
    );
    assert!(needs_upgrade_for(&m, &[("Gelu", 20)]));
    assert!(!needs_upgrade_for(
        &model(17),
        &[("LayerNormalization", 17)]
    ));
    assert!(!needs_upgrade_for(&m, &[("Attention", 23)]));
    assert!(!needs_upgrade_for(&m, &[]));
}
