// The identity service's SQL: users by id and by email.
import type { Queryable } from "../../mesh/data/db.js";

export interface UserRow extends Record<string, unknown> {
  id: string;
  email: string;
  display_name: string;
  password_hash: string;
  roles: string[];
  created_at: Date;
  updated_at: Date;
}

const COLUMNS = "id, email, display_name, password_hash, roles, created_at, updated_at";

export const normalizeEmail = (email: string): string => email.trim().toLowerCase();

export function createStore(db: Queryable) {
  const one = async (sql: string, params: unknown[]) => (await db.query<UserRow>(sql, params))[0];
  return {
    /** Inserts a user; a taken email surfaces as a unique violation (SQLSTATE 23505). */
    insert: (u: { id: string; email: string; displayName: string; passwordHash: string; roles: string[] }) =>
      one(
        `INSERT INTO users (id, email, display_name, password_hash, roles) VALUES ($1, $2, $3, $4, $5) RETURNING ${COLUMNS}`,
        [u.id, u.email, u.displayName, u.passwordHash, u.roles],
      ) as Promise<UserRow>,
    byEmail: (email: string) => one(`SELECT ${COLUMNS} FROM users WHERE email = $1`, [email]),
    byId: (id: string) => one(`SELECT ${COLUMNS} FROM users WHERE id = $1`, [id]),
    updateProfile: (id: string, displayName: string | undefined) =>
      one(
        `UPDATE users SET display_name = COALESCE($2, display_name), updated_at = now() WHERE id = $1 RETURNING ${COLUMNS}`,
        [id, displayName ?? null],
      ),
    /** Replaces a password hash, unless it changed since it was read (a password change wins). */
    replacePasswordHash: (id: string, was: string, passwordHash: string) =>
      one(`UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2 RETURNING id`, [id, was, passwordHash]),
    /** Creates the admin account, or makes the existing one an admin with this password. */
    upsertAdmin: (u: { id: string; email: string; passwordHash: string }) =>
      one(
        `INSERT INTO users (id, email, display_name, password_hash, roles) VALUES ($1, $2, 'Administrator', $3, ARRAY['customer','admin'])
         ON CONFLICT (email) DO UPDATE SET password_hash = EXCLUDED.password_hash, roles = ARRAY['customer','admin'], updated_at = now()
         RETURNING ${COLUMNS}`,
        [u.id, u.email, u.passwordHash],
      ),
  };
}
