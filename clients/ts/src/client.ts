// The hand-written layer over the generated stubs: one client for jobs and queues,
// over any Connect transport (Node: gRPC over HTTP/2, see node.ts; browsers:
// gRPC-web through a proxy). Every failed call throws a ConveyorError.

import { toJson, type JsonValue } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type CallOptions, type Client, type Transport } from "@connectrpc/connect";
import { durationInit, durationMs, type DurationLike } from "./durations.js";
import { ConveyorError } from "./errors.js";
import { toMessage } from "./request.js";
import { JobState, type Job, type JobResult, type Priority } from "./gen/conveyor/v1/job_pb.js";
import {
  JobService,
  SubmitJobRequestSchema,
  type SubmitJobRequest,
  type SubmitJobRequestJson,
  type SubmitJobResponse,
  type SubmitJobsResponse,
  type WatchJobResponse,
} from "./gen/conveyor/v1/job_service_pb.js";
import { KeyService } from "./gen/conveyor/v1/key_service_pb.js";
import { QueueService, type Queue, type Worker } from "./gen/conveyor/v1/queue_service_pb.js";
import { ScheduleService } from "./gen/conveyor/v1/schedule_service_pb.js";

/** A job to submit: a SubmitJobRequest message, or its protobuf JSON form such as
 * `{queue: "default", noop: {sleep: "0.2s"}, priority: "PRIORITY_HIGH"}` or
 * `{kind: {name: "chat", input: {...}}}`. Durations may also be milliseconds or
 * "500ms"/"1m" texts, `runAt` a Date. */
export type JobRequest = SubmitJobRequest | SubmitJobRequestJson | { [key: string]: unknown };

export interface ClientOptions {
  /** The Connect transport (node.ts' `createConveyorTransport`, or connect-web's). */
  transport: Transport;
  /** An API key, sent as `authorization: Bearer <key>` with every call. */
  apiKey?: string;
  /** Deadline of unary calls (default 30 s; 0: none). Streams have none. */
  timeout?: DurationLike;
  /** What `close()` does (node.ts: closes the HTTP/2 connection). */
  onClose?: () => void;
}

export interface CallOpts {
  /** This call's deadline (default: the client's). */
  timeout?: DurationLike;
  signal?: AbortSignal;
}

export interface ListOptions {
  queue?: string;
  state?: JobState | keyof typeof JobState | string;
  /** "noop", "browser" or a kind's name; needs `queue`. */
  kind?: string;
  pageSize?: number;
  /** At most this many jobs in all. */
  limit?: number;
  signal?: AbortSignal;
}

export interface WatchOptions {
  /** Start after this event sequence (a resume); default: the snapshot, then what follows. */
  afterSequence?: number | bigint;
  /** Resume a stream cut by UNAVAILABLE after the last sequence seen (default true). */
  reconnect?: boolean;
  /** Consecutive failed reconnects before giving up (default 5). */
  maxReconnects?: number;
  signal?: AbortSignal;
  /** Called before each reconnect, with the error and the sequence it resumes after. */
  onReconnect?: (error: ConveyorError, afterSequence: bigint | undefined) => void;
}

const TERMINAL = new Set([JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED]);
/** The server's largest WaitJob timeout; longer waits are several long-polls. */
const MAX_WAIT_CHUNK_MS = 300_000;
const DEFAULT_TIMEOUT_MS = 30_000;

/** Whether a job in this state has ended (COMPLETED, FAILED or CANCELLED). */
export function isTerminal(state: JobState): boolean {
  return TERMINAL.has(state);
}

/** A JobState from its name ("completed", "COMPLETED", "JOB_STATE_COMPLETED") or number. */
export function toState(state: JobState | string | undefined): JobState {
  if (state === undefined || state === "") {
    return JobState.UNSPECIFIED;
  }
  if (typeof state === "number") {
    return state;
  }
  const name = state.trim().toUpperCase().replace(/^JOB_STATE_/, "");
  const value = (JobState as unknown as Record<string, JobState>)[name];
  if (value === undefined) {
    throw new RangeError(`unknown job state ${JSON.stringify(state)}`);
  }
  return value;
}

/** What a kind's handler returned (`result.output`) as plain JSON; undefined when none. */
export function jobOutput(job: Job | JobResult | undefined): JsonValue | undefined {
  const result = job && "result" in job ? job.result : (job as JobResult | undefined);
  return result?.output ? toJson(ValueSchema, result.output) : undefined;
}

/** The values a browser job extracted (`result.values`) as plain JSON. */
export function jobValues(job: Job | undefined): Record<string, JsonValue> {
  const values = job?.result?.values ?? {};
  return Object.fromEntries(Object.entries(values).map(([k, v]) => [k, toJson(ValueSchema, v)]));
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(ConnectError.from(signal?.reason ?? new Error("aborted"), Code.Canceled));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** A Conveyor client: jobs and queues over the conveyor.v1 gRPC contract.
 *
 * ```ts
 * const client = connect("127.0.0.1:50051", { apiKey });
 * const { id } = await client.submit({ noop: { sleep: "0.2s" } });
 * for await (const msg of client.watch(id)) console.log(msg.kind.case, msg.kind.value);
 * ```
 */
export class ConveyorClient {
  /** The generated Connect clients, for what the thin layer does not wrap. */
  readonly services: {
    jobs: Client<typeof JobService>;
    queues: Client<typeof QueueService>;
    schedules: Client<typeof ScheduleService>;
    keys: Client<typeof KeyService>;
  };
  private readonly headers: Record<string, string>;
  private readonly timeoutMs: number | undefined;
  private readonly onClose: (() => void) | undefined;

  constructor(options: ClientOptions) {
    const { transport } = options;
    this.services = {
      jobs: createClient(JobService, transport),
      queues: createClient(QueueService, transport),
      schedules: createClient(ScheduleService, transport),
      keys: createClient(KeyService, transport),
    };
    this.headers = options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {};
    const ms = options.timeout === undefined ? DEFAULT_TIMEOUT_MS : durationMs(options.timeout);
    this.timeoutMs = ms > 0 ? ms : undefined;
    this.onClose = options.onClose;
  }

  /** Close the connection (open streams end with CANCELLED). An idle connection does
   * not keep Node running, so closing is optional. */
  close(): void {
    this.onClose?.();
  }

  private options(opts?: CallOpts, stream = false): CallOptions {
    const timeoutMs = opts?.timeout !== undefined ? durationMs(opts.timeout) : stream ? undefined : this.timeoutMs;
    return { headers: this.headers, timeoutMs: timeoutMs || undefined, signal: opts?.signal };
  }

  private async call<T>(run: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    try {
      return await run();
    } catch (err) {
      throw ConveyorError.from(err, signal?.aborted ?? false);
    }
  }

  // --- jobs -------------------------------------------------------------------------

  /** Submit one job; answers at once with its id, state and queue position. */
  submit(request: JobRequest, opts?: CallOpts): Promise<SubmitJobResponse> {
    const message = toMessage(SubmitJobRequestSchema, request, "SubmitJobRequest");
    return this.call(() => this.services.jobs.submitJob(message, this.options(opts)), opts?.signal);
  }

  /** Submit up to 1,000 jobs in one call; `results` has one entry per request, in
   * order. All or none unless `allowPartial` (then refused ones are in `errors`). */
  submitMany(requests: JobRequest[], opts?: CallOpts & { allowPartial?: boolean }): Promise<SubmitJobsResponse> {
    const messages = requests.map((r, i) => toMessage(SubmitJobRequestSchema, r, `requests[${i}]`));
    return this.call(() =>
      this.services.jobs.submitJobs({ requests: messages, allowPartial: opts?.allowPartial ?? false }, this.options(opts)),
      opts?.signal,
    );
  }

  /** The job now (state, progress, attempts, result). */
  async get(id: string, opts?: CallOpts): Promise<Job> {
    const response = await this.call(() => this.services.jobs.getJob({ id }, this.options(opts)), opts?.signal);
    return response.job!;
  }

  /** Jobs, newest first, following page tokens (at most `limit`). */
  async *list(options: ListOptions = {}): AsyncGenerator<Job, void, undefined> {
    const request = {
      queue: options.queue ?? "",
      state: toState(options.state),
      kind: options.kind ?? "",
      pageSize: options.pageSize ?? 0,
      pageToken: "",
    };
    let seen = 0;
    for (;;) {
      const page = await this.call(() => this.services.jobs.listJobs(request, this.options({ signal: options.signal })), options.signal);
      for (const job of page.jobs) {
        if (options.limit !== undefined && seen >= options.limit) {
          return;
        }
        seen += 1;
        yield job;
      }
      if (!page.nextPageToken || (options.limit !== undefined && seen >= options.limit)) {
        return;
      }
      request.pageToken = page.nextPageToken;
    }
  }

  /** The job's snapshot, then each of its events in order, until it ends. A stream cut
   * by UNAVAILABLE (a gateway restart, a dropped connection) is resumed after the last
   * sequence seen: nothing missed, nothing repeated (a fresh snapshot comes first). */
  async *watch(id: string, options: WatchOptions = {}): AsyncGenerator<WatchJobResponse, void, undefined> {
    let last = options.afterSequence === undefined ? undefined : BigInt(options.afterSequence);
    const reconnect = options.reconnect ?? true;
    const maxReconnects = options.maxReconnects ?? 5;
    let failures = 0;
    for (;;) {
      try {
        const stream = this.services.jobs.watchJob({ id, afterSequence: last }, this.options({ signal: options.signal }, true));
        for await (const message of stream) {
          failures = 0;
          if (message.kind.case === "job") {
            const seq = message.kind.value.lastSequence;
            last = last === undefined || seq > last ? seq : last;
          } else if (message.kind.case === "event") {
            last = message.kind.value.sequence;
          }
          yield message;
        }
        return;
      } catch (err) {
        const error = ConveyorError.from(err, options.signal?.aborted ?? false);
        if (!reconnect || error.code !== Code.Unavailable || failures >= maxReconnects || options.signal?.aborted) {
          throw error;
        }
        failures += 1;
        options.onReconnect?.(error, last);
      }
      await sleep(Math.min(200 * 2 ** (failures - 1), 5000), options.signal).catch((err) => {
        throw ConveyorError.from(err);
      });
    }
  }

  /** Long-poll until the job has ended or `timeout` (default 30 s) has passed; returns
   * the job either way (check `job.state`). */
  async wait(id: string, options: { timeout?: DurationLike; signal?: AbortSignal } = {}): Promise<Job> {
    const deadline = Date.now() + durationMs(options.timeout ?? DEFAULT_TIMEOUT_MS);
    for (;;) {
      const chunk = Math.max(0, Math.min(deadline - Date.now(), MAX_WAIT_CHUNK_MS));
      const response = await this.call(() =>
        this.services.jobs.waitJob(
          { id, timeout: durationInit(chunk) },
          { headers: this.headers, timeoutMs: chunk + 15_000, signal: options.signal },
        ),
        options.signal,
      );
      if (response.done || isTerminal(response.job!.state) || Date.now() >= deadline) {
        return response.job!;
      }
    }
  }

  /** Cancel a job: at once when waiting or delayed; an active one is stopped by its executor. */
  async cancel(id: string, opts?: CallOpts): Promise<Job> {
    return (await this.call(() => this.services.jobs.cancelJob({ id }, this.options(opts)), opts?.signal)).job!;
  }

  /** Give a FAILED (or CANCELLED) job a fresh set of attempts. */
  async retry(id: string, opts?: CallOpts): Promise<Job> {
    return (await this.call(() => this.services.jobs.retryJob({ id }, this.options(opts)), opts?.signal)).job!;
  }

  /** An artifact (a screenshot) as bytes. */
  async artifact(jobId: string, name: string, opts?: { signal?: AbortSignal }): Promise<Uint8Array> {
    return this.call(async () => {
      const chunks: Uint8Array[] = [];
      for await (const chunk of this.services.jobs.getArtifact({ jobId, name }, this.options(opts, true))) {
        chunks.push(chunk.data);
      }
      const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
      let at = 0;
      for (const c of chunks) {
        out.set(c, at);
        at += c.length;
      }
      return out;
    }, opts?.signal);
  }

  // --- queues -----------------------------------------------------------------------

  /** Every queue that has had a job, with its counts (all pages). */
  async queues(opts?: CallOpts): Promise<Queue[]> {
    const out: Queue[] = [];
    let pageToken = "";
    for (;;) {
      const page = await this.call(() => this.services.queues.listQueues({ pageToken }, this.options(opts)), opts?.signal);
      out.push(...page.queues);
      if (!page.nextPageToken) {
        return out;
      }
      pageToken = page.nextPageToken;
    }
  }

  /** One queue: paused, counts per state, concurrency, rate limit and stats. */
  async queue(name = "default", opts?: CallOpts): Promise<Queue> {
    return (await this.call(() => this.services.queues.getQueue({ queue: name }, this.options(opts)), opts?.signal)).queue!;
  }

  /** No new job of the queue starts until it is resumed (submissions are still accepted). */
  async pauseQueue(name: string, opts?: CallOpts): Promise<Queue> {
    return (await this.call(() => this.services.queues.pauseQueue({ queue: name }, this.options(opts)), opts?.signal)).queue!;
  }

  async resumeQueue(name: string, opts?: CallOpts): Promise<Queue> {
    return (await this.call(() => this.services.queues.resumeQueue({ queue: name }, this.options(opts)), opts?.signal)).queue!;
  }

  /** Set the queue's concurrency (0: the server default) and/or per-host navigation rate
   * limit (per second; 0: none); only what is given changes. */
  async updateQueue(name: string, settings: { concurrency?: number; hostRateLimit?: number }, opts?: CallOpts): Promise<Queue> {
    if (settings.concurrency === undefined && settings.hostRateLimit === undefined) {
      throw new TypeError("give concurrency and/or hostRateLimit");
    }
    const request = { queue: name, concurrency: settings.concurrency, hostRateLimit: settings.hostRateLimit };
    return (await this.call(() => this.services.queues.updateQueue(request, this.options(opts)), opts?.signal)).queue!;
  }

  /** The executor worker processes alive now (slots, kinds, running jobs). */
  async workers(opts?: CallOpts): Promise<Worker[]> {
    return (await this.call(() => this.services.queues.listWorkers({}, this.options(opts)), opts?.signal)).workers;
  }
}

export type { Priority };
