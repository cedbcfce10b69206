// The generated Kubernetes manifests (deploy/k8s/; their freshness: generated.test.ts). Each
// overlay is built with kustomize (kubectl's) from the generator's output, and every object it
// yields is checked: core and cert-manager kinds against kubernetes-models' schemas, CloudNativePG's
// on the fields used; then what no schema knows: requests on every container, autoscalers and
// disruption budgets that find their pods, ports that agree across the app's env, Envoy, the
// Services and the probes, the sidecar's config equal to envoy/<name>.yaml, a certificate for every
// identity that runs, NetworkPolicies that allow exactly the topology's calls, PostgreSQL's
// connection budget and its login by certificate only (tried on a real server in
// postgres-cert-auth.test.ts), stream copies matching NATS's servers. Nothing here ran in a
// cluster: this is what can be proved without one.
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parse, parseAllDocuments } from "yaml";
import { Certificate } from "@kubernetes-models/cert-manager/cert-manager.io/v1/Certificate";
import { Issuer } from "@kubernetes-models/cert-manager/cert-manager.io/v1/Issuer";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Namespace } from "kubernetes-models/v1/Namespace";
import { Service } from "kubernetes-models/v1/Service";
import { ServiceAccount } from "kubernetes-models/v1/ServiceAccount";
import { spiffeId } from "../../mesh/certs.js";
import { natsServerConfig } from "../../mesh/events/nats-config.js";
import { certificateHolders, gateway, natsServerIdentity, serviceNames, sidecar, topology, type ServiceName } from "../../mesh/topology.js";
import { callersOf, SDS_DIR } from "../../scripts/deploy/envoy.js";
import { deployFiles } from "../../scripts/deploy/files.js";
import { edgeServices, natsChart, natsPodLabels, postgresPodLabels, type Workload } from "../../scripts/deploy/k8s-common.js";
import { natsChartPaths, natsValues } from "../../scripts/deploy/k8s-nats.js";
import { meshFlows, networkPolicies } from "../../scripts/deploy/k8s-network.js";
import { DEV_CALLER } from "../../scripts/deploy/k8s-overlays.js";
import { RESERVED_CONNECTIONS } from "../../scripts/deploy/k8s-postgres.js";
import { POOL_SIZE } from "../../mesh/data/db.js";
import { ENVOY_DNS_REFRESH_SECONDS, ENVOY_HASH_ANNOTATION, PRESTOP_SECONDS } from "../../scripts/deploy/k8s-workloads.js";
import { K8S_ROOT, kubernetesFiles } from "../../scripts/deploy/kubernetes.js";
import { contentHash } from "../../scripts/deploy/k8s-common.js";
import { checkEnvoyBootstrap } from "../support/envoy-schema.js";

type Obj = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> }; [key: string]: any };

const files = kubernetesFiles();
const workloads: Workload[] = [...serviceNames, "gateway"];
const NAMESPACE = "shopmesh";

// The generator's output in a temporary checkout, built by kustomize as `kubectl apply -k` would.
const root = mkdtempSync(join(tmpdir(), "shopmesh-k8s-"));
for (const [path, content] of Object.entries(files)) {
  mkdirSync(join(root, dirname(path)), { recursive: true });
  writeFileSync(join(root, path), content);
}
afterAll(() => rmSync(root, { recursive: true, force: true }));

function kustomize(folder: string): Obj[] {
  let output: string;
  try {
    output = execFileSync("kubectl", ["kustomize", join(root, K8S_ROOT, folder)], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (err) {
    throw new Error(`kubectl kustomize ${folder} failed (kubectl, with its built-in kustomize, is needed here): ${(err as Error).message}`);
  }
  return parseAllDocuments(output).map((doc) => doc.toJS() as Obj);
}
const built = { base: kustomize("base"), dev: kustomize("overlays/dev"), prod: kustomize("overlays/prod") };
type Variant = keyof typeof built;
const variants = Object.keys(built) as Variant[];

const ofKind = (objects: Obj[], kind: string) => objects.filter((o) => o.kind === kind);
const find = (objects: Obj[], kind: string, name: string): Obj => {
  const found = objects.find((o) => o.kind === kind && o.metadata.name === name);
  if (!found) throw new Error(`no ${kind} ${name}`);
  return found;
};
const podSpec = (deployment: Obj) => deployment.spec.template.spec;
const allContainers = (deployment: Obj): any[] => [...(podSpec(deployment).initContainers ?? []), ...podSpec(deployment).containers];
const container = (deployment: Obj, name: string) => allContainers(deployment).find((c) => c.name === name);
const envOf = (c: any): Record<string, string> => Object.fromEntries((c.env ?? []).map((e: any) => [e.name, e.value]));
const portOf = (c: any, name: string): number | undefined => c.ports?.find((p: any) => p.name === name)?.containerPort;
const matches = (selector: Record<string, string>, labels: Record<string, string> = {}) => Object.entries(selector).every(([k, v]) => labels[k] === v);

// ---- schemas ----
const models: Record<string, new (data: any) => { validate(): void }> = {
  "v1/Namespace": Namespace,
  "v1/ServiceAccount": ServiceAccount,
  "v1/ConfigMap": ConfigMap,
  "v1/Service": Service,
  "apps/v1/Deployment": Deployment,
  "autoscaling/v2/HorizontalPodAutoscaler": HorizontalPodAutoscaler,
  "policy/v1/PodDisruptionBudget": PodDisruptionBudget,
  "networking.k8s.io/v1/NetworkPolicy": NetworkPolicy,
  "cert-manager.io/v1/Certificate": Certificate,
  "cert-manager.io/v1/Issuer": Issuer,
};

/** CloudNativePG has no models: its objects' fields, as its CRDs (postgresql.cnpg.io/v1) name and type them. */
function checkKeys(path: string, value: Record<string, unknown>, allowed: string[], required: string[] = []) {
  const unknown = Object.keys(value).filter((k) => !allowed.includes(k));
  if (unknown.length) throw new Error(`${path}: unknown field(s) ${unknown.join(", ")}`);
  const missing = required.filter((k) => value[k] === undefined);
  if (missing.length) throw new Error(`${path}: missing ${missing.join(", ")}`);
}
const QUANTITY = /^\d+(\.\d+)?(m|Ki|Mi|Gi|Ti)?$/;
function checkCnpg(object: Obj) {
  if (object.kind === "Cluster") {
    const { spec } = object;
    checkKeys("Cluster.spec", spec, ["instances", "imageName", "primaryUpdateStrategy", "enableSuperuserAccess", "storage", "resources", "affinity", "postgresql", "certificates", "managed"], ["instances"]);
    if (!Number.isInteger(spec.instances) || spec.instances < 1) throw new Error("Cluster.spec.instances must be an integer >= 1");
    if (!/^[^:]+:[\w.-]+$/.test(spec.imageName)) throw new Error(`Cluster.spec.imageName ${spec.imageName} has no tag`);
    if (!["unsupervised", "supervised"].includes(spec.primaryUpdateStrategy)) throw new Error("Cluster.spec.primaryUpdateStrategy");
    checkKeys("Cluster.spec.storage", spec.storage, ["size", "storageClass"], ["size"]);
    if (!QUANTITY.test(spec.storage.size)) throw new Error("Cluster.spec.storage.size");
    checkKeys("Cluster.spec.affinity", spec.affinity, ["enablePodAntiAffinity", "topologyKey"]);
    checkKeys("Cluster.spec.postgresql", spec.postgresql, ["parameters", "pg_hba", "pg_ident"]);
    for (const [k, v] of Object.entries(spec.postgresql.parameters)) if (typeof v !== "string") throw new Error(`postgresql.parameters.${k} must be a string`);
    if (spec.postgresql.pg_hba !== undefined && !(Array.isArray(spec.postgresql.pg_hba) && spec.postgresql.pg_hba.every((l: unknown) => typeof l === "string"))) throw new Error("postgresql.pg_hba must be a list of strings");
    checkKeys("Cluster.spec.certificates", spec.certificates, ["serverTLSSecret", "serverCASecret", "clientCASecret", "replicationTLSSecret", "serverAltDNSNames"]);
    checkKeys("Cluster.spec.managed", spec.managed, ["roles"]);
    for (const role of spec.managed.roles) {
      checkKeys("Cluster.spec.managed.roles[]", role, ["name", "ensure", "login", "connectionLimit", "passwordSecret", "disablePassword"], ["name"]);
      if (!["present", "absent"].includes(role.ensure)) throw new Error("role.ensure");
      if (!Number.isInteger(role.connectionLimit)) throw new Error("role.connectionLimit must be an integer");
      if (role.passwordSecret) checkKeys("role.passwordSecret", role.passwordSecret, ["name"], ["name"]);
      if (role.disablePassword !== undefined && typeof role.disablePassword !== "boolean") throw new Error("role.disablePassword must be a boolean");
      // CloudNativePG refuses a role with both.
      if (role.passwordSecret && role.disablePassword) throw new Error("role: passwordSecret and disablePassword together");
    }
  } else if (object.kind === "Database") {
    checkKeys("Database.spec", object.spec, ["name", "owner", "cluster", "ensure", "databaseReclaimPolicy"], ["name", "owner", "cluster"]);
    checkKeys("Database.spec.cluster", object.spec.cluster, ["name"], ["name"]);
    if (!["retain", "delete"].includes(object.spec.databaseReclaimPolicy)) throw new Error("Database.spec.databaseReclaimPolicy");
  } else {
    throw new Error(`no check for postgresql.cnpg.io ${object.kind}`);
  }
}

function validate(object: Obj) {
  if (object.apiVersion === "postgresql.cnpg.io/v1") return checkCnpg(object);
  const Model = models[`${object.apiVersion}/${object.kind}`];
  if (!Model) throw new Error(`no schema for ${object.apiVersion} ${object.kind}`);
  new Model(object).validate();
}

describe("generated Kubernetes manifests", () => {
  it("build with kustomize, and every object of base, dev and prod passes its schema", () => {
    for (const variant of variants) {
      expect(built[variant].length, variant).toBeGreaterThan(50);
      for (const object of built[variant]) expect(() => validate(object), `${variant}: ${object.kind} ${object.metadata.name}`).not.toThrow();
      expect(built[variant].every((o) => o.kind === "Namespace" || o.metadata.namespace === NAMESPACE), variant).toBe(true);
    }
  });

  it("are checked for real: a wrong type fails the schema, an unknown field fails tsc, a misspelt CloudNativePG field fails its check", () => {
    const deployment = structuredClone(find(built.prod, "Deployment", "order"));
    podSpec(deployment).containers[0].ports[0].containerPort = "9454";
    expect(() => validate(deployment)).toThrow(/containerPort must be integer/);
    // @ts-expect-error -- `replica` is no field of a DeploymentSpec: tsc refuses it where the generator builds objects
    void new Deployment({ spec: { replica: 2, selector: {}, template: {} } });
    const cluster = structuredClone(find(built.prod, "Cluster", "postgres"));
    cluster.spec.instance = 3;
    expect(() => validate(cluster)).toThrow(/unknown field\(s\) instance/);
    const certificates = structuredClone(find(built.prod, "Cluster", "postgres"));
    certificates.spec.certificates.clientCaSecret = certificates.spec.certificates.clientCASecret;
    expect(() => validate(certificates)).toThrow(/certificates: unknown field\(s\) clientCaSecret/);
  });

  it("list in each kustomization.yaml exactly the files generated beside it (Helm values apart)", () => {
    const folders = Object.keys(files).filter((p) => p.endsWith("/kustomization.yaml")).map((p) => dirname(p));
    expect(folders.sort()).toEqual([`${K8S_ROOT}/base`, `${K8S_ROOT}/overlays/dev`, `${K8S_ROOT}/overlays/prod`]);
    for (const folder of folders) {
      const kustomization = parse(files[`${folder}/kustomization.yaml`]!);
      const listed = [...kustomization.resources.filter((r: string) => !r.startsWith("../")), ...(kustomization.patches ?? []).map((p: { path: string }) => p.path)];
      const walk = (dir: string): string[] => readdirSync(dir).flatMap((f) => (statSync(join(dir, f)).isDirectory() ? walk(join(dir, f)) : [join(dir, f)]));
      const beside = walk(join(root, folder)).map((f) => relative(join(root, folder), f))
        .filter((f) => f !== "kustomization.yaml" && !f.endsWith("values.yaml") && !f.startsWith("../"))
        .filter((f) => !folders.some((other) => other !== folder && join(root, other).startsWith(join(root, folder, f.split("/")[0]!))));
      expect(listed.sort(), folder).toEqual(beside.sort());
      for (const base of kustomization.resources.filter((r: string) => r.startsWith("../"))) expect(files[join(folder, base, "kustomization.yaml")], `${folder} → ${base}`).toBeDefined();
    }
  });

  it("give every container resource requests and a memory limit, as the topology says", () => {
    for (const variant of variants) {
      for (const deployment of ofKind(built[variant], "Deployment")) {
        for (const c of allContainers(deployment)) {
          expect(c.resources?.requests?.cpu, `${variant} ${deployment.metadata.name}/${c.name}`).toBeDefined();
          expect(c.resources?.requests?.memory, `${variant} ${deployment.metadata.name}/${c.name}`).toBeDefined();
          expect(c.resources?.limits?.memory, `${variant} ${deployment.metadata.name}/${c.name}`).toBeDefined();
        }
      }
    }
    for (const name of workloads) {
      const deployment = find(built.prod, "Deployment", name);
      expect(container(deployment, "app").resources).toEqual({
        requests: { cpu: (name === "gateway" ? gateway : topology[name]).resources.cpu, memory: (name === "gateway" ? gateway : topology[name]).resources.memory },
        limits: { memory: (name === "gateway" ? gateway : topology[name]).resources.memoryLimit },
      });
      expect(container(deployment, "envoy").resources).toEqual({ requests: { cpu: sidecar.resources.cpu, memory: sidecar.resources.memory }, limits: { memory: sidecar.resources.memoryLimit } });
    }
  });

  it("scale each workload with an HPA on its app container within the topology's bounds, and keep one disruption at a time", () => {
    for (const variant of variants) {
      const objects = built[variant];
      const hpas = ofKind(objects, "HorizontalPodAutoscaler");
      expect(hpas.map((h) => h.metadata.name).sort(), variant).toEqual([...workloads].sort());
      for (const hpa of hpas) {
        const { scaleTargetRef: ref } = hpa.spec;
        expect(ref.kind).toBe("Deployment");
        const deployment = find(objects, "Deployment", ref.name);
        for (const metric of hpa.spec.metrics) {
          expect(metric.type).toBe("ContainerResource");
          expect(container(deployment, metric.containerResource.container), `${hpa.metadata.name} → ${metric.containerResource.container}`).toBeDefined();
        }
        const { scaling } = hpa.metadata.name === "gateway" ? gateway : topology[hpa.metadata.name as ServiceName];
        const bounds = variant === "dev" ? [1, 1] : [scaling.minReplicas, scaling.maxReplicas];
        expect([hpa.spec.minReplicas, hpa.spec.maxReplicas], `${variant} ${hpa.metadata.name}`).toEqual(bounds);
        if (variant !== "dev") {
          expect(hpa.spec.metrics.map((m: any) => [m.containerResource.name, m.containerResource.target.averageUtilization])).toEqual([["cpu", scaling.cpuPercent], ["memory", scaling.memoryPercent]]);
          expect(deployment.spec.replicas, "the HPA owns the replica count").toBeUndefined();
        } else {
          expect(deployment.spec.replicas).toBe(1);
        }
        expect(hpa.spec.behavior.scaleDown.stabilizationWindowSeconds).toBeGreaterThanOrEqual(300);
      }
      for (const pdb of ofKind(objects, "PodDisruptionBudget")) {
        const selected = ofKind(objects, "Deployment").filter((d) => matches(pdb.spec.selector.matchLabels, d.spec.template.metadata.labels));
        expect(selected.map((d) => d.metadata.name), `${variant} PDB ${pdb.metadata.name}`).toEqual([pdb.metadata.name]);
        expect(pdb.spec.maxUnavailable).toBe(1);
      }
      expect(ofKind(objects, "PodDisruptionBudget").map((p) => p.metadata.name).sort()).toEqual([...workloads].sort());
    }
  });

  it("run Envoy as a native sidecar with the app in sidecar mode, and agree on every port: app env, Envoy config, Services, probes", () => {
    for (const variant of variants) {
      const objects = built[variant];
      for (const name of workloads) {
        const deployment = find(objects, "Deployment", name);
        const envoy = container(deployment, "envoy");
        const app = container(deployment, "app");
        expect(podSpec(deployment).initContainers.map((c: any) => [c.name, c.restartPolicy])).toEqual([["envoy", "Always"]]);
        const env = envOf(app);
        expect(env.MESH_TRANSPORT).toBe("sidecar");
        expect(env.METRICS_HOST).toBe("0.0.0.0");
        const configMap = find(objects, "ConfigMap", `${name}-envoy`);
        const config = parse(configMap.data["envoy.yaml"]);
        const listeners = config.static_resources.listeners;
        const ops = listeners.find((l: any) => l.name === "ops");
        expect(ops.address.socket_address).toEqual({ address: "0.0.0.0", port_value: sidecar.opsPort });
        expect(portOf(envoy, "envoy-ops")).toBe(sidecar.opsPort);
        expect(envoy.startupProbe.httpGet.port).toBe(sidecar.opsPort);
        const metricsPort = name === "gateway" ? gateway.metricsPort : topology[name].metricsPort;
        expect(Number(env.METRICS_PORT)).toBe(metricsPort);
        expect(portOf(app, "metrics")).toBe(metricsPort);
        const headless = find(objects, "Service", name === "gateway" ? "gateway-metrics" : name);
        expect(headless.spec.clusterIP).toBe("None");
        expect(headless.spec.ports.find((p: any) => p.name === "metrics")).toMatchObject({ port: metricsPort, targetPort: "metrics" });
        // Every named probe port is a port of the pod.
        for (const probe of [app.startupProbe, app.readinessProbe, app.livenessProbe]) {
          const port = probe.httpGet?.port ?? probe.grpc?.port;
          if (typeof port === "string") expect(portOf(app, port), `${name} probe port ${port}`).toBeDefined();
        }
        if (name === "gateway") {
          expect([Number(env.PORT), env.HOST]).toEqual([gateway.httpPort, "0.0.0.0"]);
          expect(portOf(app, "http")).toBe(gateway.httpPort);
          expect(find(objects, "Service", "gateway").spec.ports).toEqual([{ name: "http", port: gateway.httpPort, targetPort: "http" }]);
          expect([app.readinessProbe.httpGet.path, app.livenessProbe.httpGet.path]).toEqual(["/readyz", "/healthz"]);
          expect(listeners.find((l: any) => l.name === "inbound"), "the gateway's sidecar has outbound listeners only").toBeUndefined();
          continue;
        }
        const spec = topology[name];
        const appPort = spec.grpcPort + sidecar.appPortOffset;
        expect([env.HOST, Number(env.PORT)]).toEqual(["127.0.0.1", appPort]);
        expect(config.static_resources.clusters.find((c: any) => c.name === "app").load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address).toEqual({ address: "127.0.0.1", port_value: appPort });
        expect(listeners.find((l: any) => l.name === "inbound").address.socket_address).toEqual({ address: "0.0.0.0", port_value: spec.grpcPort });
        expect(portOf(envoy, "grpc")).toBe(spec.grpcPort);
        expect(headless.spec.ports.find((p: any) => p.name === "grpc")).toEqual({ name: "grpc", port: spec.grpcPort, targetPort: "grpc" });
        // Readiness: the app's gRPC health, asked through Envoy's ops listener, which routes it to the app.
        expect(app.readinessProbe.grpc).toEqual({ port: sidecar.opsPort });
        expect(ops.filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes.some((r: any) => r.match.prefix === "/grpc.health.v1.Health/" && r.route.cluster === "app")).toBe(true);
        expect(app.livenessProbe.httpGet).toEqual({ path: "/metrics", port: "metrics" });
        expect(env.NATS_URL).toBe(`tls://${natsChart.release}:4222`);
        expect(env.REDIS_URL === undefined, `${name} REDIS_URL`).toBe(name !== "catalog");
      }
      // Every upstream a sidecar dials is a Service of ours with that port.
      for (const configMap of ofKind(objects, "ConfigMap")) {
        for (const cluster of parse(configMap.data["envoy.yaml"]).static_resources.clusters.filter((c: any) => c.type === "STRICT_DNS")) {
          const { address, port_value } = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address;
          expect(find(objects, "Service", address).spec.ports.some((p: any) => p.port === port_value), `${configMap.metadata.name} → ${address}:${port_value}`).toBe(true);
        }
      }
    }
  });

  it("hold in each sidecar's ConfigMap exactly envoy/<name>.yaml and its SDS files, mounted where they name each other", () => {
    const generated = deployFiles();
    for (const name of workloads) {
      const deployment = find(built.prod, "Deployment", name);
      const configMap = find(built.prod, "ConfigMap", `${name}-envoy`);
      expect(configMap.data["envoy.yaml"]).toBe(generated[`envoy/${name}.yaml`]);
      for (const secret of ["tls-certificate", "validation-context"]) expect(configMap.data[`${secret}.yaml`]).toBe(generated[`envoy/sds/${secret}.yaml`]);
      expect(deployment.spec.template.metadata.annotations[ENVOY_HASH_ANNOTATION]).toBe(contentHash(configMap.data["envoy.yaml"]));
      const envoy = container(deployment, "envoy");
      const mountOf = (volume: string) => envoy.volumeMounts.find((m: any) => m.name === volume).mountPath;
      expect(`${mountOf("envoy-bootstrap")}/envoy.yaml`).toBe(envoy.args[envoy.args.indexOf("-c") + 1]);
      expect(mountOf("envoy-sds")).toBe(SDS_DIR);
      // One projected volume: a renewed certificate arrives by a move inside SDS_DIR, which Envoy watches.
      const sds = podSpec(deployment).volumes.find((v: any) => v.name === "envoy-sds").projected.sources;
      const projected = sds.flatMap((s: any) => (s.configMap ?? s.secret).items.map((i: any) => i.path));
      const named = ["tls-certificate", "validation-context"].flatMap((s) => {
        const secret = parse(configMap.data[`${s}.yaml`]).resources[0];
        return [secret.tls_certificate?.certificate_chain.filename, secret.tls_certificate?.private_key.filename, secret.validation_context?.trusted_ca.filename].filter(Boolean);
      });
      for (const path of named) expect(projected.map((p: string) => `${SDS_DIR}/${p}`), path).toContain(path);
    }
  });

  it("let the dev overlay's sidecars accept the CLI's `client` identity besides the topology's callers, and nothing else changes", () => {
    for (const name of serviceNames) {
      const base = parse(find(built.prod, "ConfigMap", `${name}-envoy`).data["envoy.yaml"]);
      const devText = find(built.dev, "ConfigMap", `${name}-envoy`).data["envoy.yaml"];
      const dev = parse(devText);
      expect(() => checkEnvoyBootstrap(dev), name).not.toThrow();
      const principals = (config: any) => config.static_resources.listeners.find((l: any) => l.name === "inbound").filter_chains[0].filters[0].typed_config.http_filters
        .find((f: any) => f.name === "envoy.filters.http.rbac").typed_config.rules.policies.callers.principals;
      const devPrincipals = principals(dev).map((p: any) => p.authenticated.principal_name.exact);
      expect(devPrincipals).toEqual([...callersOf(name, edgeServices()), DEV_CALLER].map(spiffeId));
      principals(dev).pop();
      expect(dev).toEqual(base);
      expect(find(built.dev, "Deployment", name).spec.template.metadata.annotations[ENVOY_HASH_ANNOTATION]).toBe(contentHash(devText));
      expect(principals(base).map((p: any) => p.authenticated.principal_name.exact)).not.toContain(spiffeId(DEV_CALLER));
    }
  }, 60_000);

  it("issue a certificate with its SPIFFE id to every identity that runs, from the mesh CA, and mount it where each process looks", () => {
    for (const variant of variants) {
      const objects = built[variant];
      const certificates = ofKind(objects, "Certificate");
      const bySecret = new Map(certificates.map((c) => [c.spec.secretName, c]));
      for (const certificate of certificates) {
        expect(find(objects, "Issuer", certificate.spec.issuerRef.name), certificate.metadata.name).toBeDefined();
        if (!certificate.spec.isCA) expect(certificate.spec.renewBefore, certificate.metadata.name).toBeDefined();
      }
      for (const name of workloads) {
        const deployment = find(objects, "Deployment", name);
        const secrets = podSpec(deployment).volumes.flatMap((v: any) => [v.secret?.secretName, ...(v.projected?.sources ?? []).map((s: any) => s.secret?.name)]).filter(Boolean);
        const tls = secrets.filter((s: string) => s.endsWith("-tls"));
        expect(tls.length, name).toBeGreaterThan(0);
        for (const secret of tls) {
          const certificate = bySecret.get(secret);
          expect(certificate, `${variant} ${name} mounts ${secret}`).toBeDefined();
          expect(certificate!.spec.uris).toEqual([spiffeId(name)]);
          expect(certificate!.spec.usages).toEqual(expect.arrayContaining(["server auth", "client auth"]));
        }
        expect(envOf(container(deployment, "app")).CERTS_DIR).toBe(container(deployment, "app").volumeMounts.find((m: any) => m.name === "certs").mountPath);
      }
      const withSpiffe = certificates.filter((c) => c.spec.uris).map((c) => c.metadata.name).sort();
      const expected = certificateHolders.filter((h) => h !== natsServerIdentity && (variant === "dev" || h !== DEV_CALLER));
      expect(withSpiffe, variant).toEqual([...expected].sort());
      // nats-server's certificates carry no SPIFFE id: they cannot pass for a mesh identity.
      expect(find(objects, "Certificate", natsServerIdentity).spec).toMatchObject({ usages: ["digital signature", "server auth"], dnsNames: expect.arrayContaining([natsChart.release]) });
      expect(find(objects, "Certificate", natsServerIdentity).spec.uris).toBeUndefined();
    }
  });

  it("give NATS the chart values of natsServerConfig: its authorization as it is, TLS with cert-manager's secrets, 3 servers with JetStream on volumes", () => {
    const values = natsValues();
    const config = JSON.parse(natsServerConfig({ host: "0.0.0.0", port: 4222, storeDir: "/elsewhere", tlsFiles: { ca: "a", cert: "b", key: "c" } }).replace(/^#.*\n/, ""));
    expect(values.config.merge.authorization).toEqual(config.authorization);
    expect(values.config.merge.max_payload).toBe(config.max_payload);
    expect(values.config.nats.tls.merge).toEqual({ verify_and_map: true, timeout: config.tls.timeout });
    expect(values.config.cluster).toMatchObject({ enabled: true, replicas: 3 });
    expect(values.config.jetstream).toMatchObject({ enabled: true, fileStore: { enabled: true, dir: natsChartPaths.storeDir, pvc: { enabled: true } } });
    expect(parse(files[`${K8S_ROOT}/base/nats/values.yaml`]!)).toEqual(values);
    for (const variant of variants) {
      const certificates = ofKind(built[variant], "Certificate");
      const secretOf = (secretName: string) => certificates.find((c) => c.spec.secretName === secretName);
      expect(secretOf(values.config.nats.tls.secretName)?.metadata.name).toBe(natsServerIdentity);
      expect(secretOf(values.tlsCA.secretName), "the CA comes with the server's secret").toBeDefined();
      const routes = secretOf(values.config.cluster.tls!.secretName)!;
      expect(routes.spec.usages).toEqual(expect.arrayContaining(["server auth", "client auth"]));
      expect(routes.spec.uris).toBeUndefined();
      expect(routes.spec.dnsNames).toContain(`*.${natsChart.release}-headless`);
    }
  });

  it("keep PostgreSQL within max_connections at every service's maxReplicas, with a role and a database per service", () => {
    for (const variant of variants) {
      const objects = built[variant];
      const cluster = find(objects, "Cluster", "postgres");
      const maxConnections = Number(cluster.spec.postgresql.parameters.max_connections);
      const needed = serviceNames.reduce((sum, name) => sum + topology[name].scaling.maxReplicas * POOL_SIZE, 0);
      expect(needed + RESERVED_CONNECTIONS, `${variant}: replicas × pool + reserved`).toBeLessThanOrEqual(maxConnections);
      const roles = cluster.spec.managed.roles;
      expect(roles.reduce((sum: number, r: any) => sum + r.connectionLimit, 0) + RESERVED_CONNECTIONS).toBeLessThanOrEqual(maxConnections);
      for (const name of serviceNames) {
        expect(roles.find((r: any) => r.name === name), name).toMatchObject({ login: true, ensure: "present", connectionLimit: topology[name].scaling.maxReplicas * POOL_SIZE });
        expect(find(objects, "Database", name).spec).toMatchObject({ name, owner: name, cluster: { name: "postgres" } });
      }
    }
  });

  it("let each service into PostgreSQL with its own certificate, into its own database only, with no password anywhere", () => {
    for (const variant of variants) {
      const objects = built[variant];
      const cluster = find(objects, "Cluster", "postgres");
      const certificates = ofKind(objects, "Certificate");
      const bySecret = (secret: string) => certificates.find((c) => c.spec.secretName === secret);
      const meshIssuer = ofKind(objects, "Issuer").find((issuer) => issuer.spec.ca)!.metadata.name;
      // The client CA is the mesh CA (the ca.crt of a certificate it issued), never the CA's own secret with its key.
      const { certificates: tls } = cluster.spec;
      const clientCa = bySecret(tls.clientCASecret);
      expect(clientCa?.spec.issuerRef.name, `${variant} clientCASecret`).toBe(meshIssuer);
      expect(clientCa?.spec.isCA, "the instances may read clientCASecret: it must not hold the CA's key").toBeFalsy();
      const replication = bySecret(tls.replicationTLSSecret)!;
      expect(replication.spec).toMatchObject({ commonName: "streaming_replica", issuerRef: { name: meshIssuer }, usages: expect.arrayContaining(["client auth"]) });
      expect(replication.spec.uris).toBeUndefined();
      const server = bySecret(tls.serverTLSSecret)!;
      expect(server.spec.dnsNames).toContain("postgres-rw");
      expect(server.spec.issuerRef.name).toBe(meshIssuer);
      for (const certificate of [server, replication]) expect(certificate.spec.secretTemplate?.labels?.["cnpg.io/reload"], `${certificate.metadata.name} reloads`).toBeDefined();

      // pg_hba (first match wins): a role's first rule is its own database by certificate; all else is refused.
      const rules = cluster.spec.postgresql.pg_hba.map((line: string) => line.trim().split(/\s+/));
      for (const rule of rules) expect(["cert", "reject"], rule.join(" ")).toContain(rule.at(-1));
      for (const name of serviceNames) {
        const own = rules.filter(([, , user]: string[]) => user === name || user === "all");
        expect(own.map((r: string[]) => r.join(" ")), `${variant} ${name}`).toEqual([`hostssl ${name} ${name} all cert`, `host all ${name} all reject`]);
        const role = cluster.spec.managed.roles.find((r: any) => r.name === name);
        expect(role.passwordSecret, name).toBeUndefined();
        expect(role.disablePassword, name).toBe(true);
        // Its certificate's common name is the role pg_hba's `cert` maps it to.
        expect(find(objects, "Certificate", name).spec).toMatchObject({ commonName: name, issuerRef: { name: meshIssuer }, usages: expect.arrayContaining(["client auth"]) });

        const deployment = find(objects, "Deployment", name);
        const app = container(deployment, "app");
        const env = envOf(app);
        const url = new URL(env.DATABASE_URL!);
        expect([url.username, url.password, url.pathname.slice(1), url.hostname, url.searchParams.get("sslmode")]).toEqual([name, "", name, "postgres-rw", "verify-full"]);
        // The files it names are the certificate volume's: the service's own cert-manager secret.
        const certsVolume = podSpec(deployment).volumes.find((v: any) => v.name === "certs").secret;
        expect(certsVolume.secretName).toBe(find(objects, "Certificate", name).spec.secretName);
        const fileOf = (key: string) => `${env.CERTS_DIR}/${certsVolume.items.find((i: any) => i.key === key).path}`;
        expect([url.searchParams.get("sslcert"), url.searchParams.get("sslkey"), url.searchParams.get("sslrootcert")]).toEqual([fileOf("tls.crt"), fileOf("tls.key"), fileOf("ca.crt")]);
        expect(env.DATABASE_PASSWORD_FILE, name).toBeUndefined();
        expect(podSpec(deployment).volumes.map((v: any) => v.name), name).toEqual(["envoy-bootstrap", "envoy-sds", "certs", "tmp"]);
      }
      // No secret in the repository, for any overlay: every key is cert-manager's.
      expect(ofKind(objects, "Secret"), variant).toEqual([]);
    }
  });

  it("ask NATS for as many copies of each stream as its overlay's NATS cluster has servers", () => {
    const base = parse(files[`${K8S_ROOT}/base/nats/values.yaml`]!);
    // helm install -f base/nats/values.yaml -f overlays/dev/nats-values.yaml: the second merges over the first.
    const merge = (a: any, b: any): any => (typeof a === "object" && typeof b === "object" && !Array.isArray(b)
      ? Object.fromEntries([...new Set([...Object.keys(a), ...Object.keys(b)])].map((k) => [k, k in b ? (k in a ? merge(a[k], b[k]) : b[k]) : a[k]]))
      : b);
    const servers = (values: any) => (values.config.cluster.enabled ? values.config.cluster.replicas : 1);
    const natsServers: Record<Variant, number> = {
      base: servers(base),
      prod: servers(base),
      dev: servers(merge(base, parse(files[`${K8S_ROOT}/overlays/dev/nats-values.yaml`]!))),
    };
    expect(natsServers).toEqual({ base: 3, prod: 3, dev: 1 });
    for (const variant of variants) {
      for (const name of serviceNames) {
        expect(Number(envOf(container(find(built[variant], "Deployment", name), "app")).EVENTS_REPLICAS), `${variant} ${name}`).toBe(natsServers[variant]);
      }
      expect(envOf(container(find(built[variant], "Deployment", "gateway"), "app")).EVENTS_REPLICAS, "the gateway publishes no events").toBeUndefined();
    }
  });

  it("run every pod non-root with a read-only root and no capabilities, and stop it gracefully", () => {
    for (const variant of variants) {
      for (const deployment of ofKind(built[variant], "Deployment")) {
        const spec = podSpec(deployment);
        expect(spec.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: "RuntimeDefault" } });
        for (const c of allContainers(deployment)) {
          expect(c.securityContext, `${deployment.metadata.name}/${c.name}`).toMatchObject({ runAsNonRoot: true, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ["ALL"] } });
          expect(c.image, `${deployment.metadata.name}/${c.name}`).toMatch(/:[\w.-]+$/);
          expect(c.image).not.toMatch(/:latest$/);
        }
        if (deployment.metadata.name === "redis") continue;
        const app = container(deployment, "app");
        expect(app.lifecycle.preStop.sleep.seconds).toBeGreaterThan(ENVOY_DNS_REFRESH_SECONDS);
        const drainSeconds = deployment.metadata.name === "gateway" ? 5 : Number(envOf(app).DRAIN_TIMEOUT_MS) / 1000;
        expect(spec.terminationGracePeriodSeconds).toBeGreaterThan(PRESTOP_SECONDS + drainSeconds);
        expect(spec.automountServiceAccountToken).toBe(false);
        expect(spec.serviceAccountName).toBe(deployment.metadata.name);
        expect(find(built[variant], "ServiceAccount", deployment.metadata.name)).toBeDefined();
      }
    }
  });

  it("deny everything in prod but the flows the topology names: a service's callers reach its port, no one else does", () => {
    const policies = ofKind(built.prod, "NetworkPolicy");
    expect(ofKind(built.dev, "NetworkPolicy")).toEqual([]);
    const pod = (name: Workload): Pod => ({ namespace: NAMESPACE, labels: find(built.prod, "Deployment", name).spec.template.metadata.labels });
    for (const to of serviceNames) {
      const callers = callersOf(to, edgeServices());
      for (const from of workloads) {
        expect(allowed(policies, pod(from), pod(to), topology[to].grpcPort), `${from} → ${to}`).toBe(callers.includes(from));
      }
      expect(allowed(policies, outsider, pod(to), topology[to].grpcPort), `outside → ${to}`).toBe(false);
      expect(allowed(policies, prometheus, pod(to), topology[to].metricsPort), `prometheus → ${to}`).toBe(true);
      expect(allowed(policies, pod(to), { namespace: NAMESPACE, labels: natsPodLabels }, 4222), `${to} → nats`).toBe(true);
      expect(allowed(policies, pod(to), { namespace: NAMESPACE, labels: postgresPodLabels }, 5432), `${to} → postgres`).toBe(true);
      expect(allowed(policies, pod(to), kubeDns, 53), `${to} → DNS`).toBe(true);
    }
    for (const from of workloads) {
      expect(allowed(policies, pod(from), pod("redis" as Workload), 6379), `${from} → redis`).toBe(from === "catalog" || from === "gateway");
      expect(allowed(policies, pod(from), { namespace: NAMESPACE, labels: postgresPodLabels }, 5432), `${from} → postgres`).toBe(from !== "gateway");
    }
    expect(allowed(policies, outsider, pod("gateway"), gateway.httpPort)).toBe(true);
    expect(allowed(policies, outsider, pod("gateway"), gateway.metricsPort)).toBe(false);
    expect(allowed(policies, { namespace: NAMESPACE, labels: natsPodLabels }, { namespace: NAMESPACE, labels: natsPodLabels }, 6222)).toBe(true);
  });

  it("would catch a caller missing from the NetworkPolicies (the check above can fail)", () => {
    const flows = meshFlows();
    const dropped = flows.findIndex((f) => f.from.kind === "pods" && f.from.name === "order" && f.to.kind === "pods" && f.to.name === "catalog");
    expect(dropped).toBeGreaterThanOrEqual(0);
    const policies = networkPolicies(flows.filter((_, i) => i !== dropped)).map((p) => p.toJSON() as Obj);
    const pod = (name: Workload): Pod => ({ namespace: NAMESPACE, labels: find(built.prod, "Deployment", name).spec.template.metadata.labels });
    expect(allowed(policies, pod("order"), pod("catalog"), topology.catalog.grpcPort)).toBe(false);
    expect(allowed(policies, pod("gateway"), pod("catalog"), topology.catalog.grpcPort)).toBe(true);
  });
});

// ---- NetworkPolicy semantics, enough for the checks above ----
interface Pod {
  namespace: string;
  labels: Record<string, string>;
}
const outsider: Pod = { namespace: "elsewhere", labels: {} };
const prometheus: Pod = { namespace: "monitoring", labels: {} };
const kubeDns: Pod = { namespace: "kube-system", labels: { "k8s-app": "kube-dns" } };
const namespaceLabels = (namespace: string) => ({ "kubernetes.io/metadata.name": namespace });

function peerMatches(peer: any, policyNamespace: string, pod: Pod): boolean {
  const namespaceOk = peer.namespaceSelector ? matches(peer.namespaceSelector.matchLabels ?? {}, namespaceLabels(pod.namespace)) : pod.namespace === policyNamespace;
  const podOk = peer.podSelector ? matches(peer.podSelector.matchLabels ?? {}, pod.labels) : true;
  return namespaceOk && podOk;
}
const portMatches = (ports: any[] | undefined, port: number) => !ports || ports.some((p) => p.port === port);

/** Whether `direction` traffic of `pod` with `other` on `port` passes the policies of pod's namespace. */
function side(policies: Obj[], pod: Pod, other: Pod, port: number, direction: "Ingress" | "Egress"): boolean {
  const selecting = policies.filter((p) => (p.metadata.namespace ?? NAMESPACE) === pod.namespace && p.spec.policyTypes.includes(direction) && matches(p.spec.podSelector.matchLabels ?? {}, pod.labels));
  if (!selecting.length) return true;
  const key = direction === "Ingress" ? "from" : "to";
  return selecting.some((p) => (p.spec[direction.toLowerCase()] ?? []).some((rule: any) =>
    portMatches(rule.ports, port) && (!rule[key] || rule[key].some((peer: any) => peerMatches(peer, p.metadata.namespace ?? NAMESPACE, other)))));
}

function allowed(policies: Obj[], from: Pod, to: Pod, port: number): boolean {
  return side(policies, from, to, port, "Egress") && side(policies, to, from, port, "Ingress");
}
