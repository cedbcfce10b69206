// Request bodies at the edge, read once for every protocol (REST, Connect, gRPC-Web), bounded in
// size and in patience. Node's HTTP parser does not expose a chunk's announced size, so a body is
// refused as soon as the bytes received pass the limit; a body that stops arriving (a chunk
// announced as 2^64-1 bytes, a client that went quiet) is refused when no byte came for a while.
// Both refusals leave the rest of the body unread: the server answers and closes the connection.
import type { IncomingMessage } from "node:http";

/** A refusal answered at the HTTP level, before any protocol read the body, closing the connection. */
export class BodyRefused extends Error {
  constructor(
    readonly status: 408 | 413,
    readonly code: "deadline_exceeded" | "resource_exhausted",
    message: string,
  ) {
    super(message);
  }
}

export interface BodyLimits {
  maxBytes: number;
  /** The longest wait for the next bytes of a body that has not ended. */
  idleTimeoutMs: number;
}

export const tooLarge = (limits: BodyLimits) => new BodyRefused(413, "resource_exhausted", `the request body exceeds ${limits.maxBytes} bytes`);

/** The whole body, or BodyRefused (413 past the limit, 408 when it stops arriving). */
export async function readBody(req: IncomingMessage, limits: BodyLimits): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  const body = req[Symbol.asyncIterator]();
  for (;;) {
    let timer: NodeJS.Timeout | undefined;
    const idle = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new BodyRefused(408, "deadline_exceeded", `the request body stopped arriving: nothing for ${limits.idleTimeoutMs} ms`)), limits.idleTimeoutMs);
    });
    const next = await Promise.race([body.next(), idle]).finally(() => clearTimeout(timer));
    if (next.done) return Buffer.concat(chunks, size);
    size += (next.value as Buffer).length;
    if (size > limits.maxBytes) throw tooLarge(limits);
    chunks.push(next.value as Buffer);
  }
}
