// Paying as a customer does: the card number goes to payment once (CreatePaymentMethod), and the
// order carries only the token it returns.
import type { CallOptions } from "@connectrpc/connect";
import type { PaymentService } from "../../gen/shop/payment/v1/payment_pb.js";
import { headers } from "../../mesh/rpc/call-scope.js";
import type { MeshClient } from "../../mesh/rpc/client.js";
import { testCards } from "../../services/payment/processor.js";

/** Call options for an end user, as the gateway sends them after verifying a token. */
export const asUser = (userId: string, roles = "customer"): CallOptions => ({ headers: { [headers.userId]: userId, [headers.userRoles]: roles } });

/** A payment method token for `card`, created by the user the client (or `opts`) speaks for. */
export async function cardToken(payments: MeshClient<typeof PaymentService>, card: string = testCards.success, opts?: CallOptions): Promise<string> {
  return (await payments.createPaymentMethod({ cardNumber: card }, opts)).paymentMethod!.token;
}
