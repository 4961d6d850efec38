//! `fuse-gelu`: decomposed GELU → one Gelu operator.
//!
//! Recognized forms (constants matched within a relative 1e-4, each a one-element constant):
//! - erf: `x · 0.5 · (1 + Erf(x / √2))`, the inner scaling as `Div(x, 1.4142135)` or
//!   `Mul(x, 0.70710677)` (PyTorch `nn.GELU()`, HF BERT's `gelu`);
//! - tanh: `0.5 · x · (1 + Tanh(√(2/π) · (x + 0.044715 · x³)))` with `x³` as `Pow(x, 3)` or
//!   `x·x·x` (PyTorch `nn.GELU(approximate='tanh')`, GPT-2's `NewGELUActivation`).
//!
//! Both share the tail `1 + t` (an Add, or a two-input Sum) multiplied by `x` and `0.5` in any of the three orders
//! exporters produce: `(x·(1+t))·0.5`, `(x·0.5)·(1+t)`, `x·((1+t)·0.5)`. Every intermediate
//! must be private to the pattern.
//!
//! The replacement is ONNX `Gelu` (opset ≥ 20, `approximate="tanh"` for the tanh form); with
//! an older opset and [`FuseGelu::allow_contrib`], ONNX Runtime's `com.microsoft` `Gelu` /
//! `FastGelu` (the import is added); otherwise the graph is left alone.

use std::f64::consts::{FRAC_1_SQRT_2, PI, SQRT_2};

use bytes::Bytes;
use kiln_proto::onnx::OperatorSetIdProto;

use crate::ir::{AttrValue, Attribute, Graph, Model, NodeIndex, ValueRef};
use crate::pipeline::{Changes, Pass, PassError};
use crate::tensor::DataType;

use super::pattern::{
    each_graph, elem_type, is_op, operands_of, operators, other_operand, out, producer,
    remove_nodes, rewrite_node, scalar_near, sole_consumer,
};

/// The ORT contrib domain.
const MS_DOMAIN: &str = "com.microsoft";

/// Replaces decomposed GELU with Gelu.
#[derive(Debug, Clone, Copy, Default)]
pub struct FuseGelu {
    /// With an opset below 20, emit ONNX Runtime's `com.microsoft` Gelu / FastGelu.
    pub allow_contrib: bool,
}

/// Which operator the rewrite emits.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Standard,
    Contrib,
}

/// A matched GELU: its input, the pattern's nodes (the last one last), and its form.
struct Gelu {
    x: ValueRef,
    nodes: Vec<NodeIndex>,
    tanh: bool,
    /// The type of the `1` in `1 + t`, which is x's type (Add takes one type).
    dtype: Option<DataType>,
}

impl Pass for FuseGelu {
    fn name(&self) -> &'static str {
        "fuse-gelu"
    }

    fn run(&self, model: &mut Model) -> Result<Changes, PassError> {
        let mut changes = Changes::none();
        let target = if model.opset("").unwrap_or(0) >= 20 {
            Target::Standard
        } else if self.allow_contrib {
            Target::Contrib
        } else {
            return Ok(changes);
        };
        let (mut erf, mut tanh) = (0, 0);
        each_graph(&mut model.graph, &mut |g| {
            for node in operators(g) {
                let Some(m) = match_erf(g, node).or_else(|| match_tanh(g, node)) else {
                    continue;
                };
                if replace(g, &m, target) {
                    if m.tanh {
                        tanh += 1;
                    } else {
                        erf += 1;
                    }
                }
            }
            Ok(0)
        })?;
        if target == Target::Contrib && erf + tanh > 0 && model.opset(MS_DOMAIN).is_none() {
            model.opset_import.push(OperatorSetIdProto {
                domain: MS_DOMAIN.to_string(),
                version: 1,
            });
        }
        changes.add("gelu (erf)", erf);
        changes.add("gelu (tanh)", tanh);
        Ok(changes)
    }
}

fn replace(g: &mut Graph, m: &Gelu, target: Target) -> bool {
    let Some((&last, inner)) = m.nodes.split_last() else {
        return false;
    };
    let Some(dtype) = elem_type(g, m.x).or(m.dtype) else {
        return false;
    };
    let ok = match target {
        Target::Standard => dtype.is_float(),
        Target::Contrib => matches!(dtype, DataType::Float | DataType::Float16),
    };
    if !ok {
        return false;
    }
    let (op, domain, attrs) = match (target, m.tanh) {
        (Target::Standard, false) => ("Gelu", "", vec![]),
        (Target::Standard, true) => (
            "Gelu",
            "",
            vec![Attribute::new(
                "approximate",
                AttrValue::String(Bytes::from_static(b"tanh")),
            )],
        ),
        (Target::Contrib, false) => ("Gelu", MS_DOMAIN, vec![]),
        (Target::Contrib, true) => ("FastGelu", MS_DOMAIN, vec![]),
    };
    let old = operands_of(g, &m.nodes);
    rewrite_node(g, last, op, domain, attrs, &[Some(m.x)], 1);
    remove_nodes(g, inner, &old);
    true
}

/// The erf form, anchored at its Erf node.
fn match_erf(g: &Graph, erf: NodeIndex) -> Option<Gelu> {
    if !is_op(g, erf, "Erf") {
        return None;
    }
    let d = g.input(erf, 0)?;
    if sole_consumer(g, d) != Some((erf, 0)) {
        return None;
    }
    let scaled = d.node;
    let x = if is_op(g, scaled, "Div") {
        let (x, c) = (g.input(scaled, 0)?, g.input(scaled, 1)?);
        scalar_near(g, c, SQRT_2, x).then_some(x)?
    } else if is_op(g, scaled, "Mul") {
        let (a, b) = (g.input(scaled, 0)?, g.input(scaled, 1)?);
        if scalar_near(g, b, FRAC_1_SQRT_2, a) {
            a
        } else if scalar_near(g, a, FRAC_1_SQRT_2, b) {
            b
        } else {
            return None;
        }
    } else {
        return None;
    };
    let mut nodes = vec![scaled, erf];
    let dtype = tail(g, x, out(erf), &mut nodes)?;
    Some(Gelu {
        x,
        nodes,
        tanh: false,
        dtype,
    })
}

/// The tanh form, anchored at its Tanh node.
fn match_tanh(g: &Graph, tanh: NodeIndex) -> Option<Gelu> {
    if !is_op(g, tanh, "Tanh") {
        return None;
    }
    // u = √(2/π) · inner
    let u = g.input(tanh, 0)?;
    if sole_consumer(g, u) != Some((tanh, 0)) {
        return None;
    }
    let scale = producer(g, u, "Mul")?;
    let sqrt_2_pi = (2.0 / PI).sqrt();
    let (a, b) = (g.input(scale, 0)?, g.input(scale, 1)?);
    let inner = if scalar_near(g, b, sqrt_2_pi, a) {
        a
    } else if scalar_near(g, a, sqrt_2_pi, b) {
        b
    } else {
        return None;
    };
    // inner = x + k, k = 0.044715 · x³
    let sum = producer(g, inner, "Add")?;
    if sole_consumer(g, inner).map(|c| c.0) != Some(scale) {
        return None;
    }
    let (s0, s1) = (g.input(sum, 0)?, g.input(sum, 1)?);
    let (x, k_nodes) = [(s0, s1), (s1, s0)]
        .into_iter()
        .find_map(|(x, k)| cubic_term(g, x, k, sum).map(|n| (x, n)))?;
    let mut nodes = k_nodes;
    nodes.extend([sum, scale, tanh]);
    let dtype = tail(g, x, out(tanh), &mut nodes)?;
    Some(Gelu {
        x,
        nodes,
        tanh: true,
        dtype,
    })
}

/// When `k = 0.044715 · x³` read only by `reader`: the nodes computing it.
fn cubic_term(g: &Graph, x: ValueRef, k: ValueRef, reader: NodeIndex) -> Option<Vec<NodeIndex>> {
    let kmul = producer(g, k, "Mul")?;
    if sole_consumer(g, k).map(|c| c.0) != Some(reader) {
        return None;
    }
    let (a, b) = (g.input(kmul, 0)?, g.input(kmul, 1)?);
    let cube = if scalar_near(g, b, 0.044715, x) {
        a
    } else if scalar_near(g, a, 0.044715, x) {
        b
    } else {
        return None;
    };
    if sole_consumer(g, cube).map(|c| c.0) != Some(kmul) {
        return None;
    }
    let c = cube.node;
    let mut nodes = Vec::new();
    if is_op(g, c, "Pow") {
        let (base, e) = (g.input(c, 0)?, g.input(c, 1)?);
        if base != x || !scalar_near(g, e, 3.0, x) {
            return None;
        }
    } else if is_op(g, c, "Mul") {
        // x · (x·x) or (x·x) · x
        let sq = other_operand(g, c, x)?;
        let sqn = producer(g, sq, "Mul")?;
        let squares_x = g.input(sqn, 0) == Some(x) && g.input(sqn, 1) == Some(x);
        if sq == x || !squares_x || sole_consumer(g, sq).map(|u| u.0) != Some(c) {
            return None;
        }
        nodes.push(sqn);
    } else {
        return None;
    }
    nodes.extend([c, kmul]);
    Some(nodes)
}

/// From `t` (Erf or Tanh output): `1 + t`, then `· x` and `· 0.5` in any order. Appends the
/// nodes, the last one last; gives the element type of the `1`.
fn tail(
    g: &Graph,
    x: ValueRef,
    t: ValueRef,
    nodes: &mut Vec<NodeIndex>,
) -> Option<Option<DataType>> {
    let (plus, _) = sole_consumer(g, t)?;
    // ONNX's own Gelu function body writes the `1 + t` as a two-input Sum.
    let adds = is_op(g, plus, "Add") || (is_op(g, plus, "Sum") && g.inputs(plus).len() == 2);
    let one = other_operand(g, plus, t)?;
    if !adds || !scalar_near(g, one, 1.0, t) {
        return None;
    }
    let dtype = g.constant(one).map(|c| c.dtype());
    let a = out(plus);
    let (m1, _) = sole_consumer(g, a)?;
    if !is_op(g, m1, "Mul") {
        return None;
    }
    let o = other_operand(g, m1, a)?;
    let half = |v: ValueRef| scalar_near(g, v, 0.5, x);
    let last_with = |node: NodeIndex, want: &dyn Fn(ValueRef) -> bool| -> Option<NodeIndex> {
        let v = out(node);
        let (next, _) = sole_consumer(g, v)?;
        (is_op(g, next, "Mul") && want(other_operand(g, next, v)?)).then_some(next)
    };
    if o == x {
        // (x · (1+t)) · 0.5
        let m2 = last_with(m1, &half)?;
        nodes.extend([plus, m1, m2]);
    } else if half(o) {
        // x · ((1+t) · 0.5)
        let m2 = last_with(m1, &|v| v == x)?;
        nodes.extend([plus, m1, m2]);
    } else {
        // (x · 0.5) · (1+t)
        let h = producer(g, o, "Mul")?;
        if other_operand(g, h, x).is_none_or(|c| !half(c))
            || sole_consumer(g, o).map(|u| u.0) != Some(m1)
        {
            return None;
        }
        nodes.extend([plus, h, m1]);
    }
    Some(dtype)
}

#[cfg(test)]
// The literals are the ones exporters write, not the exact constants.
#[allow(clippy::approx_constant)]
mod tests {
    use super::*;
    use crate::fuse::testutil::Builder;

    #[derive(Clone, Copy)]
    enum Order {
        XFirst,
        HalfFirst,
        HalfOnSum,
    }

    /// x·0.5·(1+t) with t built by `inner` from x.
    fn with_tail(b: &mut Builder, x: ValueRef, t: ValueRef, order: Order) -> ValueRef {
        let one = b.scalar(1.0);
        let a = b.op("Add", &[t, one], vec![]);
        let half = b.scalar(0.5);
        match order {
            Order::XFirst => {
                let m = b.op("Mul", &[x, a], vec![]);
                b.op("Mul", &[m, half], vec![])
            }
            Order::HalfFirst => {
                let h = b.op("Mul", &[x, half], vec![]);
                b.op("Mul", &[h, a], vec![])
            }
            Order::HalfOnSum => {
                let h = b.op("Mul", &[a, half], vec![]);
                b.op("Mul", &[x, h], vec![])
            }
        }
    }

    fn erf_gelu(opset: i64, div: bool, order: Order) -> Builder {
        let mut b = Builder::new(opset);
        let x = b.input("x", &[2, 8]);
        let d = if div {
            let c = b.scalar(1.4142135);
            b.op("Div", &[x, c], vec![])
        } else {
            let c = b.scalar(0.70710677);
            b.op("Mul", &[c, x], vec![])
        };
        let e = b.op("Erf", &[d], vec![]);
        let y = with_tail(&mut b, x, e, order);
        b.output(y);
        b
    }

    fn tanh_gelu(opset: i64, pow: bool, order: Order) -> Builder {
        let mut b = Builder::new(opset);
        let x = b.input("x", &[2, 8]);
        let cube = if pow {
            let three = b.scalar(3.0);
            b.op("Pow", &[x, three], vec![])
        } else {
            let sq = b.op("Mul", &[x, x], vec![]);
            b.op("Mul", &[sq, x], vec![])
        };
        let kappa = b.scalar(0.044715);
        let k = b.op("Mul", &[kappa, cube], vec![]);
        let inner = b.op("Add", &[x, k], vec![]);
        let beta = b.scalar(0.7978846);
        let u = b.op("Mul", &[inner, beta], vec![]);
        let t = b.op("Tanh", &[u], vec![]);
        let y = with_tail(&mut b, x, t, order);
        b.output(y);
        b
    }

    const ORDERS: [Order; 3] = [Order::XFirst, Order::HalfFirst, Order::HalfOnSum];

    fn only_gelu(b: &Builder) {
        let ops: Vec<String> = b
            .model
            .graph
            .nodes()
            .filter(|(_, n)| n.is_operator())
            .map(|(_, n)| n.op_type().to_string())
            .collect();
        assert_eq!(ops.len(), 1, "{ops:?}");
        // Constants of the pattern are gone too.
        assert_eq!(b.model.graph.node_count(), 2);
    }

    #[test]
    fn fuses_erf_forms_at_opset_20() {
        for div in [true, false] {
            for order in ORDERS {
                let mut b = erf_gelu(20, div, order);
                let name = b
                    .model
                    .graph
                    .value_name(b.model.graph.outputs[0].value)
                    .to_string();
                assert_eq!(b.run(&FuseGelu::default()).get("gelu (erf)"), 1);
                only_gelu(&b);
                let out = b.model.graph.outputs[0].value;
                assert_eq!(b.model.graph.value_name(out), name);
                assert_eq!(b.model.graph[out.node].op_type(), "Gelu");
                assert!(b.model.graph[out.node].attr("approximate").is_none());
            }
        }
    }

    #[test]
    fn fuses_tanh_forms_at_opset_20() {
        for pow in [true, false] {
            for order in ORDERS {
                let mut b = tanh_gelu(20, pow, order);
                assert_eq!(b.run(&FuseGelu::default()).get("gelu (tanh)"), 1);
                only_gelu(&b);
                let node = b.model.graph.outputs[0].value.node;
                assert_eq!(
                    b.model.graph[node]
                        .attr("approximate")
                        .and_then(|a| a.as_str()),
                    Some("tanh")
                );
            }
        }
    }

    #[test]
    fn type_comes_from_the_literals_when_x_has_none() {
        // GPT-2's order with x an undeclared intermediate: the last Mul has no constant.
        let mut b = Builder::new(17);
        let input = b.input("x", &[2, 8]);
        let x = b.op("Relu", &[input], vec![]);
        let half = b.scalar(0.5);
        let h = b.op("Mul", &[x, half], vec![]);
        let three = b.scalar(3.0);
        let p = b.op("Pow", &[x, three], vec![]);
        let kappa = b.scalar(0.044715);
        let k = b.op("Mul", &[p, kappa], vec![]);
        let s = b.op("Add", &[x, k], vec![]);
        let beta = b.scalar(0.7978846);
        let u = b.op("Mul", &[s, beta], vec![]);
        let t = b.op("Tanh", &[u], vec![]);
        let one = b.scalar(1.0);
        let a = b.op("Add", &[t, one], vec![]);
        let y = b.op("Mul", &[h, a], vec![]);
        b.output(y);
        let c = b.run(&FuseGelu {
            allow_contrib: true,
        });
        assert_eq!(c.get("gelu (tanh)"), 1);
        assert_eq!(b.count("FastGelu"), 1);
    }

    #[test]
    fn two_input_sum_counts_as_add() {
        let mut b = Builder::new(20);
        let x = b.input("x", &[2, 8]);
        let c = b.scalar(1.4142135);
        let d = b.op("Div", &[x, c], vec![]);
        let e = b.op("Erf", &[d], vec![]);
        let one = b.scalar(1.0);
        let a = b.op("Sum", &[one, e], vec![]);
        let half = b.scalar(0.5);
        let h = b.op("Mul", &[half, x], vec![]);
        let y = b.op("Mul", &[h, a], vec![]);
        b.output(y);
        assert_eq!(b.run(&FuseGelu::default()).get("gelu (erf)"), 1);
        only_gelu(&b);
    }

    #[test]
    fn low_opset_uses_contrib_only_when_allowed() {
        let mut b = erf_gelu(17, true, Order::XFirst);
        assert!(b.run(&FuseGelu::default()).is_empty());
        let c = b.run(&FuseGelu {
            allow_contrib: true,
        });
        assert_eq!(c.get("gelu (erf)"), 1);
        let node = b.model.graph.outputs[0].value.node;
        assert_eq!(b.model.graph[node].domain(), "com.microsoft");
        assert_eq!(b.model.opset("com.microsoft"), Some(1));

        let mut b = tanh_gelu(14, false, Order::HalfFirst);
        let c = b.run(&FuseGelu {
            allow_contrib: true,
        });
        assert_eq!(c.get("gelu (tanh)"), 1);
        let node = b.model.graph.outputs[0].value.node;
        assert_eq!(b.model.graph[node].op_type(), "FastGelu");
    }

    #[test]
    fn leaves_shared_intermediates_and_wrong_constants_alone() {
        // The Erf output is also a graph output.
        let mut b = erf_gelu(20, true, Order::XFirst);
        let (erf, _) = b
            .model
            .graph
            .nodes()
            .find(|(_, n)| n.op_type() == "Erf")
            .unwrap();
        b.output(out(erf));
        assert!(b.run(&FuseGelu::default()).is_empty());
        // 1 + erf read twice.
        let mut b = erf_gelu(20, true, Order::HalfFirst);
        let (add, _) = b
            .model
            .graph
            .nodes()
            .find(|(_, n)| n.op_type() == "Add")
            .unwrap();
        b.op("Relu", &[out(add)], vec![]);
        assert!(b.run(&FuseGelu::default()).is_empty());
        // 0.5 replaced by 0.6.
        let mut b = erf_gelu(20, true, Order::XFirst);
        b.set_scalar(0.5, 0.6);
        assert!(b.run(&FuseGelu::default()).is_empty());
        // Wrong kappa in the tanh form.
        let mut b = tanh_gelu(20, true, Order::XFirst);
        b.set_scalar(0.044715, 0.05);
        assert!(b.run(&FuseGelu::default()).is_empty());
    }
}
