// @conveyor/sdk for Node.js: the client (core.ts) plus gRPC over HTTP/2.

export * from "./core.js";
export { connect, createConveyorTransport, targetUrl, DEFAULT_TARGET, KEEPALIVE_INTERVAL_MS, KEEPALIVE_TIMEOUT_MS } from "./node.js";
export type { ConnectOptions, Pem, TransportOptions } from "./node.js";
