// What the launcher knows about each process it supervises, as the terminal and the dashboard
// show it. The supervisor (launcher/supervisor.ts) keeps these up to date.

/** Where a process is in its life; the start-up phases come from its own log lines. */
export type ProcessState =
  | "starting" // spawned, loading its code
  | "migrating" // opening its database and applying migrations
  | "seeding" // filling a new database with the demo data
  | "serving" // answers its health check
  | "backing off" // crashed; restarts after a delay
  | "failed" // crashed at start too many times, or a configuration error: not restarted
  | "stopping"
  | "stopped";

export interface ProcessView {
  /** A service name from the topology, or "gateway". */
  readonly name: string;
  readonly state: ProcessState;
  /** Restarts after a crash since the launcher started. */
  readonly restarts: number;
  readonly pid: number | undefined;
  /** Where it listens: grpcs://host:port for services, http://host:port for the gateway. */
  readonly address: string;
  readonly metricsUrl: string;
  /** Its whole log, one JSON line per entry (pino), under .data/logs/. */
  readonly logFile: string;
  /** Its last log lines (raw), oldest first. */
  recentLogs(): readonly string[];
}

/** The mesh as the launcher runs it. */
export interface MeshView {
  processes(): readonly ProcessView[];
  /** NATS URL and the operator's TLS files (certs/client.*), for the dashboard's event views. */
  readonly natsUrl: string;
  readonly certsDir: string;
  readonly gatewayUrl: string;
}
