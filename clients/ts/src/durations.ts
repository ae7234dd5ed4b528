// Durations as users write them: "2s", "1.5s", "500ms", "1m", "1h" or a number of
// milliseconds; and the google.protobuf.Duration JSON form ("1.500s") the API takes.

import type { Duration } from "@bufbuild/protobuf/wkt";

/** A duration: a number of milliseconds, or a text such as "2s", "500ms", "1.5m", "1h". */
export type DurationLike = number | string | Duration;

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** The milliseconds of a duration ("2s" -> 2000, 1500 -> 1500, a Duration message). */
export function durationMs(value: DurationLike): number {
  if (typeof value === "number") {
    if (!Number.isFinite(value) || value < 0) {
      throw new RangeError(`a duration is a number of milliseconds >= 0, not ${value}`);
    }
    return value;
  }
  if (typeof value === "object" && value !== null && "seconds" in value) {
    return Number(value.seconds) * 1000 + value.nanos / 1e6;
  }
  const text = String(value).trim();
  const match = /^(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)$/.exec(text);
  if (!match) {
    throw new RangeError(`not a duration: ${JSON.stringify(value)} (e.g. "2s", "500ms", "1m", or milliseconds)`);
  }
  return Number(match[1]) * UNITS[match[2]];
}

/** The protobuf JSON form of a duration: "2s", "0.500s". */
export function durationJson(value: DurationLike): string {
  const ms = durationMs(value);
  const nanos = Math.round(ms * 1e6);
  const seconds = Math.floor(nanos / 1e9);
  const rest = nanos - seconds * 1e9;
  return rest === 0 ? `${seconds}s` : `${seconds}.${String(rest).padStart(9, "0").replace(/0+$/, "")}s`;
}

/** A google.protobuf.Duration init ({seconds, nanos}) from a duration. */
export function durationInit(value: DurationLike): { seconds: bigint; nanos: number } {
  const nanos = BigInt(Math.round(durationMs(value) * 1e6));
  return { seconds: nanos / 1_000_000_000n, nanos: Number(nanos % 1_000_000_000n) };
}
