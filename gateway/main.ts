import { ConfigError } from "../mesh/config.js";
import { startGateway, type RunningGateway } from "./gateway.js";

let gateway: RunningGateway;
try {
  gateway = await startGateway();
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`gateway: configuration error: ${err.message}\n`);
  process.exit(78);
}
let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await gateway.stop();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
