// An ESM consumer: import resolves to dist/esm; submits a job and waits for it.
import { JobState, connect, ConveyorClient } from "@conveyor/sdk";
import * as core from "@conveyor/sdk/core";
import { JobService } from "@conveyor/sdk/gen/conveyor/v1/job_service_pb";

const client = connect(process.env.CONVEYOR_TARGET, { apiKey: process.env.CONVEYOR_API_KEY });
const { id } = await client.submit({ queue: "ts-consumers", noop: { sleep: "0.1s" } });
const job = await client.wait(id);
console.log(JSON.stringify({
  format: "esm",
  resolved: import.meta.resolve("@conveyor/sdk"),
  state: JobState[job.state],
  sameClass: core.ConveyorClient === ConveyorClient,
  service: JobService.typeName,
}));
