// How `npm start` lays the mesh out in processes (SHOPMESH_LAYOUT):
//   combined   (default) the six services in one host process (launcher/host.ts), the gateway in
//              its own: on 2 cores this costs less CPU per order and answers more orders per
//              second than six processes do (README, "Layouts").
//   processes  every service its own process, as deployed (compose, Kubernetes) and as the chaos
//              run kills them one at a time.
// Either way each service keeps its own ports, database, NATS connection and log file, and the
// terminal and the dashboard show each service's state.
import type { ServiceName } from "../mesh/topology.js";

export const layouts = ["combined", "processes"] as const;
export type Layout = (typeof layouts)[number];

/** SHOPMESH_LAYOUT, checked; an unknown value is a mistake worth stopping for. */
export function chosenLayout(value: string | undefined): Layout {
  if (value === undefined || value === "") return "combined";
  if ((layouts as readonly string[]).includes(value)) return value as Layout;
  throw new Error(`SHOPMESH_LAYOUT must be ${layouts.join(" or ")}, got "${value}"`);
}

/** A service's own variables as a host takes them: `<SERVICE>__<NAME>` (launcher/host.ts). */
export const forHosted = (name: ServiceName, vars: Record<string, string>): Record<string, string> =>
  Object.fromEntries(Object.entries(vars).map(([key, value]) => [`${name.toUpperCase()}__${key}`, value]));
