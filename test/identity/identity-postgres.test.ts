import { startPostgres, type TestPostgres } from "../support/postgres.js";
import { identitySuite } from "./identity-suite.js";

let pg: TestPostgres | undefined;
identitySuite("PostgreSQL (server)", {
  async env() {
    if (!pg) {
      pg = await startPostgres();
      await pg.createDatabase("identity");
    }
    return { DATABASE_URL: pg.url("identity") };
  },
  cleanup: async () => pg?.stop(),
});
