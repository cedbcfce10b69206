// A shopper at the gateway's REST port: JSON calls, retries while the mesh recovers, and placing
// an order the way the contracts say a card travels.
import { PaymentService } from "../../gen/shop/payment/v1/payment_pb.js";

export interface Answer {
  status: number;
  body: any;
}

export interface ShopHttp {
  call(method: string, path: string, body?: unknown, token?: string, headers?: Record<string, string>): Promise<Answer>;
  /** Calls again while the mesh is recovering (no answer, 5xx, 429), up to `boundMs`; returns the last answer. */
  persist(send: () => Promise<Answer>, boundMs?: number): Promise<Answer>;
  /**
   * Places an order paid with `card`. The card goes to payment alone (POST /v1/payment-methods)
   * when the contracts have that RPC, and the order carries only its token. The Idempotency-Key
   * makes a retry after a lost answer return the same order instead of placing another.
   */
  placeOrder(token: string, order: { lines: { productId: string; quantity: number }[]; shippingAddress: object }, card: string, key: string, boundMs?: number): Promise<Answer>;
}

const cardsAsTokens = PaymentService.methods.some((m) => m.name === "CreatePaymentMethod");

/** `onAnswer` sees every answer (status 0: none), e.g. for progress figures. */
export function shopHttp(base: string, onAnswer: (a: Answer) => void = () => {}): ShopHttp {
  const call: ShopHttp["call"] = async (method, path, body, token, headers = {}) => {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(20_000),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {}
    return { status: res.status, body: parsed };
  };
  const persist: ShopHttp["persist"] = async (send, boundMs = 60_000) => {
    const end = Date.now() + boundMs;
    for (let attempt = 0; ; attempt++) {
      const answer = await send().catch((err: Error) => ({ status: 0, body: err.message }));
      onAnswer(answer);
      if ((answer.status >= 200 && answer.status < 500 && answer.status !== 429) || Date.now() > end) return answer;
      await new Promise((r) => setTimeout(r, Math.min(2_000, 100 * 2 ** attempt)));
    }
  };
  return {
    call,
    persist,
    async placeOrder(token, order, card, key, boundMs) {
      let paymentMethod: object = { cardNumber: card };
      if (cardsAsTokens) {
        const created = await persist(() => call("POST", "/v1/payment-methods", { cardNumber: card }, token), boundMs);
        if (created.status !== 200) return created;
        paymentMethod = { token: created.body.paymentMethod.token };
      }
      return persist(() => call("POST", "/v1/orders", { ...order, paymentMethod }, token, { "idempotency-key": key }), boundMs);
    },
  };
}
