use super::*;
use crate::ir::{Model, Node, ValueInfo, ValueRef};
use crate::tensor::DataType;

/// Adds one Identity per call until `limit` nodes exist, counting what it added.
struct GrowUntil(usize);

impl Pass for GrowUntil {
    fn name(&self) -> &'static str {
        "grow"
    }
    fn run(&self, model: &mut Model) -> Result<Changes, PassError> {
        let mut changes = Changes::none();
        if model.graph.stats().nodes < self.0 {
            let out = model.graph.outputs[0].value;
            let name = model.graph.fresh_name("grown");
            let id = model
                .graph
                .add_node(Node::op("Identity", "", &[name.as_str()]));
            model.graph.connect(out, id, 0);
            model.graph.outputs[0].value = ValueRef::new(id, 0);
            changes.add("added", 1);
        }
        Ok(changes)
    }
}

fn tiny_model() -> Model {
    let mut model = Model::new(17);
    let x = model
        .graph
        .add_node(Node::input(ValueInfo::tensor("x", DataType::Float, &[])));
    model.graph.outputs.push(crate::ir::GraphOutput {
        value: ValueRef::new(x, 0),
        info: ValueInfo::new("x"),
    });
    model
}

#[test]
fn fixed_point_repeats_until_no_change_and_merges_counts() {
    let mut model = tiny_model();
    let pipeline = Pipeline::new()
        .verify_each(true)
        .until_fixed_point(vec![Box::new(GrowUntil(3))]);
    let records = pipeline.run(&mut model).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].changes.get("added"), 3);
    assert_eq!(records[0].nodes_before, 0);
    assert_eq!(records[0].nodes_after, 3);
    assert_eq!(model.graph.stats().nodes, 3);
}

#[test]
fn fixed_point_is_bounded() {
    let mut model = tiny_model();
    let pipeline = Pipeline::new().until_fixed_point(vec![Box::new(GrowUntil(1000))]);
    let records = pipeline.run(&mut model).unwrap();
    assert_eq!(records[0].changes.get("added"), 16);
}

#[test]
fn changes_display() {
    let mut c = Changes::none();
    assert_eq!(c.to_string(), "no change");
    c.add("removed", 2);
    c.add("folded", 1);
    c.add("ignored", 0);
    assert_eq!(c.to_string(), "1 folded, 2 removed");
}

/// Removes the last Identity before the graph output, if any.
struct ShrinkOne;

impl Pass for ShrinkOne {
    fn name(&self) -> &'static str {
        "shrink"
    }
    fn run(&self, model: &mut Model) -> Result<Changes, PassError> {
        let mut changes = Changes::none();
        let out = model.graph.outputs[0].value;
        if model.graph[out.node].op_type() == "Identity" {
            if let Some(src) = model.graph.input(out.node, 0) {
                model.graph.outputs[0].value = src;
                model.graph.remove_node(out.node);
                changes.add("removed", 1);
            }
        }
        Ok(changes)
    }
}

/// Reports nothing and changes nothing.
struct Idle;

impl Pass for Idle {
    fn name(&self) -> &'static str {
        "idle"
    }
    fn run(&self, _: &mut Model) -> Result<Changes, PassError> {
        Ok(Changes::none())
    }
}

#[test]
fn fixed_point_node_counts_are_each_passes_own() {
    let mut model = tiny_model();
    Pipeline::new()
        .until_fixed_point(vec![Box::new(GrowUntil(4))])
        .run(&mut model)
        .unwrap();
    let records = Pipeline::new()
        .verify_each(true)
        .until_fixed_point(vec![Box::new(ShrinkOne), Box::new(Idle)])
        .run(&mut model)
        .unwrap();
    // shrink removes one Identity per round; idle, running between, must not be credited.
    assert_eq!((records[0].nodes_before, records[0].nodes_after), (4, 0));
    assert_eq!(records[0].changes.get("removed"), 4);
    assert_eq!(records[1].nodes_before, records[1].nodes_after);
}
