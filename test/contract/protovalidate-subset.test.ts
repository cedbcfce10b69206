// Our buf/validate/validate.proto is a subset written by this project. The validator reads rules
// by number, so every message, field, enum value and extension we declare must match the schema
// compiled into the installed @bufbuild/protovalidate: same numbers, types, labels and oneofs.
import { describe, expect, it } from "vitest";
import type { DescField, DescMessage } from "@bufbuild/protobuf";
import { file_buf_validate_validate as ours } from "../../gen/buf/validate/validate_pb.js";
import { file_buf_validate_validate as theirs } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";

const shape = (f: DescField) => ({
  number: f.number,
  kind: f.fieldKind,
  scalar: "scalar" in f ? f.scalar : undefined,
  message: "message" in f ? f.message?.typeName : undefined,
  enum: "enum" in f ? f.enum?.typeName : undefined,
  oneof: f.oneof?.name,
  label: f.proto.label,
});

describe("buf/validate subset", () => {
  const theirMessages = new Map(theirs.messages.map((m) => [m.typeName, m]));

  it("declares only messages the real schema has, with identical fields", () => {
    expect(ours.messages.length).toBeGreaterThan(5);
    for (const message of ours.messages) {
      const real = theirMessages.get(message.typeName) as DescMessage | undefined;
      expect(real, message.typeName).toBeDefined();
      for (const field of message.fields) {
        const twin = real!.fields.find((f) => f.name === field.name);
        expect(twin, `${message.typeName}.${field.name}`).toBeDefined();
        expect(shape(field), `${message.typeName}.${field.name}`).toEqual(shape(twin!));
      }
    }
  });

  it("declares the same extensions on the same options", () => {
    for (const ext of ours.extensions) {
      const twin = theirs.extensions.find((e) => e.typeName === ext.typeName);
      expect(twin, ext.typeName).toBeDefined();
      expect([ext.number, ext.extendee.typeName, ext.message?.typeName]).toEqual([twin!.number, twin!.extendee.typeName, twin!.message?.typeName]);
    }
  });

  it("declares enum values with the real numbers", () => {
    for (const e of ours.enums) {
      const twin = theirs.enums.find((t) => t.typeName === e.typeName);
      expect(twin, e.typeName).toBeDefined();
      for (const v of e.values) expect(twin!.values.find((t) => t.name === v.name)?.number, `${e.typeName}.${v.name}`).toBe(v.number);
    }
  });
});
