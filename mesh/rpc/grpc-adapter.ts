// The one bridge between protobuf-es descriptors and grpc-js: a DescService becomes a grpc-js
// service definition whose (de)serializers are protobuf-es toBinary/fromBinary. Server and client
// both use it, so a contract change needs nothing but `npm run gen`.
import { create, fromBinary, toBinary, type DescMessage, type DescMethod, type DescService, type MessageInitShape } from "@bufbuild/protobuf";
import type { MethodDefinition, ServiceDefinition } from "@grpc/grpc-js";

export const methodPath = (method: DescMethod): string => `/${method.parent.typeName}/${method.name}`;

// A view of toBinary's fresh bytes, not a copy of them.
const serializer = (schema: DescMessage) => (value: object) => {
  const bytes = toBinary(schema, create(schema, value as MessageInitShape<DescMessage>));
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
};
const deserializer = (schema: DescMessage) => (bytes: Buffer) => fromBinary(schema, bytes);

export function grpcMethodDefinition(method: DescMethod): MethodDefinition<object, object> {
  return {
    path: methodPath(method),
    requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
    responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
    requestSerialize: serializer(method.input),
    requestDeserialize: deserializer(method.input),
    responseSerialize: serializer(method.output),
    responseDeserialize: deserializer(method.output),
    originalName: method.localName,
  };
}

export function grpcServiceDefinition(service: DescService): ServiceDefinition {
  return Object.fromEntries(service.methods.map((m) => [m.localName, grpcMethodDefinition(m)]));
}
