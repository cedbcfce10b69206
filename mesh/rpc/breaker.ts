// A consecutive-failure circuit breaker that is only a counter while closed. (cockatiel's wraps
// every call in two async functions, a result object and event emitters, and its retry policy
// in two more: on the internal hop that was more than the breaking is worth.)
// Closed: `threshold` consecutive failures that `counts` accepts open it; a success resets the
// count, any other error leaves it. Open: calls fail fast with CircuitOpenError for
// `halfOpenAfterMs`; then one probe goes through while other calls wait for its outcome. A counted
// failure of the probe opens the breaker again; any other outcome (the upstream answered) closes it.

export class CircuitOpenError extends Error {
  constructor() {
    super("circuit open");
  }
}

type State = "closed" | "open" | "half-open";

export class Breaker {
  #state: State = "closed";
  #failures = 0;
  #openedAt = 0;
  #probe: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly threshold: number,
    private readonly halfOpenAfterMs: number,
    private readonly counts: (err: unknown) => boolean,
  ) {}

  /** True while calls fail fast. */
  get isOpen(): boolean {
    return this.#state === "open" && Date.now() - this.#openedAt < this.halfOpenAfterMs;
  }

  execute<T>(attempt: () => Promise<T>): Promise<T> {
    if (this.#state === "closed") return attempt().then(this.#closedSuccess, this.#closedFailure);
    if (this.#state === "half-open") return this.#probe.then(() => this.execute(attempt));
    if (this.isOpen) return Promise.reject(new CircuitOpenError());
    this.#state = "half-open";
    const probe = new Promise<T>((resolve) => resolve(attempt())).then(
      (value) => (this.#close(), value),
      (err: unknown) => {
        if (this.counts(err)) this.#open();
        else this.#close();
        throw err;
      },
    );
    this.#probe = probe.catch(() => undefined);
    return probe;
  }

  readonly #closedSuccess = <T>(value: T): T => {
    this.#failures = 0;
    return value;
  };

  readonly #closedFailure = (err: unknown): never => {
    // Calls that were in flight when the breaker opened say nothing new.
    if (this.#state === "closed" && this.counts(err) && ++this.#failures >= this.threshold) this.#open();
    throw err;
  };

  #open(): void {
    this.#state = "open";
    this.#openedAt = Date.now();
    this.#failures = 0;
  }

  #close(): void {
    this.#state = "closed";
    this.#failures = 0;
  }
}
