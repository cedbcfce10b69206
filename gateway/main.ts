import { runProcess } from "../mesh/service.js";
import { startGateway } from "./gateway.js";

await runProcess("gateway", () => startGateway());
