// Everything that runs in any JavaScript runtime (Node, browsers, Deno, Bun): the
// client over a Connect transport you give it, errors, durations, and the generated
// schemas and enums. `@conveyor/sdk` adds the Node gRPC transport.

export { ConveyorClient, isTerminal, jobOutput, jobValues, toState } from "./client.js";
export type { CallOpts, ClientOptions, JobRequest, ListOptions, WatchOptions } from "./client.js";
export { ConveyorError, codeName } from "./errors.js";
export type { FieldViolation, QuotaViolation } from "./errors.js";
export { durationInit, durationJson, durationMs } from "./durations.js";
export type { DurationLike } from "./durations.js";
export { toMessage } from "./request.js";
export { Code, ConnectError } from "@connectrpc/connect";
export * from "./gen/conveyor/v1/job_pb.js";
export * from "./gen/conveyor/v1/task_pb.js";
export * from "./gen/conveyor/v1/job_service_pb.js";
export * from "./gen/conveyor/v1/queue_service_pb.js";
export * from "./gen/conveyor/v1/schedule_service_pb.js";
export * from "./gen/conveyor/v1/key_service_pb.js";
