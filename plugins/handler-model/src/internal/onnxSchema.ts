/**
 * The part of the ONNX protobuf schema (onnx/onnx.proto, ONNX IR) that describing a model
 * needs, as a protobufjs reflection root. Field numbers are ONNX's; fields left out (tensor
 * data, attributes) are skipped by the reader without being copied.
 */
import protobuf from "protobufjs"

export const onnxRoot = protobuf.Root.fromJSON({
  nested: {
    onnx: {
      nested: {
        ModelProto: {
          fields: {
            irVersion: { type: "int64", id: 1 },
            producerName: { type: "string", id: 2 },
            producerVersion: { type: "string", id: 3 },
            domain: { type: "string", id: 4 },
            modelVersion: { type: "int64", id: 5 },
            docString: { type: "string", id: 6 },
            graph: { type: "GraphProto", id: 7 },
            opsetImport: { rule: "repeated", type: "OperatorSetIdProto", id: 8 },
            metadataProps: { rule: "repeated", type: "StringStringEntryProto", id: 14 }
          }
        },
        OperatorSetIdProto: {
          fields: { domain: { type: "string", id: 1 }, version: { type: "int64", id: 2 } }
        },
        StringStringEntryProto: {
          fields: { key: { type: "string", id: 1 }, value: { type: "string", id: 2 } }
        },
        GraphProto: {
          fields: {
            node: { rule: "repeated", type: "NodeProto", id: 1 },
            name: { type: "string", id: 2 },
            initializer: { rule: "repeated", type: "TensorProto", id: 5 },
            input: { rule: "repeated", type: "ValueInfoProto", id: 11 },
            output: { rule: "repeated", type: "ValueInfoProto", id: 12 }
          }
        },
        NodeProto: {
          fields: { opType: { type: "string", id: 4 }, domain: { type: "string", id: 7 } }
        },
        TensorProto: {
          fields: {
            dims: { rule: "repeated", type: "int64", id: 1 },
            dataType: { type: "int32", id: 2 },
            name: { type: "string", id: 8 }
          }
        },
        ValueInfoProto: {
          fields: { name: { type: "string", id: 1 }, type: { type: "TypeProto", id: 2 } }
        },
        TypeProto: {
          fields: {
            tensorType: { type: "TypeProtoTensor", id: 1 },
            sequenceType: { type: "TypeProtoSequence", id: 4 },
            mapType: { type: "TypeProtoMap", id: 5 }
          }
        },
        TypeProtoTensor: {
          fields: { elemType: { type: "int32", id: 1 }, shape: { type: "TensorShapeProto", id: 2 } }
        },
        TypeProtoSequence: { fields: { elemType: { type: "TypeProto", id: 1 } } },
        TypeProtoMap: { fields: { keyType: { type: "int32", id: 1 }, valueType: { type: "TypeProto", id: 2 } } },
        TensorShapeProto: {
          fields: { dim: { rule: "repeated", type: "Dimension", id: 1 } }
        },
        Dimension: {
          fields: { dimValue: { type: "int64", id: 1 }, dimParam: { type: "string", id: 2 } }
        }
      }
    }
  }
})

export const ModelProto = onnxRoot.lookupType("onnx.ModelProto")

/** ONNX TensorProto.DataType names by number. */
export const ELEM_TYPES: Readonly<Record<number, string>> = {
  1: "float32",
  2: "uint8",
  3: "int8",
  4: "uint16",
  5: "int16",
  6: "int32",
  7: "int64",
  8: "string",
  9: "bool",
  10: "float16",
  11: "float64",
  12: "uint32",
  13: "uint64",
  14: "complex64",
  15: "complex128",
  16: "bfloat16",
  17: "float8e4m3fn",
  18: "float8e4m3fnuz",
  19: "float8e5m2",
  20: "float8e5m2fnuz",
  21: "uint4",
  22: "int4",
  23: "float4e2m1"
}
