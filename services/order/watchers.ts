// Wakes WatchOrder streams when this process changes an order. Other replicas' changes are
// picked up by the stream's periodic re-read, so this is a latency shortcut, not the source of truth.
export class OrderWatchers {
  readonly #waiting = new Map<string, Set<() => void>>();

  changed(orderId: string): void {
    const wake = this.#waiting.get(orderId);
    this.#waiting.delete(orderId);
    wake?.forEach((fn) => fn());
  }

  /** Resolves on the next change of `orderId`, after `maxWaitMs`, or when `signal` aborts. */
  next(orderId: string, maxWaitMs: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        const waiting = this.#waiting.get(orderId);
        waiting?.delete(done);
        if (waiting?.size === 0) this.#waiting.delete(orderId);
        resolve();
      };
      const timer = setTimeout(done, maxWaitMs);
      signal.addEventListener("abort", done, { once: true });
      if (!this.#waiting.has(orderId)) this.#waiting.set(orderId, new Set());
      this.#waiting.get(orderId)!.add(done);
    });
  }
}
