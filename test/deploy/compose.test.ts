// The generated docker-compose.yml (and deploy/compose/, which it mounts; their freshness:
// generated.test.ts), checked without Docker: against the Compose Specification's JSON schema, and
// for what no schema knows — each app joins its own sidecar's namespace, nothing joined publishes a
// port, dependencies exist and wait on real health checks, images are pinned, ports agree with the
// Envoy configs and the topology, each container mounts its own identity's secrets, NATS gets
// exactly the generated configuration, and the PostgreSQL init script, run on a real server,
// creates one role and database per service with the password the certs step wrote.
import { createHash, createHmac, pbkdf2Sync } from "node:crypto";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { publicServices } from "../../gateway/upstreams.js";
import { natsServerConfig } from "../../mesh/events/nats-config.js";
import { projectRoot } from "../../mesh/project-root.js";
import { appPort, certificateHolders, gateway, natsServerIdentity, serviceNames, topology, type ServiceName } from "../../mesh/topology.js";
import { mountedFiles, paths } from "../../scripts/deploy/compose.js";
import { images } from "../../scripts/deploy/images.js";
import { databaseRoles, ensurePassword, IMAGE_USER } from "../../scripts/deploy/compose-secrets.js";
import { SDS_DIR } from "../../scripts/deploy/envoy.js";
import { composeSchemaErrors } from "../support/compose-schema.js";
import { findPostgresBin, startPostgres, type TestPostgres } from "../support/postgres.js";

const committed = (path: string) => readFileSync(join(projectRoot, path), "utf8");
const compose: any = parse(committed("docker-compose.yml"));
const services: Record<string, any> = compose.services;
const pairs = [...serviceNames, "gateway" as const];
const env = (name: string): Record<string, string> => services[name].environment ?? {};
const mounts = (name: string): any[] => services[name].volumes ?? [];
const mountOf = (name: string, target: string) => mounts(name).find((m) => m.target === target);
const sidecarConfig = (name: string): any => parse(committed(`envoy/${name}.yaml`));
const listener = (config: any, name: string) => config.static_resources.listeners.find((l: any) => l.name === name);
const socket = (x: any) => x.address?.socket_address ?? x.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address;
const copy = () => structuredClone(compose);

describe("docker-compose.yml against the Compose Specification's JSON schema", () => {
  it("is valid", () => {
    expect(composeSchemaErrors(compose)).toEqual([]);
  });

  it("catches an unknown key, a value of the wrong type and a bad duration", () => {
    const unknownKey = copy();
    unknownKey.services.redis.imagee = images.redis;
    expect(composeSchemaErrors(unknownKey)).toEqual(["/services/redis must NOT have additional properties: imagee"]);
    const wrongType = copy();
    wrongType.services.nats.restart = 5;
    expect(composeSchemaErrors(wrongType)).toEqual(["/services/nats/restart must be string"]);
    const badDuration = copy();
    badDuration.services.postgres.healthcheck.interval = "5 seconds";
    expect(composeSchemaErrors(badDuration)).toEqual(['/services/postgres/healthcheck/interval must match format "duration"']);
  });

  it("refuses a volume subpath, which is why each identity's certificate folder is a volume of its own", () => {
    const withSubpath = copy();
    withSubpath.services["catalog-mesh"].volumes[3] = { type: "volume", source: "tls", target: paths.envoyCerts, volume: { subpath: "catalog" } };
    expect(composeSchemaErrors(withSubpath).join("\n")).toContain("must NOT have additional properties: subpath");
  });
});

describe("docker-compose.yml says what the topology says", () => {
  it("pairs every service and the gateway with its Envoy sidecar, which owns the namespace and the service's name", () => {
    for (const name of pairs) {
      const mesh = services[`${name}-mesh`];
      expect(mesh.image, name).toBe(images.envoy);
      expect(mesh.networks).toEqual({ default: { aliases: [name] } });
      expect(mesh.network_mode).toBeUndefined();
      const app = services[name];
      expect(app.image).toBe(images.shopmesh);
      expect(app.network_mode).toBe(`service:${name}-mesh`);
      expect(app.networks).toBeUndefined();
      expect(app.depends_on[`${name}-mesh`]).toEqual({ condition: "service_healthy" });
      expect(app.command).toEqual(["node", name === "gateway" ? "dist/gateway/main.js" : `dist/services/${name}/main.js`]);
      expect(env(name)).toMatchObject({ SHOPMESH_PROCESS: name, MESH_TRANSPORT: "sidecar", METRICS_HOST: "0.0.0.0" });
    }
    const apps = Object.keys(services).filter((s) => services[s].image === images.shopmesh && s !== "certs");
    expect(apps.sort()).toEqual([...pairs].sort());
  });

  it("publishes no port on a joined container; only the gateway's, on localhost, through its sidecar", () => {
    const published = Object.entries(services).filter(([, s]) => s.ports?.length);
    for (const [name, s] of Object.entries(services)) if (s.network_mode?.startsWith("service:")) expect(s.ports, name).toBeUndefined();
    expect(published.map(([name, s]) => [name, s.ports])).toEqual([["gateway-mesh", [{ target: gateway.httpPort, published: gateway.httpPort, host_ip: "127.0.0.1", protocol: "tcp" }]]]);
    expect(env("gateway")).toMatchObject({ HOST: "0.0.0.0", PORT: String(gateway.httpPort), METRICS_PORT: String(gateway.metricsPort) });
  });

  it("puts each app on loopback at the port its sidecar forwards to, and the sidecar on the topology's port", () => {
    for (const name of serviceNames) {
      const config = sidecarConfig(name);
      const appCluster = config.static_resources.clusters.find((c: any) => c.name === "app");
      expect(socket(appCluster)).toEqual({ address: "127.0.0.1", port_value: Number(env(name).PORT) });
      expect(Number(env(name).PORT)).toBe(appPort(name, "sidecar"));
      expect(env(name).HOST).toBe("127.0.0.1");
      expect(socket(listener(config, "inbound"))).toEqual({ address: "0.0.0.0", port_value: topology[name].grpcPort });
      expect(env(name).METRICS_PORT).toBe(String(topology[name].metricsPort));
      // Upstreams are reached through the sidecar's outbound listeners, at their defaults.
      expect(Object.keys(env(name)).filter((k) => k.endsWith("_ADDRESSES"))).toEqual([]);
    }
    for (const name of pairs) {
      const calls = name === "gateway" ? publicServices.map(([, n]) => n) : [...topology[name].upstreams];
      const outbound = sidecarConfig(name).static_resources.listeners.filter((l: any) => l.name.startsWith("outbound-"));
      expect(outbound.map((l: any) => socket(l))).toEqual(calls.map((u) => ({ address: "127.0.0.1", port_value: topology[u as ServiceName].grpcPort })));
      // Each cluster finds its upstream by the network alias of the upstream's sidecar.
      for (const u of calls) expect(services[`${u}-mesh`].networks.default.aliases).toContain(socket(sidecarConfig(name).static_resources.clusters.find((c: any) => c.name === u)).address);
    }
  });

  it("has every dependency exist, wait on a real health check or a finished one-shot step, and form no cycle", () => {
    for (const [name, s] of Object.entries(services)) {
      for (const [target, { condition }] of Object.entries<any>(s.depends_on ?? {})) {
        expect(services[target], `${name} depends on ${target}`).toBeDefined();
        if (condition === "service_healthy") expect(services[target].healthcheck?.test?.length, `${target} has a health check`).toBeGreaterThan(1);
        if (condition === "service_completed_successfully") expect(services[target].restart, `${target} is one-shot`).toBeUndefined();
        expect(["service_healthy", "service_completed_successfully"]).toContain(condition);
      }
    }
    const visiting = new Set<string>();
    const done = new Set<string>();
    const visit = (name: string, path: string[]) => {
      if (done.has(name)) return;
      expect(visiting.has(name), `cycle: ${[...path, name].join(" → ")}`).toBe(false);
      visiting.add(name);
      for (const target of Object.keys(services[name].depends_on ?? {})) visit(target, [...path, name]);
      visiting.delete(name);
      done.add(name);
    };
    for (const name of Object.keys(services)) visit(name, []);
    // Callers wait for their upstreams (the topology's), the gateway for the public services.
    for (const name of serviceNames) for (const u of topology[name].upstreams) expect(services[name].depends_on[u]).toEqual({ condition: "service_healthy" });
    for (const [, name] of publicServices) expect(services.gateway.depends_on[name]).toEqual({ condition: "service_healthy" });
  });

  it("restarts every long-running container unless stopped, and gives each a health check; the certs step runs once", () => {
    for (const [name, s] of Object.entries(services)) {
      if (name === "certs") continue;
      expect(s.restart, name).toBe("unless-stopped");
      expect(s.healthcheck.test[0], name).toBe("CMD");
    }
    expect(services.certs.restart).toBeUndefined();
    expect(services.certs.healthcheck).toBeUndefined();
    for (const name of pairs) expect(services[name].healthcheck.test).toEqual(["CMD", "node", "dist/scripts/healthcheck.js", name]);
  });

  it("pins every image to a version (Envoy to 1.38 or later, for the runtime flag the sidecars set)", () => {
    // The most precise tag each image has: a patch release (PostgreSQL's minor releases are its patches).
    for (const [name, s] of Object.entries(services)) {
      const exact = s.image.startsWith("postgres:") ? /^postgres:\d+\.\d+(-[a-z0-9.]+)?$/ : /^[a-z0-9./-]+:v?\d+\.\d+\.\d+(-[a-z0-9.]+)?$/;
      expect(s.image, name).toMatch(exact);
    }
    const [major, minor] = /:v(\d+)\.(\d+)\./.exec(images.envoy)!.slice(1).map(Number) as [number, number];
    expect(major * 1000 + minor).toBeGreaterThanOrEqual(1038);
    expect(images.postgres).toMatch(/^postgres:17\./);
    expect(images.nats).toMatch(/^nats:2\.1\d\./);
    expect(images.redis).toMatch(/^redis:7\./);
    // One service builds the image; every other app container runs what it built.
    expect(Object.entries(services).filter(([, s]) => s.build).map(([n, s]) => [n, s.build])).toEqual([["certs", { context: "." }]]);
    expect(images.shopmesh).toBe(`shopmesh:${JSON.parse(committed("package.json")).version}`);
  });

  it("contains no $ (Compose would interpolate it)", () => {
    expect(committed("docker-compose.yml")).not.toMatch(/\$/);
  });
});

describe("docker-compose.yml's secrets: each container mounts its own", () => {
  const volumeNames = Object.keys(compose.volumes);

  it("has the certs step write each identity's folder and each role's password into a volume of its own", () => {
    const certs = services.certs;
    expect(certs.image).toBe(images.shopmesh);
    expect(certs.command).toEqual(["node", "dist/scripts/certs.js", "--per-identity", paths.identityRoot, "--db-passwords", paths.passwordRoot, `--owner=${IMAGE_USER.uid}:${IMAGE_USER.gid}`]);
    expect(certs.environment).toEqual({ CERTS_DIR: paths.caDir });
    expect(mounts("certs").map((m) => [m.source, m.target])).toEqual([
      ["ca", paths.caDir],
      ...certificateHolders.map((id) => [`tls-${id}`, `${paths.identityRoot}/${id}`]),
      ...databaseRoles.map((role) => [`db-${role}`, `${paths.passwordRoot}/${role}`]),
    ]);
    // The CA's key is mounted nowhere else.
    expect(Object.keys(services).filter((name) => mounts(name).some((m) => m.source === "ca"))).toEqual(["certs"]);
    for (const [name] of Object.entries(services)) for (const m of mounts(name)) if (m.type === "volume") expect(volumeNames, `${name} mounts ${m.source}`).toContain(m.source);
  });

  it("gives each sidecar its own config, the SDS files, and its own identity's certificate where the SDS files name it", () => {
    const sds = ["tls-certificate", "validation-context"].map((s) => parse(committed(`envoy/sds/${s}.yaml`)).resources[0]);
    const certFiles = [sds[0].tls_certificate.certificate_chain.filename, sds[0].tls_certificate.private_key.filename, sds[1].validation_context.trusted_ca.filename];
    expect(certFiles).toEqual(["tls.crt", "tls.key", "ca.crt"].map((f) => `${paths.envoyCerts}/${f}`));
    for (const name of pairs) {
      const mesh = services[`${name}-mesh`];
      expect(mesh.command).toEqual(["envoy", "-c", paths.envoyConfig]);
      expect(mountOf(`${name}-mesh`, paths.envoyConfig)).toEqual({ type: "bind", source: `./envoy/${name}.yaml`, target: paths.envoyConfig, read_only: true });
      expect(mountOf(`${name}-mesh`, paths.envoyCerts)).toEqual({ type: "volume", source: `tls-${name}`, target: paths.envoyCerts, read_only: true });
      // Every SDS file the sidecar's config reads is mounted.
      const sdsPaths = [...new Set(JSON.stringify(sidecarConfig(name)).match(new RegExp(`${SDS_DIR}/[a-z-]+\\.yaml`, "g")))];
      for (const path of sdsPaths) expect(mountOf(`${name}-mesh`, path)?.source, `${name}-mesh mounts ${path}`).toBe(`./envoy/sds/${path.slice(SDS_DIR.length + 1)}`);
      expect(mesh.environment).toEqual({ ENVOY_GID: String(IMAGE_USER.gid) });
      // The app reads the same folder as its CERTS_DIR.
      expect(mountOf(name, env(name).CERTS_DIR!)).toEqual({ type: "volume", source: `tls-${name}`, target: env(name).CERTS_DIR, read_only: true });
    }
    for (const [name, s] of Object.entries(services)) for (const m of s.volumes ?? []) if (m.type === "bind") expect(existsSync(join(projectRoot, m.source)), `${name} binds ${m.source}`).toBe(true);
  });

  it("gives NATS exactly the generated configuration, with its own certificate, its store on a volume, and JetStream on", () => {
    const nats = services.nats;
    const config = mountOf("nats", nats.command[2]);
    expect(config).toEqual({ type: "bind", source: `./${mountedFiles.natsConfig}`, target: nats.command[2], read_only: true });
    const tls = mounts("nats").find((m) => m.source === `tls-${natsServerIdentity}`);
    const store = mounts("nats").find((m) => m.source === "nats-data");
    const url = new URL(env("order").NATS_URL!);
    const expected = natsServerConfig({ host: "0.0.0.0", port: Number(url.port), storeDir: store.target, tlsFiles: { ca: `${tls.target}/ca.crt`, cert: `${tls.target}/tls.crt`, key: `${tls.target}/tls.key` } });
    expect(committed(mountedFiles.natsConfig)).toBe(expected);
    expect(nats.command).toEqual(["nats-server", "-c", config.target, "-js", "-sd", store.target, "-m", expect.any(String)]);
    expect(nats.healthcheck.test).toEqual(["CMD", "wget", "-q", "-O", "/dev/null", `http://127.0.0.1:${nats.command[7]}/healthz?js-enabled-only=true`]);
    // nats-server's certificate names the host the services dial.
    expect(url.hostname).toBe(natsServerIdentity);
    for (const name of serviceNames) expect(env(name).NATS_URL).toBe(url.href.replace(/\/$/, ""));
  });

  it("gives each service its own database, user and password file, and PostgreSQL every role's password", () => {
    for (const name of serviceNames) {
      const url = new URL(env(name).DATABASE_URL!);
      expect([url.username, url.password, url.hostname, url.pathname]).toEqual([name, "", "postgres", `/${name}`]);
      const passwordDir = env(name).DATABASE_PASSWORD_FILE!.replace(/\/password$/, "");
      expect(mountOf(name, passwordDir)).toEqual({ type: "volume", source: `db-${name}`, target: passwordDir, read_only: true });
      expect(services[name].depends_on.postgres).toEqual({ condition: "service_healthy" });
    }
    for (const role of databaseRoles) expect(mountOf("postgres", `${paths.postgresPasswords}/${role}`)?.source).toBe(`db-${role}`);
    expect(services.postgres.environment.POSTGRES_PASSWORD_FILE).toBe(`${paths.postgresPasswords}/postgres/password`);
    expect(mountOf("postgres", "/docker-entrypoint-initdb.d/shopmesh.sql")?.source).toBe(`./${mountedFiles.postgresInit}`);
    // Envoy and PostgreSQL read the 0640 secrets through the image user's group.
    expect(services.postgres.user).toBe(`postgres:${IMAGE_USER.gid}`);
    expect(committed("Dockerfile")).toContain(`useradd --uid ${IMAGE_USER.uid} --gid ${IMAGE_USER.gid}`);
  });
});

describe("the PostgreSQL init script, run on a real server", () => {
  let postgres: TestPostgres;
  let secrets: string;

  beforeAll(async () => {
    postgres = await startPostgres();
    secrets = mkdtempSync(join(tmpdir(), "shopmesh-db-secrets-"));
    // The passwords as the certs step writes them, and the script reading them from there.
    for (const role of databaseRoles) await ensurePassword(join(secrets, role));
    const script = join(secrets, "init.sql");
    writeFileSync(script, committed(mountedFiles.postgresInit).replaceAll(`${paths.postgresPasswords}/`, `${secrets}/`));
    execFileSync(join(findPostgresBin()!, "psql"), ["-v", "ON_ERROR_STOP=1", "--no-psqlrc", "-q", "-f", script, postgres.url("postgres")], { stdio: "pipe" });
  });

  afterAll(async () => {
    await postgres?.stop();
    if (secrets) rmSync(secrets, { recursive: true, force: true });
  });

  const asUser = (user: string, database: string) => {
    const url = new URL(postgres.url(database));
    url.username = user;
    return new pg.Client({ connectionString: url.href });
  };

  it("creates exactly one database per service, owned by the service's role", async () => {
    const admin = asUser("postgres", "postgres");
    await admin.connect();
    try {
      const { rows } = await admin.query("SELECT d.datname, r.rolname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE NOT d.datistemplate AND d.datname <> 'postgres' ORDER BY d.datname");
      expect(rows.map((r) => [r.datname, r.rolname])).toEqual([...serviceNames].sort().map((n) => [n, n]));
    } finally {
      await admin.end();
    }
  });

  it("gives each role the password in its file (the stored SCRAM verifier matches it)", async () => {
    const admin = asUser("postgres", "postgres");
    await admin.connect();
    try {
      const { rows } = await admin.query("SELECT rolname, rolpassword, rolcanlogin, rolsuper FROM pg_authid WHERE rolname = ANY($1)", [serviceNames]);
      expect(rows).toHaveLength(serviceNames.length);
      for (const row of rows) {
        const [, iterations, salt, storedKey] = /^SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):/.exec(row.rolpassword)!;
        const password = readFileSync(join(secrets, row.rolname, "password"), "utf8");
        const salted = pbkdf2Sync(password, Buffer.from(salt!, "base64"), Number(iterations), 32, "sha256");
        const clientKey = createHmac("sha256", salted).update("Client Key").digest();
        expect(createHash("sha256").update(clientKey).digest("base64"), row.rolname).toBe(storedKey);
        expect([row.rolcanlogin, row.rolsuper]).toEqual([true, false]);
      }
    } finally {
      await admin.end();
    }
  });

  it("lets a service's role into its own database only", async () => {
    const own = asUser("catalog", "catalog");
    await own.connect();
    expect((await own.query("SELECT current_user AS me")).rows[0].me).toBe("catalog");
    await own.end();
    const other = asUser("catalog", "order");
    await expect(other.connect()).rejects.toThrow(/permission denied for database "?order"?/);
    await other.end().catch(() => {});
  });
});
