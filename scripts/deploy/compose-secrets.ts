// What the compose setup's one-shot `certs` step writes besides the CA (scripts/certs.ts), each
// into its own volume so a container mounts only its own secrets:
// - per identity, a folder laid out as a Kubernetes TLS secret (tls.crt, tls.key, ca.crt): what
//   its Envoy sidecar's SDS files and its app's CERTS_DIR name;
// - per database role, a random password, made once and then kept (PostgreSQL sets it at its
//   first start only), so it is in no file of the repository and no environment variable.
// Keys and passwords are 0640: their owner (the image's user, the app) and its group read them,
// nobody else. Envoy and PostgreSQL run with that group (docker-compose.yml).
import { randomBytes } from "node:crypto";
import { access, chmod, chown, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { serviceNames } from "../../mesh/topology.js";

/** The image's user and group (Dockerfile), owner of every secret the one-shot step writes. */
export const IMAGE_USER = { uid: 10001, gid: 10001 } as const;

/** PostgreSQL's superuser (the postgres image's default name) and one role and database per service. */
export const SUPERUSER = "postgres";
export const databaseRoles = [SUPERUSER, ...serviceNames] as const;

export interface Owner {
  uid: number;
  gid: number;
}

export function parseOwner(text: string): Owner {
  const match = /^(\d+):(\d+)$/.exec(text);
  if (!match) throw new Error(`--owner wants UID:GID, got ${text}`);
  return { uid: Number(match[1]), gid: Number(match[2]) };
}

const SECRET_MODE = 0o640;
const PUBLIC_MODE = 0o644;
const DIR_MODE = 0o750;

/** Replaces `path` whole (a watcher, Envoy's, never reads half a file), with its mode and owner. */
async function writeAtomically(path: string, content: string, mode: number, owner?: Owner): Promise<void> {
  const temporary = `${path}.writing`;
  await writeFile(temporary, content, { mode });
  await chmod(temporary, mode); // writeFile's mode is masked by the umask
  if (owner) await chown(temporary, owner.uid, owner.gid);
  await rename(temporary, path);
}

async function ownedDir(dir: string, owner?: Owner): Promise<void> {
  await mkdir(dir, { recursive: true });
  await chmod(dir, DIR_MODE);
  if (owner) await chown(dir, owner.uid, owner.gid);
}

/**
 * Writes `identity`'s folder `dir` (tls.crt, tls.key, ca.crt) from `caDir`, which holds the CA and
 * `<identity>.crt`/`.key` as `npm run certs` lays them out. Run again after a reissue, it replaces them.
 */
export async function writeIdentityFolder(caDir: string, identity: string, dir: string, owner?: Owner): Promise<void> {
  const read = (name: string) => readFile(join(caDir, name), "utf8");
  await ownedDir(dir, owner);
  await writeAtomically(join(dir, "ca.crt"), await read("ca.crt"), PUBLIC_MODE, owner);
  await writeAtomically(join(dir, "tls.crt"), await read(`${identity}.crt`), PUBLIC_MODE, owner);
  await writeAtomically(join(dir, "tls.key"), await read(`${identity}.key`), SECRET_MODE, owner);
}

/** Makes sure `dir/password` holds a password: a new random one the first time, the same one after. */
export async function ensurePassword(dir: string, owner?: Owner): Promise<void> {
  await ownedDir(dir, owner);
  const path = join(dir, "password");
  const exists = await access(path).then(() => true, () => false);
  if (!exists) await writeAtomically(path, randomBytes(24).toString("base64url"), SECRET_MODE, owner);
  await chmod(path, SECRET_MODE);
  if (owner) await chown(path, owner.uid, owner.gid);
}
