//! Removing activation Q/DQ pairs, for targets that compute in float (the ANE computes in
//! bfloat16 or float16): every reader of a dequantized activation reads the float value the
//! `QuantizeLinear` quantized. Integer-moving ops in between run on the float value instead.
//! Weights stay behind their `DequantizeLinear` (int8 weight compression).

use crate::ir::{Model, ValueRef};
use crate::pipeline::PassError;
use crate::tensor::DataType;

use super::cluster::activation_clusters;
use super::edit;
use super::Outcome;

/// Removes every activation Q/DQ pair of the main graph that can be removed.
pub fn strip_activations(model: &mut Model) -> Result<Outcome, PassError> {
    let clusters = activation_clusters(&model.graph);
    let g = &mut model.graph;
    let mut out = Outcome::default();
    for c in clusters {
        let c = match c {
            Ok(c) => c,
            Err((q, why)) => {
                out.kept
                    .push(format!("{} kept: {why}", g[q].label(q.index())));
                continue;
            }
        };
        let Some(x) = g.input(c.q, 0) else {
            continue;
        };
        let float = g.value_info(x).elem_type().unwrap_or(DataType::Float);
        for &dq in &c.dqs {
            let Some(src) = g.input(dq, 0) else {
                continue;
            };
            let feeds = edit::feeds(g, dq);
            let out_v = ValueRef::new(dq, 0);
            if g.outputs.iter().any(|o| o.value == out_v) {
                // A graph output keeps its name: the DequantizeLinear becomes an Identity.
                edit::to_identity(g, dq);
            } else {
                g.replace_all_uses(out_v, src);
                g.remove_node(dq);
            }
            edit::drop_unused(g, &feeds[1..]);
        }
        for &m in &c.moves {
            for s in 0..g[m].outputs.len() {
                edit::set_elem_type(g, ValueRef::new(m, s), float);
            }
        }
        let feeds = edit::feeds(g, c.q);
        g.replace_all_uses(ValueRef::new(c.q, 0), x);
        g.remove_node(c.q);
        edit::drop_unused(g, &feeds[1..]);
        out.changed += 1;
    }
    g.verify()?;
    if out.changed > 0 {
        out.notes.push(format!(
            "{} activation Q/DQ pair(s) removed: the target computes activations in float",
            out.changed
        ));
    }
    Ok(out)
}
