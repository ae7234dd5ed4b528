// Requests as users write them: the protobuf JSON mapping (camelCase or snake_case
// names, enums by name), with durations also as milliseconds or "500ms"/"1m" texts
// and timestamps also as Dates. Turned into messages by the generated schemas.

import { fromJson, isMessage, type DescMessage, type JsonValue, type MessageShape } from "@bufbuild/protobuf";
import { durationJson, type DurationLike } from "./durations.js";

type Loose = { [key: string]: unknown };

function fieldOf(desc: DescMessage, key: string) {
  return desc.fields.find((f) => f.jsonName === key || f.name === key);
}

function normalizeMessage(desc: DescMessage, value: unknown, path: string): unknown {
  switch (desc.typeName) {
    case "google.protobuf.Duration":
      return typeof value === "number" || typeof value === "string" ? durationJson(value as DurationLike) : value;
    case "google.protobuf.Timestamp":
      return value instanceof Date ? value.toISOString() : value;
  }
  if (desc.typeName.startsWith("google.protobuf.") || typeof value !== "object" || value === null || Array.isArray(value)) {
    return value; // Struct/Value/... are JSON as they are; anything else fromJson judges
  }
  const out: Loose = {};
  for (const [key, item] of Object.entries(value as Loose)) {
    const field = fieldOf(desc, key);
    if (item === undefined) {
      continue;
    }
    if (field === undefined) {
      out[key] = item; // fromJson names it in its error
      continue;
    }
    const where = path ? `${path}.${key}` : key;
    if (field.fieldKind === "message") {
      out[key] = normalizeMessage(field.message, item, where);
    } else if (field.fieldKind === "list" && field.listKind === "message" && Array.isArray(item)) {
      out[key] = item.map((v, i) => normalizeMessage(field.message, v, `${where}[${i}]`));
    } else if (field.fieldKind === "map" && field.mapKind === "message" && typeof item === "object" && item !== null) {
      out[key] = Object.fromEntries(
        Object.entries(item as Loose).map(([k, v]) => [k, normalizeMessage(field.message, v, `${where}.${k}`)]),
      );
    } else {
      out[key] = item;
    }
  }
  return out;
}

/** A message of `schema` from a message of it (returned as is) or from its JSON form,
 * with durations as "2s", "500ms" or milliseconds and timestamps as Dates too. */
export function toMessage<Desc extends DescMessage>(schema: Desc, value: unknown, what = schema.name): MessageShape<Desc> {
  if (isMessage(value, schema)) {
    return value;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new TypeError(`${what}: an object in the protobuf JSON mapping, not ${JSON.stringify(value)}`);
  }
  try {
    return fromJson(schema, normalizeMessage(schema, value, "") as JsonValue);
  } catch (err) {
    throw new TypeError(`not a valid ${what}: ${(err as Error).message}`, { cause: err });
  }
}
