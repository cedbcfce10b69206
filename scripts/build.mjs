// `npm run build`: one JavaScript file per process in dist/ (each service, the gateway, the
// launcher, the scripts), with its dependencies bundled in. Plain JavaScript because it runs before
// anything is compiled. esbuild only strips types (type checking is `npm test`'s), in ~1.5 s.
//
// Why bundles: a process importing ~1,000 files from node_modules spent ~0.85 s of CPU at each
// start resolving and loading them; one file loads in ~0.45 s, and seven processes start together.
// Left outside the bundles: packages that read files next to their own code at run time (.proto
// files, WebAssembly, worker scripts), and tools only the launcher uses.
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { build } from "esbuild";

const external = [
  "@electric-sql/pglite", // WebAssembly and data files beside its code
  // .proto files; loaded only on a first reflection call (mesh/rpc/serve.ts)
  "@grpc/proto-loader", "@grpc/reflection", "protobufjs",
  "pino", "pino-pretty", "thread-stream", // worker threads
  "pg-native", // optional native driver pg tries to load
  "@node-rs/argon2", // loads its native binary for this platform from a package of its own
  "esbuild", "playwright-core",
];

const services = readdirSync("services").filter((name) => existsSync(`services/${name}/main.ts`));
const entryPoints = [
  ...services.map((name) => `services/${name}/main.ts`),
  ...services.flatMap((name) => readdirSync(`services/${name}/migrations`).filter((f) => f.endsWith(".sql")).map((f) => `services/${name}/migrations/${f}`)),
  "gateway/main.ts",
  "launcher/main.ts",
  ...readdirSync("scripts").filter((f) => f.endsWith(".ts")).map((f) => `scripts/${f}`),
];

// Built already from these very files (paths, sizes, modification times)? Then nothing to do: a
// warm `npm start` saves the ~1.5 s the build takes.
const sourceFiles = (dir) => readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? sourceFiles(join(dir, e.name)) : [join(dir, e.name)]));
const fingerprint = createHash("sha256")
  .update(["mesh", "services", "gateway", "launcher", "gen", "scripts"].flatMap(sourceFiles).concat("package.json", "package-lock.json").sort()
    .map((f) => { const st = statSync(f); return `${f} ${st.size} ${st.mtimeMs}`; }).join("\n"))
  .digest("hex");
const stamp = "dist/.fingerprint";
if (existsSync(stamp) && readFileSync(stamp, "utf8") === fingerprint) process.exit(0);

// Built beside dist/ and swapped in at the end: a launcher running from dist/ (restarting a
// crashed process) never finds it half written.
const out = `dist.building-${process.pid}`;
const common = {
  outdir: out,
  outbase: ".",
  chunkNames: "chunks/[name]-[hash]",
  bundle: true,
  splitting: true, // code shared by the processes goes to common chunks, built once
  external,
  loader: { ".sql": "copy" }, // a service finds its migrations beside its code
  platform: "node",
  format: "esm",
  target: "node20",
  sourcemap: "linked",
  sourcesContent: false, // maps point at the sources in the repository: a quarter of the size
  // V8 keeps each bundle's source text in the heap (it compiles functions lazily, from the text).
  // Without whitespace and comments it is 30 % shorter, and pure ASCII: a single "→" in a kept
  // comment stored a 1.9 MB chunk as two bytes per character. 2.4–4.5 MiB less heap per process
  // (heap used, idle, services and gateway; 4 MiB RSS on average). Names stay,
  // so stack traces still name their functions (NODE_OPTIONS=--enable-source-maps maps them back).
  minifyWhitespace: true,
  // Bundled CommonJS calls require(); an ES module has none of its own.
  banner: { js: 'import { createRequire as __createRequire } from "node:module"; const require = __createRequire(import.meta.url);' },
  logLevel: "warning",
};
await build({ ...common, entryPoints });
// The host of several services (launcher/host.ts) is built apart, as one file: sharing chunks
// with the services' own bundles would move each definition into a chunk, and a definition finds
// its migrations beside its own module.
await build({ ...common, entryPoints: ["launcher/host.ts"], splitting: false });
writeFileSync(join(out, ".fingerprint"), fingerprint);
rmSync("dist", { recursive: true, force: true });
renameSync(out, "dist");
