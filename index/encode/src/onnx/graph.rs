//! A small builder over the ONNX protobuf types: named initializers, nodes
//! with fresh output names, typed graph inputs and outputs.

use candle_onnx::onnx::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, NodeProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};

/// A node attribute value.
pub enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
}

/// One dimension of a graph input or output: fixed, or named and dynamic.
pub enum Dim {
    Fixed(i64),
    Named(&'static str),
}

/// Appends nodes and initializers to one graph; every value has a unique name.
#[derive(Default)]
pub struct GraphBuilder {
    graph: GraphProto,
    next_value: usize,
}

impl GraphBuilder {
    /// A float initializer with the given dimensions (row-major data).
    pub fn f32_tensor(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(name, dims, DataType::Float, raw)
    }

    pub fn i8_tensor(&mut self, name: &str, dims: &[usize], data: &[i8]) -> String {
        let raw = data.iter().map(|&v| v as u8).collect();
        self.initializer(name, dims, DataType::Int8, raw)
    }

    pub fn i64_tensor(&mut self, name: &str, dims: &[usize], data: &[i64]) -> String {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(name, dims, DataType::Int64, raw)
    }

    /// A float scalar constant.
    pub fn scalar(&mut self, name: &str, value: f32) -> String {
        self.f32_tensor(name, &[], &[value])
    }

    fn initializer(&mut self, name: &str, dims: &[usize], kind: DataType, raw: Vec<u8>) -> String {
        self.graph.initializer.push(TensorProto {
            name: name.to_string(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: kind as i32,
            raw_data: raw,
            ..Default::default()
        });
        name.to_string()
    }

    /// Adds an `op` node of the default ONNX domain; returns its output's name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> String {
        self.node_in("", op, inputs, attrs)
    }

    /// Adds a node of operator domain `domain` (e.g. `com.microsoft`).
    pub fn node_in(
        &mut self,
        domain: &str,
        op: &str,
        inputs: &[&str],
        attrs: &[(&str, Attr)],
    ) -> String {
        let [output] = self.node_outputs(domain, op, inputs, attrs);
        output
    }

    /// Adds a node with `N` outputs; returns their names.
    pub fn node_outputs<const N: usize>(
        &mut self,
        domain: &str,
        op: &str,
        inputs: &[&str],
        attrs: &[(&str, Attr)],
    ) -> [String; N] {
        self.next_value += 1;
        let id = self.next_value;
        let outputs: [String; N] = std::array::from_fn(|i| match N {
            1 => format!("{op}_{id}"),
            _ => format!("{op}_{id}_{i}"),
        });
        self.graph.node.push(NodeProto {
            name: format!("{op}_{id}"),
            op_type: op.to_string(),
            domain: domain.to_string(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.to_vec(),
            attribute: attrs
                .iter()
                .map(|(name, value)| attribute(name, value))
                .collect(),
            ..Default::default()
        });
        outputs
    }

    /// Publishes `value` under `name` (an `Identity` node, which ORT folds away).
    pub fn publish(&mut self, value: &str, name: &str) {
        self.graph.node.push(NodeProto {
            name: name.to_string(),
            op_type: "Identity".into(),
            input: vec![value.to_string()],
            output: vec![name.to_string()],
            ..Default::default()
        });
    }

    pub fn input(&mut self, name: &str, kind: DataType, dims: &[Dim]) -> String {
        self.graph.input.push(value_info(name, kind, dims));
        name.to_string()
    }

    pub fn output(&mut self, name: &str, kind: DataType, dims: &[Dim]) {
        self.graph.output.push(value_info(name, kind, dims));
    }

    pub fn finish(mut self, name: &str) -> GraphProto {
        self.graph.name = name.to_string();
        self.graph
    }
}

fn attribute(name: &str, value: &Attr) -> AttributeProto {
    let mut attr = AttributeProto {
        name: name.to_string(),
        ..Default::default()
    };
    match value {
        Attr::Int(i) => {
            attr.r#type = AttributeType::Int as i32;
            attr.i = *i;
        }
        Attr::Float(f) => {
            attr.r#type = AttributeType::Float as i32;
            attr.f = *f;
        }
        Attr::Ints(ints) => {
            attr.r#type = AttributeType::Ints as i32;
            attr.ints = ints.clone();
        }
    }
    attr
}

fn value_info(name: &str, kind: DataType, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Fixed(n) => tensor_shape_proto::dimension::Value::DimValue(*n),
                Dim::Named(s) => tensor_shape_proto::dimension::Value::DimParam(s.to_string()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: kind as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
