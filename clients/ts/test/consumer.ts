// A TypeScript consumer, type-checked (not run) against the installed package's .d.ts.
import { ConveyorError, JobState, connect, type Job, type SubmitJobResponse } from "@conveyor/sdk";

export async function run(target: string): Promise<JobState> {
  const client = connect(target, { apiKey: "key", timeout: "10s" });
  const submitted: SubmitJobResponse = await client.submit({ noop: { sleep: "0.1s" } });
  for await (const message of client.watch(submitted.id, { afterSequence: 0 })) {
    if (message.kind.case === "event") console.log(message.kind.value.sequence);
  }
  try {
    const job: Job = await client.wait(submitted.id, { timeout: 5000 });
    return job.state;
  } catch (err) {
    if (err instanceof ConveyorError) console.log(err.reason, err.fieldViolations, err.retryDelayMs);
    throw err;
  }
}
