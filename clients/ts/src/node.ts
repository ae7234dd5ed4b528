// Node.js: gRPC over HTTP/2 (what the grpc.aio gateway speaks), plaintext or TLS.

import { readFileSync } from "node:fs";
import type { Transport } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";
import { ConveyorClient, type ClientOptions } from "./client.js";

/** The gateway's default address. */
export const DEFAULT_TARGET = "127.0.0.1:50051";

/** PEM: the file's path, or its contents (a string holding "-----BEGIN", or bytes). */
export type Pem = string | Uint8Array;

export interface TransportOptions {
  /** TLS with the system's CAs (or `caCert`'s). Implied by a `grpcs://`/`https://`
   * target and by `caCert` or a client certificate; `grpc://`/`http://` say plaintext. */
  tls?: boolean;
  /** A CA bundle of your own to check the gateway's certificate. */
  caCert?: Pem;
  /** A client certificate and its key, for a gateway that requires them (mTLS). */
  clientCert?: Pem;
  clientKey?: Pem;
  /** Keepalive: while a call is open, the connection is pinged after `intervalMs` with
   * nothing received (default 30 s), and a ping not answered within `timeoutMs`
   * (default 10 s) ends it, its calls failing UNAVAILABLE (which `watch` resumes from).
   * Without it, a stream over a path gone silent (the gateway's host lost, a NAT or
   * load balancer forgetting the connection) waits for good. `false` turns it off. */
  keepalive?: { intervalMs?: number; timeoutMs?: number } | false;
}

/** The SDK's keepalive (see TransportOptions.keepalive). */
export const KEEPALIVE_INTERVAL_MS = 30_000;
export const KEEPALIVE_TIMEOUT_MS = 10_000;

export interface ConnectOptions extends TransportOptions, Omit<ClientOptions, "transport"> {}

function pem(value: Pem, what: string): Buffer {
  if (typeof value !== "string") {
    return Buffer.from(value);
  }
  if (value.includes("-----BEGIN ")) {
    return Buffer.from(value);
  }
  let data: Buffer;
  try {
    data = readFileSync(value);
  } catch (err) {
    throw new Error(`${what} ${value}: cannot read: ${(err as Error).message}`);
  }
  if (!data.includes("-----BEGIN ")) {
    throw new Error(`${what} ${value}: not a PEM file`);
  }
  return data;
}

/** The base URL and whether it is TLS, from a target such as "127.0.0.1:50051",
 * "grpcs://gw.example:50051" or "https://gw.example". */
export function targetUrl(target: string, options: TransportOptions = {}): { baseUrl: string; tls: boolean } {
  const match = /^([a-z]+):\/\/(.*)$/i.exec(target);
  let implied: boolean | undefined;
  let address = target;
  if (match) {
    const scheme = match[1].toLowerCase();
    if (!["grpc", "grpcs", "http", "https"].includes(scheme)) {
      throw new Error(`unknown scheme in target ${target} (grpc, grpcs, http, https)`);
    }
    implied = scheme === "grpcs" || scheme === "https";
    address = match[2].replace(/\/+$/, "");
  }
  if ((options.clientCert === undefined) !== (options.clientKey === undefined)) {
    throw new Error("clientCert and clientKey go together");
  }
  const wantsFiles = options.caCert !== undefined || options.clientCert !== undefined;
  const tls = options.tls ?? implied ?? wantsFiles;
  if (!tls && (implied || wantsFiles)) {
    throw new Error(implied ? `tls: false, but the target ${target} says TLS` : "caCert and client certificates need TLS");
  }
  if (tls && implied === false) {
    throw new Error(`TLS was asked for, but the target ${target} says plaintext`);
  }
  return { baseUrl: `${tls ? "https" : "http"}://${address}`, tls };
}

/** A Connect transport speaking gRPC over HTTP/2 to a Conveyor gateway. */
export function createConveyorTransport(target: string = DEFAULT_TARGET, options: TransportOptions = {}): Transport {
  return nodeTransport(target, options).transport;
}

function nodeTransport(target: string, options: TransportOptions): { transport: Transport; close: () => void } {
  const { baseUrl, tls } = targetUrl(target, options);
  const nodeOptions = tls
    ? {
        ...(options.caCert !== undefined ? { ca: pem(options.caCert, "CA certificate") } : {}),
        ...(options.clientCert !== undefined ? { cert: pem(options.clientCert, "client certificate") } : {}),
        ...(options.clientKey !== undefined ? { key: pem(options.clientKey, "client key") } : {}),
      }
    : {};
  const keepalive = options.keepalive === false
    ? {}
    : {
        pingIntervalMs: options.keepalive?.intervalMs ?? KEEPALIVE_INTERVAL_MS,
        pingTimeoutMs: options.keepalive?.timeoutMs ?? KEEPALIVE_TIMEOUT_MS,
      };
  const sessionManager = new Http2SessionManager(baseUrl, keepalive, nodeOptions);
  return {
    transport: createGrpcTransport({ baseUrl, sessionManager }),
    close: () => sessionManager.abort(),
  };
}

/** A ConveyorClient for Node over gRPC: `connect("127.0.0.1:50051", { apiKey })`. */
export function connect(target: string = DEFAULT_TARGET, options: ConnectOptions = {}): ConveyorClient {
  const { tls, caCert, clientCert, clientKey, keepalive, ...client } = options;
  const { transport, close } = nodeTransport(target, { tls, caCert, clientCert, clientKey, keepalive });
  return new ConveyorClient({ ...client, transport, onClose: close });
}
