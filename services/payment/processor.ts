// A card processor that behaves like real processors' test cards, so the saga meets every case:
// a card that is charged, cards that are declined, and one whose first attempt fails with a
// transient processing error (the consumer retries it, and the retry goes through).
export type ChargeResult = { outcome: "captured" } | { outcome: "declined"; code: string; reason: string };

/** A failure worth retrying: nothing was charged, and trying again may work. */
export class TransientProcessorError extends Error {}

export const testCards = {
  success: "4242424242424242",
  declined: "4000000000000002",
  insufficientFunds: "4000000000009995",
  processingError: "4000000000000119",
} as const;

/** Charges `card`; `attempt` is 1 for the first try of this payment. */
export function charge(card: string, attempt: number): ChargeResult {
  switch (card) {
    case testCards.declined:
      return { outcome: "declined", code: "card_declined", reason: "the card was declined" };
    case testCards.insufficientFunds:
      return { outcome: "declined", code: "insufficient_funds", reason: "the card has insufficient funds" };
    case testCards.processingError:
      if (attempt === 1) throw new TransientProcessorError("processing error at the card network; try again");
      return { outcome: "captured" };
    default:
      return { outcome: "captured" };
  }
}
