// The SDK against a real gateway and executor (started by tests/test_ts_sdk.py):
//   CONVEYOR_TARGET        the gateway (auth on)
//   CONVEYOR_API_KEY       an admin key of it
//   CONVEYOR_QUOTA_TARGET  a second gateway on the same store, CONVEYOR_TENANT_MAX_OPEN_JOBS=1
//   CONVEYOR_MTLS_TARGET   a third one serving TLS, requiring client certificates of
//   CONVEYOR_CA_CERT       this CA (which also signed its certificate), such as
//   CONVEYOR_CLIENT_CERT / CONVEYOR_CLIENT_KEY
// Run: node --test test/ (imports the package by its name: build it first, or run it
// from a directory where the packed tarball is installed, as the pytest wrapper does).
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { createServer } from "node:http";
import net from "node:net";
import { after, before, describe, test as nodeTest } from "node:test";
import {
  Code,
  ConveyorError,
  JobEventType,
  JobState,
  Role,
  connect,
  durationJson,
  durationMs,
  isTerminal,
  jobValues,
} from "@conveyor/sdk";

const TARGET = process.env.CONVEYOR_TARGET ?? "127.0.0.1:50051";
const API_KEY = process.env.CONVEYOR_API_KEY;
const QUOTA_TARGET = process.env.CONVEYOR_QUOTA_TARGET;
const { CONVEYOR_MTLS_TARGET: MTLS_TARGET, CONVEYOR_CA_CERT: CA, CONVEYOR_CLIENT_CERT: CERT, CONVEYOR_CLIENT_KEY: KEY } = process.env;
const RUN = randomUUID().slice(0, 8);
const client = connect(TARGET, { apiKey: API_KEY });
/** Every test has a deadline: a job that never runs fails its test, never hangs the run. */
const test = (name, fn) => nodeTest(name, { timeout: 60_000 }, fn);

/** A TCP proxy to the gateway whose connections the test can cut (a reset: what a
 * network blip or a restarted load balancer does to a watch stream) or freeze (nothing
 * gets through any more, and nothing closes: a path gone silent, which only keepalive
 * pings find out). Connections made afterwards are forwarded as usual. */
function cuttableProxy(target) {
  const [host, port] = target.split(":");
  const sockets = new Set();
  const pairs = new Set();
  let accepted = 0;
  const server = net.createServer((downstream) => {
    accepted += 1;
    const upstream = net.connect(Number(port), host);
    const pair = [downstream, upstream];
    pairs.add(pair);
    for (const s of pair) {
      sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => {
        sockets.delete(s);
        pairs.delete(pair);
        if (!pair.frozen) {
          downstream.destroy();
          upstream.destroy();
        }
      });
    }
    downstream.pipe(upstream);
    upstream.pipe(downstream);
  });
  return {
    listen: () => new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(`127.0.0.1:${server.address().port}`))),
    cut: () => {
      for (const s of sockets) s.resetAndDestroy();
    },
    freeze: () => {
      for (const pair of pairs) {
        pair.frozen = true;
        const [downstream, upstream] = pair;
        downstream.unpipe(upstream);
        upstream.unpipe(downstream);
        // Read and dropped: what either side sends from now on goes nowhere.
        for (const s of pair) s.on("data", () => {});
      }
    },
    accepted: () => accepted,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(resolve);
      }),
  };
}

/** Submit a job into a paused queue and watch it through the proxy: once the first
 * snapshot has come (the job cannot have started), cut every connection, then resume
 * the queue. The job runs while the watcher reconnects; returns what it saw. */
async function watchThroughCut(request, proxy, proxied, how = "cut") {
  const queue = `ts-cut-${randomUUID().slice(0, 8)}`;
  const started = Date.now();
  // Each step on stderr (the pytest wrapper prints it, and the services' log lines
  // about the job, when a test fails): where a watch that never ended stood.
  const trace = (what) => console.error(`[cut ${queue} ${new Date().toISOString()} +${Date.now() - started} ms] ${what}`);
  await client.pauseQueue(queue);
  const submitted = await client.submit({ ...request, queue });
  trace(`submitted job ${submitted.id}`);
  const events = [];
  const snapshots = [];
  const reconnects = [];
  const onReconnect = (err, seq) => {
    trace(`reconnecting after sequence ${seq}: ${err.code} ${err.message}`);
    reconnects.push({ code: err.code, seq });
  };
  for await (const message of proxied.watch(submitted.id, { onReconnect })) {
    if (message.kind.case === "job") {
      snapshots.push(message.kind.value);
      trace(`snapshot: ${JobState[message.kind.value.state]}, last sequence ${message.kind.value.lastSequence}`);
      if (snapshots.length === 1) {
        assert.equal(message.kind.value.state, JobState.WAITING, "held in the paused queue");
        proxy[how]();
        trace(`connections: ${how}`);
        await client.resumeQueue(queue);
        trace("queue resumed");
      }
    } else if (message.kind.case === "event") {
      events.push(message.kind.value);
      trace(`event ${message.kind.value.sequence}: ${JobEventType[message.kind.value.type]} ${JobState[message.kind.value.state]}`);
    } else {
      trace(message.kind.case);
    }
  }
  trace("watch ended");
  return { id: submitted.id, events, snapshots, reconnects };
}

function assertContiguous(first, events) {
  let previous = first.lastSequence;
  for (const event of events) {
    assert.equal(event.sequence, previous + 1n, `event ${event.sequence} follows ${previous}: none missed or repeated`);
    previous = event.sequence;
  }
}

describe("TypeScript SDK against a real gateway", () => {
  let page;
  let pageUrl;
  let proxy;
  let proxied;

  before(async () => {
    page = createServer((req, res) => {
      res.writeHead(200, { "content-type": "text/html" });
      res.end("<!doctype html><title>ts-sdk</title><h1>Hello from Node</h1>");
    });
    await new Promise((resolve) => page.listen(0, "127.0.0.1", resolve));
    pageUrl = `http://127.0.0.1:${page.address().port}/`;
    proxy = cuttableProxy(TARGET);
    proxied = connect(await proxy.listen(), { apiKey: API_KEY });
  });

  after(async () => {
    proxied.close();
    client.close();
    await proxy.close();
    page.closeAllConnections();
    await new Promise((resolve) => page.close(resolve));
  });

  test("a noop job is watched to the end through a forced reconnect, nothing missed or repeated", async () => {
    const opened = proxy.accepted();
    const { id, events, snapshots, reconnects } = await watchThroughCut({ noop: { sleep: "0.5s" } }, proxy, proxied);
    assert.equal(reconnects.length, 1, "one reconnect after the cut");
    assert.equal(reconnects[0].code, Code.Unavailable, "a dropped connection is UNAVAILABLE");
    assert.equal(reconnects[0].seq, snapshots[0].lastSequence, "resumed after the last sequence seen");
    assert.ok(proxy.accepted() > opened, "a new connection was made");
    assert.equal(snapshots.length, 2, "a snapshot on each stream");
    assertContiguous(snapshots[0], events);
    assert.ok(events.length >= 2, "the start and the end came after the reconnect");
    const last = events.at(-1);
    assert.equal(last.state, JobState.COMPLETED);
    assert.ok(isTerminal(last.state));
    assert.equal((await client.get(id)).state, JobState.COMPLETED);
  });

  test("a watch over a path gone silent is found out by keepalive pings and resumed", async () => {
    // A proxy of its own (a freeze stops every connection through it) and the SDK's
    // keepalive shortened from its 30 s + 10 s so the test is quick.
    const path = cuttableProxy(TARGET);
    const silent = connect(await path.listen(), { apiKey: API_KEY, keepalive: { intervalMs: 1000, timeoutMs: 1000 } });
    try {
      const started = Date.now();
      const { events, snapshots, reconnects } = await watchThroughCut({ noop: {} }, path, silent, "freeze");
      const took = Date.now() - started;
      assert.equal(reconnects.length, 1, "one reconnect, after the unanswered ping");
      assert.equal(reconnects[0].code, Code.Unavailable);
      assert.equal(path.accepted(), 2, "the watch went on over a new connection");
      assert.equal(snapshots.length, 2);
      assertContiguous(snapshots[0], events);
      assert.equal(events.at(-1).state, JobState.COMPLETED);
      assert.ok(took < 15_000, `found out within seconds (${took} ms)`);
    } finally {
      silent.close();
      await path.close();
    }
  });

  test("a browser job is watched to the end through a forced reconnect and its values read", async () => {
    const { id, events, snapshots, reconnects } = await watchThroughCut({
      browser: {
        steps: [
          { navigate: { url: pageUrl } },
          { wait: { duration: 400 } }, // milliseconds, as the SDK takes them
          { wait: { duration: "0.4s" } },
          { extract: { target: { selector: "h1" }, key: "title" } },
        ],
      },
    }, proxy, proxied);
    assert.equal(reconnects.length, 1);
    assertContiguous(snapshots[0], events);
    assert.equal(events.at(-1).state, JobState.COMPLETED, JSON.stringify(events.at(-1).error ?? {}));
    assert.ok(events.some((e) => e.type === JobEventType.PROGRESS), "step progress came as events");
    const job = await client.get(id);
    assert.deepEqual(jobValues(job), { title: "Hello from Node" });
  });

  test("wait returns the ended job, or the job as it is when the wait runs out", async () => {
    const { id } = await client.submit({ queue: `ts-${RUN}`, noop: { sleep: 300 } });
    const job = await client.wait(id, { timeout: "30s" });
    assert.equal(job.state, JobState.COMPLETED);
    const slow = await client.submit({ queue: `ts-${RUN}`, delay: "1m", noop: {} });
    const early = await client.wait(slow.id, { timeout: "200ms" });
    assert.equal(early.state, JobState.DELAYED);
    await client.cancel(slow.id);
  });

  test("cancel and retry", async () => {
    const delayed = await client.submit({ queue: `ts-${RUN}`, delay: 60_000, noop: {} });
    assert.equal(delayed.state, JobState.DELAYED);
    assert.equal((await client.cancel(delayed.id)).state, JobState.CANCELLED);
    assert.equal((await client.get(delayed.id)).state, JobState.CANCELLED);

    const failing = await client.submit({ queue: `ts-${RUN}`, maxAttempts: 1, noop: { failFirstAttempts: 1 } });
    assert.equal((await client.wait(failing.id)).state, JobState.FAILED);
    await client.retry(failing.id);
    const retried = await client.wait(failing.id);
    assert.equal(retried.state, JobState.COMPLETED);
    assert.equal(retried.attempts.length, 2);
  });

  test("submitMany and list pages through ListJobs, newest first", async () => {
    const queue = `ts-list-${RUN}`;
    const batch = await client.submitMany(Array.from({ length: 5 }, (_, i) => ({ queue, delay: "1h", noop: {}, labels: { i: `${i}` } })));
    const ids = batch.results.map((r) => r.id);
    assert.equal(ids.length, 5);
    const listed = [];
    for await (const job of client.list({ queue, pageSize: 2 })) listed.push(job.id);
    assert.deepEqual(new Set(listed), new Set(ids));
    assert.equal(listed.length, 5);
    const limited = [];
    for await (const job of client.list({ queue, state: "delayed", pageSize: 2, limit: 3 })) limited.push(job);
    assert.equal(limited.length, 3);
    assert.ok(limited.every((j) => j.state === JobState.DELAYED));
    for (const id of ids) await client.cancel(id);
  });

  test("queues: list, get, pause, resume", async () => {
    const queue = `ts-q-${RUN}`;
    await client.submit({ queue, noop: {} });
    assert.equal((await client.pauseQueue(queue)).paused, true);
    assert.equal((await client.queue(queue)).paused, true);
    assert.equal((await client.resumeQueue(queue)).paused, false);
    assert.ok((await client.queues()).some((q) => q.name === queue));
  });

  test("a refused request's BadRequest field violations and reason are typed", async () => {
    await assert.rejects(
      client.submit({ queue: `ts-${RUN}`, browser: { steps: [{ navigate: { url: "ftp://nowhere" } }] } }),
      (err) => {
        assert.ok(err instanceof ConveyorError);
        assert.equal(err.code, Code.InvalidArgument);
        assert.equal(err.codeName, "INVALID_ARGUMENT");
        assert.ok(
          err.fieldViolations.some((v) => v.field === "browser.steps[0].navigate.url" && v.description.length > 0),
          JSON.stringify(err.fieldViolations),
        );
        return true;
      },
    );
    await assert.rejects(client.get("no-such-job"), (err) => err instanceof ConveyorError && err.code === Code.NotFound);
  });

  test("no API key: UNAUTHENTICATED with reason KEY_MISSING", async () => {
    const anonymous = connect(TARGET);
    await assert.rejects(anonymous.submit({ noop: {} }), (err) => {
      assert.equal(err.code, Code.Unauthenticated);
      assert.equal(err.reason, "KEY_MISSING");
      return true;
    });
    anonymous.close();
  });

  test("over quota: RESOURCE_EXHAUSTED with RetryInfo's delay and the quota named", async () => {
    assert.ok(QUOTA_TARGET, "CONVEYOR_QUOTA_TARGET: the quota gateway");
    const tenant = `tsq${RUN}`;
    const created = await client.services.keys.createKey(
      { tenant, role: Role.SUBMITTER, name: "ts-sdk-quota" },
      { headers: { authorization: `Bearer ${API_KEY}` } },
    );
    const limited = connect(QUOTA_TARGET, { apiKey: created.secret });
    const first = await limited.submit({ queue: `ts-${RUN}`, delay: "1h", noop: {} });
    await assert.rejects(limited.submit({ queue: `ts-${RUN}`, delay: "1h", noop: {} }), (err) => {
      assert.equal(err.code, Code.ResourceExhausted);
      assert.equal(err.reason, "QUOTA_EXCEEDED");
      assert.ok(err.retryDelayMs !== undefined && err.retryDelayMs > 0, `retry delay ${err.retryDelayMs}`);
      assert.ok(err.quotaViolations.some((q) => q.subject.includes(tenant)), JSON.stringify(err.quotaViolations));
      return true;
    });
    await limited.cancel(first.id);
    limited.close();
  });

  test("TLS with a client certificate (mTLS), the CA and certificates given as paths", async () => {
    assert.ok(MTLS_TARGET && CA && CERT && KEY, "CONVEYOR_MTLS_TARGET and the certificates");
    const secure = connect(`grpcs://${MTLS_TARGET}`, { apiKey: API_KEY, caCert: CA, clientCert: CERT, clientKey: KEY });
    const { id } = await secure.submit({ queue: `ts-${RUN}`, noop: {} });
    assert.equal((await secure.wait(id)).state, JobState.COMPLETED);
    secure.close();
    // Without a client certificate the handshake fails: no call gets through.
    const noCert = connect(MTLS_TARGET, { apiKey: API_KEY, caCert: CA });
    await assert.rejects(noCert.get(id), (err) => err instanceof ConveyorError && err.code === Code.Unavailable);
    noCert.close();
    // Plaintext to a TLS port fails too.
    const plain = connect(MTLS_TARGET, { apiKey: API_KEY, timeout: "5s" });
    await assert.rejects(plain.get(id), (err) => err instanceof ConveyorError && err.code !== Code.NotFound);
    plain.close();
    assert.throws(() => connect(`grpc://${MTLS_TARGET}`, { caCert: CA }), /need TLS|says plaintext/);
  });

  test("durations are taken as texts or milliseconds", () => {
    assert.equal(durationMs("2s"), 2000);
    assert.equal(durationMs("500ms"), 500);
    assert.equal(durationMs("1.5m"), 90_000);
    assert.equal(durationJson(1500), "1.5s");
    assert.equal(durationJson("2s"), "2s");
    assert.throws(() => durationMs("soon"), RangeError);
  });
});
