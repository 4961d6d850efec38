//! The model: the main graph plus what ONNX keeps around it.

use kiln_proto::onnx::{
    DeviceConfigurationProto, FunctionProto, ModelProto, OperatorSetIdProto,
    StringStringEntryProto, TrainingInfoProto,
};

use super::error::IrError;
use super::from_proto::graph_from_proto;
use super::graph::Graph;
use super::to_proto::graph_to_proto;

/// An ONNX model with its main graph converted to the IR.
///
/// Local functions, training info and device configurations are kept verbatim: Kiln does not
/// rewrite them, and keeping them is what makes load → save lossless.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// The IR version the file declares.
    pub ir_version: i64,
    /// Operator sets the model imports.
    pub opset_import: Vec<OperatorSetIdProto>,
    /// The tool that wrote the model.
    pub producer_name: String,
    /// Its version.
    pub producer_version: String,
    /// The model's namespace (reverse DNS).
    pub domain: String,
    /// The model's own version.
    pub model_version: i64,
    /// Free-form documentation.
    pub doc_string: String,
    /// Key/value annotations.
    pub metadata_props: Vec<StringStringEntryProto>,
    /// The main graph.
    pub graph: Graph,
    /// Model-local functions, verbatim.
    pub functions: Vec<FunctionProto>,
    /// Training information, verbatim.
    pub training_info: Vec<TrainingInfoProto>,
    /// Multi-device configurations, verbatim.
    pub configuration: Vec<DeviceConfigurationProto>,
}

impl Model {
    /// An empty model importing the default domain at `opset`, IR version 10 (which every
    /// supported ONNX Runtime reads); for building models in code and tests.
    pub fn new(opset: i64) -> Model {
        Model {
            ir_version: 10,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: opset,
            }],
            producer_name: "kiln".to_string(),
            producer_version: env!("CARGO_PKG_VERSION").to_string(),
            domain: String::new(),
            model_version: 0,
            doc_string: String::new(),
            metadata_props: Vec::new(),
            graph: Graph::new("main"),
            functions: Vec::new(),
            training_info: Vec::new(),
            configuration: Vec::new(),
        }
    }

    /// Converts a decoded model (external data already resolved into `raw_data`).
    pub fn from_proto(p: &ModelProto) -> Result<Model, IrError> {
        let gp = p.graph.as_ref().ok_or(IrError::MissingGraph)?;
        Ok(Model {
            ir_version: p.ir_version,
            opset_import: p.opset_import.clone(),
            producer_name: p.producer_name.clone(),
            producer_version: p.producer_version.clone(),
            domain: p.domain.clone(),
            model_version: p.model_version,
            doc_string: p.doc_string.clone(),
            metadata_props: p.metadata_props.clone(),
            graph: graph_from_proto(gp)?,
            functions: p.functions.clone(),
            training_info: p.training_info.clone(),
            configuration: p.configuration.clone(),
        })
    }

    /// Writes the model back; an unchanged model gives back an equal `ModelProto`.
    pub fn to_proto(&self) -> ModelProto {
        ModelProto {
            ir_version: self.ir_version,
            opset_import: self.opset_import.clone(),
            producer_name: self.producer_name.clone(),
            producer_version: self.producer_version.clone(),
            domain: self.domain.clone(),
            model_version: self.model_version,
            doc_string: self.doc_string.clone(),
            graph: Some(graph_to_proto(&self.graph)),
            metadata_props: self.metadata_props.clone(),
            training_info: self.training_info.clone(),
            functions: self.functions.clone(),
            configuration: self.configuration.clone(),
        }
    }

    /// The imported version of operator set `domain` (`""` and `"ai.onnx"` are the same).
    pub fn opset(&self, domain: &str) -> Option<i64> {
        let canon = |d: &str| if d == "ai.onnx" { "" } else { d }.to_string();
        let want = canon(domain);
        self.opset_import
            .iter()
            .find(|o| canon(&o.domain) == want)
            .map(|o| o.version)
    }
}
