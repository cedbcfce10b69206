// Money in notifications reads as people write it, in each currency's own decimals, with the
// formatter made once per currency and reused.
import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { MoneySchema } from "../../gen/shop/common/v1/money_pb.js";
import { amount } from "../../services/notification/handlers.js";

const money = (amountMinor: bigint, currencyCode: string) => create(MoneySchema, { amountMinor, currencyCode });

describe("amount", () => {
  it("scales minor units by the currency's decimals", () => {
    expect(amount(money(1450n, "EUR"))).toBe("€14.50");
    expect(amount(money(1450n, "JPY"))).toBe("¥1,450");
    expect(amount(money(1450n, "EUR"))).toBe("€14.50"); // again, from the kept formatter
    expect(amount(money(5n, "KWD"))).toBe("KWD\u00a00.005"); // three decimals, a no-break space after the code
    expect(amount(undefined)).toBe("");
  });
});
