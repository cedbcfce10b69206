// HTTP/1.1 over a raw TCP socket, for requests no well-behaved client would send (bad request
// lines, NUL in headers, duplicate Content-Length, oversized chunked bodies) and for what happens
// next on the same keep-alive connection.
import { connect, type Socket } from "node:net";

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/** What a connection gave back for one request: a response, the server closing it, or nothing in time. */
export type RawOutcome = { kind: "response"; response: RawResponse } | { kind: "closed"; partial: string } | { kind: "timeout"; partial: string };

/** "name: value" lines (header or trailer fields) into `into`, names lower-cased. */
function readFields(lines: string[], into: Record<string, string>): void {
  for (const line of lines) {
    const i = line.indexOf(":");
    if (i > 0) into[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
}

/** Parses one complete response at the start of `buf`; undefined while it is incomplete. */
function parseResponse(buf: Buffer, closed: boolean, head: boolean): { response: RawResponse; rest: Buffer } | undefined {
  const end = buf.indexOf("\r\n\r\n");
  if (end === -1) return undefined;
  const [statusLine, ...lines] = buf.subarray(0, end).toString("latin1").split("\r\n");
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine ?? "")?.[1] ?? 0);
  const headers: Record<string, string> = {};
  readFields(lines, headers);
  let at = end + 4;
  if (head) return { response: { status, headers, body: Buffer.alloc(0) }, rest: buf.subarray(at) }; // a HEAD answer has no body
  if (headers["content-length"] !== undefined) {
    const length = Number(headers["content-length"]);
    if (buf.length < at + length) return undefined;
    return { response: { status, headers, body: buf.subarray(at, at + length) }, rest: buf.subarray(at + length) };
  }
  if (/chunked/i.test(headers["transfer-encoding"] ?? "")) {
    const chunks: Buffer[] = [];
    for (;;) {
      const lineEnd = buf.indexOf("\r\n", at);
      if (lineEnd === -1) return undefined;
      const size = parseInt(buf.subarray(at, lineEnd).toString("latin1"), 16);
      if (buf.length < lineEnd + 2 + size + 2) return undefined;
      if (size === 0) {
        // The last chunk is followed by a trailer section (gRPC's grpc-status, grpc-message) and an
        // empty line; the trailers are read into `headers`, where a gRPC status is looked for.
        const end = buf.indexOf("\r\n\r\n", lineEnd);
        if (end === -1) return undefined;
        readFields(buf.subarray(lineEnd + 2, end).toString("latin1").split("\r\n"), headers);
        return { response: { status, headers, body: Buffer.concat(chunks) }, rest: buf.subarray(end + 4) };
      }
      chunks.push(buf.subarray(lineEnd + 2, lineEnd + 2 + size));
      at = lineEnd + 2 + size + 2;
    }
  }
  if (status === 204 || status === 304 || (status >= 100 && status < 200)) return { response: { status, headers, body: Buffer.alloc(0) }, rest: buf.subarray(at) };
  return closed ? { response: { status, headers, body: buf.subarray(at) }, rest: Buffer.alloc(0) } : undefined; // body until close
}

/** One TCP connection: send bytes, read the next response. */
export class RawConnection {
  #socket: Socket;
  #buf: Buffer = Buffer.alloc(0);
  #closed = false;
  #wake: (() => void) | undefined;
  readonly opened: Promise<void>;

  constructor(port: number, host = "127.0.0.1") {
    this.#socket = connect({ port, host });
    this.opened = new Promise((resolve, reject) => this.#socket.once("connect", resolve).once("error", reject));
    this.#socket.on("data", (d: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, d]);
      this.#wake?.();
    });
    const close = () => {
      this.#closed = true;
      this.#wake?.();
    };
    this.#socket.on("close", close);
    this.#socket.on("error", close);
  }

  /** Bytes received and not yet read as a response: on a connection in step, none between answers. */
  get unread(): string {
    return this.#buf.toString("latin1");
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Writes, resolving once written (or when the server has already closed the connection). */
  write(data: string | Buffer): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return new Promise((resolve) => this.#socket.write(data, () => resolve()));
  }

  /** The next final response (interim 1xx ones are skipped); `head`: it answers a HEAD request (headers only). */
  async next(timeoutMs: number, head = false): Promise<RawOutcome> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const parsed = parseResponse(this.#buf, this.#closed, head);
      if (parsed) {
        this.#buf = parsed.rest;
        // 100 Continue (sent to "Expect: 100-continue") and 103 come before the answer: not it.
        if (parsed.response.status >= 100 && parsed.response.status < 200 && parsed.response.status !== 101) continue;
        return { kind: "response", response: parsed.response };
      }
      if (this.#closed) return { kind: "closed", partial: this.#buf.toString("latin1").slice(0, 200) };
      const left = deadline - Date.now();
      if (left <= 0) return { kind: "timeout", partial: this.#buf.toString("latin1").slice(0, 200) };
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#wake = () => (clearTimeout(timer), resolve());
      });
      this.#wake = undefined;
    }
  }

  close(): void {
    this.#socket.destroy();
  }
}
