// NotificationService and the messages it sends on user.registered, order.confirmed and order.cancelled.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { UserRegisteredSchema } from "../../gen/shop/identity/v1/events_pb.js";
import { NotificationChannel, NotificationSchema, NotificationService } from "../../gen/shop/notification/v1/notification_pb.js";
import { OrderCancelledSchema, OrderConfirmedSchema } from "../../gen/shop/order/v1/events_pb.js";
import { listScope } from "../../mesh/rpc/call-scope.js";
import { pageLimit, pageToken, paginate } from "../../mesh/rpc/paging.js";
import type { Db, Queryable } from "../../mesh/data/db.js";
import { on, type EventHandlerSpec } from "../../mesh/events/eventing.js";
import type { Money } from "../../gen/shop/common/v1/money_pb.js";
import type { Message, Sender } from "./sender.js";

interface Row extends Record<string, unknown> {
  id: string;
  user_id: string;
  subject: string;
  body: string;
  source_event_id: string;
  source_event_type: string;
  created_at: Date;
}

export function notificationHandlers(db: Db): ServiceImpl<typeof NotificationService> {
  return {
    async listNotifications(req, ctx) {
      const limit = pageLimit(req.pageSize);
      const rows = await db.query<Row>(
        `SELECT * FROM notifications WHERE ($1::text IS NULL OR user_id = $1) AND ($2::uuid IS NULL OR id < $2::uuid) ORDER BY id DESC LIMIT $3`,
        [listScope(ctx, req.userId) ?? null, pageToken.decode(req.pageToken) ?? null, limit + 1],
      );
      const { page, nextPageToken } = paginate(rows, limit);
      return {
        notifications: page.map((r) =>
          create(NotificationSchema, {
            id: r.id,
            userId: r.user_id,
            channel: NotificationChannel.EMAIL,
            subject: r.subject,
            body: r.body,
            sourceEventId: r.source_event_id,
            sourceEventType: r.source_event_type,
            createTime: timestampFromDate(r.created_at),
          }),
        ),
        nextPageToken,
      };
    },
  };
}

/** One formatter per currency, made on first use: building one costs far more than formatting. */
const formats = new Map<string, { format: Intl.NumberFormat; scale: number }>();

/** Money for people: minor units scaled by the currency's own decimals (2 for EUR, 0 for JPY). */
export function amount(m: Money | undefined): string {
  if (!m) return "";
  let found = formats.get(m.currencyCode);
  if (!found) {
    const format = new Intl.NumberFormat("en", { style: "currency", currency: m.currencyCode });
    formats.set(m.currencyCode, (found = { format, scale: 10 ** (format.resolvedOptions().maximumFractionDigits ?? 2) }));
  }
  return found.format.format(Number(m.amountMinor) / found.scale);
}

export function notificationConsumers(sender: Sender): EventHandlerSpec[] {
  // One notification per event: the sender sends once per source event id (the database sender:
  // its unique column), so a redelivery is a no-op without the inbox. A batch's messages go in one statement.
  const sendAll = <E extends { id: string; type: string }>(message: (event: E) => Omit<Message, "sourceEventId" | "sourceEventType">) =>
    (q: Queryable, events: E[]) => sender.send(q, events.map((e) => ({ ...message(e), sourceEventId: e.id, sourceEventType: e.type })));

  return [
    on({
      event: UserRegisteredSchema,
      name: "welcome",
      applyIdempotent: sendAll(({ data }) => ({
        userId: data.userId, recipient: data.email, subject: "Welcome to ShopMesh", body: `Hello ${data.displayName}, your account is ready.`,
      })),
    }),
    on({
      event: OrderConfirmedSchema,
      name: "order-confirmed",
      applyIdempotent: sendAll(({ data }) => ({
        userId: data.userId, recipient: "", subject: `Order ${data.orderId} confirmed`, body: `We have your payment of ${amount(data.total)}; your order is on its way.`,
      })),
    }),
    on({
      event: OrderCancelledSchema,
      name: "order-cancelled",
      applyIdempotent: sendAll(({ data }) => ({
        userId: data.userId, recipient: "", subject: `Order ${data.orderId} cancelled`,
        // Whether a charge went through can be decided after this event, so promise what is true either way.
        body: `Your order was cancelled: ${data.reason}.${data.stockReserved || data.paymentCaptured ? " If your card was charged, the payment will be refunded in full." : ""}`,
      })),
    }),
  ];
}
