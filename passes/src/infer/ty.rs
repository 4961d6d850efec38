//! What inference knows about a value ([`Ty`]), its conversion from and to `TypeProto`, and
//! the merge of an inferred type into a declared one (the declared one always wins).

use kiln_proto::onnx::tensor_shape_proto::{dimension, Dimension};
use kiln_proto::onnx::{type_proto, TensorShapeProto, TypeProto};

use crate::ir::Dim;
use crate::tensor::DataType;

/// A tensor's element type and shape, each possibly unknown.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TensorTy {
    /// Element type.
    pub elem: Option<DataType>,
    /// Dims, or `None` when even the rank is unknown.
    pub shape: Option<Vec<Dim>>,
}

/// What is known about a value.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Ty {
    /// Nothing.
    #[default]
    Unknown,
    /// A tensor.
    Tensor(TensorTy),
    /// A sequence of tensors of this element type.
    Seq(Option<DataType>),
    /// Another declared type (map, optional, sparse …), carried verbatim.
    Other(TypeProto),
}

impl Ty {
    /// A tensor type.
    pub fn tensor(elem: Option<DataType>, shape: Option<Vec<Dim>>) -> Ty {
        Ty::Tensor(TensorTy { elem, shape })
    }

    /// A tensor of known element type and dims.
    pub fn known(elem: DataType, shape: Vec<Dim>) -> Ty {
        Ty::tensor(Some(elem), Some(shape))
    }

    /// The element type of a tensor.
    pub fn elem(&self) -> Option<DataType> {
        match self {
            Ty::Tensor(t) => t.elem,
            _ => None,
        }
    }

    /// The dims of a tensor, if its rank is known.
    pub fn shape(&self) -> Option<&[Dim]> {
        match self {
            Ty::Tensor(t) => t.shape.as_deref(),
            _ => None,
        }
    }

    /// The same type with another shape (keeps the element type; `Unknown` stays a tensor).
    pub fn with_shape(&self, shape: Option<Vec<Dim>>) -> Ty {
        Ty::tensor(self.elem(), shape)
    }

    /// Reads a declared type.
    pub fn from_proto(p: Option<&TypeProto>) -> Ty {
        let Some(tp) = p else {
            return Ty::Unknown;
        };
        match tp.value.as_ref() {
            None => Ty::Unknown,
            Some(type_proto::Value::TensorType(t)) => Ty::Tensor(TensorTy {
                elem: DataType::from_onnx(t.elem_type),
                shape: t.shape.as_ref().map(dims_from_proto),
            }),
            Some(type_proto::Value::SequenceType(s)) => {
                match s.elem_type.as_deref().and_then(|e| e.value.as_ref()) {
                    Some(type_proto::Value::TensorType(t)) => {
                        Ty::Seq(DataType::from_onnx(t.elem_type))
                    }
                    _ => Ty::Other(tp.clone()),
                }
            }
            Some(_) => Ty::Other(tp.clone()),
        }
    }

    /// The `TypeProto` to write, or `None` when there is nothing worth writing (a tensor
    /// whose element type is unknown is never written: ONNX Runtime refuses UNDEFINED).
    pub fn to_proto(&self) -> Option<TypeProto> {
        let value = match self {
            Ty::Unknown => return None,
            Ty::Tensor(t) => type_proto::Value::TensorType(tensor_proto(t)?),
            Ty::Seq(elem) => type_proto::Value::SequenceType(Box::new(type_proto::Sequence {
                elem_type: Some(Box::new(TypeProto {
                    denotation: String::new(),
                    value: Some(type_proto::Value::TensorType(tensor_proto(&TensorTy {
                        elem: *elem,
                        shape: None,
                    })?)),
                })),
            })),
            Ty::Other(p) => return Some(p.clone()),
        };
        Some(TypeProto {
            denotation: String::new(),
            value: Some(value),
        })
    }
}

fn tensor_proto(t: &TensorTy) -> Option<type_proto::Tensor> {
    Some(type_proto::Tensor {
        elem_type: t.elem?.onnx(),
        shape: t.shape.as_ref().map(|dims| TensorShapeProto {
            dim: dims
                .iter()
                .map(|d| Dimension {
                    denotation: String::new(),
                    value: match d {
                        Dim::Known(n) => Some(dimension::Value::DimValue(*n)),
                        Dim::Symbolic(s) => Some(dimension::Value::DimParam(s.clone())),
                        Dim::Unknown => None,
                    },
                })
                .collect(),
        }),
    })
}

fn dims_from_proto(s: &TensorShapeProto) -> Vec<Dim> {
    s.dim
        .iter()
        .map(|d| match &d.value {
            Some(dimension::Value::DimValue(n)) if *n >= 0 => Dim::Known(*n),
            Some(dimension::Value::DimParam(p)) if !p.is_empty() => Dim::Symbolic(p.clone()),
            _ => Dim::Unknown,
        })
        .collect()
}

/// The result of merging an inferred type into a declared one.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    /// The type to keep.
    pub ty: Ty,
    /// Inference disagreed with the declaration somewhere (the declaration was kept).
    pub conflict: bool,
}

/// Merges `inferred` into `declared`: the declaration is kept wherever it says something;
/// inference fills what it leaves open (a missing element type or shape, an unknown dim).
pub fn merge(declared: &Ty, inferred: &Ty) -> Merged {
    let keep = |conflict| Merged {
        ty: declared.clone(),
        conflict,
    };
    match (declared, inferred) {
        (_, Ty::Unknown) => keep(false),
        (Ty::Unknown, _) => Merged {
            ty: inferred.clone(),
            conflict: false,
        },
        (Ty::Tensor(d), Ty::Tensor(i)) => {
            let mut conflict = false;
            let elem = match (d.elem, i.elem) {
                (Some(a), Some(b)) => {
                    conflict |= a != b;
                    Some(a)
                }
                (a, b) => a.or(b),
            };
            let shape = match (&d.shape, &i.shape) {
                (Some(ds), Some(is)) if ds.len() == is.len() => Some(
                    ds.iter()
                        .zip(is)
                        .map(|(a, b)| match (a, b) {
                            (Dim::Unknown, b) => b.clone(),
                            (Dim::Known(x), Dim::Known(y)) => {
                                conflict |= x != y;
                                a.clone()
                            }
                            _ => a.clone(),
                        })
                        .collect(),
                ),
                (Some(ds), Some(_)) => {
                    conflict = true;
                    Some(ds.clone())
                }
                (a, b) => a.clone().or_else(|| b.clone()),
            };
            Merged {
                ty: Ty::Tensor(TensorTy { elem, shape }),
                conflict,
            }
        }
        (Ty::Seq(d), Ty::Seq(i)) => match (d, i) {
            (Some(a), Some(b)) => keep(a != b),
            (None, Some(_)) => Merged {
                ty: inferred.clone(),
                conflict: false,
            },
            _ => keep(false),
        },
        (Ty::Other(_), _) => keep(false),
        // A declared tensor inferred as a sequence (or the other way round).
        _ => keep(true),
    }
}

/// How much is known: element type known (1) plus rank known (1) plus each fixed or named dim.
pub fn knowledge(ty: &Ty) -> (bool, usize) {
    match ty {
        Ty::Tensor(t) => (
            t.elem.is_some(),
            t.shape.as_ref().map_or(0, |s| {
                1 + s.iter().filter(|d| !matches!(d, Dim::Unknown)).count()
            }),
        ),
        Ty::Seq(e) => (e.is_some(), 0),
        Ty::Other(_) => (true, 0),
        Ty::Unknown => (false, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(s: &str) -> Dim {
        Dim::Symbolic(s.into())
    }

    #[test]
    fn declared_wins_and_unknown_dims_are_refined() {
        let declared = Ty::known(DataType::Float, vec![sym("N"), Dim::Unknown, Dim::Known(4)]);
        let inferred = Ty::known(
            DataType::Float,
            vec![Dim::Known(2), Dim::Known(3), Dim::Known(4)],
        );
        let m = merge(&declared, &inferred);
        assert!(!m.conflict);
        assert_eq!(
            m.ty,
            Ty::known(
                DataType::Float,
                vec![sym("N"), Dim::Known(3), Dim::Known(4)]
            )
        );
    }

    #[test]
    fn disagreements_are_conflicts_and_keep_the_declaration() {
        let declared = Ty::known(DataType::Float, vec![Dim::Known(5)]);
        for inferred in [
            Ty::known(DataType::Int64, vec![Dim::Known(5)]),
            Ty::known(DataType::Float, vec![Dim::Known(6)]),
            Ty::known(DataType::Float, vec![Dim::Known(5), Dim::Known(1)]),
            Ty::Seq(Some(DataType::Float)),
        ] {
            let m = merge(&declared, &inferred);
            assert!(m.conflict, "{inferred:?}");
            assert_eq!(m.ty, declared);
        }
    }

    #[test]
    fn proto_round_trip_and_untyped_tensors_are_not_written() {
        let t = Ty::known(
            DataType::Int64,
            vec![sym("batch"), Dim::Unknown, Dim::Known(3)],
        );
        assert_eq!(Ty::from_proto(t.to_proto().as_ref()), t);
        let s = Ty::Seq(Some(DataType::Float));
        assert_eq!(Ty::from_proto(s.to_proto().as_ref()), s);
        assert_eq!(Ty::tensor(None, Some(vec![])).to_proto(), None);
        assert_eq!(Ty::Unknown.to_proto(), None);
    }
}
