// Password hashing is deliberately expensive (Argon2id, 19 MiB: ~17 ms of CPU). Run all at once,
// a burst of sign-ins makes every one of them slow and most of them late; so hashes run at most
// `concurrency` at a time, first come first served, and a caller whose deadline cannot be met
// is told at once instead of queueing for work it will never receive.
import { Code, ConnectError } from "@connectrpc/connect";

export interface QueueLimits {
  /** Aborts when the caller gives up (cancel or deadline): a waiting job leaves the queue. */
  signal?: AbortSignal;
  /** The caller's deadline in epoch ms, to refuse at once what cannot finish before it. */
  deadline?: number;
}

interface Waiter {
  start(): void;
}

export class HashingQueue {
  #running = 0;
  readonly #waiting: Waiter[] = [];
  /** Moving average of one job's duration; 0 until the first job has finished. */
  #averageMs = 0;

  constructor(readonly concurrency: number) {
    if (!(concurrency >= 1)) throw new Error(`concurrency must be at least 1, got ${concurrency}`);
  }

  /** Jobs running now (never more than `concurrency`). */
  get running(): number {
    return this.#running;
  }

  async run<T>(job: () => Promise<T>, { signal, deadline }: QueueLimits = {}): Promise<T> {
    if (signal?.aborted) throw ConnectError.from(signal.reason);
    if (deadline !== undefined && Date.now() + this.#expectedWaitMs() + this.#averageMs > deadline) {
      // RESOURCE_EXHAUSTED (429 at the edge), not UNAVAILABLE: identity is healthy, just busy, and
      // callers' circuit breakers must not open on it and cut off everyone else's identity calls.
      throw new ConnectError("too many sign-ins at once: try again in a moment", Code.ResourceExhausted);
    }
    if (this.#running >= this.concurrency) await this.#turn(signal);
    else this.#running++;
    const started = performance.now();
    try {
      return await job();
    } finally {
      const took = performance.now() - started;
      this.#averageMs = this.#averageMs === 0 ? took : this.#averageMs * 0.8 + took * 0.2;
      this.#release();
    }
  }

  /** How long a job queued now waits before it starts, at the current pace. */
  #expectedWaitMs(): number {
    const ahead = this.#running + this.#waiting.length - this.concurrency + 1;
    return ahead <= 0 ? 0 : Math.ceil(ahead / this.concurrency) * this.#averageMs;
  }

  /** Waits for a slot (handed over by #release, already counted as running), or for the caller to give up. */
  #turn(signal: AbortSignal | undefined): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        this.#waiting.splice(this.#waiting.indexOf(waiter), 1);
        reject(ConnectError.from(signal!.reason));
      };
      const waiter: Waiter = {
        start: () => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        },
      };
      this.#waiting.push(waiter);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  #release(): void {
    const next = this.#waiting.shift();
    if (next) next.start(); // the slot passes straight to the next in line
    else this.#running--;
  }
}
