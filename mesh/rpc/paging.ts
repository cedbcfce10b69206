// Keyset pagination tokens. A page token is the last id of the previous page (UUIDv7, so ids sort
// by creation), opaque to clients; anything else sent back is INVALID_ARGUMENT.
import { Code, ConnectError } from "@connectrpc/connect";

const DEFAULT_PAGE_SIZE = 20;

/** Rows per page: what the request asked for (validated 0..100 in the contract), or the default for 0. */
export const pageLimit = (pageSize: number): number => pageSize || DEFAULT_PAGE_SIZE;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export const pageToken = {
  encode: (lastId: string): string => Buffer.from(lastId).toString("base64url"),
  /** The id a page continues from; undefined for the first page. */
  decode(token: string): string | undefined {
    if (!token) return undefined;
    const id = Buffer.from(token, "base64url").toString();
    if (!UUID.test(id)) throw new ConnectError("page_token is not a token from a previous response", Code.InvalidArgument);
    return id;
  },
};

/** Takes `limit` rows of `rows` (fetched with limit + 1) and the token for the next page. */
export function paginate<T extends { id: string }>(rows: T[], limit: number): { page: T[]; nextPageToken: string } {
  const page = rows.slice(0, limit);
  return { page, nextPageToken: rows.length > limit ? pageToken.encode(page.at(-1)!.id) : "" };
}
