// BullMQ as a benchmark peer, driven by bench/peers.py: one measurement per run,
// printed as one JSON line on stdout. Everything talks to the Redis given by
// BENCH_REDIS_URL (loopback) under a queue name of its own.
//
//   node peer.mjs enqueue  <queue> <n>            jobs/s of queue.add one by one (awaited)
//   node peer.mjs bulk     <queue> <n>            jobs/s of addBulk in batches of 500
//   node peer.mjs drain    <queue> <n> <procs> <concurrency>
//                                                 jobs/s: n jobs added first, then drained by
//                                                 <procs> worker processes (no-op processor)
//   node peer.mjs latency  <queue> <n> <concurrency>
//                                                 add -> waitUntilFinished, one at a time, with
//                                                 a worker running: p50/p99 ms
//   node peer.mjs memory   <queue> <n> <concurrency>
//                                                 Redis bytes per job: n jobs added (waiting), then
//                                                 run by a worker and kept (completed)
//   node peer.mjs worker   <queue> <n> <concurrency>   (a child of drain: processes jobs
//                                                 until told to stop, reports its count and CPU)
// drain also reports the Redis INFO (commandstats, cpu) before and after the draining, and
// the workers' CPU time (µs), for the cost per job.
import { fork } from "node:child_process";
import { Queue, QueueEvents, Worker } from "bullmq";
import IORedis from "ioredis";

const url = new URL(process.env.BENCH_REDIS_URL ?? "redis://127.0.0.1:6379/0");
const connection = { host: url.hostname, port: Number(url.port || 6379), db: Number(url.pathname.slice(1) || 0),
  maxRetriesPerRequest: null };
const [mode, name, ...rest] = process.argv.slice(2);
const n = Number(rest[0] ?? 0);
const now = () => Number(process.hrtime.bigint()) / 1e6;  // ms
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
// Keep every finished job, as Conveyor keeps its history (not BullMQ's default of all: bounded);
// BENCH_KEEP=<n>: keep the newest n completed (and 2n failed) jobs, as Conveyor's
// CONVEYOR_KEEP_COMPLETED / CONVEYOR_KEEP_FAILED do (100 / 200 by default).
const keep = Number(process.env.BENCH_KEEP || 100_000);
const jobOptions = { removeOnComplete: { count: keep }, removeOnFail: { count: 2 * keep } };

async function enqueue(bulk) {
  const queue = new Queue(name, { connection });
  await queue.waitUntilReady();
  const start = now();
  if (bulk) {
    for (let i = 0; i < n; i += 500) {
      const batch = [];
      for (let j = i; j < Math.min(n, i + 500); j++) batch.push({ name: "noop", data: { i: j }, opts: jobOptions });
      await queue.addBulk(batch);
    }
  } else {
    for (let i = 0; i < n; i++) await queue.add("noop", { i }, jobOptions);
  }
  const elapsed = now() - start;
  await queue.obliterate({ force: true });
  await queue.close();
  out({ rate: n / (elapsed / 1000) });
}

async function drain(procs, concurrency) {
  const queue = new Queue(name, { connection });
  await queue.waitUntilReady();
  for (let i = 0; i < n; i += 500) {
    const batch = [];
    for (let j = i; j < Math.min(n, i + 500); j++) batch.push({ name: "noop", data: { i: j }, opts: jobOptions });
    await queue.addBulk(batch);
  }
  const children = [];
  let done = 0;
  let started = 0;
  const finished = new Promise((resolve) => {
    for (let p = 0; p < procs; p++) {
      const child = fork(new URL(import.meta.url).pathname, ["worker", name, String(n), String(concurrency)]);
      child.on("message", (msg) => {
        if (msg.ready && ++started === procs) startAt = now();
        if (msg.processed) {
          done += msg.processed;
          if (done >= n) resolve();
        }
      });
      children.push(child);
    }
  });
  let startAt = 0;
  const client = new IORedis(connection);
  const infoBefore = await client.info("all");
  // Workers report in batches; the run ends when the counts add up to n.
  await finished;
  const elapsed = now() - startAt;
  const infoAfter = await client.info("all");
  client.disconnect();
  let cpuUs = 0;
  for (const child of children) {
    child.on("message", (msg) => { if (msg.cpu) cpuUs += msg.cpu; });
    child.send({ stop: true });
  }
  await Promise.all(children.map((c) => new Promise((r) => c.on("exit", r))));
  await queue.obliterate({ force: true });
  await queue.close();
  out({ rate: n / (elapsed / 1000), info_before: infoBefore, info_after: infoAfter, worker_cpu_us: cpuUs });
}

async function worker(concurrency) {
  let pending = 0;
  const report = () => {
    if (pending) process.send({ processed: pending });
    pending = 0;
  };
  const w = new Worker(name, async () => null, { connection, concurrency, autorun: false });
  w.on("completed", () => {
    pending++;
    if (pending >= 100) report();
  });
  const flush = setInterval(report, 20);
  process.on("message", async (msg) => {
    if (msg.stop) {
      clearInterval(flush);
      await w.close();
      const cpu = process.cpuUsage(startCpu);
      process.send({ cpu: cpu.user + cpu.system }, () => process.exit(0));
    }
  });
  await w.waitUntilReady();
  const startCpu = process.cpuUsage();
  process.send({ ready: true });
  await w.run();
}

async function latency(concurrency) {
  const queue = new Queue(name, { connection });
  const events = new QueueEvents(name, { connection });
  const w = new Worker(name, async () => null, { connection, concurrency });
  await Promise.all([queue.waitUntilReady(), events.waitUntilReady(), w.waitUntilReady()]);
  const took = [];
  for (let i = 0; i < n + 20; i++) {
    const start = now();
    const job = await queue.add("noop", { i }, jobOptions);
    await job.waitUntilFinished(events, 30_000);
    if (i >= 20) took.push(now() - start);  // the first 20 warm up
  }
  took.sort((a, b) => a - b);
  const pct = (p) => took[Math.min(took.length - 1, Math.round((p / 100) * (took.length - 1)))];
  await w.close();
  await events.close();
  await queue.obliterate({ force: true });
  await queue.close();
  out({ p50: pct(50), p99: pct(99) });
}

// Redis bytes of the queue's keys (MEMORY USAGE over them) and Redis's used_memory.
async function footprint(client) {
  let keys = 0;
  let cursor = "0";
  do {
    const [next, found] = await client.scan(cursor, "MATCH", `bull:${name}:*`, "COUNT", 1000);
    cursor = next;
    for (const key of found) keys += Number(await client.call("MEMORY", "USAGE", key, "SAMPLES", "0"));
  } while (cursor !== "0");
  const used = Number(/used_memory:(\d+)/.exec(await client.info("memory"))[1]);
  return { keys, used };
}

async function memory(concurrency) {
  const queue = new Queue(name, { connection });
  await queue.waitUntilReady();
  const client = new IORedis(connection);
  const empty = await footprint(client);
  for (let i = 0; i < n; i += 500) {
    const batch = [];
    for (let j = i; j < Math.min(n, i + 500); j++) batch.push({ name: "noop", data: { i: j }, opts: jobOptions });
    await queue.addBulk(batch);
  }
  const waiting = await footprint(client);
  let done = 0;
  const w = new Worker(name, async () => null, { connection, concurrency });
  await new Promise((resolve) => w.on("completed", () => { if (++done >= n) resolve(); }));
  await w.close();
  const completed = await footprint(client);
  client.disconnect();
  await queue.obliterate({ force: true });
  await queue.close();
  const per = (a) => ({ keys: (a.keys - empty.keys) / n, used: (a.used - empty.used) / n });
  out({ waiting: per(waiting), completed: per(completed) });
}

const modes = {
  memory: () => memory(Number(rest[1])),
  enqueue: () => enqueue(false),
  bulk: () => enqueue(true),
  drain: () => drain(Number(rest[1]), Number(rest[2])),
  latency: () => latency(Number(rest[1])),
  worker: () => worker(Number(rest[1])),
};
if (!modes[mode]) {
  process.stderr.write(`unknown mode ${mode}\n`);
  process.exit(2);
}
await modes[mode]();
if (mode !== "worker") process.exit(0);
