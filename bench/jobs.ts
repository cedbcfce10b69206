// What bench/all.ts asks of the load generator (bench/loadgen.ts, a process of its own) and what
// it answers, over Node's IPC channel. Types only, shared by both sides.

/** A shopper the fixtures signed up: what the load generator needs to act as them. */
export interface Shopper {
  email: string;
  password: string;
  token: string;
  /** Their user id, as the login answered it. */
  userId: string;
  /** Orders of theirs (confirmed during the set-up), for reads of orders and payments. */
  orderIds: string[];
}

export interface Fixture {
  productIds: string[];
  shoppers: Shopper[];
}

export interface Latency {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

/** Failures by reason ("HTTP 503: …", "ECONNRESET", …), with how often each came. */
export type Failures = Record<string, number>;

/** GETs to `paths` in turn, `concurrency` in flight (each caller sends its next as its last returns). */
export interface ClosedJob {
  kind: "closed";
  port: number;
  requests: { path: string; token?: string }[];
  concurrency: number;
  warmupMs: number;
  durationMs: number;
}

export interface ClosedResult {
  ok: number;
  perSecond: number;
  latency: Latency;
  failed: number;
  failures: Failures;
}

/** The operations of the mixed edge traffic, each one or two HTTP requests. */
export type MixedOp = "product" | "products" | "order" | "login" | "orderRead" | "stock" | "payment" | "notifications";

/** Operations at a fixed rate (open loop: sent on schedule whatever the answers), drawn by weight. */
export interface MixedJob {
  kind: "mixed";
  port: number;
  rate: number;
  weights: Record<MixedOp, number>;
  fixture: Fixture;
  warmupMs: number;
  durationMs: number;
}

export interface OpenResult {
  /** Operations sent during the measured window. */
  sent: number;
  /** Of those, answered with success (latency counted from when each was due, not when it went out). */
  ok: number;
  /** Successful operations that finished inside the window, per second of it. */
  perSecond: number;
  /** HTTP requests answered inside the window, per second (an order is two). */
  httpPerSecond: number;
  latency: Latency;
  /** Every operation but logins (1 % of the mix, ~190 ms of scrypt each: the overall p99 sits on their edge). */
  latencyWithoutLogins: Latency;
  byOp: Partial<Record<MixedOp, Latency>>;
  failed: number;
  failures: Failures;
}

/**
 * Orders at a fixed rate through the gateway, as a shopper checks out: the card to payment
 * (POST /v1/payment-methods), then POST /v1/orders with its token; each order's outcome comes as
 * shop.order.confirmed or shop.order.cancelled on NATS, recorded by order id the moment it arrives.
 */
export interface SagaJob {
  kind: "saga";
  port: number;
  rate: number;
  durationMs: number;
  fixture: Fixture;
  nats: NatsAccess;
  /** Stop waiting for outcomes once none has come for this long. */
  quietMs: number;
}

export interface NatsAccess {
  url: string;
  /** A folder with ca.crt and client.crt/.key (the operator's certificate). */
  certsDir: string;
}

export interface SagaResult {
  offered: number;
  created: number;
  confirmed: number;
  cancelled: number;
  /** Created, but neither confirmed nor cancelled when the outcomes stopped coming. */
  unresolved: number;
  /** Confirmed orders per second, from the first order sent to the last confirmation. */
  perSecond: number;
  /** Checkout start → order.confirmed. */
  latency: Latency;
  /**
   * The same, step by step, from when each step's event was seen: checkout (start → order.created,
   * the two HTTP requests included), reserve (→ stock.reserved), charge (→ payment.captured),
   * confirm (→ order.confirmed).
   */
  hops: Record<"checkout" | "reserve" | "charge" | "confirm", Latency>;
  createFailures: Failures;
  cancelReasons: Failures;
}

/** The baseline of the saga: raw JetStream publish → durable consumer → ack, at the same rate. */
export interface JetStreamJob {
  kind: "jetstream";
  rate: number;
  durationMs: number;
  nats: NatsAccess;
  quietMs: number;
}

export interface JetStreamResult {
  offered: number;
  consumed: number;
  perSecond: number;
  latency: Latency;
  failures: Failures;
}

export type Job = ClosedJob | MixedJob | SagaJob | JetStreamJob;
export type ResultOf<J extends Job> = J extends ClosedJob ? ClosedResult : J extends MixedJob ? OpenResult : J extends SagaJob ? SagaResult : JetStreamResult;

/** Load generator → parent. "window" marks the start and end of the measured window as they happen. */
export type LoadMessage = { type: "window"; edge: "start" | "end" } | { type: "done"; result: unknown } | { type: "error"; message: string };
