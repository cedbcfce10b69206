// The card processor. Payment talks to it through CardProcessor, the shape real processors' APIs
// have: a charge carries an idempotency key, and the same key always gets the same answer without
// charging again, so a caller that lost the answer (crash, timeout) may simply ask again.
//
// TestProcessor behaves like real processors' test cards, so the saga meets every case: a card
// that is charged, cards that are declined, and one whose first attempt fails with a transient
// processing error (nothing charged; trying again goes through). It stands for an outside system:
// one instance per process, surviving a restart of the payment service within that process.
export type ChargeResult = { outcome: "captured" } | { outcome: "declined"; code: string; reason: string };

export interface ChargeRequest {
  /** Same key, same charge: the processor charges at most once per key. We use the payment id. */
  idempotencyKey: string;
  card: string;
  amountMinor: bigint;
  currency: string;
}

export interface CardProcessor {
  /** Charges, or returns the result of the earlier charge with this key. */
  charge(req: ChargeRequest): Promise<ChargeResult>;
}

/** A failure worth retrying: nothing was charged, and trying again may work. */
export class TransientProcessorError extends Error {}

export const testCards = {
  success: "4242424242424242",
  declined: "4000000000000002",
  insufficientFunds: "4000000000009995",
  processingError: "4000000000000119",
} as const;

function decide(card: string, firstTry: boolean): ChargeResult {
  switch (card) {
    case testCards.declined:
      return { outcome: "declined", code: "card_declined", reason: "the card was declined" };
    case testCards.insufficientFunds:
      return { outcome: "declined", code: "insufficient_funds", reason: "the card has insufficient funds" };
    case testCards.processingError:
      if (firstTry) throw new TransientProcessorError("processing error at the card network; try again");
      return { outcome: "captured" };
    default:
      return { outcome: "captured" };
  }
}

export class TestProcessor implements CardProcessor {
  readonly #results = new Map<string, ChargeResult>();
  readonly #calls = new Map<string, number>();
  readonly #captures = new Map<string, number>();

  async charge(req: ChargeRequest): Promise<ChargeResult> {
    const calls = (this.#calls.get(req.idempotencyKey) ?? 0) + 1;
    this.#calls.set(req.idempotencyKey, calls);
    await new Promise((r) => setImmediate(r)); // a network call: other work runs meanwhile
    const known = this.#results.get(req.idempotencyKey);
    if (known) return known;
    const result = decide(req.card, calls === 1); // a transient error is not remembered: nothing happened
    this.#results.set(req.idempotencyKey, result);
    if (result.outcome === "captured") this.#captures.set(req.idempotencyKey, (this.#captures.get(req.idempotencyKey) ?? 0) + 1);
    return result;
  }

  /** How many times charge was called with this key (tests: at most once in normal operation). */
  calls(key: string): number {
    return this.#calls.get(key) ?? 0;
  }

  /** How many times money actually moved for this key: 0 or 1, whatever the calls. */
  captures(key: string): number {
    return this.#captures.get(key) ?? 0;
  }
}

export const testProcessor = new TestProcessor();
