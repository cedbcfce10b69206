// The container image, without Docker: both stages of the Dockerfile rebuilt on disk from the
// Dockerfile itself. The build stage's COPY sources go to a folder of their own, where its build
// runs (with the repository's node_modules for its `npm ci`); the runtime stage's COPY lines then
// copy exactly what they name from there, and its own `npm ci` installs the production
// dependencies. From that tree the certs step writes an identity's folder as compose mounts it,
// and a real catalog starts with it and compose's environment for it (sidecar mode; PGlite, a
// real nats-server and Redis), passes the image's HEALTHCHECK command and answers a real call
// through a stand-in for its sidecar. A tree missing one path the runtime reads fails to start.
import { spawn, spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join, relative } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { CatalogService } from "../../gen/shop/catalog/v1/catalog_pb.js";
import { projectRoot } from "../../mesh/project-root.js";
import { certificateHolders, serviceNames } from "../../mesh/topology.js";
import { IMAGE_USER } from "../../scripts/deploy/compose-secrets.js";
import { ChildProgress } from "../support/child-progress.js";
import { createTestPki, type TestPki } from "../support/pki.js";
import { freePort } from "../support/ports.js";
import { startNats, startRedis, type NatsTestServer, type TestServer } from "../support/processes.js";
import { clientFor } from "../support/servers.js";
import { startTestSidecar } from "../support/sidecar-proxy.js";

// ---- the Dockerfile, read as Docker reads it (the subset it uses) ----

interface Instruction {
  op: string;
  args: string;
}
interface Stage {
  image: string;
  name: string;
  workdir: string;
  instructions: Instruction[];
}

function parseDockerfile(text: string): Stage[] {
  const lines = text.replace(/\\\n/g, " ").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  const stages: Stage[] = [];
  for (const line of lines) {
    const [, op, args] = /^(\S+)\s+(.*)$/.exec(line)!;
    const instruction = { op: op!.toUpperCase(), args: args!.replace(/\s+/g, " ") };
    if (instruction.op === "FROM") {
      const [, image, name] = /^(\S+) AS (\S+)$/i.exec(instruction.args)!;
      stages.push({ image: image!, name: name!, workdir: "/", instructions: [] });
      continue;
    }
    const stage = stages.at(-1)!;
    if (instruction.op === "WORKDIR") stage.workdir = instruction.args;
    stage.instructions.push(instruction);
  }
  return stages;
}

interface Copy {
  from?: string;
  sources: string[];
  dest: string;
}
const copies = (stage: Stage): Copy[] =>
  stage.instructions.filter((i) => i.op === "COPY").map((i) => {
    const words = i.args.split(" ");
    const from = words.find((w) => w.startsWith("--from="))?.slice("--from=".length);
    const paths = words.filter((w) => !w.startsWith("--"));
    return { from, sources: paths.slice(0, -1), dest: paths.at(-1)! };
  });

/** The `npm ci` of a stage's RUN lines (without what follows it with &&). */
const npmCi = (stage: Stage) => stage.instructions.filter((i) => i.op === "RUN").flatMap((i) => i.args.split("&&").map((c) => c.trim())).find((c) => c.startsWith("npm ci"));

/**
 * Copies what `stage`'s COPY lines name into `dest` (standing for its WORKDIR): from the build
 * context, or from `stages`' folders for --from. `leaveOut` drops the lines copying those sources.
 */
function replayCopies(stage: Stage, dest: string, context: string, built: Record<string, { stage: Stage; dir: string }>, leaveOut: string[] = []): void {
  for (const copy of copies(stage)) {
    for (const source of copy.sources.filter((s) => !leaveOut.includes(s))) {
      const origin = copy.from ? join(built[copy.from]!.dir, relative(built[copy.from]!.stage.workdir, source)) : join(context, source);
      const target = copy.dest.endsWith("/") ? join(dest, copy.dest, basename(source)) : join(dest, copy.dest);
      cpSync(origin, target, { recursive: true });
    }
  }
}

const readText = (path: string) => readFileSync(join(projectRoot, path), "utf8");
const dockerfile = parseDockerfile(readText("Dockerfile"));
const [buildStage, runtimeStage] = dockerfile as [Stage, Stage];

/** Runs a command as the image would (its ENV, the tree as its WORKDIR) with `env`. */
const imageEnv = (extra: Record<string, string>): Record<string, string> => ({
  PATH: process.env.PATH!,
  ...Object.fromEntries(runtimeStage.instructions.filter((i) => i.op === "ENV").map((i) => i.args.split("=") as [string, string])),
  ...extra,
});

// ---- the trees ----

let work: string;
let runtime: string;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "shopmesh-image-"));
  // Build stage: its COPY sources, the repository's node_modules for its npm ci, its build.
  const buildDir = join(work, "build");
  mkdirSync(buildDir);
  replayCopies(buildStage, buildDir, projectRoot, {});
  symlinkSync(join(projectRoot, "node_modules"), join(buildDir, "node_modules"));
  const build = spawnSync("npm", ["run", "build"], { cwd: buildDir, encoding: "utf8" });
  expect(build.status, `the build stage's build failed:\n${build.stdout}${build.stderr}`).toBe(0);
  // Runtime stage: exactly its COPY lines, and its own npm ci (from the local npm cache when it can).
  runtime = join(work, "runtime");
  mkdirSync(runtime);
  replayCopies(runtimeStage, runtime, projectRoot, { build: { stage: buildStage, dir: buildDir } });
  const install = spawnSync("sh", ["-c", `${npmCi(runtimeStage)} --prefer-offline`], { cwd: runtime, encoding: "utf8" });
  expect(install.status, `the runtime stage's npm ci failed:\n${install.stderr}`).toBe(0);
}, 120_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("the Dockerfile", () => {
  it("builds both stages from one pinned node image, a long-term-support line package.json accepts", () => {
    expect(dockerfile.map((s) => s.name)).toEqual(["build", "runtime"]);
    for (const stage of dockerfile) expect(stage.image).toMatch(/^node:\d+\.\d+\.\d+-bookworm-slim$/);
    expect(runtimeStage.image).toBe(buildStage.image);
    const major = Number(/^node:(\d+)\./.exec(buildStage.image)![1]);
    const engines = JSON.parse(readFileSync(join(projectRoot, "package.json"), "utf8")).engines.node as string;
    expect(major % 2, "even majors are Node's long-term-support lines").toBe(0);
    expect(major).toBeGreaterThanOrEqual(Number(/^>=(\d+)/.exec(engines)![1]));
  });

  it("puts only production dependencies, dist/, package.json and the mesh migrations in the runtime stage", () => {
    expect(copies(runtimeStage)).toEqual([
      { from: undefined, sources: ["package.json", "package-lock.json"], dest: "./" },
      { from: "build", sources: [`${buildStage.workdir}/dist`], dest: "./dist" },
      { from: undefined, sources: ["mesh/data/migrations"], dest: "./mesh/data/migrations" },
    ]);
    expect(npmCi(runtimeStage)).toMatch(/^npm ci .*--omit=dev/);
    expect(readdirSync(runtime).sort()).toEqual(["dist", "mesh", "node_modules", "package-lock.json", "package.json"]);
    const files = (dir: string): string[] => readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : [join(dir, e.name)]));
    const ours = [...files(join(runtime, "dist")), ...files(join(runtime, "mesh"))].map((f) => relative(runtime, f));
    expect(ours.filter((f) => f.endsWith(".ts") || /(^|\/)(test|certs|\.data)\//.test(f) || f.endsWith(".key"))).toEqual([]);
    // No package the lockfile marks as development-only came along.
    const { packages } = JSON.parse(readText("package-lock.json")) as { packages: Record<string, { dev?: boolean }> };
    const devOnly = Object.entries(packages).filter(([path, p]) => path && p.dev).map(([path]) => path);
    expect(devOnly.length).toBeGreaterThan(0);
    expect(devOnly.filter((path) => existsSync(join(runtime, path)))).toEqual([]);
  });

  it("runs as the non-root user that owns the compose secrets, with a health check naming the process by SHOPMESH_PROCESS", () => {
    const runtimeOps = (op: string) => runtimeStage.instructions.filter((i) => i.op === op).map((i) => i.args);
    expect(runtimeOps("USER")).toEqual([`${IMAGE_USER.uid}:${IMAGE_USER.gid}`]);
    expect(runtimeOps("RUN").join("\n")).toContain(`useradd --uid ${IMAGE_USER.uid} --gid ${IMAGE_USER.gid}`);
    expect(runtimeOps("HEALTHCHECK")).toEqual([expect.stringMatching(/ CMD node dist\/scripts\/healthcheck\.js "\$SHOPMESH_PROCESS"$/)]);
  });

  it("has in its runtime tree every process compose starts, and the scripts it runs", () => {
    const compose: any = parse(readText("docker-compose.yml"));
    const commands = Object.values<any>(compose.services).filter((s) => s.image?.startsWith("shopmesh:")).map((s) => s.command[1]);
    const healthChecks = Object.values<any>(compose.services).map((s) => s.healthcheck?.test).filter((t) => t?.[1] === "node").map((t) => t[2]);
    expect(commands).toHaveLength(serviceNames.length + 2); // the services, the gateway, the certs step
    for (const file of [...commands, ...healthChecks]) expect(existsSync(join(runtime, file)), file).toBe(true);
  });

  it("hashes passwords in its runtime tree: the native Argon2 binary comes with its production install, which runs no scripts", () => {
    const script = `import("@node-rs/argon2").then(async (m) => console.log(await m.hash("pw", { memoryCost: 1024, timeCost: 1 })))`;
    const run = spawnSync("node", ["-e", script], { cwd: runtime, encoding: "utf8" });
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^\$argon2id\$v=19\$m=1024,t=1,p=1\$/);
  });

  it("keeps node_modules, dist, local data, certificates, git and test output out of the build context, and none of what the build COPYs", () => {
    const patterns = readText(".dockerignore").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
    // Docker's matching: `**/` any folders (none too), `*` within one name; a match covers what is below.
    const toRegExp = (p: string) => new RegExp(`^${p.split("**/").map((part) => part.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, "[^/]*")).join("(?:.*/)?")}(?:/.*)?$`);
    const ignored = (path: string) => patterns.some((p) => toRegExp(p).test(path));
    for (const path of ["node_modules", "services/catalog/node_modules", "dist", "dist.building-1", ".data", "certs", ".git", "coverage", "test", "npm-debug.log", "mesh/.data"]) expect(ignored(path), path).toBe(true);
    for (const path of copies(buildStage).flatMap((c) => c.sources)) expect(ignored(path), path).toBe(false);
    expect(ignored("services/catalog/main.ts")).toBe(false);
  });
});

describe("a service started from the runtime stage's tree", () => {
  let pki: TestPki;
  let nats: NatsTestServer;
  let redis: TestServer;
  let secrets: string;
  const children: ChildProgress[] = [];

  beforeAll(async () => {
    pki = await createTestPki();
    [nats, redis] = await Promise.all([startNats(pki), startRedis()]);
    // The certs step as compose runs it, from the runtime tree, with the test CA already in its CA folder (it keeps a CA it finds).
    secrets = join(work, "secrets");
    mkdirSync(join(secrets, "ca"), { recursive: true });
    writeFileSync(join(secrets, "ca", "ca.crt"), pki.ca.cert);
    writeFileSync(join(secrets, "ca", "ca.key"), pki.ca.key);
    const owner = process.getuid?.() === 0 ? IMAGE_USER : { uid: process.getuid!(), gid: process.getgid!() };
    const certs = spawnSync("node", ["dist/scripts/certs.js", "--per-identity", join(secrets, "tls"), "--db-passwords", join(secrets, "db"), `--owner=${owner.uid}:${owner.gid}`], { cwd: runtime, env: imageEnv({ CERTS_DIR: join(secrets, "ca") }), encoding: "utf8" });
    expect(certs.status, certs.stderr).toBe(0);
  }, 60_000);

  afterAll(async () => {
    for (const child of children) if (child.exit === undefined) child.child.kill("SIGKILL");
    await Promise.all([nats?.stop(), redis?.stop()]);
  });

  /**
   * The catalog as its container runs it (docker-compose.yml's command and environment) from
   * `tree`: only the addresses of NATS and Redis, its ports, and its files (the identity folder
   * the certs step wrote, a PGlite folder for PostgreSQL) are the test's.
   */
  async function startCatalog(tree: string) {
    const service = parse(readText("docker-compose.yml")).services.catalog;
    const { DATABASE_URL, DATABASE_PASSWORD_FILE, ...kept } = service.environment as Record<string, string>;
    expect([DATABASE_URL, DATABASE_PASSWORD_FILE, kept.PORT, kept.NATS_URL, kept.REDIS_URL, kept.CERTS_DIR].every(Boolean)).toBe(true);
    const [port, metricsPort] = [await freePort(), await freePort()];
    const env = imageEnv({
      ...kept,
      PORT: String(port),
      METRICS_PORT: String(metricsPort),
      METRICS_HOST: "127.0.0.1",
      CERTS_DIR: join(secrets, "tls", "catalog"),
      DATA_DIR: mkdtempSync(join(work, "data-")),
      NATS_URL: nats.url,
      REDIS_URL: redis.url,
    });
    const child = new ChildProgress(spawn(service.command[0], service.command.slice(1), { cwd: tree, env, stdio: ["ignore", "pipe", "pipe"] }));
    children.push(child);
    return { child, env, port };
  }

  /** The image's HEALTHCHECK command, run by a shell as Docker runs it. */
  const healthCheck = (env: NodeJS.ProcessEnv) => {
    const command = runtimeStage.instructions.find((i) => i.op === "HEALTHCHECK")!.args.replace(/^.* CMD /, "");
    return spawnSync("sh", ["-c", command], { cwd: runtime, env, encoding: "utf8" });
  };

  it("writes each identity's folder as compose mounts it: tls.crt, tls.key (0640) and ca.crt, owned by the image's user", () => {
    for (const identity of certificateHolders) {
      const dir = join(secrets, "tls", identity);
      expect(readdirSync(dir).sort(), identity).toEqual(["ca.crt", "tls.crt", "tls.key"]);
      expect(statSync(join(dir, "tls.key")).mode & 0o777).toBe(0o640);
      expect(statSync(dir).mode & 0o777).toBe(0o750);
    }
    if (process.getuid?.() === 0) expect(statSync(join(secrets, "tls", "catalog", "tls.key"))).toMatchObject(IMAGE_USER);
    expect(readdirSync(join(secrets, "db")).sort()).toEqual(["postgres", ...serviceNames].sort());
  });

  it("serves behind its sidecar: the image's health check passes, a call through the sidecar answers, and the check fails once it stops", async () => {
    const { child, env, port } = await startCatalog(runtime);
    expect(env.MESH_TRANSPORT).toBe("sidecar");
    await child.waitForLine(/"msg":"serving"/);
    const check = healthCheck(env);
    expect(check.status, check.stderr).toBe(0);
    // The test's stand-in for catalog-mesh: mTLS in, XFCC to the app on loopback.
    const sidecar = await startTestSidecar(pki, "catalog", { appPort: port, callers: ["gateway"] });
    const client = await clientFor(pki, CatalogService, "catalog", [sidecar.inboundAddress], { as: "gateway" });
    try {
      expect((await client.listProducts({ pageSize: 3 })).products).toHaveLength(3);
    } finally {
      client.close();
      await sidecar.close();
    }
    child.child.kill("SIGTERM");
    expect(await child.waitForExit()).toEqual({ code: 0, signal: null });
    expect(healthCheck(env).status).toBe(1);
  }, 60_000);

  it("fails to start from a tree that lacks a path the runtime reads (the mesh migrations)", async () => {
    const lacking = join(work, "lacking");
    mkdirSync(lacking);
    replayCopies(runtimeStage, lacking, projectRoot, { build: { stage: buildStage, dir: join(work, "build") } }, ["mesh/data/migrations"]);
    symlinkSync(join(runtime, "node_modules"), join(lacking, "node_modules"));
    const { child } = await startCatalog(lacking);
    const exit = await child.waitForExit();
    expect(exit.code).not.toBe(0);
    expect(child.output()).toMatch(/ENOENT.*\/mesh\/data\/migrations/);
  }, 60_000);
});
