//! `fuse-rmsnorm`: decomposed RMS normalization (Llama's `LlamaRMSNorm`, T5's, Gemma's
//! without the `1 +`) → one operator.
//!
//! The replacement is ONNX `RMSNormalization` (axis, epsilon, stash_type 1) when the model's
//! default opset is ≥ 23; below that, with [`FuseRmsNorm::allow_contrib`], ONNX Runtime's
//! `SimplifiedLayerNormalization` (axis, epsilon, stash_type 1), which ONNX Runtime registers
//! in the *default* domain, not in `com.microsoft` (its own transformer optimizer writes it
//! there, and 1.31.1 refuses a `com.microsoft` one: "not a registered function/op");
//! otherwise the graph is left alone. Kiln's opset converter stops at 21, so no upgrade is
//! made for this fusion.
//!
//! Recognized forms, anchored at the square `s = Pow(x, 2)` (exponent any one-element
//! constant 2) or `Mul(x, x)`:
//! `ReduceMean(s)` over the last `k` axes (`keepdims = 1`; axes as attribute before opset 18,
//! as constant input from 18) → `Add(·, eps)` → `Sqrt` → then either
//! `Div(1, ·)` (the TorchScript exporter's `torch.rsqrt`) or `Reciprocal` (the dynamo
//! exporter's and tf2onnx's) followed by `Mul(x, ·)`, or `Div(x, ·)` directly; then optionally
//! a `Cast` to x's own type (Hugging Face's `.to(input_dtype)` in a float32 model) and
//! optionally `Mul(·, weight)` with a constant weight. Operands of Add / Mul in either order.
//! A `Cast` into float32 before the pattern (`hidden_states.to(torch.float32)`) is outside
//! it: `x` is that Cast's output, which the residual also reads. A `Cast` that changes the
//! type after the normalization (a float16 model) ends the pattern there; the weight `Mul`
//! after it stays.
//!
//! Every intermediate must be private to the pattern; `x`'s normalized dims must be known
//! (the scale input gets exactly that shape: the weight broadcast to it, rejected if it would
//! broadcast over the leading axes, or ones when there is no weight). Element types: float32,
//! float16 and bfloat16 for `RMSNormalization`, float32 and float16 for ONNX Runtime's op (its
//! CPU kernels); float64 is left alone (stash_type float32 would compute it less precisely).

use crate::ir::{AttrValue, Attribute, Dim, Graph, Model, NodeIndex, ValueRef};
use crate::pipeline::{Changes, Pass, PassError};
use crate::tensor::{DataType, Tensor};

use super::layernorm::{reduce_axes, to_normalized};
use super::pattern::{
    add_initializer, dims, each_graph, elem_type, float_tensor, is_op, operands_of, operators,
    other_operand, out, remove_nodes, rewrite_node, scalar, scalar_keeps_shape, scalar_near,
    sole_consumer, CONST_RTOL,
};

/// Replaces decomposed RMSNorm with RMSNormalization (opset ≥ 23) or, with
/// [`allow_contrib`](FuseRmsNorm::allow_contrib), ONNX Runtime's SimplifiedLayerNormalization.
#[derive(Debug, Clone, Copy, Default)]
pub struct FuseRmsNorm {
    /// Below opset 23, emit ONNX Runtime's `SimplifiedLayerNormalization`.
    pub allow_contrib: bool,
}

/// Which operator the rewrite emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// ONNX `RMSNormalization` (opset 23).
    Standard,
    /// ONNX Runtime's `SimplifiedLayerNormalization` (default domain).
    Ort,
}

impl Target {
    fn op_type(self) -> &'static str {
        match self {
            Target::Standard => "RMSNormalization",
            Target::Ort => "SimplifiedLayerNormalization",
        }
    }

    fn takes(self, dtype: DataType) -> bool {
        match self {
            Target::Standard => matches!(
                dtype,
                DataType::Float | DataType::Float16 | DataType::Bfloat16
            ),
            Target::Ort => matches!(dtype, DataType::Float | DataType::Float16),
        }
    }
}

impl Pass for FuseRmsNorm {
    fn name(&self) -> &'static str {
        "fuse-rmsnorm"
    }

    fn run(&self, model: &mut Model) -> Result<Changes, PassError> {
        let mut changes = Changes::none();
        let target = if model.opset("").unwrap_or(0) >= 23 {
            Target::Standard
        } else if self.allow_contrib {
            Target::Ort
        } else {
            return Ok(changes);
        };
        let n = each_graph(&mut model.graph, &mut |g| {
            let mut n = 0;
            for sq in operators(g) {
                let Some(unit) = match_at(g, sq) else {
                    continue;
                };
                let Some(plan) = plan(g, &unit, target) else {
                    continue;
                };
                apply(g, &unit, plan, target);
                n += 1;
            }
            Ok(n)
        })?;
        changes.add(
            match target {
                Target::Standard => "rmsnorm",
                Target::Ort => "rmsnorm (SimplifiedLayerNormalization)",
            },
            n,
        );
        Ok(changes)
    }
}

/// A decomposed RMSNorm, matched structurally (constants and shapes not yet checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RmsNormUnit {
    /// The normalized input.
    pub x: ValueRef,
    /// The axes the ReduceMean reduces, as written.
    pub axes: Vec<i64>,
    /// The epsilon operand of the Add.
    pub eps: ValueRef,
    /// The constant weight, when the pattern ends with one.
    pub weight: Option<ValueRef>,
    /// Every node of the pattern in computation order; the last one produces the output.
    pub nodes: Vec<NodeIndex>,
}

/// Every decomposed RMSNorm of `g` (not of its subgraphs), in graph order: what pinning keeps
/// together as a unit when the fusion did not run.
pub fn decomposed_rmsnorms(g: &Graph) -> Vec<RmsNormUnit> {
    operators(g)
        .into_iter()
        .filter_map(|sq| match_at(g, sq))
        .collect()
}

/// The value `node` squares: `Pow(x, 2)` or `Mul(x, x)`.
fn squared(g: &Graph, node: NodeIndex) -> Option<ValueRef> {
    let x = g.input(node, 0)?;
    if is_op(g, node, "Pow") {
        let e = g.constant_input(node, 1)?;
        let v = e.to_f64_vec()?;
        return (v.len() == 1 && (v[0] - 2.0).abs() <= CONST_RTOL * 2.0).then_some(x);
    }
    (is_op(g, node, "Mul") && g.input(node, 1)? == x).then_some(x)
}

/// The node reading `value` when it is private to it, if it is operator `op`.
fn next_op(g: &Graph, value: ValueRef, op: &str) -> Option<(NodeIndex, usize)> {
    let (n, slot) = sole_consumer(g, value)?;
    is_op(g, n, op).then_some((n, slot))
}

/// `Mul(x, inv)` in either order, `inv` private to it.
fn times_x(g: &Graph, inv: ValueRef, x: ValueRef) -> Option<NodeIndex> {
    let (mul, _) = next_op(g, inv, "Mul")?;
    (other_operand(g, mul, inv)? == x).then_some(mul)
}

fn match_at(g: &Graph, sq: NodeIndex) -> Option<RmsNormUnit> {
    let x = squared(g, sq)?;
    let (mean, slot) = next_op(g, out(sq), "ReduceMean")?;
    if slot != 0 {
        return None;
    }
    let axes = reduce_axes(g, mean)?;
    let (add, _) = next_op(g, out(mean), "Add")?;
    let eps = other_operand(g, add, out(mean))?;
    g.constant(eps)?;
    let (sqrt, _) = next_op(g, out(add), "Sqrt")?;
    let mut nodes = vec![sq, mean, add, sqrt];
    let (next, slot) = sole_consumer(g, out(sqrt))?;
    let normed = if is_op(g, next, "Div") && slot == 1 {
        let numerator = g.input(next, 0)?;
        nodes.push(next);
        if numerator == x {
            next
        } else if scalar_near(g, numerator, 1.0, x) {
            let mul = times_x(g, out(next), x)?;
            nodes.push(mul);
            mul
        } else {
            return None;
        }
    } else if is_op(g, next, "Reciprocal") {
        nodes.push(next);
        let mul = times_x(g, out(next), x)?;
        nodes.push(mul);
        mul
    } else {
        return None;
    };
    let mut cur = out(normed);
    // A Cast to the type it already has (float32 → float32) changes nothing.
    let dtype = g.constant(eps)?.dtype();
    if let Some((cast, _)) = next_op(g, cur, "Cast") {
        let to = g.node(cast)?.attr("to").and_then(AttrValue::as_int);
        if to == Some(i64::from(dtype.onnx())) {
            nodes.push(cast);
            cur = out(cast);
        }
    }
    let mut weight = None;
    if let Some((mul, _)) = next_op(g, cur, "Mul") {
        if let Some(w) = other_operand(g, mul, cur).filter(|&w| g.constant(w).is_some()) {
            weight = Some(w);
            nodes.push(mul);
        }
    }
    Some(RmsNormUnit {
        x,
        axes,
        eps,
        weight,
        nodes,
    })
}

/// What the rewrite needs: attributes and the scale input.
struct Plan {
    axis: i64,
    eps: f32,
    scale: Scale,
}

/// The scale input: an existing constant of the normalized shape, or a new one.
enum Scale {
    Existing(ValueRef),
    New(String, Tensor),
}

/// Checks shapes, types and constants; the rewrite's attributes and scale.
fn plan(g: &Graph, u: &RmsNormUnit, target: Target) -> Option<Plan> {
    let shape: Vec<Dim> = dims(g, u.x)?;
    let norm = super::layernorm::trailing_shape(&shape, &u.axes)?;
    let k = norm.len();

    let dtype = g.constant(u.eps)?.dtype();
    if !target.takes(dtype) || elem_type(g, u.x).is_some_and(|t| t != dtype) {
        return None;
    }
    let eps = scalar(g, u.eps)?;
    if !scalar_keeps_shape(g, u.eps, u.x) || !(0.0..1.0).contains(&eps) {
        return None;
    }
    let last = *u.nodes.last()?;
    let scale = match u.weight {
        None => {
            let ones = vec![1.0; norm.iter().product()];
            let name = format!("{}_scale", g.value_name(out(last)));
            Scale::New(name, float_tensor(dtype, norm, &ones)?)
        }
        Some(w) => {
            let t = g.constant(w)?;
            if t.dtype() != dtype {
                return None;
            }
            if t.shape() == norm.as_slice() {
                Scale::Existing(w)
            } else {
                let vals = to_normalized(t, &norm, shape.len())?;
                let name = format!("{}_scale", g.value_name(w));
                Scale::New(name, float_tensor(dtype, norm, &vals)?)
            }
        }
    };
    Some(Plan {
        axis: -(k as i64),
        eps: eps as f32,
        scale,
    })
}

fn apply(g: &mut Graph, u: &RmsNormUnit, plan: Plan, target: Target) {
    let Some((&last, inner)) = u.nodes.split_last() else {
        return;
    };
    let attrs = vec![
        Attribute::new("axis", AttrValue::Int(plan.axis)),
        Attribute::new("epsilon", AttrValue::Float(plan.eps)),
        Attribute::new("stash_type", AttrValue::Int(1)),
    ];
    let old = operands_of(g, &u.nodes);
    let scale = match &plan.scale {
        Scale::Existing(v) => Some(*v),
        Scale::New(..) => None,
    };
    rewrite_node(g, last, target.op_type(), "", attrs, &[Some(u.x), scale], 1);
    remove_nodes(g, inner, &old);
    if let Scale::New(name, t) = plan.scale {
        let v = add_initializer(g, &name, t);
        g.connect(v, last, 1);
    }
}

#[cfg(test)]
mod tests;
