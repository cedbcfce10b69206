# One image for every ShopMesh process: each service, the gateway and the one-shot certificate step.
# The container's command chooses the process (docker-compose.yml and deploy/k8s set it):
#   node dist/services/<service>/main.js   a service (identity, catalog, inventory, order, payment, notification)
#   node dist/gateway/main.js              the gateway
#   node dist/scripts/certs.js             the CA and per-identity certificates (compose's `certs` step)
# SHOPMESH_PROCESS names the process for the health check below (a service's name, or "gateway"):
# set it beside the command. The check runs with the process's own environment.
#
# Build: docker build -t shopmesh .   (test/deploy/image.test.ts rebuilds the runtime stage on disk
# from this file and starts a service from it.)

# ---- build: every dependency, then the bundles in dist/ (scripts/build.mjs) ----
FROM node:24.22.3-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY scripts ./scripts
COPY gen ./gen
COPY mesh ./mesh
COPY services ./services
COPY gateway ./gateway
COPY launcher ./launcher
RUN npm run build

# ---- runtime: production dependencies, the bundles, and the files read at run time; nothing else ----
FROM node:24.22.3-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
# The user every process runs as. Its group also owns the mounted secrets (keys 0640), so the
# sidecar and PostgreSQL read them by running with this group, and no one else can.
RUN groupadd --gid 10001 shopmesh \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin shopmesh
COPY package.json package-lock.json ./
# No install scripts: nothing the processes load needs one (esbuild's only checks its binary).
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /src/dist ./dist
# The mesh's own migrations are read from here (the services' own are copied into dist/).
COPY mesh/data/migrations ./mesh/data/migrations
USER 10001:10001
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD node dist/scripts/healthcheck.js "$SHOPMESH_PROCESS"
# No default process: the command names one (see the top of this file).
CMD ["sh", "-c", "echo 'choose a process: node dist/services/<name>/main.js | node dist/gateway/main.js | node dist/scripts/certs.js' >&2; exit 64"]
