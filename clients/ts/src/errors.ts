// The one error the SDK throws for a failed call, with the server's rich details
// (google.rpc.Status in grpc-status-details-bin: ErrorInfo, BadRequest, RetryInfo,
// QuotaFailure) decoded into typed fields.

import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  QuotaFailureSchema,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";
import { durationMs } from "./durations.js";

/** One bad field of a request (`browser.steps[2].navigate.url`) and what is wrong with it. */
export interface FieldViolation {
  field: string;
  description: string;
}

/** One quota a call went over (`tenant:acme`) and why. */
export interface QuotaViolation {
  subject: string;
  description: string;
}

/** gRPC's name of a status code: Code.InvalidArgument -> "INVALID_ARGUMENT". */
export function codeName(code: Code): string {
  const name = Code[code] ?? "Unknown";
  return name.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** Node's codes of a connection that broke or could not be made: gRPC calls that
 * UNAVAILABLE (grpc-js and grpc core do), Connect's Node client says ABORTED/INTERNAL. */
const CONNECTION_ERRORS = new Set([
  "ECONNRESET", "ECONNREFUSED", "ECONNABORTED", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH",
  "ENOTFOUND", "EAI_AGAIN", "ERR_HTTP2_GOAWAY_SESSION", "ERR_HTTP2_SESSION_ERROR", "ERR_HTTP2_STREAM_ERROR",
  "ERR_HTTP2_INVALID_SESSION", "ERR_HTTP2_PING_CANCEL", "ERR_STREAM_PREMATURE_CLOSE",
]);

function brokenConnection(err: ConnectError, aborted: boolean): boolean {
  if (err.code === Code.DeadlineExceeded || aborted) {
    return false;
  }
  if (err.code === Code.Canceled) {
    // Node closes the streams of an HTTP/2 connection that died with CANCEL: not the
    // caller's cancel (it did not abort), nor the server's (that is a wire status).
    return !err.isWireError && err.rawMessage.startsWith("http/2 stream closed with error code CANCEL");
  }
  for (let cause: unknown = err.cause, depth = 0; cause instanceof Error && depth < 8; depth++) {
    const code = (cause as { code?: unknown }).code;
    if (typeof code === "string" && CONNECTION_ERRORS.has(code)) {
      return true;
    }
    cause = cause.cause;
  }
  return false;
}

/** A call failed. `code` is the gRPC status code (Connect's `Code`, the same numbers);
 * `reason`, `metadata`, `fieldViolations` and `retryDelayMs` come from the status
 * details when the server sent them. */
export class ConveyorError extends Error {
  override readonly name = "ConveyorError";
  /** The status code (gRPC's numbers: 3 is INVALID_ARGUMENT). */
  readonly code: Code;
  /** The code's gRPC name: "INVALID_ARGUMENT", "NOT_FOUND", ... */
  readonly codeName: string;
  /** The server's message, without the code. */
  readonly rawMessage: string;
  /** ErrorInfo.reason: "REQUEST_ID_REUSED", "QUOTA_EXCEEDED", "KEY_MISSING", ... ("" when none). */
  readonly reason: string;
  /** ErrorInfo.domain ("" when none). */
  readonly domain: string;
  /** ErrorInfo.metadata (e.g. `existing_job_id`). */
  readonly metadata: Record<string, string>;
  /** BadRequest.field_violations: each bad field of the request. */
  readonly fieldViolations: FieldViolation[];
  /** RetryInfo.retry_delay in milliseconds, when the server says when to retry. */
  readonly retryDelayMs: number | undefined;
  /** QuotaFailure.violations. */
  readonly quotaViolations: QuotaViolation[];
  /** The ConnectError this was made from. */
  override readonly cause: ConnectError;

  /** `aborted`: whether the caller cancelled the call (its AbortSignal fired). */
  constructor(err: ConnectError, aborted = false) {
    const info = err.findDetails(ErrorInfoSchema)[0];
    const fieldViolations = err
      .findDetails(BadRequestSchema)
      .flatMap((bad) => bad.fieldViolations.map((v) => ({ field: v.field, description: v.description })));
    const retry = err.findDetails(RetryInfoSchema)[0];
    const retryDelayMs = retry?.retryDelay ? durationMs(retry.retryDelay) : undefined;
    // A connection that broke (not a status the server sent) is UNAVAILABLE, as in gRPC.
    const code = brokenConnection(err, aborted) ? Code.Unavailable : err.code;
    const name = codeName(code);
    let text = `${name}: ${err.rawMessage || "(no message)"}`;
    const missing = fieldViolations.filter((v) => !err.rawMessage.includes(v.field));
    if (missing.length > 0) {
      text += " [" + missing.map((v) => `${v.field}: ${v.description}`).join("; ") + "]";
    }
    if (retryDelayMs !== undefined) {
      text += ` (retry in ${retryDelayMs / 1000} s)`;
    }
    super(text, { cause: err });
    this.cause = err;
    this.code = code;
    this.codeName = name;
    this.rawMessage = err.rawMessage;
    this.reason = info?.reason ?? "";
    this.domain = info?.domain ?? "";
    this.metadata = { ...(info?.metadata ?? {}) };
    this.fieldViolations = fieldViolations;
    this.retryDelayMs = retryDelayMs;
    this.quotaViolations = err
      .findDetails(QuotaFailureSchema)
      .flatMap((q) => q.violations.map((v) => ({ subject: v.subject, description: v.description })));
  }

  /** A ConveyorError from whatever a call threw (a ConnectError, or anything else, as
   * UNKNOWN). A broken connection is UNAVAILABLE unless the caller had aborted. */
  static from(err: unknown, aborted = false): ConveyorError {
    if (err instanceof ConveyorError) {
      return err;
    }
    return new ConveyorError(ConnectError.from(err), aborted);
  }
}
