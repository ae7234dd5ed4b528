// Plain @grpc/grpc-js + @grpc/proto-loader with only protos/ on the include path and
// the options the README documents: what a Node user without the SDK does. Run by
// tests/test_proto_vendor.py against a real gateway (CONVEYOR_TARGET, CONVEYOR_PROTOS).
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const PROTOS = process.env.CONVEYOR_PROTOS;
const TARGET = process.env.CONVEYOR_TARGET;
// The README's options: camelCase fields, 64-bit integers and enums as strings,
// defaults filled in, the set oneof member named.
const OPTIONS = { keepCase: false, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: [PROTOS] };
const files = [
  ...readdirSync(join(PROTOS, "conveyor", "v1")).filter((f) => f.endsWith(".proto")).map((f) => `conveyor/v1/${f}`),
  "google/rpc/error_details.proto",
  "google/rpc/code.proto",
  "google/api/field_behavior.proto",
];
const definition = protoLoader.loadSync(files, OPTIONS);
const api = grpc.loadPackageDefinition(definition);
const jobs = new api.conveyor.v1.JobService(TARGET, grpc.credentials.createInsecure());
const call = (method, request) =>
  new Promise((resolve, reject) => jobs[method](request, { deadline: Date.now() + 30_000 }, (err, res) => (err ? reject(err) : resolve(res))));

test("every service of the contract loads from protos/ alone", () => {
  for (const service of ["JobService", "QueueService", "ScheduleService", "KeyService"]) {
    assert.equal(typeof api.conveyor.v1[service], "function", service);
  }
});

test("submit, wait and read a job with plain grpc-js", { timeout: 60_000 }, async () => {
  const submitted = await call("SubmitJob", { queue: "proto-loader", noop: { sleep: { seconds: 0, nanos: 100_000_000 } } });
  assert.ok(submitted.id);
  const waited = await call("WaitJob", { id: submitted.id, timeout: { seconds: 30 } });
  assert.equal(waited.job.state, "JOB_STATE_COMPLETED");
  assert.equal(typeof waited.job.lastSequence, "string"); // int64 as a string (longs: String)
  assert.equal(waited.job.task, "noop"); // the oneof's member (oneofs: true)
});

test("a BadRequest's field violations decode from grpc-status-details-bin", { timeout: 60_000 }, async () => {
  const err = await call("SubmitJob", { browser: { steps: [{ navigate: { url: "ftp://nowhere" } }] } }).then(
    () => assert.fail("an ftp URL was accepted"),
    (e) => e,
  );
  assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
  const [bin] = err.metadata.get("grpc-status-details-bin");
  const status = definition["google.rpc.Status"].deserialize(bin);
  // protobufjs' built-in google.protobuf.Any keeps its proto field names: type_url.
  const bad = status.details.find((d) => d.type_url === "type.googleapis.com/google.rpc.BadRequest");
  assert.ok(bad, JSON.stringify(status.details.map((d) => d.type_url)));
  const violations = definition["google.rpc.BadRequest"].deserialize(bad.value).fieldViolations;
  assert.ok(violations.some((v) => v.field === "browser.steps[0].navigate.url"), JSON.stringify(violations));
});
