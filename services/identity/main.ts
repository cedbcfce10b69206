import { main } from "../../mesh/service.js";
import { identity } from "./identity.js";

await main(identity);
