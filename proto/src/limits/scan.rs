//! A walk over the protobuf wire format of a `ModelProto` that counts nodes, subgraph depth
//! and the bytes typed tensor fields will decode to, without decoding anything.
//!
//! It runs before prost so a model claiming millions of nodes or a 10,000-deep nest of If
//! bodies is refused before decoding allocates for it or recurses into it. The walk keeps its
//! own stack (bounded by the depth limit) instead of recursing. Malformed bytes just end the
//! walk early: prost then reports them properly.

use super::Limits;

/// What [`scan`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireCounts {
    /// `NodeProto` messages anywhere (graphs, subgraphs, functions).
    pub nodes: u64,
    /// Deepest subgraph nesting seen (the main graph is 0), up to the limit plus one.
    pub max_depth: u64,
    /// Set when a subgraph lies deeper than the limit (the walk stops there).
    pub depth_exceeded: bool,
    /// Bytes the typed tensor fields will occupy once decoded.
    pub decoded_bytes: u64,
}

/// The messages whose fields matter for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Model,
    TrainingInfo,
    Function,
    Graph,
    Node,
    Attribute,
    Tensor,
}

/// The message a length-delimited field of `kind` holds, if it is one the walk enters.
fn child(kind: Kind, field: u64) -> Option<Kind> {
    use Kind::*;
    Some(match (kind, field) {
        (Model, 7) => Graph,
        (Model, 20) => TrainingInfo,
        (Model, 25) => Function,
        (TrainingInfo, 1 | 2) => Graph,
        (Function, 7) => Node,
        (Graph, 1) => Node,
        (Graph, 5) => Tensor,
        (Node, 5) => Attribute,
        (Attribute, 6 | 11) => Graph,
        (Attribute, 5 | 10) => Tensor,
        _ => return None,
    })
}

/// Decoded width of a TensorProto typed field, and whether its wire values are varints.
fn typed_field(field: u64) -> Option<(u64, bool)> {
    match field {
        4 => Some((4, false)),  // float_data, fixed32
        5 => Some((4, true)),   // int32_data
        7 => Some((8, true)),   // int64_data
        10 => Some((8, false)), // double_data, fixed64
        11 => Some((8, true)),  // uint64_data
        _ => None,
    }
}

/// Reads a varint at `*pos`, advancing it; `None` when the bytes end or it is too long.
fn varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Walks `bytes` as a `ModelProto`, stopping below `limits.max_subgraph_depth`.
pub fn scan(bytes: &[u8], limits: &Limits) -> WireCounts {
    let mut counts = WireCounts::default();
    walk(bytes, limits, &mut counts);
    counts
}

fn walk(bytes: &[u8], limits: &Limits, counts: &mut WireCounts) -> Option<()> {
    // (end of the message, its kind, subgraph depth)
    let mut stack: Vec<(usize, Kind, u64)> = vec![(bytes.len(), Kind::Model, 0)];
    let mut pos = 0usize;
    while let Some(&(end, kind, depth)) = stack.last() {
        if pos >= end {
            stack.pop();
            continue;
        }
        let key = varint(bytes, &mut pos)?;
        let (field, wire) = (key >> 3, key & 7);
        let typed = (kind == Kind::Tensor).then(|| typed_field(field)).flatten();
        match wire {
            0 => {
                varint(bytes, &mut pos)?;
                if let Some((width, _)) = typed {
                    counts.decoded_bytes = counts.decoded_bytes.saturating_add(width);
                }
            }
            1 | 5 => {
                pos = pos.checked_add(if wire == 1 { 8 } else { 4 })?;
                if let Some((width, _)) = typed {
                    counts.decoded_bytes = counts.decoded_bytes.saturating_add(width);
                }
            }
            2 => {
                let len = usize::try_from(varint(bytes, &mut pos)?).ok()?;
                let body_end = pos.checked_add(len).filter(|&e| e <= end)?;
                if let Some(next) = child(kind, field) {
                    let next_depth = if kind == Kind::Attribute {
                        depth + 1
                    } else {
                        depth
                    };
                    counts.max_depth = counts.max_depth.max(next_depth);
                    if next_depth > limits.max_subgraph_depth {
                        counts.depth_exceeded = true;
                        return None;
                    }
                    if next == Kind::Node {
                        counts.nodes += 1;
                    }
                    stack.push((body_end, next, next_depth));
                    continue; // the body is walked next, from `pos`
                }
                if let Some((width, is_varint)) = typed {
                    let body = bytes.get(pos..body_end)?;
                    let values = if is_varint {
                        body.iter().filter(|&&b| b & 0x80 == 0).count() as u64
                    } else {
                        len as u64 / width
                    };
                    counts.decoded_bytes = counts
                        .decoded_bytes
                        .saturating_add(values.saturating_mul(width));
                }
                pos = body_end;
            }
            _ => return None, // groups are not used by ONNX; prost will complain
        }
        if pos > end {
            return None;
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::onnx::{
        attribute_proto::AttributeType, AttributeProto, GraphProto, ModelProto, NodeProto,
        TensorProto,
    };

    fn nested(depth: usize) -> GraphProto {
        let mut g = GraphProto {
            node: vec![NodeProto::default()],
            ..Default::default()
        };
        for _ in 0..depth {
            g = GraphProto {
                node: vec![NodeProto {
                    op_type: "If".into(),
                    attribute: vec![AttributeProto {
                        name: "then_branch".into(),
                        r#type: AttributeType::Graph as i32,
                        g: Some(g),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                initializer: vec![TensorProto {
                    int64_data: vec![1, 300],
                    float_data: vec![1.0],
                    ..Default::default()
                }],
                ..Default::default()
            };
        }
        g
    }

    fn model(g: GraphProto) -> Vec<u8> {
        ModelProto {
            ir_version: 8,
            graph: Some(g),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn counts_nodes_depth_and_typed_bytes() {
        let counts = scan(&model(nested(3)), &Limits::default());
        assert_eq!(counts.nodes, 4);
        assert_eq!(counts.max_depth, 3);
        assert!(!counts.depth_exceeded);
        // Three initializers of two int64 and one float each.
        assert_eq!(counts.decoded_bytes, 3 * (16 + 4));
    }

    #[test]
    fn stops_past_the_depth_limit() {
        let limits = Limits {
            max_subgraph_depth: 2,
            ..Limits::default()
        };
        let counts = scan(&model(nested(3)), &limits);
        assert!(counts.depth_exceeded);
        assert_eq!(counts.max_depth, 3);
    }

    #[test]
    fn malformed_bytes_end_the_walk() {
        let mut bytes = model(nested(2));
        bytes.truncate(bytes.len() / 2);
        let counts = scan(&bytes, &Limits::default());
        assert!(!counts.depth_exceeded);
        assert!(scan(&[0xff; 16], &Limits::default()).nodes == 0);
    }
}
