// A CommonJS consumer: require() resolves to dist/cjs; submits a job and waits for it.
const sdk = require("@conveyor/sdk");
const core = require("@conveyor/sdk/core");
const { JobService } = require("@conveyor/sdk/gen/conveyor/v1/job_service_pb");

async function main() {
  const client = sdk.connect(process.env.CONVEYOR_TARGET, { apiKey: process.env.CONVEYOR_API_KEY });
  const { id } = await client.submit({ queue: "ts-consumers", noop: { sleep: "0.1s" } });
  const job = await client.wait(id);
  console.log(JSON.stringify({
    format: "cjs",
    resolved: require.resolve("@conveyor/sdk"),
    state: sdk.JobState[job.state],
    sameClass: core.ConveyorClient === sdk.ConveyorClient,
    service: JobService.typeName,
  }));
}
main().catch((err) => { console.error(err); process.exit(1); });
